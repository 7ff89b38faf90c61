//! The 256-value formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS: dequantize and their
//! dots with Q8_K.
//!
//! Dots keep every weight unsigned and small (offsets are subtracted as separate
//! `maddubs` of the offset with the activations), or put the sign on the weight side
//! (IQ4_XS), so the int8 products are exact for any Q8_K bytes, -128 included.
//! Sub-block scales live in registers as i16 and are spread with byte shuffles.
//! Dequantization rounds exactly as the reference: per-group scale products first
//! (lane-wise, the same single rounding), then `scale * q` and `- min` as separate
//! roundings (never fused).

#![allow(clippy::needless_range_loop)] // loops over halves index several per-half tables

use std::arch::x86_64::*;

use super::legacy::IQ4NL_LEVELS;
use super::util::*;
use crate::arch::{block, floats_mut, k4_scales_mins_packed, q3k_scales_packed};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, BSUMS, QS};
use crate::types::QK_K;

const Q2K: usize = 84;
const Q3K: usize = 110;
const Q4K: usize = 144;
const Q5K: usize = 176;
const Q6K: usize = 210;
const IQ4XS: usize = 136;

#[inline(always)]
fn scales_12<const N: usize>(b: &[u8; N], at: usize) -> [u8; 12] {
    b[at..at + 12].try_into().unwrap()
}

/// Shuffle controls: `PICK[lo][hi]` spreads i16 number `lo` (0..8) of each 128-bit
/// lane over the low lane and number `hi` over the high lane.
static PICK: [[[u8; 32]; 8]; 8] = {
    let mut t = [[[0u8; 32]; 8]; 8];
    let mut lo = 0;
    while lo < 8 {
        let mut hi = 0;
        while hi < 8 {
            let mut k = 0;
            while k < 16 {
                t[lo][hi][k] = (2 * lo + k % 2) as u8;
                t[lo][hi][16 + k] = (2 * hi + k % 2) as u8;
                k += 1;
            }
            hi += 1;
        }
        lo += 1;
    }
    t
};

#[inline(always)]
unsafe fn pick16(lo: usize, hi: usize) -> __m256i {
    _mm256_loadu_si256(PICK[lo][hi].as_ptr().cast())
}

/// Sixteen i8 scales widened to i16, as two registers holding scales 0..8 and 8..16
/// in both lanes (ready for `pick16`).
#[inline(always)]
unsafe fn scale_regs(s8: __m128i) -> [__m256i; 2] {
    let all = _mm256_cvtepi8_epi16(s8);
    [_mm256_permute4x64_epi64(all, 0b01_00_01_00), _mm256_permute4x64_epi64(all, 0b11_10_11_10)]
}

/// Eight unsigned byte scales (the bytes of `s`) as i16 in both lanes.
#[inline(always)]
unsafe fn scale_reg8(s: u64) -> __m256i {
    _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(s as i64)))
}

/// Lane `i` of `v` in all lanes.
#[inline(always)]
unsafe fn lane(v: __m256, i: usize) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i as i32))
}

/// Eight unsigned bytes (of `s`) times `d`, lane-wise: the reference's `d * sc as f32`.
#[inline(always)]
unsafe fn scaled8(d: f32, s: u64) -> __m256 {
    _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(s as i64))))
}

/// Eight signed bytes (of `s`) times `d`, lane-wise.
#[inline(always)]
unsafe fn scaled8_signed(d: f32, s: __m128i) -> __m256 {
    _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s)))
}

/// 16 bytes as 16 floats `d * q - m`, no FMA.
#[inline(always)]
unsafe fn scale_sub_i8x16<const N: usize>(q: __m128i, d: __m256, m: __m256, y: &mut [f32; N], at: usize) {
    let f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    let f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    storeps(y, at, _mm256_sub_ps(_mm256_mul_ps(d, f0), m));
    storeps(y, at + 8, _mm256_sub_ps(_mm256_mul_ps(d, f1), m));
}

// ---------------------------------------------------------------- shared dot driver

/// The f16 at `at` of four blocks, widened (assembled in a general register).
#[inline(always)]
unsafe fn f16x4<const B: usize>(b: &[&[u8; B]; 4], at: usize) -> __m128 {
    let h = |k: usize| u16::from_le_bytes([b[k][at], b[k][at + 1]]) as u64;
    _mm_cvtph_ps(_mm_cvtsi64_si128((h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48) as i64))
}

/// The Q8_K scales of four blocks.
#[inline(always)]
unsafe fn yd4(yb: &[&[u8; Q8K]; 4]) -> __m128 {
    _mm_setr_ps(f32_at(yb[0], 0), f32_at(yb[1], 0), f32_at(yb[2], 0), f32_at(yb[3], 0))
}

/// Eight i32 lanes of four blocks each to the four block totals, as f64 (exact).
#[inline(always)]
unsafe fn totals4(v: [__m256i; 4]) -> __m256d {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm256_cvtepi32_pd(_mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)))
}

/// Four blocks at once: the f64 terms `d * yd * isum - dmin * yd * summ`.
#[inline(always)]
unsafe fn group4<const B: usize, const MIN: bool, const D: usize, const DMIN: usize>(
    xb: [&[u8; B]; 4],
    yb: [&[u8; Q8K]; 4],
    sums: &impl Fn(&[u8; B], &[u8; Q8K]) -> (__m256i, __m256i),
) -> __m256d {
    // Four explicit calls: a closure inside `array::from_fn` would lose AVX2.
    let s = [sums(xb[0], yb[0]), sums(xb[1], yb[1]), sums(xb[2], yb[2]), sums(xb[3], yb[3])];
    let yd = _mm256_cvtps_pd(yd4(&yb));
    // f16 x f32 products are exact in f64.
    let d = _mm256_mul_pd(_mm256_cvtps_pd(f16x4(&xb, D)), yd);
    let t = _mm256_mul_pd(d, totals4([s[0].0, s[1].0, s[2].0, s[3].0]));
    if MIN {
        let dmin = _mm256_mul_pd(_mm256_cvtps_pd(f16x4(&xb, DMIN)), yd);
        _mm256_sub_pd(t, _mm256_mul_pd(dmin, totals4([s[0].1, s[1].1, s[2].1, s[3].1])))
    } else {
        t
    }
}

/// The block loop of the k-quant dots. `sums` gives a block's exact integer sums in 8
/// i32 lanes: the scaled levels against the activations and, with `MIN`, the mins
/// against the Q8_K block sums. Four blocks go at a time; each block's totals are
/// reduced exactly and scaled in f64 by its f16 scales (at `D`, `DMIN`) times the Q8_K
/// scale, and the terms are summed in f64.
///
/// The reference rounds the scale products to f32 and adds eight partial float lanes
/// per block. In formats with a minimum, the scale and min parts can cancel to a tiny
/// fraction of their size, and every f32 evaluation order then lands in a different
/// place (ggml's scalar and AVX2 dots included); this one is exact up to the final
/// rounding, so it agrees with a float64 dot of the dequantized rows.
#[inline(always)]
pub(super) unsafe fn dot_by4<const B: usize, const MIN: bool, const D: usize, const DMIN: usize>(
    q: &[u8],
    yq: &[u8],
    sums: impl Fn(&[u8; B], &[u8; Q8K]) -> (__m256i, __m256i),
) -> f32 {
    let mut acc = _mm256_setzero_pd();
    let mut xs = q.chunks_exact(4 * B);
    let mut ys = yq.chunks_exact(4 * Q8K);
    for (x4, y4) in xs.by_ref().zip(ys.by_ref()) {
        let xb = std::array::from_fn(|k| block::<B>(&x4[k * B..(k + 1) * B]));
        let yb = std::array::from_fn(|k| block::<Q8K>(&y4[k * Q8K..(k + 1) * Q8K]));
        acc = _mm256_add_pd(acc, group4::<B, MIN, D, DMIN>(xb, yb, &sums));
    }
    let (xr, yr) = (xs.remainder(), ys.remainder());
    let left = (xr.len() / B).min(yr.len() / Q8K);
    if left > 0 {
        // Pad with copies of the first block and keep only the real lanes.
        let xb = std::array::from_fn(|k| block::<B>(&xr[k.min(left - 1) * B..][..B]));
        let yb = std::array::from_fn(|k| block::<Q8K>(&yr[k.min(left - 1) * Q8K..][..Q8K]));
        let keep =
            _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(left as i64), _mm256_setr_epi64x(0, 1, 2, 3)));
        acc = _mm256_add_pd(acc, _mm256_and_pd(keep, group4::<B, MIN, D, DMIN>(xb, yb, &sums)));
    }
    hsum_pd(acc) as f32
}

// ---------------------------------------------------------------- Q4_K / Q5_K

/// The two 32-value halves (low and high nibbles) of 64-value group `j`, unsigned.
#[inline(always)]
unsafe fn q4k_group(xb: &[u8; Q4K], j: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let bits = load256(xb, 16 + 32 * j);
    (_mm256_and_si256(bits, m4), _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4))
}

/// Q5_K group `j`; `qh` holds the high-bit bytes already shifted right by `2 * j`.
#[inline(always)]
unsafe fn q5k_group(xb: &[u8; Q5K], j: usize, qh: __m256i) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let bits = load256(xb, 48 + 32 * j);
    let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(1)), 4);
    let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(2)), 3);
    (
        _mm256_or_si256(_mm256_and_si256(bits, m4), h0),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q4K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q4K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let (sc, m) = k4_scales_mins_packed(&scales_12(xb, 4));
        let ds = scaled8(f16_at(xb, 0), sc);
        let ms = scaled8(f16_at(xb, 2), m);
        for j in 0..4 {
            let (lo, hi) = q4k_group(xb, j);
            scale_sub_i8x32(lo, lane(ds, 2 * j), lane(ms, 2 * j), yb, 64 * j);
            scale_sub_i8x32(hi, lane(ds, 2 * j + 1), lane(ms, 2 * j + 1), yb, 64 * j + 32);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q5_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q5K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q5K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let (sc, m) = k4_scales_mins_packed(&scales_12(xb, 4));
        let ds = scaled8(f16_at(xb, 0), sc);
        let ms = scaled8(f16_at(xb, 2), m);
        let mut qh = load256(xb, 16);
        for j in 0..4 {
            let (lo, hi) = q5k_group(xb, j, qh);
            qh = _mm256_srli_epi16(qh, 2);
            scale_sub_i8x32(lo, lane(ds, 2 * j), lane(ms, 2 * j), yb, 64 * j);
            scale_sub_i8x32(hi, lane(ds, 2 * j + 1), lane(ms, 2 * j + 1), yb, 64 * j + 32);
        }
    }
}

/// One Q4_K / Q5_K block: levels times scales, and `sum_k (bsum[2k] + bsum[2k+1]) *
/// mins[k]` (one min per 32 values), each in 8 i32 lanes.
#[inline(always)]
unsafe fn k4_sums<const B: usize, const QH: bool>(
    xb: &[u8; B],
    yb: &[u8; Q8K],
    groups: impl Fn(&[u8; B], usize, __m256i) -> (__m256i, __m256i),
) -> (__m256i, __m256i) {
    let (sc, m) = k4_scales_mins_packed(&scales_12(xb, 4));
    let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_cvtsi64_si128(m as i64), _mm_cvtsi64_si128(m as i64)));
    let summ = _mm256_madd_epi16(load256(yb, BSUMS), mins);
    let scales = scale_reg8(sc);
    let mut qh = if QH { load256(xb, 16) } else { _mm256_setzero_si256() };
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for j in 0..4 {
        let (lo, hi) = groups(xb, j, qh);
        if QH {
            qh = _mm256_srli_epi16(qh, 2);
        }
        let pl = _mm256_maddubs_epi16(lo, load256(yb, QS + 64 * j));
        let ph = _mm256_maddubs_epi16(hi, load256(yb, QS + 64 * j + 32));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(pl, _mm256_shuffle_epi8(scales, pick16(2 * j, 2 * j))));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(ph, _mm256_shuffle_epi8(scales, pick16(2 * j + 1, 2 * j + 1))));
    }
    (_mm256_add_epi32(s0, s1), summ)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<Q4K, true, 0, 2>(q, yq, |xb, yb| k4_sums::<Q4K, false>(xb, yb, |xb, j, _| q4k_group(xb, j)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<Q5K, true, 0, 2>(q, yq, |xb, yb| k4_sums::<Q5K, true>(xb, yb, |xb, j, qh| q5k_group(xb, j, qh)))
}

// ---------------------------------------------------------------- Q6_K

/// The four 32-byte groups of one 128-value half of a Q6_K block, unsigned 0..63.
#[inline(always)]
unsafe fn q6_values(xb: &[u8; Q6K], n: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x30);
    let l0 = load256(xb, 64 * n);
    let l1 = load256(xb, 64 * n + 32);
    let h = load256(xb, 128 + 32 * n);
    let h0 = _mm256_and_si256(_mm256_slli_epi16(h, 4), m2);
    let h1 = _mm256_and_si256(_mm256_slli_epi16(h, 2), m2);
    let h2 = _mm256_and_si256(h, m2);
    let h3 = _mm256_and_si256(_mm256_srli_epi16(h, 2), m2);
    [
        _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
        _mm256_or_si256(_mm256_and_si256(l1, m4), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q6_k(q: &[u8], y: &mut [f32]) {
    let off = _mm256_set1_epi8(32);
    for (xb, yb) in q.chunks_exact(Q6K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q6K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 208);
        let sc = load128(xb, 192);
        let ds = [scaled8_signed(d, sc), scaled8_signed(d, _mm_srli_si128(sc, 8))];
        for n in 0..2 {
            let v = q6_values(xb, n);
            for (k, vk) in v.into_iter().enumerate() {
                let s = _mm256_sub_epi8(vk, off);
                let at = 128 * n + 32 * k;
                scale_i8x16(_mm256_castsi256_si128(s), lane(ds[n], 2 * k), yb, at);
                scale_i8x16(_mm256_extracti128_si256(s, 1), lane(ds[n], 2 * k + 1), yb, at + 16);
            }
        }
    }
}

/// One Q6_K block's scaled level sums. The levels' offset of 32 is taken out once per
/// block through the Q8_K block sums (`32 * sum_g scale_g * bsum_g`), as ggml's NEON
/// kernel does; like every Q8_K consumer this relies on the sums matching the quants.
#[inline(always)]
unsafe fn q6k_sums(xb: &[u8; Q6K], yb: &[u8; Q8K]) -> (__m256i, __m256i) {
    let sc8 = load128(xb, 192);
    let scales = scale_regs(sc8);
    let offset = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load256(yb, BSUMS)), 5);
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_sub_epi32(_mm256_setzero_si256(), offset);
    for n in 0..2 {
        let v = q6_values(xb, n);
        for (k, vk) in v.into_iter().enumerate() {
            let p = _mm256_maddubs_epi16(vk, load256(yb, QS + 128 * n + 32 * k));
            let p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales[n], pick16(2 * k, 2 * k + 1)));
            if k % 2 == 0 {
                s0 = _mm256_add_epi32(s0, p);
            } else {
                s1 = _mm256_add_epi32(s1, p);
            }
        }
    }
    (_mm256_add_epi32(s0, s1), _mm256_setzero_si256())
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<Q6K, false, 208, 0>(q, yq, |xb, yb| q6k_sums(xb, yb))
}

// ---------------------------------------------------------------- Q2_K

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q2_k(q: &[u8], y: &mut [f32]) {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    for (xb, yb) in q.chunks_exact(Q2K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q2K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 80);
        let min = f16_at(xb, 82);
        let sc = load128(xb, 0);
        let lo = _mm_and_si128(sc, m4);
        let hi = _mm_and_si128(_mm_srli_epi16(sc, 4), m4);
        let ds = [scaled8_signed(d, lo), scaled8_signed(d, _mm_srli_si128(lo, 8))];
        let ms = [scaled8_signed(min, hi), scaled8_signed(min, _mm_srli_si128(hi, 8))];
        for n in 0..2 {
            let mut bits = load256(xb, 16 + 32 * n);
            for j in 0..4 {
                let v = _mm256_and_si256(bits, m3);
                bits = _mm256_srli_epi16(bits, 2);
                let at = 128 * n + 32 * j;
                let (g0, g1) = (2 * j, 2 * j + 1);
                scale_sub_i8x16(_mm256_castsi256_si128(v), lane(ds[n], g0), lane(ms[n], g0), yb, at);
                scale_sub_i8x16(_mm256_extracti128_si256(v, 1), lane(ds[n], g1), lane(ms[n], g1), yb, at + 16);
            }
        }
    }
}

/// One Q2_K block against its Q8_K block: the scaled level sums and the min sums,
/// each exact in 8 i32 lanes.
#[inline(always)]
unsafe fn q2k_sums(xb: &[u8; Q2K], yb: &[u8; Q8K]) -> (__m256i, __m256i) {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let sc = load128(xb, 0);
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
    let summ = _mm256_madd_epi16(load256(yb, BSUMS), mins);
    let scales = scale_regs(_mm_and_si128(sc, m4));
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for n in 0..2 {
        let mut bits = load256(xb, 16 + 32 * n);
        for j in 0..4 {
            let v = _mm256_and_si256(bits, m3);
            bits = _mm256_srli_epi16(bits, 2);
            let p = _mm256_maddubs_epi16(v, load256(yb, QS + 128 * n + 32 * j));
            let p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales[n], pick16(2 * j, 2 * j + 1)));
            if j % 2 == 0 {
                s0 = _mm256_add_epi32(s0, p);
            } else {
                s1 = _mm256_add_epi32(s1, p);
            }
        }
    }
    (_mm256_add_epi32(s0, s1), summ)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q2_k(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<Q2K, true, 80, 82>(q, yq, |xb, yb| q2k_sums(xb, yb))
}

// ---------------------------------------------------------------- Q3_K

#[inline(always)]
unsafe fn q3_scales(xb: &[u8; Q3K]) -> __m128i {
    let s = q3k_scales_packed(&scales_12(xb, 96));
    _mm_sub_epi8(_mm_set_epi64x((s >> 64) as i64, s as i64), _mm_set1_epi8(32))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q3_k(q: &[u8], y: &mut [f32]) {
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let one = _mm256_set1_epi8(1);
    for (xb, yb) in q.chunks_exact(Q3K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q3K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 108);
        let sc = q3_scales(xb);
        let ds = [scaled8_signed(d, sc), scaled8_signed(d, _mm_srli_si128(sc, 8))];
        let mut hb = load256(xb, 0);
        for n in 0..2 {
            let mut bits = load256(xb, 32 + 32 * n);
            for j in 0..4 {
                // 4 where the high bit is clear.
                let sub = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, one), _mm256_setzero_si256()), four);
                hb = _mm256_srli_epi16(hb, 1);
                let v = _mm256_sub_epi8(_mm256_and_si256(bits, m3), sub);
                bits = _mm256_srli_epi16(bits, 2);
                let at = 128 * n + 32 * j;
                scale_i8x16(_mm256_castsi256_si128(v), lane(ds[n], 2 * j), yb, at);
                scale_i8x16(_mm256_extracti128_si256(v, 1), lane(ds[n], 2 * j + 1), yb, at + 16);
            }
        }
    }
}

/// One Q3_K block's scaled level sums.
#[inline(always)]
unsafe fn q3k_sums(xb: &[u8; Q3K], yb: &[u8; Q8K]) -> (__m256i, __m256i) {
    let m3 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let scales = scale_regs(q3_scales(xb));
    let mut hb = load256(xb, 0);
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for n in 0..2 {
        let mut bits = load256(xb, 32 + 32 * n);
        for j in 0..4 {
            let lo = _mm256_and_si256(bits, m3);
            bits = _mm256_srli_epi16(bits, 2);
            // 4 where the high bit is clear.
            let sub = _mm256_slli_epi16(_mm256_andnot_si256(hb, one), 2);
            hb = _mm256_srli_epi16(hb, 1);
            let y = load256(yb, QS + 128 * n + 32 * j);
            let p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, y), _mm256_maddubs_epi16(sub, y));
            let p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales[n], pick16(2 * j, 2 * j + 1)));
            if j % 2 == 0 {
                s0 = _mm256_add_epi32(s0, p);
            } else {
                s1 = _mm256_add_epi32(s1, p);
            }
        }
    }
    (_mm256_add_epi32(s0, s1), _mm256_setzero_si256())
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q3_k(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<Q3K, false, 108, 0>(q, yq, |xb, yb| q3k_sums(xb, yb))
}

// ---------------------------------------------------------------- IQ4_XS

/// The 8 six-bit scales of an IQ4_XS block minus 32, as 8 signed bytes.
#[inline(always)]
unsafe fn iq4xs_scales8(xb: &[u8; IQ4XS]) -> __m128i {
    let sh = u16::from_le_bytes([xb[2], xb[3]]) as u64;
    let sl = u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]) as u64;
    // Sub-block ib: low nibble from sl (nibble ib), two high bits from sh.
    let mut packed = 0u64;
    for ib in 0..8 {
        let ls = ((sl >> (4 * ib)) & 0x0f) | (((sh >> (2 * ib)) & 3) << 4);
        packed |= ls << (8 * ib);
    }
    _mm_sub_epi8(_mm_cvtsi64_si128(packed as i64), _mm_set1_epi8(32))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq4_xs(q: &[u8], y: &mut [f32]) {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_LEVELS.as_ptr().cast()));
    for (xb, yb) in q.chunks_exact(IQ4XS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<IQ4XS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let ds = scaled8_signed(f16_at(xb, 0), iq4xs_scales8(xb));
        for ib in 0..8 {
            let v = _mm256_shuffle_epi8(table, nibbles32(load128(xb, 8 + 16 * ib)));
            scale_i8x32(v, lane(ds, ib), yb, 32 * ib);
        }
    }
}

/// One IQ4_XS block's scaled level sums: signed levels, the sign moved onto the
/// activations so that `maddubs` stays exact.
#[inline(always)]
unsafe fn iq4xs_sums(xb: &[u8; IQ4XS], yb: &[u8; Q8K]) -> (__m256i, __m256i) {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_LEVELS.as_ptr().cast()));
    let scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(iq4xs_scales8(xb)));
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for ib in 0..8 {
        let x = _mm256_shuffle_epi8(table, nibbles32(load128(xb, 8 + 16 * ib)));
        let p = maddubs_signed(load256(yb, QS + 32 * ib), x);
        let p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick16(ib, ib)));
        if ib % 2 == 0 {
            s0 = _mm256_add_epi32(s0, p);
        } else {
            s1 = _mm256_add_epi32(s1, p);
        }
    }
    (_mm256_add_epi32(s0, s1), _mm256_setzero_si256())
}

/// IQ4_XS x Q8_K. The reference rounds one float term per 32 values; here the
/// sub-block scales are applied in integers.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_xs(q: &[u8], yq: &[u8]) -> f32 {
    dot_by4::<IQ4XS, false, 0, 0>(q, yq, |xb, yb| iq4xs_sums(xb, yb))
}
