//! IQ3_XXS and IQ3_S with AVX2: the quantizers run the eight-lane trial search of
//! `quant::iq3` (intrinsics; NEON keeps `arch::iq3_lanes`); dequantize and the dots
//! with Q8_K are below.

use std::arch::x86_64::*;

use super::iq2::{gather8_u32, ksigns4, sign_pm1};
use super::kquants::dot_by4;
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::iq3::{S_GRID, XXS_GRID};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, QS as Q8QS};
use crate::reference::{iq3_s, iq3_xxs};
use crate::types::QK_K;

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_iq3_xxs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    // SAFETY: this function's AVX2 is the search's only requirement.
    iq3_xxs::quantize_with(x, q, imat, |v, lat, xb, w| unsafe { super::quant::iq3::quantize_sub_block(v, lat, xb, w) });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_iq3_s(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    // SAFETY: this function's AVX2 is the search's only requirement.
    iq3_s::quantize_with(x, q, imat, |v, lat, xb, w| unsafe { super::quant::iq3::quantize_sub_block(v, lat, xb, w) });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_iq1_m(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    crate::reference::iq1_m::quantize_with(x, q, imat, |xb, w| crate::arch::iq1_fast::iq1_m_sub_block(xb, w));
}

// ------------------------------------------------------- dequantize and dots with Q8_K
//
// A group of 32 values is eight 4-byte grid points (unsigned magnitudes: 4..62 for
// IQ3_XXS, 1..15 for IQ3_S) with signs applied by `sign_epi8`, so it is 32 signed
// bytes without -128. Dequantization converts them and multiplies by the sub-block
// scale: `(-g) * db == -(g * db)` exactly, the reference's rounding. Dots take exact
// `maddubs` products (the magnitude side is |activation|, so -128 is fine), apply the
// odd sub-block multipliers in integers and leave one exact integer per block for
// the shared k-quant block loop.

const XXS: usize = 98;
const XXS_WORDS: usize = 66;
const S: usize = 110;
const S_QH: usize = 66;
const S_SIGNS: usize = 74;
const S_SCALES: usize = 106;

#[inline(always)]
fn word<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Group `ib` of an IQ3_XXS block: 32 signed values and the scale code.
#[inline(always)]
unsafe fn xxs_group(xb: &[u8; XXS], ib: usize) -> (__m256i, u32) {
    let w = word(xb, XXS_WORDS + 4 * ib);
    // byte indices < 256, sign codes masked to 7 bits
    let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(xb.as_ptr().add(2 + 8 * ib).cast()));
    let signs = ksigns4(_mm_set1_epi32(w as i32), _mm_setr_epi32(0, 7, 14, 21));
    (_mm256_sign_epi8(gather8_u32(&XXS_GRID, idx), signs), w >> 28)
}

/// Group `ib` of an IQ3_S block: 32 signed values.
#[inline(always)]
unsafe fn s_group(xb: &[u8; S], ib: usize) -> __m256i {
    let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(xb.as_ptr().add(2 + 8 * ib).cast()));
    // bit k of the high byte becomes bit 8 of index k
    let hi = _mm256_and_si256(
        _mm256_sllv_epi32(_mm256_set1_epi32(xb[S_QH + ib] as i32), _mm256_setr_epi32(8, 7, 6, 5, 4, 3, 2, 1)),
        _mm256_set1_epi32(256),
    );
    // 9-bit indices into the 512 entries
    let g = gather8_u32(&S_GRID, _mm256_or_si256(lo, hi));
    _mm256_sign_epi8(g, sign_pm1(word(xb, S_SIGNS + 4 * ib)))
}

#[inline(always)]
fn s_scale(xb: &[u8; S], ib: usize) -> u32 {
    (xb[S_SCALES + ib / 2] >> (4 * (ib % 2)) & 15) as u32
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq3_xxs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XXS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XXS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let (v, s) = xxs_group(xb, ib);
            scale_i8x32(v, _mm256_set1_ps(d * (0.5 + s as f32) * 0.5), yb, 32 * ib);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq3_s(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(S).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<S>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let db = d * (1 + 2 * s_scale(xb, ib)) as f32;
            scale_i8x32(s_group(xb, ib), _mm256_set1_ps(db), yb, 32 * ib);
        }
    }
}

/// A block's multiplied group sums in 8 i32 lanes; `group` gives the signed values and
/// the odd multiplier of group `ib`.
#[inline(always)]
unsafe fn block_sums<const B: usize>(
    xb: &[u8; B],
    yb: &[u8; Q8K],
    group: impl Fn(&[u8; B], usize) -> (__m256i, i16),
) -> (__m256i, __m256i) {
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for ib in 0..8 {
        let (v, m) = group(xb, ib);
        let p = _mm256_madd_epi16(maddubs_signed(load256(yb, Q8QS + 32 * ib), v), _mm256_set1_epi16(m));
        if ib % 2 == 0 {
            s0 = _mm256_add_epi32(s0, p);
        } else {
            s1 = _mm256_add_epi32(s1, p);
        }
    }
    (_mm256_add_epi32(s0, s1), _mm256_setzero_si256())
}

/// IQ3_XXS x Q8_K: the reference's integer block sums, exact, times `d * yd / 4`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq3_xxs(q: &[u8], yq: &[u8]) -> f32 {
    0.25 * dot_by4::<XXS, false, 0, 0>(q, yq, |xb, yb| {
        block_sums(xb, yb, |xb, ib| {
            let (v, s) = xxs_group(xb, ib);
            (v, 2 * s as i16 + 1)
        })
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq3_s(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<S, false, 0, 0>(q, yq, |xb, yb| {
        block_sums(xb, yb, |xb, ib| (s_group(xb, ib), 2 * s_scale(xb, ib) as i16 + 1))
    })
}
