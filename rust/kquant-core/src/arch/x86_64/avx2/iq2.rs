//! IQ2_XXS, IQ2_XS and IQ2_S: dequantize and dots with Q8_K.
//!
//! Each 32 values are four grid points: four 8-byte table loads make 32 unsigned grid
//! bytes (8, 25 or 43), and the four sign bytes become byte masks that negate them, so
//! a group is 32 signed bytes within ±43. Dequantization multiplies them by the group
//! scale (`(-g) * db == -(g * db)` exactly, so this is the reference's rounding); dots
//! take exact `maddubs` products with the activations (the sign moved onto them) and
//! apply the odd group multipliers `2s + 1` in integers, leaving one exact integer per
//! block for the shared k-quant block loop.

use std::arch::x86_64::*;

use super::kquants::dot_by4;
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::iq2::{GRID_S, GRID_XS, GRID_XXS, KSIGNS};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, QS};
use crate::types::QK_K;

const XXS: usize = 66;
const XS: usize = 74;
const S: usize = 82;

/// Bit `j` of each byte's sign byte, spread: byte `8l + j` of the result tests bit `j`
/// of sign byte `l` (the four sign bytes are the bytes of `signs`).
#[inline(always)]
unsafe fn sign_masks(signs: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(signs as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ),
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits)
}

/// 32 signed grid values: points `idx` of `grid`, negated where the sign bits are set.
#[inline(always)]
unsafe fn signed_group(grid: &[u64], idx: [usize; 4], signs: u32) -> __m256i {
    let g = _mm256_setr_epi64x(grid[idx[0]] as i64, grid[idx[1]] as i64, grid[idx[2]] as i64, grid[idx[3]] as i64);
    let m = sign_masks(signs);
    // (g ^ m) - m negates exactly where m is all ones
    _mm256_sub_epi8(_mm256_xor_si256(g, m), m)
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Group `ib` of an IQ2_XXS block: its signed values and 4-bit scale.
#[inline(always)]
unsafe fn xxs_group(xb: &[u8; XXS], ib: usize) -> (__m256i, u32) {
    let a = word(xb, 2 + 8 * ib);
    let b = word(xb, 6 + 8 * ib);
    let idx = [(a & 255) as usize, (a >> 8 & 255) as usize, (a >> 16 & 255) as usize, (a >> 24) as usize];
    let s = |l: u32| KSIGNS[(b >> (7 * l) & 127) as usize] as u32;
    let signs = s(0) | s(1) << 8 | s(2) << 16 | s(3) << 24;
    (signed_group(&GRID_XXS, idx, signs), b >> 28)
}

#[inline(always)]
unsafe fn xs_group(xb: &[u8; XS], ib: usize) -> __m256i {
    let c = |l: usize| u16::from_le_bytes([xb[2 + 8 * ib + 2 * l], xb[3 + 8 * ib + 2 * l]]) as usize;
    let c = [c(0), c(1), c(2), c(3)];
    let s = |l: usize| KSIGNS[c[l] >> 9] as u32;
    let signs = s(0) | s(1) << 8 | s(2) << 16 | s(3) << 24;
    signed_group(&GRID_XS, [c[0] & 511, c[1] & 511, c[2] & 511, c[3] & 511], signs)
}

const S_QH: usize = 66;
const S_SIGNS: usize = 34;
const SCALES: usize = 66;
const S_SCALES: usize = 74;

#[inline(always)]
unsafe fn s_group(xb: &[u8; S], ib: usize) -> __m256i {
    let qh = xb[S_QH + ib] as usize;
    let idx = |l: usize| xb[2 + 4 * ib + l] as usize | (qh >> (2 * l) & 3) << 8;
    signed_group(&GRID_S, [idx(0), idx(1), idx(2), idx(3)], word(xb, S_SIGNS + 4 * ib))
}

/// `d * (0.5 + s) * 0.25`, the reference's group scale.
#[inline(always)]
fn group_scale(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq2_xxs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XXS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XXS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let (v, s) = xxs_group(xb, ib);
            scale_i8x32(v, _mm256_set1_ps(group_scale(d, s)), yb, 32 * ib);
        }
    }
}

/// The two 16-value halves of a group, each with its own scale (IQ2_XS, IQ2_S).
#[inline(always)]
unsafe fn store_halves(v: __m256i, d: f32, sc: u8, yb: &mut [f32; QK_K], at: usize) {
    let d0 = _mm256_set1_ps(group_scale(d, (sc & 15) as u32));
    let d1 = _mm256_set1_ps(group_scale(d, (sc >> 4) as u32));
    scale_i8x16(_mm256_castsi256_si128(v), d0, yb, at);
    scale_i8x16(_mm256_extracti128_si256(v, 1), d1, yb, at + 16);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq2_xs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            store_halves(xs_group(xb, ib), d, xb[SCALES + ib], yb, 32 * ib);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq2_s(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(S).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<S>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            store_halves(s_group(xb, ib), d, xb[S_SCALES + ib], yb, 32 * ib);
        }
    }
}

/// Multipliers `2s + 1` for the low and high 16 values of a group, as i16 lanes
/// matching `maddubs` pair order (pairs 0..8 are the low half).
#[inline(always)]
unsafe fn mults(sc: u8) -> __m256i {
    let lo = _mm_set1_epi16(2 * (sc & 15) as i16 + 1);
    let hi = _mm_set1_epi16(2 * (sc >> 4) as i16 + 1);
    _mm256_set_m128i(hi, lo)
}

/// A block's scaled group sums in 8 i32 lanes.
#[inline(always)]
unsafe fn block_sums<const B: usize>(
    xb: &[u8; B],
    yb: &[u8; Q8K],
    group: impl Fn(&[u8; B], usize) -> (__m256i, __m256i),
) -> (__m256i, __m256i) {
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for ib in 0..8 {
        let (v, m) = group(xb, ib);
        let p = _mm256_madd_epi16(maddubs_signed(load256(yb, QS + 32 * ib), v), m);
        if ib % 2 == 0 {
            s0 = _mm256_add_epi32(s0, p);
        } else {
            s1 = _mm256_add_epi32(s1, p);
        }
    }
    (_mm256_add_epi32(s0, s1), _mm256_setzero_si256())
}

/// IQ2_XXS x Q8_K: the reference's integer block sum, exact, times `d * yd / 8`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq2_xxs(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_by4::<XXS, false, 0, 0>(q, yq, |xb, yb| {
            block_sums(xb, yb, |xb, ib| {
                let (v, s) = xxs_group(xb, ib);
                (v, _mm256_set1_epi16(2 * s as i16 + 1))
            })
        })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq2_xs(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_by4::<XS, false, 0, 0>(q, yq, |xb, yb| {
            block_sums(xb, yb, |xb, ib| (xs_group(xb, ib), mults(xb[SCALES + ib])))
        })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq2_s(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_by4::<S, false, 0, 0>(q, yq, |xb, yb| {
            block_sums(xb, yb, |xb, ib| (s_group(xb, ib), mults(xb[S_SCALES + ib])))
        })
}
