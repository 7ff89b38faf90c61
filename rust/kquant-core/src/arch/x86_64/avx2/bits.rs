//! Q1_0 (signs with one magnitude per 128) and Q2_0 (2-bit codes per 64): dequantize
//! and their dots with Q8_0, which span four and two Q8_0 blocks. Integer sums are
//! exact unsigned-by-signed byte products; the float steps follow the reference.

use std::arch::x86_64::*;

use super::legacy::bits_to_bytes32;
use super::util::*;
use crate::arch::{block, floats_mut};

const Q1_BYTES: usize = 18;
const Q2_BYTES: usize = 18;
const Q8_0_BYTES: usize = 34;

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q1_0(q: &[u8], y: &mut [f32]) {
    let sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (qb, yb) in q.chunks_exact(Q1_BYTES).zip(y.chunks_exact_mut(128)) {
        let qb = block::<Q1_BYTES>(qb);
        let yb = floats_mut::<128>(yb);
        let d = f16x8_at(qb, 0);
        let nd = _mm256_xor_ps(d, _mm256_set1_ps(-0.0));
        for j in 0..16 {
            let set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(qb[2 + j] as i32), sel), sel);
            storeps(yb, 8 * j, _mm256_blendv_ps(nd, d, _mm256_castsi256_ps(set)));
        }
    }
}

/// Sum of four i32 lanes-vectors' lanes each: [s(a), s(b), s(c), s(e)].
#[inline(always)]
unsafe fn hsum4_i32(a: __m256i, b: __m256i, c: __m256i, e: __m256i) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, e));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
}

/// `d0 * (((d1_0 * s_0 + d1_1 * s_1) + ...)`, the reference's float order for one
/// block, with the four (or two) Q8_0 scales `dy` and integer sums `s` in lanes.
#[inline(always)]
unsafe fn block_term<const N: usize>(d0: f32, dy: __m128, s: __m128i) -> f32 {
    let p = _mm_mul_ps(dy, _mm_cvtepi32_ps(s));
    // 0 + p0 is p0 exactly; then p1, p2, p3 in order
    let mut acc = _mm_add_ss(p, _mm_movehdup_ps(p));
    if N == 4 {
        acc = _mm_add_ss(acc, _mm_movehl_ps(p, p));
        acc = _mm_add_ss(acc, _mm_shuffle_ps::<0b11_11_11_11>(p, p));
    }
    d0 * _mm_cvtss_f32(acc)
}

/// The f16 scales of `n` consecutive Q8_0 blocks in lanes (zeros beyond `n`).
#[inline(always)]
unsafe fn q8_scales(y: &[u8], n: usize) -> __m128 {
    let mut packed = 0u64;
    for k in 0..n {
        packed |= (u16::from_le_bytes([y[k * Q8_0_BYTES], y[k * Q8_0_BYTES + 1]]) as u64) << (16 * k);
    }
    _mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q1_0(q: &[u8], yq: &[u8]) -> f32 {
    let one = _mm256_set1_epi8(1);
    let mut sumf = 0.0f32;
    for (xb, y4) in q.chunks_exact(Q1_BYTES).zip(yq.chunks_exact(4 * Q8_0_BYTES)) {
        let xb = block::<Q1_BYTES>(xb);
        let mut part = [_mm256_setzero_si256(); 4];
        for (k, p) in part.iter_mut().enumerate() {
            let yb = block::<Q8_0_BYTES>(&y4[k * Q8_0_BYTES..(k + 1) * Q8_0_BYTES]);
            let bits = u32::from_le_bytes([xb[2 + 4 * k], xb[3 + 4 * k], xb[4 + 4 * k], xb[5 + 4 * k]]);
            let set = _mm256_and_si256(bits_to_bytes32(bits), one);
            let y = load256(yb, 2);
            // +y where set, -y elsewhere: 2 * (set . y) - (1 . y)
            let s = _mm256_maddubs_epi16(set, y);
            *p = sum_pairs(_mm256_sub_epi16(_mm256_add_epi16(s, s), _mm256_maddubs_epi16(one, y)));
        }
        let s = hsum4_i32(part[0], part[1], part[2], part[3]);
        sumf += block_term::<4>(f16_at(xb, 0), q8_scales(y4, 4), s);
    }
    sumf
}

/// The 64 codes (0..=3) of a Q2_0 block as two vectors of 32 in value order.
#[inline(always)]
unsafe fn q2_codes(xb: &[u8; Q2_BYTES]) -> [__m256i; 2] {
    let v = load128(xb, 2);
    let m = _mm_set1_epi8(3);
    let c0 = _mm_and_si128(v, m);
    let c1 = _mm_and_si128(_mm_srli_epi16(v, 2), m);
    let c2 = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    let c3 = _mm_and_si128(_mm_srli_epi16(v, 6), m);
    // byte i holds values 4i..4i+4: interleave the four shifts byte by byte
    let (a0, a1) = (_mm_unpacklo_epi8(c0, c1), _mm_unpackhi_epi8(c0, c1));
    let (b0, b1) = (_mm_unpacklo_epi8(c2, c3), _mm_unpackhi_epi8(c2, c3));
    [
        _mm256_set_m128i(_mm_unpackhi_epi16(a0, b0), _mm_unpacklo_epi16(a0, b0)),
        _mm256_set_m128i(_mm_unpackhi_epi16(a1, b1), _mm_unpacklo_epi16(a1, b1)),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q2_0(q: &[u8], y: &mut [f32]) {
    let one = _mm256_set1_epi8(1);
    for (qb, yb) in q.chunks_exact(Q2_BYTES).zip(y.chunks_exact_mut(64)) {
        let qb = block::<Q2_BYTES>(qb);
        let yb = floats_mut::<64>(yb);
        let d = f16x8_at(qb, 0);
        let c = q2_codes(qb);
        scale_i8x32(_mm256_sub_epi8(c[0], one), d, yb, 0);
        scale_i8x32(_mm256_sub_epi8(c[1], one), d, yb, 32);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q2_0(q: &[u8], yq: &[u8]) -> f32 {
    let one = _mm256_set1_epi8(1);
    let mut sumf = 0.0f32;
    for (xb, y2) in q.chunks_exact(Q2_BYTES).zip(yq.chunks_exact(2 * Q8_0_BYTES)) {
        let xb = block::<Q2_BYTES>(xb);
        let c = q2_codes(xb);
        let mut part = [_mm256_setzero_si256(); 2];
        for k in 0..2 {
            let yb = block::<Q8_0_BYTES>(&y2[k * Q8_0_BYTES..(k + 1) * Q8_0_BYTES]);
            let y = load256(yb, 2);
            // (code - 1) . y as code . y - 1 . y (code <= 3: pair sums fit i16)
            part[k] = sum_pairs(_mm256_sub_epi16(_mm256_maddubs_epi16(c[k], y), _mm256_maddubs_epi16(one, y)));
        }
        let z = _mm256_setzero_si256();
        sumf += block_term::<2>(f16_at(xb, 0), q8_scales(y2, 2), hsum4_i32(part[0], part[1], z, z));
    }
    sumf
}

/// Four vectors of eight i32 (each in 0..=15) to 32 bytes in lane order.
#[inline(always)]
pub(super) unsafe fn pack_bytes32(a: __m256i, b: __m256i, c: __m256i, e: __m256i) -> __m256i {
    let v = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
    // packs interleave the 128-bit halves: restore lane order
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `quantize_row_q2_0_ref`. |x * id| <= 1 (up to rounding), so `roundf(v) + 1` is
/// 1 + [v >= 0.5] - [v <= -0.5]; an infinite `id` (subnormal maximum) makes every
/// product NaN or infinite, which x86 turns into INT_MIN: code 0 throughout.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q2_0(x: &[f32], q: &mut [u8]) {
    use crate::arch::{block_mut, floats};
    use crate::reference::common::f32_to_f16;
    let sign = _mm256_set1_ps(-0.0);
    let (half, mhalf) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5));
    for (xb, qb) in x.chunks_exact(64).zip(q.chunks_exact_mut(Q2_BYTES)) {
        let (xb, qb) = (floats::<64>(xb), block_mut::<Q2_BYTES>(qb));
        let mut m = _mm256_setzero_ps();
        for k in 0..8 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(xb, 8 * k)));
        }
        let amax = hmax_ps(m);
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        qb[..2].copy_from_slice(&f32_to_f16(amax).to_le_bytes());
        if !id.is_finite() {
            qb[2..].fill(0);
            continue;
        }
        let idv = _mm256_set1_ps(id);
        let code = |k: usize| {
            let v = _mm256_mul_ps(loadps(xb, 8 * k), idv);
            let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(v, half));
            let dn = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(v, mhalf));
            _mm256_add_epi32(_mm256_sub_epi32(dn, up), _mm256_set1_epi32(1))
        };
        for h in 0..2 {
            let c = pack_bytes32(code(4 * h), code(4 * h + 1), code(4 * h + 2), code(4 * h + 3));
            // value 4i + k sits in bits 2k of byte i: combine neighbouring bytes
            let p = _mm256_or_si256(c, _mm256_srli_epi16(c, 6)); // byte pairs: k | k+1 << 2
            let p = _mm256_and_si256(p, _mm256_set1_epi16(0x0f));
            let w = _mm256_or_si256(p, _mm256_srli_epi32(p, 12)); // lanes of 4: 4 codes in the low byte
            let w = _mm256_and_si256(w, _mm256_set1_epi32(0xff));
            // one byte per 32-bit lane: gather the low bytes of the eight lanes
            let w = _mm256_packus_epi16(_mm256_packus_epi32(w, w), _mm256_setzero_si256());
            let lo = _mm256_castsi256_si128(w);
            let hi = _mm256_extracti128_si256(w, 1);
            let bytes = (_mm_cvtsi128_si32(lo) as u32 as u64) | ((_mm_cvtsi128_si32(hi) as u32 as u64) << 32);
            qb[2 + 8 * h..10 + 8 * h].copy_from_slice(&bytes.to_le_bytes());
        }
    }
}
