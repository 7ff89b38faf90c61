//! The activation formats Q8_0, Q8_1 and Q8_K: quantizers byte-identical to the
//! reference (roundf ties away from zero and x86's truncating conversion for Q8_0/Q8_1,
//! ggml's `nearest_int` ties to even for Q8_K; both keep the low byte) and
//! dequantizers. The Q8_0 x Q8_0 dot lives with the other 32-value
//! dots in `legacy`.
//!
//! ggml's own AVX2 Q8_0 quantizer rounds ties to even and uses 127/amax as the inverse
//! scale, so its bytes differ from `quantize_row_q8_0_ref`; these follow the reference.

use std::arch::x86_64::*;

use super::util::*;
use crate::arch::{block, block_mut, floats, floats_mut};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K_BYTES, BSUMS, QS};
use crate::types::QK_K;

const QK: usize = 32;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// f32 to the f16 bits `common::f32_to_f16` gives (round to nearest even).
#[inline(always)]
unsafe fn f16_bits(v: f32) -> u16 {
    _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0) as u16
}

#[inline(always)]
unsafe fn abs_max32(x: &[f32; QK]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, loadps(x, 0));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(x, 8)));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(x, 16)));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(x, 24)));
    hmax_ps(m)
}

/// `trunc_x86(v.round())` for 8 lanes: round half away from zero, then x86's
/// truncating conversion, which gives i32::MIN for NaN, infinities and anything out of
/// the i32 range, exactly as `common::trunc_x86` defines it.
#[inline(always)]
unsafe fn round_away_trunc(v: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    // v - trunc(v) is exact; its magnitude decides whether to step away from zero.
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0));
    let up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
    _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)))
}

/// The low bytes of four vectors of i32 (`as i8`), as 32 bytes in order.
#[inline(always)]
unsafe fn low_bytes(v: [__m256i; 4]) -> __m256i {
    let low = _mm256_set1_epi32(0xff);
    let (a, b) = (_mm256_and_si256(v[0], low), _mm256_and_si256(v[1], low));
    let (c, d) = (_mm256_and_si256(v[2], low), _mm256_and_si256(v[3], low));
    // Every lane is in 0..=255, so the saturating packs only narrow.
    let p = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Sum of 32 signed bytes (unsigned SAD of the bytes offset by 128).
#[inline(always)]
unsafe fn sum_i8(v: __m256i) -> i32 {
    let sad = _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8(i8::MIN)), _mm256_setzero_si256());
    let s = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
    (_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1)) as i32 - 32 * 128
}

/// One 32-value block: (d, bytes).
#[inline(always)]
unsafe fn q8_block(x: &[f32; QK]) -> (f32, __m256i) {
    let amax = abs_max32(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if id.is_infinite() {
        // d is subnormal: every x*id is +-inf or NaN, which the reference's x86-style
        // float-to-int conversion turns into the byte 0 (see `common::trunc_x86`)
        return (d, _mm256_setzero_si256());
    }
    let idv = _mm256_set1_ps(id);
    let r0 = round_away_trunc(_mm256_mul_ps(loadps(x, 0), idv));
    let r1 = round_away_trunc(_mm256_mul_ps(loadps(x, 8), idv));
    let r2 = round_away_trunc(_mm256_mul_ps(loadps(x, 16), idv));
    let r3 = round_away_trunc(_mm256_mul_ps(loadps(x, 24), idv));
    (d, low_bytes([r0, r1, r2, r3]))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(Q8_0_BYTES)) {
        let qb = block_mut::<Q8_0_BYTES>(qb);
        let (d, bytes) = q8_block(floats(xb));
        qb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        store256(qb, 2, bytes);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(Q8_1_BYTES)) {
        let qb = block_mut::<Q8_1_BYTES>(qb);
        let (d, bytes) = q8_block(floats(xb));
        let s = sum_i8(bytes) as f32 * d;
        qb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        qb[2..4].copy_from_slice(&f16_bits(s).to_le_bytes());
        store256(qb, 4, bytes);
    }
}

/// `quantize_row_q8_K_ref`: scale from the signed value of largest magnitude (the
/// first one on ties), `nearest_int` via the same 1.5*2^23 trick, `min(127)` and a
/// truncating cast to the byte.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], q: &mut [u8]) {
    let sign = _mm256_set1_ps(-0.0);
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(Q8K_BYTES)) {
        let xb = floats::<QK_K>(xb);
        let qb = block_mut::<Q8K_BYTES>(qb);
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(xb, 8 * k)));
        }
        let amax = hmax_ps(m);
        if amax == 0.0 {
            qb.fill(0);
            continue;
        }
        let av = _mm256_set1_ps(amax);
        let mut max = 0.0f32;
        for k in 0..QK_K / 8 {
            let hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, loadps(xb, 8 * k)), av, _CMP_EQ_OQ));
            if hit != 0 {
                max = xb[8 * k + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let is = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12_582_912.0);
        let mant = _mm256_set1_epi32(0x007f_ffff);
        let off = _mm256_set1_epi32(0x0040_0000);
        let lim = _mm256_set1_epi32(127);
        let low = _mm256_set1_epi32(0xff);
        let flip = _mm256_set1_epi8(i8::MIN);
        let mut sums = [0u64; 4 * QK_K / 32];
        for g in 0..QK_K / 32 {
            let mut v = [_mm256_setzero_si256(); 4];
            for (k, vk) in v.iter_mut().enumerate() {
                let r = _mm256_add_ps(_mm256_mul_ps(is, loadps(xb, 32 * g + 8 * k)), magic);
                let n = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(r), mant), off);
                *vk = _mm256_and_si256(_mm256_min_epi32(n, lim), low);
            }
            let lo = _mm256_packus_epi32(v[0], v[1]);
            let hi = _mm256_packus_epi32(v[2], v[3]);
            let bytes =
                _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            store256(qb, QS + 32 * g, bytes);
            // Signed byte sums via unsigned SAD of the bytes offset by 128.
            let sad = _mm256_sad_epu8(_mm256_xor_si256(bytes, flip), _mm256_setzero_si256());
            _mm256_storeu_si256(sums.as_mut_ptr().add(4 * g).cast(), sad);
        }
        for j in 0..QK_K / 16 {
            let s = (sums[2 * j] + sums[2 * j + 1]) as i32 - 16 * 128;
            qb[BSUMS + 2 * j..BSUMS + 2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        qb[0..4].copy_from_slice(&(1.0f32 / iscale).to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q8_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(Q8_0_BYTES).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<Q8_0_BYTES>(qb);
        let d = f16x8_at(qb, 0);
        scale_i8x32(load256(qb, 2), d, floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q8_1(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(Q8_1_BYTES).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<Q8_1_BYTES>(qb);
        let d = f16x8_at(qb, 0);
        scale_i8x32(load256(qb, 4), d, floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q8_k(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(Q8K_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let qb = block::<Q8K_BYTES>(qb);
        let yb = floats_mut::<QK_K>(yb);
        let d = _mm256_set1_ps(f32_at(qb, 0));
        for g in 0..QK_K / 32 {
            scale_i8x32(load256(qb, QS + 32 * g), d, yb, 32 * g);
        }
    }
}
