//! TQ1_0 and TQ2_0: dequantize, their dots with Q8_K, and the quantizers. The trits of
//! a block come out as eight vectors of 32 bytes in value order (0..=2), so all three
//! operations share one decoder per format.
//!
//! TQ1_0 decodes trit n of a byte as the top trit of `b * 3^n (mod 256)`, i.e.
//! `(q * 3) >> 8`: with the byte in the high half of a 16-bit lane that is `mulhi(q, 3)`.

use std::arch::x86_64::*;

use super::util::*;
use crate::arch::{block, block_mut, floats, floats_mut};
use crate::reference::common::f32_to_f16;
use crate::types::QK_K;

const TQ1_BYTES: usize = 54;
const TQ2_BYTES: usize = 66;
const Q8K_BYTES: usize = 292;

/// Trits of 32 bytes `b` with per-16-bit-lane multipliers `mul` (3^n for both bytes).
/// `(q * 3) >> 8` is 1 for q >= 86 and 2 for q >= 171, so two unsigned byte compares
/// replace the second multiply.
#[inline(always)]
unsafe fn trits(b: __m256i, mul: __m256i) -> __m256i {
    let keep_hi = _mm256_set1_epi16(0xff00u16 as i16);
    // the wrapping byte product: low bytes from one 16-bit multiply, high from another
    let lo = _mm256_andnot_si256(keep_hi, _mm256_mullo_epi16(b, mul));
    let hi = _mm256_mullo_epi16(_mm256_and_si256(b, keep_hi), mul);
    let q = _mm256_or_si256(lo, hi);
    let ge = |t: i8| _mm256_cmpeq_epi8(_mm256_max_epu8(q, _mm256_set1_epi8(t)), q);
    _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge(86), ge(171u8 as i8)))
}

/// The 256 trits of a TQ1_0 block as eight vectors of 32, values 32k..32k+32.
#[inline(always)]
unsafe fn tq1_trits(qb: &[u8; TQ1_BYTES]) -> [__m256i; 8] {
    let p = |a: i16, b: i16| _mm256_set_m128i(_mm_set1_epi16(b), _mm_set1_epi16(a));
    let qs0 = load256(qb, 0);
    let qs1 = _mm256_broadcastsi128_si256(load128(qb, 32));
    let qh = i32::from_le_bytes([qb[48], qb[49], qb[50], qb[51]]);
    // low half: qs[32..48] for trit 4 (values 224..240); high half: the four qh bytes
    // repeated, trit n in bytes 4n..4n+4 (values 240 + 4n + m)
    let last = _mm256_set_m128i(_mm_set1_epi32(qh), load128(qb, 32));
    let last_mul = _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27);
    [
        trits(qs0, _mm256_set1_epi16(1)),
        trits(qs0, _mm256_set1_epi16(3)),
        trits(qs0, _mm256_set1_epi16(9)),
        trits(qs0, _mm256_set1_epi16(27)),
        trits(qs0, _mm256_set1_epi16(81)),
        trits(qs1, p(1, 3)),
        trits(qs1, p(9, 27)),
        trits(last, last_mul),
    ]
}

/// The 256 codes (0..=3) of a TQ2_0 block, values 32k..32k+32.
#[inline(always)]
unsafe fn tq2_codes(qb: &[u8; TQ2_BYTES]) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let h0 = load256(qb, 0);
    let h1 = load256(qb, 32);
    [
        _mm256_and_si256(h0, m3),
        _mm256_and_si256(_mm256_srli_epi16(h0, 2), m3),
        _mm256_and_si256(_mm256_srli_epi16(h0, 4), m3),
        _mm256_and_si256(_mm256_srli_epi16(h0, 6), m3),
        _mm256_and_si256(h1, m3),
        _mm256_and_si256(_mm256_srli_epi16(h1, 2), m3),
        _mm256_and_si256(_mm256_srli_epi16(h1, 4), m3),
        _mm256_and_si256(_mm256_srli_epi16(h1, 6), m3),
    ]
}

#[inline(always)]
unsafe fn write_minus_one(t: &[__m256i; 8], d: __m256, y: &mut [f32; QK_K]) {
    let one = _mm256_set1_epi8(1);
    for (k, v) in t.iter().enumerate() {
        scale_i8x32(_mm256_sub_epi8(*v, one), d, y, 32 * k);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_tq1_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(TQ1_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let qb = block::<TQ1_BYTES>(qb);
        write_minus_one(&tq1_trits(qb), f16x8_at(qb, 52), floats_mut::<QK_K>(yb));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_tq2_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(TQ2_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let qb = block::<TQ2_BYTES>(qb);
        write_minus_one(&tq2_codes(qb), f16x8_at(qb, 64), floats_mut::<QK_K>(yb));
    }
}

/// Exact `sum (t - 1) * y` over a block: `t . y - 1 . y` as unsigned-by-signed byte
/// products (t <= 3, so every pair sum fits i16 even for y = -128).
#[inline(always)]
unsafe fn block_sum(t: &[__m256i; 8], yb: &[u8; Q8K_BYTES]) -> i32 {
    let one = _mm256_set1_epi8(1);
    // each i16 pair sum is at most 3*2*128 + 256 = 1024 in magnitude: eight of them fit
    let mut acc16 = _mm256_setzero_si256();
    for (k, v) in t.iter().enumerate() {
        let y = load256(yb, 4 + 32 * k);
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(*v, y), _mm256_maddubs_epi16(one, y));
        acc16 = _mm256_add_epi16(acc16, p);
    }
    let acc = sum_pairs(acc16);
    let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_tq1_0(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (qb, yb) in q.chunks_exact(TQ1_BYTES).zip(yq.chunks_exact(Q8K_BYTES)) {
        let (qb, yb) = (block::<TQ1_BYTES>(qb), block::<Q8K_BYTES>(yb));
        let sum = block_sum(&tq1_trits(qb), yb);
        sumf += sum as f32 * (f16_at(qb, 52) * f32_at(yb, 0));
    }
    sumf
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_tq2_0(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (qb, yb) in q.chunks_exact(TQ2_BYTES).zip(yq.chunks_exact(Q8K_BYTES)) {
        let (qb, yb) = (block::<TQ2_BYTES>(qb), block::<Q8K_BYTES>(yb));
        let sum = block_sum(&tq2_codes(qb), yb);
        sumf += sum as f32 * (f32_at(yb, 0) * f16_at(qb, 64));
    }
    sumf
}

/// The absolute maximum of a block and the 256 trits `lroundf(x / amax) + 1`.
/// |x * id| <= 1 (up to rounding), so the trit is 1 + [v >= 0.5] - [v <= -0.5]; an
/// infinite `id` (subnormal maximum) makes every product NaN or infinite, which
/// ggml's `lroundf` turns into trit 1 throughout.
#[inline(always)]
unsafe fn block_trits(x: &[f32; QK_K], t: &mut [u8; QK_K]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for k in 0..QK_K / 8 {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(x, 8 * k)));
    }
    let amax = hmax_ps(m);
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    if !id.is_finite() {
        t.fill(1);
        return amax;
    }
    let idv = _mm256_set1_ps(id);
    let (half, mhalf) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5));
    let tr = |v: __m256| {
        let v = _mm256_mul_ps(v, idv);
        // compare masks are -1: 1 - (v >= .5) + (v <= -.5)
        let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(v, half));
        let dn = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(v, mhalf));
        _mm256_sub_epi32(dn, up)
    };
    for k in 0..QK_K / 32 {
        let a = _mm256_packs_epi32(tr(loadps(x, 32 * k)), tr(loadps(x, 32 * k + 8)));
        let b = _mm256_packs_epi32(tr(loadps(x, 32 * k + 16)), tr(loadps(x, 32 * k + 24)));
        let v = _mm256_packs_epi16(a, b);
        // packs interleave the 128-bit halves: restore value order
        let v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        store256(t, 32 * k, _mm256_add_epi8(v, _mm256_set1_epi8(1)));
    }
    amax
}

/// `ceil(v * 256 / 243)` for a base-3 code v of five trits.
const fn pack_table() -> [u8; 243] {
    let mut t = [0u8; 243];
    let mut v = 0;
    while v < 243 {
        t[v] = (v * 256).div_ceil(243) as u8;
        v += 1;
    }
    t
}
static PACK: [u8; 243] = pack_table();

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_tq1_0(x: &[f32], q: &mut [u8]) {
    let mut t = [0u8; QK_K];
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(TQ1_BYTES)) {
        let qb = block_mut::<TQ1_BYTES>(qb);
        let amax = block_trits(floats::<QK_K>(xb), &mut t);
        let code = |idx: [usize; 5]| {
            let v = idx.iter().fold(0usize, |a, &i| a * 3 + t[i] as usize);
            PACK[v]
        };
        for (m, o) in qb[..32].iter_mut().enumerate() {
            *o = code([m, m + 32, m + 64, m + 96, m + 128]);
        }
        for m in 0..16 {
            qb[32 + m] = code([160 + m, 176 + m, 192 + m, 208 + m, 224 + m]);
        }
        for m in 0..4 {
            let v = (0..4).fold(0usize, |a, n| a * 3 + t[240 + m + 4 * n] as usize) * 3;
            qb[48 + m] = PACK[v];
        }
        qb[52..54].copy_from_slice(&f32_to_f16(amax).to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_tq2_0(x: &[f32], q: &mut [u8]) {
    let mut t = [0u8; QK_K];
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(TQ2_BYTES)) {
        let qb = block_mut::<TQ2_BYTES>(qb);
        let amax = block_trits(floats::<QK_K>(xb), &mut t);
        for h in 0..2 {
            let c = |l: usize| load256(&t, 128 * h + 32 * l);
            let v = _mm256_or_si256(
                _mm256_or_si256(c(0), _mm256_slli_epi16(c(1), 2)),
                _mm256_or_si256(_mm256_slli_epi16(c(2), 4), _mm256_slli_epi16(c(3), 6)),
            );
            store256(qb, 32 * h, v);
        }
        qb[64..66].copy_from_slice(&f32_to_f16(amax).to_le_bytes());
    }
}
