//! IQ1_S and IQ1_M: dequantize and dots with Q8_K.
//!
//! A group of 8 values is one grid point of bytes -1, 0, 1 (one 8-byte table load)
//! plus a shift of ±1/8. Eight times a value, `8g ± 1`, is a byte within ±9, so 32
//! values are 32 signed bytes: `sign_epi8(8, g)` makes `8g` and the shift adds ±1.
//! Dequantization multiplies them by `dl / 8`: scaling by a power of two is exact here
//! (`dl` is an f16 times an odd integer below 16, far from the f32 limits), so
//! `(dl / 8) * (8g ± 1)` rounds as the reference's `dl * (g ± 1/8)`.
//!
//! Dots keep the reference's two integer sums, combined exactly as `8 sumi + sumi1`:
//! the grid part with `maddubs` on |activation| (exact for any Q8_K byte, -128 too),
//! and the shift part from the same data the reference reads: Q8_K's block sums for
//! IQ1_S, the activations themselves for IQ1_M (there the shift rides along in the
//! `8g ± 1` bytes).

use std::arch::x86_64::*;

use super::iq2::{bytes4, gather4_u64, grid_pair, high_bits, pick_lane};
use super::kquants::dot_by4;
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::iq1::{CODES_2048, GRID};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, BSUMS, QS as Q8QS};
use crate::types::QK_K;

const S: usize = 50;
const S_QH: usize = 34;
const M: usize = 56;
const M_QH: usize = 32;
const M_SCALES: usize = 48;

#[inline(always)]
fn u16_at<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// `8g + 1` for every grid point `g` (indices 0..2048) and `8g - 1` (the same points
/// at 2048..4096): an index with the shift-down bit as bit 11 gives a group's eight
/// times shifted values in one load.
static GRID_SHIFTED: [u64; 4096] = {
    let mut t = [0u64; 4096];
    let mut k = 0;
    while k < 4096 {
        let mut j = 0;
        while j < 8 {
            let level = (CODES_2048[k % 2048] >> (2 * j) & 3) as i8;
            let v = 8 * (level - 1) + if k < 2048 { 1 } else { -1 };
            t[k] |= (v as u8 as u64) << (8 * j);
            j += 1;
        }
        k += 1;
    }
    t
};

#[inline(always)]
fn word<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Four grid points as 32 bytes of -1, 0, 1: index `l` is byte `l` of `lo` with bits
/// `shift[l]..shift[l] + 3` of `hi` on top (11 bits, inside the 2048 entries).
#[inline(always)]
unsafe fn grid4(lo: u32, hi: u32, shift: __m128i) -> __m256i {
    let h = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(hi as i32), shift), _mm_set1_epi32(7));
    gather4_u64(&GRID, _mm_or_si128(bytes4(lo), _mm_slli_epi32(h, 8)))
}

/// Group `ib` of an IQ1_S block: its grid points (bytes -1, 0, 1) and the `qh` word.
#[inline(always)]
unsafe fn s_group(xb: &[u8; S], ib: usize) -> (__m256i, u16) {
    let h = u16_at(xb, S_QH + 2 * ib);
    (grid4(word(xb, 2 + 4 * ib), h as u32, _mm_setr_epi32(0, 3, 6, 9)), h)
}

/// Group `ib` of an IQ1_M block as `8g ± 1` bytes. Each group's nibble of the `qh`
/// pair holds its 3 high index bits and (bit 3) the shift-down flag, so nibble `l`
/// shifted to bit 8 indexes `GRID_SHIFTED` directly (12 bits).
#[inline(always)]
unsafe fn m_group(xb: &[u8; M], ib: usize) -> __m256i {
    let h = _mm_srlv_epi32(_mm_set1_epi32(u16_at(xb, M_QH + 2 * ib) as i32), _mm_setr_epi32(0, 4, 8, 12));
    let hi = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(15)), 8);
    gather4_u64(&GRID_SHIFTED, _mm_or_si128(bytes4(word(xb, 4 * ib)), hi))
}

/// The sixteen odd scales `2 ls + 1` of an IQ1_M block as i16: lane `ib` of the low
/// half is the scale of values `32 ib..32 ib + 16`, of the high half `32 ib + 16..`.
/// Field `f` of group `ib` sits at bit `6 (ib % 2) + 3 f` of scale word `ib / 2`; a
/// multiply moves it to the top three bits.
#[inline(always)]
unsafe fn m_scale_reg(xb: &[u8; M]) -> __m256i {
    let sc = _mm256_set1_epi64x(i64::from_le_bytes(xb[M_SCALES..M_SCALES + 8].try_into().unwrap()));
    let words = _mm256_shuffle_epi8(
        sc,
        _mm256_setr_epi8(
            0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7,
        ),
    );
    let up = _mm256_setr_epi16(
        1 << 13,
        1 << 7,
        1 << 13,
        1 << 7,
        1 << 13,
        1 << 7,
        1 << 13,
        1 << 7,
        1 << 10,
        1 << 4,
        1 << 10,
        1 << 4,
        1 << 10,
        1 << 4,
        1 << 10,
        1 << 4,
    );
    let f = _mm256_srli_epi16(_mm256_mullo_epi16(words, up), 13);
    _mm256_or_si256(_mm256_slli_epi16(f, 1), _mm256_set1_epi16(1))
}

/// `8g + shift` for grid bytes `g` and shifts of ±1.
#[inline(always)]
unsafe fn eight_g_plus(g: __m256i, shift: __m256i) -> __m256i {
    _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), g), shift)
}

/// The odd scale `2 ls + 1` of an IQ1_S `qh` word.
#[inline(always)]
fn s_scale(h: u16) -> i32 {
    2 * (h >> 12 & 7) as i32 + 1
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq1_s(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(S).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<S>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let (g, h) = s_group(xb, ib);
            let shift = _mm256_set1_epi8(if h & 0x8000 != 0 { -1 } else { 1 });
            let dl = d * s_scale(h) as f32;
            scale_i8x32(eight_g_plus(g, shift), _mm256_set1_ps(dl * 0.125), yb, 32 * ib);
        }
    }
}

/// The f16 super-scale of an IQ1_M block, spread over the top nibbles of its scale words.
#[inline(always)]
fn m_d_bits(xb: &[u8; M]) -> u16 {
    let sc = |j: usize| u16_at(xb, M_SCALES + 2 * j);
    (sc(0) >> 12) | (sc(1) >> 8 & 0x00f0) | (sc(2) >> 4 & 0x0f00) | (sc(3) & 0xf000)
}

/// The two odd scales `2 ls + 1` of 32-value group `ib` (values 0..16 and 16..32).
#[inline(always)]
fn m_scales(xb: &[u8; M], ib: usize) -> (i32, i32) {
    let w = u16_at(xb, M_SCALES + 2 * (ib / 2)) >> (6 * (ib % 2));
    (2 * (w & 7) as i32 + 1, 2 * (w >> 3 & 7) as i32 + 1)
}

#[inline(always)]
unsafe fn f16_to_f32(h: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq1_m(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(M).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<M>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_to_f32(m_d_bits(xb));
        for ib in 0..8 {
            let v = m_group(xb, ib);
            let (l0, l1) = m_scales(xb, ib);
            let d0 = _mm256_set1_ps(d * l0 as f32 * 0.125);
            let d1 = _mm256_set1_ps(d * l1 as f32 * 0.125);
            scale_i8x16(_mm256_castsi256_si128(v), d0, yb, 32 * ib);
            scale_i8x16(_mm256_extracti128_si256(v, 1), d1, yb, 32 * ib + 16);
        }
    }
}

/// IQ1_S block sums: `8 sumi + sumi1` of the reference in 8 i32 lanes.
#[inline(always)]
unsafe fn s_block_sums(xb: &[u8; S], yb: &[u8; Q8K]) -> (__m256i, __m256i) {
    let qh = _mm_loadu_si128(xb.as_ptr().add(S_QH).cast());
    let ls =
        _mm_add_epi16(_mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(qh, 12), _mm_set1_epi16(7)), 1), _mm_set1_epi16(1));
    let ls8 = _mm256_broadcastsi128_si256(_mm_slli_epi16(ls, 3));
    let hs = high_bits(qh);
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for ib in (0..8).step_by(2) {
        let shift = _mm256_setr_epi32(8, 11, 14, 17, 8, 11, 14, 17);
        let (g0, g1) = grid_pair(&GRID, xb, 2 + 4 * ib, hs, ib, shift, 0x700);
        let p0 = maddubs_signed(load256(yb, Q8QS + 32 * ib), g0);
        let p1 = maddubs_signed(load256(yb, Q8QS + 32 * ib + 32), g1);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, pick_lane(ls8, ib)));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, pick_lane(ls8, ib + 1)));
    }
    // The shift part: each sub-block's two Q8_K block sums times ±(2 ls + 1); the
    // sign of the qh word is the shift's sign (`| 1` keeps a zero word positive).
    let f = _mm_sign_epi16(ls, _mm_or_si128(qh, _mm_set1_epi16(1)));
    let f = _mm256_set_m128i(_mm_unpackhi_epi16(f, f), _mm_unpacklo_epi16(f, f));
    let shift = _mm256_madd_epi16(load256(yb, BSUMS), f);
    (_mm256_add_epi32(_mm256_add_epi32(s0, s1), shift), _mm256_setzero_si256())
}

/// IQ1_S x Q8_K: `d * yd * (sumi + sumi1 / 8)` with exact integer sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq1_s(q: &[u8], yq: &[u8]) -> f32 {
    0.125 * dot_by4::<S, false, 0, 0>(q, yq, |xb, yb| s_block_sums(xb, yb))
}

/// IQ1_M block sums: `8 sumi1 + sumi2` of the reference in 8 i32 lanes.
#[inline(always)]
unsafe fn m_block_sums(xb: &[u8; M], yb: &[u8; Q8K]) -> __m256i {
    let scales = m_scale_reg(xb);
    // each group's nibble: 3 high index bits and the shift-down flag as bit 11
    let hs = high_bits(_mm_loadu_si128(xb.as_ptr().add(M_QH).cast()));
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for ib in (0..8).step_by(2) {
        let shift = _mm256_setr_epi32(8, 12, 16, 20, 8, 12, 16, 20);
        let (g0, g1) = grid_pair(&GRID_SHIFTED, xb, 4 * ib, hs, ib, shift, 0xf00);
        let p0 = maddubs_signed(load256(yb, Q8QS + 32 * ib), g0);
        let p1 = maddubs_signed(load256(yb, Q8QS + 32 * ib + 32), g1);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, pick_lane(scales, ib)));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, pick_lane(scales, ib + 1)));
    }
    _mm256_add_epi32(s0, s1)
}

/// Eight i32 lanes of four blocks each to the four block totals, as f64 (exact).
#[inline(always)]
unsafe fn totals4(v: [__m256i; 4]) -> __m256d {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm256_cvtepi32_pd(_mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)))
}

/// Four IQ1_M blocks at once: the f64 terms `d * yd * (8 sumi1 + sumi2)`.
#[inline(always)]
unsafe fn m_terms4(xb: [&[u8; M]; 4], yb: [&[u8; Q8K]; 4]) -> __m256d {
    let s = [
        m_block_sums(xb[0], yb[0]),
        m_block_sums(xb[1], yb[1]),
        m_block_sums(xb[2], yb[2]),
        m_block_sums(xb[3], yb[3]),
    ];
    let h = |k: usize| m_d_bits(xb[k]) as u64;
    let d = _mm_cvtph_ps(_mm_cvtsi64_si128((h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48) as i64));
    let yd = _mm_setr_ps(f32_at(yb[0], 0), f32_at(yb[1], 0), f32_at(yb[2], 0), f32_at(yb[3], 0));
    // f16 x f32 products are exact in f64
    let dd = _mm256_mul_pd(_mm256_cvtps_pd(d), _mm256_cvtps_pd(yd));
    _mm256_mul_pd(dd, totals4(s))
}

/// IQ1_M x Q8_K: `d * yd * (sumi1 + sumi2 / 8)`. Like the k-quant block loop (four
/// blocks at a time, exact totals, f64 terms), with the super-scale assembled from
/// the scale words.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq1_m(q: &[u8], yq: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_pd();
    let mut xs = q.chunks_exact(4 * M);
    let mut ys = yq.chunks_exact(4 * Q8K);
    for (x4, y4) in xs.by_ref().zip(ys.by_ref()) {
        let xb = [0, 1, 2, 3].map(|k| block::<M>(&x4[k * M..(k + 1) * M]));
        let yb = [0, 1, 2, 3].map(|k| block::<Q8K>(&y4[k * Q8K..(k + 1) * Q8K]));
        acc = _mm256_add_pd(acc, m_terms4(xb, yb));
    }
    let (xr, yr) = (xs.remainder(), ys.remainder());
    let left = (xr.len() / M).min(yr.len() / Q8K);
    if left > 0 {
        // Pad with copies of the first block and keep only the real lanes.
        let xb = [0, 1, 2, 3].map(|k| block::<M>(&xr[k.min(left - 1) * M..][..M]));
        let yb = [0, 1, 2, 3].map(|k| block::<Q8K>(&yr[k.min(left - 1) * Q8K..][..Q8K]));
        let keep =
            _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(left as i64), _mm256_setr_epi64x(0, 1, 2, 3)));
        acc = _mm256_add_pd(acc, _mm256_and_pd(keep, m_terms4(xb, yb)));
    }
    (0.125 * hsum_pd(acc)) as f32
}
