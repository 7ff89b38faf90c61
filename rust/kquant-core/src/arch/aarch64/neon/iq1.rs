//! IQ1_S and IQ1_M: dequantize and dots with Q8_K.
//!
//! Grid points are 8 bytes of -1, 0 or 1; two make 16 signed bytes. Dequantization
//! computes the reference's `dl * (g + delta)` per value (`g + delta` is exact, one
//! rounding in the multiply). The dots keep the reference's two integer sums exact:
//! grid . q8 per sub-block times `2 ls + 1`, and the shift term (the Q8_K block sums
//! for IQ1_S; for IQ1_M, whose shift sign changes every 8 values, a dot of q8 with a
//! vector of ±1), then do the reference's float steps in its order: bit-identical.

use std::arch::aarch64::*;

use super::iq2::pair;
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::common::f16_to_f32;
use crate::reference::iq1::{DELTA, GRID};
use crate::reference::q8_k::{bsum, BLOCK_BYTES as Q8K, QS};
use crate::types::QK_K;

const S: usize = 50;
const S_QH: usize = 2 + QK_K / 8;
const M: usize = 56;
const M_QH: usize = QK_K / 8;
const M_SCALES: usize = M_QH + QK_K / 16;

/// `dl * (g + delta)` for the 8 grid values `g`, stored at `y[at..at + 8]`.
#[inline(always)]
unsafe fn store_shifted8(g: int8x8_t, dl: f32, delta: f32, y: &mut [f32; QK_K], at: usize) {
    let w = vmovl_s8(g);
    let (dl, delta) = (vdupq_n_f32(dl), vdupq_n_f32(delta));
    let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
    let hi = vcvtq_f32_s32(vmovl_high_s16(w));
    st_f32(y, at, vmulq_f32(dl, vaddq_f32(lo, delta)));
    st_f32(y, at + 4, vmulq_f32(dl, vaddq_f32(hi, delta)));
}

// ---------------------------------------------------------------- IQ1_S

/// The u16 of IQ1_S sub-block `ib`: 3 high index bits per group, scale, shift sign.
#[inline(always)]
fn s_qh(xb: &[u8; S], ib: usize) -> u32 {
    u16::from_le_bytes([xb[S_QH + 2 * ib], xb[S_QH + 2 * ib + 1]]) as u32
}

#[inline(always)]
fn s_point(xb: &[u8; S], ib: usize, l: usize) -> u64 {
    GRID[xb[2 + 4 * ib + l] as usize | ((s_qh(xb, ib) >> (3 * l) & 7) as usize) << 8]
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq1_s(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(S).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<S>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let h = s_qh(xb, ib);
            let dl = d * (2 * (h >> 12 & 7) + 1) as f32;
            let delta = if h & 0x8000 != 0 { -DELTA } else { DELTA };
            for l in 0..4 {
                store_shifted8(vcreate_s8(s_point(xb, ib, l)), dl, delta, yb, 32 * ib + 8 * l);
            }
        }
    }
}

#[inline(always)]
pub unsafe fn vec_dot_iq1_s<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(S).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<S>(xb), block::<Q8K>(yb));
        let mut acc = vdupq_n_s32(0);
        let mut sumi1 = 0i32;
        for ib in 0..8 {
            let h = s_qh(xb, ib);
            let ls = (2 * (h >> 12 & 7) + 1) as i32;
            let delta = if h & 0x8000 != 0 { -1 } else { 1 };
            let g0 = vreinterpretq_s8_u8(pair(s_point(xb, ib, 0), s_point(xb, ib, 1)));
            let g1 = vreinterpretq_s8_u8(pair(s_point(xb, ib, 2), s_point(xb, ib, 3)));
            let p = dot16::<DOT>(vdupq_n_s32(0), g0, ld_s8(yb, QS + 32 * ib));
            let p = dot16::<DOT>(p, g1, ld_s8(yb, QS + 32 * ib + 16));
            acc = vmlaq_n_s32(acc, p, ls);
            sumi1 += ls * delta * (bsum(yb, 2 * ib) + bsum(yb, 2 * ib + 1));
        }
        let sumi = vaddvq_s32(acc);
        sumf += f16_at(xb, 0) * f32_at(yb, 0) * (sumi as f32 + DELTA * sumi1 as f32);
    }
    sumf
}

// ---------------------------------------------------------------- IQ1_M

/// The four scale words: 3-bit sub-scales, and in their top nibbles the f16 scale.
#[inline(always)]
fn m_scale_words(xb: &[u8; M]) -> [u16; 4] {
    std::array::from_fn(|j| u16::from_le_bytes([xb[M_SCALES + 2 * j], xb[M_SCALES + 2 * j + 1]]))
}

#[inline(always)]
fn m_super_scale(sc: &[u16; 4]) -> f32 {
    f16_to_f32(sc[0] >> 12 | (sc[1] >> 8 & 0x00f0) | (sc[2] >> 4 & 0x0f00) | (sc[3] & 0xf000))
}

/// `2 ls + 1` for the two 16-value halves of sub-block `ib`.
#[inline(always)]
fn m_sub_scales(sc: &[u16; 4], ib: usize) -> [i32; 2] {
    let w = sc[ib / 2] >> (6 * (ib % 2));
    [2 * (w & 7) as i32 + 1, 2 * (w >> 3 & 7) as i32 + 1]
}

/// Group `l` (8 values) of sub-block `ib`: its grid point and whether it shifts down.
#[inline(always)]
fn m_point(xb: &[u8; M], ib: usize, l: usize) -> (u64, bool) {
    let h = xb[M_QH + 2 * ib + l / 2] as usize;
    let odd = l % 2;
    let g = GRID[xb[4 * ib + l] as usize | (h << (8 - 4 * odd) & 0x700)];
    (g, h & (0x08 << (4 * odd)) != 0)
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq1_m(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(M).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<M>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let sc = m_scale_words(xb);
        let d = m_super_scale(&sc);
        for ib in 0..8 {
            let ls = m_sub_scales(&sc, ib);
            for l in 0..4 {
                let dl = d * ls[l / 2] as f32;
                let (g, down) = m_point(xb, ib, l);
                let delta = if down { -DELTA } else { DELTA };
                store_shifted8(vcreate_s8(g), dl, delta, yb, 32 * ib + 8 * l);
            }
        }
    }
}

/// 8 bytes of -1 (shifted down) or +1.
#[inline(always)]
fn unit_shift(down: bool) -> u64 {
    if down {
        u64::MAX
    } else {
        0x0101_0101_0101_0101
    }
}

#[inline(always)]
pub unsafe fn vec_dot_iq1_m<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(M).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<M>(xb), block::<Q8K>(yb));
        let sc = m_scale_words(xb);
        let mut acc1 = vdupq_n_s32(0);
        let mut acc2 = vdupq_n_s32(0);
        for ib in 0..8 {
            let ls = m_sub_scales(&sc, ib);
            for (h, &lh) in ls.iter().enumerate() {
                let (g0, s0) = m_point(xb, ib, 2 * h);
                let (g1, s1) = m_point(xb, ib, 2 * h + 1);
                let y8 = ld_s8(yb, QS + 32 * ib + 16 * h);
                let g = vreinterpretq_s8_u8(pair(g0, g1));
                let shift = vreinterpretq_s8_u8(pair(unit_shift(s0), unit_shift(s1)));
                acc1 = vmlaq_n_s32(acc1, dot16::<DOT>(vdupq_n_s32(0), g, y8), lh);
                acc2 = vmlaq_n_s32(acc2, dot16::<DOT>(vdupq_n_s32(0), shift, y8), lh);
            }
        }
        let (sumi1, sumi2) = (vaddvq_s32(acc1), vaddvq_s32(acc2));
        sumf += m_super_scale(&sc) * f32_at(yb, 0) * (sumi1 as f32 + DELTA * sumi2 as f32);
    }
    sumf
}
