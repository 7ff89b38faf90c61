//! The 32-value formats Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL: dequantize and their dots
//! with Q8_0 / Q8_1.
//!
//! Dots multiply unsigned by signed bytes with `maddubs`. Where the weights are signed
//! the absolute value goes on the activation side (`|y| <= 128`) and the sign on the
//! weight side (|w| <= 127 for every weight format here), so no byte-pair sum reaches
//! i16 saturation and the integer sums are exact even for hand-made -128 activations,
//! which ggml's own AVX2 sign trick gets wrong.

use std::arch::x86_64::*;

use super::util::*;
use crate::arch::{block, floats_mut};

const QK: usize = 32;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// ggml's non-linear 4-bit levels (`kvalues_iq4nl`).
pub const IQ4NL_LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// 32 bits to 32 bytes, 0xff where the bit is set (bit i to byte i).
#[inline(always)]
pub unsafe fn bits_to_bytes32(bits: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000),
    );
    let others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1))
}

#[inline(always)]
unsafe fn q4_0_values(xb: &[u8; 18]) -> __m256i {
    _mm256_sub_epi8(nibbles32(load128(xb, 2)), _mm256_set1_epi8(8))
}

/// Q5_0 levels: a clear fifth bit sets the top nibble instead, which is `nibble - 16`
/// as a signed byte.
#[inline(always)]
unsafe fn q5_0_values(xb: &[u8; 22]) -> __m256i {
    let qh = u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]);
    let high = _mm256_andnot_si256(bits_to_bytes32(qh), _mm256_set1_epi8(0xf0u8 as i8));
    _mm256_or_si256(nibbles32(load128(xb, 6)), high)
}

#[inline(always)]
unsafe fn q5_1_values(xb: &[u8; 24]) -> __m256i {
    let qh = u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]);
    let high = _mm256_and_si256(bits_to_bytes32(qh), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles32(load128(xb, 8)), high)
}

#[inline(always)]
unsafe fn iq4_nl_values(xb: &[u8; 18]) -> __m256i {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_LEVELS.as_ptr().cast()));
    _mm256_shuffle_epi8(table, nibbles32(load128(xb, 2)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<18>(qb);
        scale_i8x32(q4_0_values(qb), _mm256_set1_ps(f16_at(qb, 0)), floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_1(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(20).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<20>(qb);
        let d = _mm256_set1_ps(f16_at(qb, 0));
        let m = _mm256_set1_ps(f16_at(qb, 2));
        scale_add_i8x32(nibbles32(load128(qb, 4)), d, m, floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q5_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(22).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<22>(qb);
        scale_i8x32(q5_0_values(qb), _mm256_set1_ps(f16_at(qb, 0)), floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q5_1(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(24).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<24>(qb);
        let d = _mm256_set1_ps(f16_at(qb, 0));
        let m = _mm256_set1_ps(f16_at(qb, 2));
        scale_add_i8x32(q5_1_values(qb), d, m, floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq4_nl(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<18>(qb);
        scale_i8x32(iq4_nl_values(qb), _mm256_set1_ps(f16_at(qb, 0)), floats_mut::<QK>(yb), 0);
    }
}

/// Shared loop of the signed-weight dots with Q8_0: `values` gives the 32 weights
/// (each in [-127, 127]) of a block of `B` bytes.
#[inline(always)]
unsafe fn dot_signed_q8_0<const B: usize>(q: &[u8], yq: &[u8], values: impl Fn(&[u8; B]) -> __m256i) -> f32 {
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut xs = q.chunks_exact(B);
    let mut ys = yq.chunks_exact(Q8_0_BYTES);
    // Two blocks per step, two accumulators: the FMA latency chain halves.
    loop {
        let (Some(x0), Some(y0)) = (xs.next(), ys.next()) else { break };
        let (x0, y0) = (block::<B>(x0), block::<Q8_0_BYTES>(y0));
        let p0 = dot_i8_no_min(load256(y0, 2), values(x0));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x0, 0) * f16_at(y0, 0)), _mm256_cvtepi32_ps(p0), acc0);
        let (Some(x1), Some(y1)) = (xs.next(), ys.next()) else { break };
        let (x1, y1) = (block::<B>(x1), block::<Q8_0_BYTES>(y1));
        let p1 = dot_i8_no_min(load256(y1, 2), values(x1));
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x1, 0) * f16_at(y1, 0)), _mm256_cvtepi32_ps(p1), acc1);
    }
    hsum_ps(_mm256_add_ps(acc0, acc1))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_0(q: &[u8], yq: &[u8]) -> f32 {
    dot_signed_q8_0::<18>(q, yq, |xb| q4_0_values(xb))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_0(q: &[u8], yq: &[u8]) -> f32 {
    dot_signed_q8_0::<22>(q, yq, |xb| q5_0_values(xb))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_nl(q: &[u8], yq: &[u8]) -> f32 {
    dot_signed_q8_0::<18>(q, yq, |xb| iq4_nl_values(xb))
}

/// Shared loop of the unsigned-weight dots with Q8_1: the minimum enters through the
/// activation block's `s = d * sum(q)`.
#[inline(always)]
unsafe fn dot_unsigned_q8_1<const B: usize>(q: &[u8], yq: &[u8], values: impl Fn(&[u8; B]) -> __m256i) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (xb, yb) in q.chunks_exact(B).zip(yq.chunks_exact(Q8_1_BYTES)) {
        let xb = block::<B>(xb);
        let yb = block::<Q8_1_BYTES>(yb);
        let p = sum_pairs(_mm256_maddubs_epi16(values(xb), load256(yb, 4)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(xb, 0) * f16_at(yb, 0)), _mm256_cvtepi32_ps(p), acc);
        summs += f16_at(xb, 2) * f16_at(yb, 2);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_1(q: &[u8], yq: &[u8]) -> f32 {
    dot_unsigned_q8_1::<20>(q, yq, |xb| nibbles32(load128(xb, 4)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_1(q: &[u8], yq: &[u8]) -> f32 {
    dot_unsigned_q8_1::<24>(q, yq, |xb| q5_1_values(xb))
}
