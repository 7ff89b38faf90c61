//! IQ3_XXS and IQ3_S with NEON: the quantizers run the eight-lane trial search of
//! `arch::iq3_lanes` (NEON is part of every aarch64 target, so no wrapper is needed
//! for the compiler to vectorize it).

use crate::arch::iq3_lanes;
use crate::reference::{iq3_s, iq3_xxs};

pub fn quantize_iq3_xxs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    iq3_xxs::quantize_with(x, q, imat, iq3_lanes::quantize_sub_block);
}

pub fn quantize_iq3_s(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    iq3_s::quantize_with(x, q, imat, iq3_lanes::quantize_sub_block);
}

pub fn quantize_iq1_m(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    crate::reference::iq1_m::quantize_with(x, q, imat, crate::arch::iq1_fast::iq1_m_sub_block);
}

// ---------------------------------------------------------------- dequantize and dots
//
// As for IQ2 (see `iq2.rs`): 16 signed bytes per step, here four 4-byte grid points
// (IQ3 grid values are at most 62, so negating them stays in i8, and none is 0), the
// integer block sum exact, then the reference's float steps in its order.

use std::arch::aarch64::*;

use super::iq2::{apply_signs, block_sum, dot_blocks, pair, BYTE_MASKS, KSIGN_MASKS};
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::iq3::{S_GRID, XXS_GRID};
use crate::types::QK_K;

const XXS: usize = 98;
const XXS_SIGNS: usize = 2 + QK_K / 4;
const S: usize = 110;
const S_QH: usize = 2 + QK_K / 4;
const S_SIGNS: usize = S_QH + QK_K / 32;
const S_SCALES: usize = S_SIGNS + QK_K / 8;

/// Four 4-byte grid points as one vector.
#[inline(always)]
unsafe fn quad(g: [u32; 4]) -> uint8x16_t {
    pair(g[0] as u64 | (g[1] as u64) << 32, g[2] as u64 | (g[3] as u64) << 32)
}

/// The sign and scale word of IQ3_XXS sub-block `ib`.
#[inline(always)]
fn xxs_word(xb: &[u8; XXS], ib: usize) -> u32 {
    let at = XXS_SIGNS + 4 * ib;
    u32::from_le_bytes([xb[at], xb[at + 1], xb[at + 2], xb[at + 3]])
}

/// Half `h` (16 values) of IQ3_XXS sub-block `ib`, signed.
#[inline(always)]
unsafe fn xxs_half(xb: &[u8; XXS], ib: usize, h: usize) -> int8x16_t {
    let at = 2 + 8 * ib + 4 * h;
    let g = quad(std::array::from_fn(|k| XXS_GRID[xb[at + k] as usize]));
    let w = xxs_word(xb, ib);
    let code = |l: usize| KSIGN_MASKS[(w >> (7 * l) & 127) as usize];
    apply_signs(g, pair(code(2 * h), code(2 * h + 1)))
}

/// Half `h` of IQ3_S sub-block `ib`, signed.
#[inline(always)]
unsafe fn s_half(xb: &[u8; S], ib: usize, h: usize) -> int8x16_t {
    let qh = xb[S_QH + ib] as usize;
    let g = quad(std::array::from_fn(|j| {
        let k = 4 * h + j;
        S_GRID[xb[2 + 8 * ib + k] as usize | (qh >> k & 1) << 8]
    }));
    let s = S_SIGNS + 4 * ib + 2 * h;
    apply_signs(g, pair(BYTE_MASKS[xb[s] as usize], BYTE_MASKS[xb[s + 1] as usize]))
}

/// `1 + 2 ls` of IQ3_S sub-block `ib`.
#[inline(always)]
fn s_scale(xb: &[u8; S], ib: usize) -> i32 {
    1 + 2 * (xb[S_SCALES + ib / 2] >> (4 * (ib % 2)) & 15) as i32
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq3_xxs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XXS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XXS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let db = vdupq_n_f32(d * (0.5 + (xxs_word(xb, ib) >> 28) as f32) * 0.5);
            for h in 0..2 {
                scale_i8x16(xxs_half(xb, ib, h), db, yb, 32 * ib + 16 * h);
            }
        }
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq3_s(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(S).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<S>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let db = vdupq_n_f32(d * s_scale(xb, ib) as f32);
            for h in 0..2 {
                scale_i8x16(s_half(xb, ib, h), db, yb, 32 * ib + 16 * h);
            }
        }
    }
}

#[inline(always)]
pub unsafe fn vec_dot_iq3_xxs<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    0.25 * dot_blocks::<XXS>(q, yq, |xb, yb| {
        block_sum::<DOT, XXS>(
            xb,
            yb,
            |xb, ib, h| xxs_half(xb, ib, h),
            |xb, ib, _| (2 * (xxs_word(xb, ib) >> 28) + 1) as i32,
        )
    })
}

#[inline(always)]
pub unsafe fn vec_dot_iq3_s<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<S>(q, yq, |xb, yb| {
        block_sum::<DOT, S>(xb, yb, |xb, ib, h| s_half(xb, ib, h), |xb, ib, _| s_scale(xb, ib))
    })
}
