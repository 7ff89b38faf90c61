//! IQ2_XXS, IQ2_XS and IQ2_S: dequantize and dots with Q8_K, plus the sign and grid
//! helpers the other lattice formats (IQ3, IQ1) share.
//!
//! Each 16 values are two 8-byte grid points (unsigned, 8, 25 or 43), combined into
//! one vector, and their two sign bytes become byte masks that negate them, giving 16
//! signed bytes within ±43. Dequantization multiplies those by the group scale, which
//! rounds like the reference (`(-g) * db == -(g * db)` exactly, and no grid value is
//! 0, so no signed zero can differ). The dots form each 16-value product sum exactly
//! (SDOT, or widening products), apply the odd multipliers `2s + 1` in integers and
//! so reach the reference's integer block sum; the float steps after it are the
//! reference's, in its order, so the result is bit-identical.

use std::arch::aarch64::*;

use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::iq2::{GRID_S, GRID_XS, GRID_XXS};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, QS};
use crate::types::QK_K;

const XXS: usize = 66;
const XS: usize = 74;
const S: usize = 82;

/// The 8 bits of a byte as 8 byte masks (byte `j` is 0xff where bit `j` is set).
const fn spread_bits(b: u8) -> u64 {
    let mut m = 0u64;
    let mut j = 0;
    while j < 8 {
        if b & (1 << j) != 0 {
            m |= 0xff << (8 * j);
        }
        j += 1;
    }
    m
}

/// [`spread_bits`] of every byte: the masks of a full sign byte.
pub(super) static BYTE_MASKS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = spread_bits(i as u8);
        i += 1;
    }
    t
};

/// The masks of the 7-bit sign codes, whose eighth sign makes the count even (ggml's
/// `ksigns_iq2xs`, the same table for IQ3_XXS).
pub(super) static KSIGN_MASKS: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = spread_bits(i as u8 | (((i as u32).count_ones() as u8 & 1) << 7));
        i += 1;
    }
    t
};

/// Two 8-byte values as one vector (`lo` first).
#[inline(always)]
pub(super) unsafe fn pair(lo: u64, hi: u64) -> uint8x16_t {
    vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(lo), vcreate_u64(hi)))
}

/// `g` negated where `m` is all ones: `(g ^ m) - m`.
#[inline(always)]
pub(super) unsafe fn apply_signs(g: uint8x16_t, m: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(vsubq_u8(veorq_u8(g, m), m))
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Half `h` (16 values) of group `ib` of an IQ2_XXS block, signed.
#[inline(always)]
unsafe fn xxs_half(xb: &[u8; XXS], ib: usize, h: usize) -> int8x16_t {
    let at = 2 + 8 * ib;
    let b = word(xb, at + 4);
    let l = 2 * h;
    let g = pair(GRID_XXS[xb[at + l] as usize], GRID_XXS[xb[at + l + 1] as usize]);
    let code = |l: usize| KSIGN_MASKS[(b >> (7 * l) & 127) as usize];
    apply_signs(g, pair(code(l), code(l + 1)))
}

/// The 4-bit scale of IQ2_XXS group `ib`.
#[inline(always)]
fn xxs_scale(xb: &[u8; XXS], ib: usize) -> u32 {
    word(xb, 6 + 8 * ib) >> 28
}

#[inline(always)]
unsafe fn xs_half(xb: &[u8; XS], ib: usize, h: usize) -> int8x16_t {
    let c = |l: usize| u16::from_le_bytes([xb[2 + 8 * ib + 2 * l], xb[3 + 8 * ib + 2 * l]]) as usize;
    let (c0, c1) = (c(2 * h), c(2 * h + 1));
    let g = pair(GRID_XS[c0 & 511], GRID_XS[c1 & 511]);
    // Codes are 7 bits (`c >> 9` of a u16), so they index the 128 masks directly.
    apply_signs(g, pair(KSIGN_MASKS[c0 >> 9], KSIGN_MASKS[c1 >> 9]))
}

const XS_SCALES: usize = 66;
const S_SIGNS: usize = 34;
const S_QH: usize = 66;
const S_SCALES: usize = 74;

#[inline(always)]
unsafe fn s_half(xb: &[u8; S], ib: usize, h: usize) -> int8x16_t {
    let qh = xb[S_QH + ib] as usize;
    let idx = |l: usize| xb[2 + 4 * ib + l] as usize | (qh >> (2 * l) & 3) << 8;
    let (l0, l1) = (2 * h, 2 * h + 1);
    let g = pair(GRID_S[idx(l0)], GRID_S[idx(l1)]);
    let s = S_SIGNS + 4 * ib;
    apply_signs(g, pair(BYTE_MASKS[xb[s + l0] as usize], BYTE_MASKS[xb[s + l1] as usize]))
}

/// `d * (0.5 + s) * 0.25`, the reference's group scale.
#[inline(always)]
fn group_scale(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq2_xxs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XXS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XXS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let db = vdupq_n_f32(group_scale(d, xxs_scale(xb, ib)));
            for h in 0..2 {
                scale_i8x16(xxs_half(xb, ib, h), db, yb, 32 * ib + 16 * h);
            }
        }
    }
}

/// IQ2_XS and IQ2_S: each 16 values have their own 4-bit scale in `xb[scales + ib]`.
#[inline(always)]
unsafe fn dequantize_halves<const B: usize>(
    q: &[u8],
    y: &mut [f32],
    scales: usize,
    half: impl Fn(&[u8; B], usize, usize) -> int8x16_t,
) {
    for (xb, yb) in q.chunks_exact(B).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<B>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let sc = xb[scales + ib];
            for h in 0..2 {
                let db = vdupq_n_f32(group_scale(d, (sc >> (4 * h) & 15) as u32));
                scale_i8x16(half(xb, ib, h), db, yb, 32 * ib + 16 * h);
            }
        }
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq2_xs(q: &[u8], y: &mut [f32]) {
    dequantize_halves::<XS>(q, y, XS_SCALES, |xb, ib, h| xs_half(xb, ib, h));
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq2_s(q: &[u8], y: &mut [f32]) {
    dequantize_halves::<S>(q, y, S_SCALES, |xb, ib, h| s_half(xb, ib, h));
}

/// `sum over 16-value halves of mult(ib, h) * (values . q8)`, exact in i32 (at most
/// 256 * 43 * 128 * 31 in magnitude).
#[inline(always)]
pub(super) unsafe fn block_sum<const DOT: bool, const B: usize>(
    xb: &[u8; B],
    yb: &[u8; Q8K],
    half: impl Fn(&[u8; B], usize, usize) -> int8x16_t,
    mult: impl Fn(&[u8; B], usize, usize) -> i32,
) -> i32 {
    let mut acc = vdupq_n_s32(0);
    for ib in 0..8 {
        for h in 0..2 {
            let p = dot16::<DOT>(vdupq_n_s32(0), half(xb, ib, h), ld_s8(yb, QS + 32 * ib + 16 * h));
            acc = vmlaq_n_s32(acc, p, mult(xb, ib, h));
        }
    }
    vaddvq_s32(acc)
}

/// The reference's float steps around the integer block sums: `sumf += (d * yd) *
/// bsum` per block, in block order.
#[inline(always)]
pub(super) unsafe fn dot_blocks<const B: usize>(
    q: &[u8],
    yq: &[u8],
    isum: impl Fn(&[u8; B], &[u8; Q8K]) -> i32,
) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(B).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<B>(xb), block::<Q8K>(yb));
        let d = f16_at(xb, 0) * f32_at(yb, 0);
        sumf += d * isum(xb, yb) as f32;
    }
    sumf
}

#[inline(always)]
pub unsafe fn vec_dot_iq2_xxs<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_blocks::<XXS>(q, yq, |xb, yb| {
            block_sum::<DOT, XXS>(xb, yb, |xb, ib, h| xxs_half(xb, ib, h), |xb, ib, _| 2 * xxs_scale(xb, ib) as i32 + 1)
        })
}

/// `2s + 1` of the 4-bit scale of half `h` of group `ib`.
#[inline(always)]
fn half_mult(sc: u8, h: usize) -> i32 {
    2 * (sc >> (4 * h) & 15) as i32 + 1
}

#[inline(always)]
pub unsafe fn vec_dot_iq2_xs<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_blocks::<XS>(q, yq, |xb, yb| {
            block_sum::<DOT, XS>(xb, yb, |xb, ib, h| xs_half(xb, ib, h), |xb, ib, h| half_mult(xb[XS_SCALES + ib], h))
        })
}

#[inline(always)]
pub unsafe fn vec_dot_iq2_s<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_blocks::<S>(q, yq, |xb, yb| {
            block_sum::<DOT, S>(xb, yb, |xb, ib, h| s_half(xb, ib, h), |xb, ib, h| half_mult(xb[S_SCALES + ib], h))
        })
}
