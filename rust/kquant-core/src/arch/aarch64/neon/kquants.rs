//! The 256-value formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS: dequantize and their
//! dots with Q8_K.
//!
//! Without SDOT the int8 products are widened per position, which is exactly the
//! reference's (ggml generic) layout of eight lanes of positions mod 8, so those dots
//! are bit-identical. With SDOT, four neighbouring positions share a lane; the block
//! sums are still exact integers, and Q3_K..Q6_K then scale and add them in f64 (as
//! the AVX2 kernels do). Q2_K and IQ4_XS are bit-identical either way: their reference
//! adds one float term per (sub-)block.

use std::arch::aarch64::*;

use super::legacy::IQ4NL_LEVELS;
use super::util::*;
use crate::arch::{block, floats_mut, iq4xs_scales, k4_scales_mins, q3k_scales};
use crate::reference::q8_k::{bsum, BLOCK_BYTES as Q8K, QS};
use crate::types::QK_K;

const Q2K: usize = 84;
const Q3K: usize = 110;
const Q4K: usize = 144;
const Q5K: usize = 176;
const Q6K: usize = 210;
const IQ4XS: usize = 136;

#[inline(always)]
fn scales_12(b: &[u8], at: usize) -> [u8; 12] {
    b[at..at + 12].try_into().unwrap()
}

/// The 256 levels of a block as 16 vectors of 16 bytes in value order.
type Levels = [int8x16_t; 16];

#[inline(always)]
unsafe fn q4k_levels(xb: &[u8; Q4K]) -> Levels {
    let mut v = [vdupq_n_s8(0); 16];
    for j in 0..4 {
        for h in 0..2 {
            let b = ld_u8(xb, 16 + 32 * j + 16 * h);
            v[4 * j + h] = low_nibbles(b);
            v[4 * j + 2 + h] = high_nibbles(b);
        }
    }
    v
}

#[inline(always)]
unsafe fn q5k_levels(xb: &[u8; Q5K]) -> Levels {
    let mut v = [vdupq_n_s8(0); 16];
    let qh = [ld_u8(xb, 16), ld_u8(xb, 32)];
    let sixteen = vdupq_n_u8(16);
    for j in 0..4 {
        let (b0, b1) = (vdupq_n_u8(1 << (2 * j)), vdupq_n_u8(2 << (2 * j)));
        for h in 0..2 {
            let b = ld_u8(xb, 48 + 32 * j + 16 * h);
            let h0 = vandq_u8(vtstq_u8(qh[h], b0), sixteen);
            let h1 = vandq_u8(vtstq_u8(qh[h], b1), sixteen);
            v[4 * j + h] = vorrq_s8(low_nibbles(b), vreinterpretq_s8_u8(h0));
            v[4 * j + 2 + h] = vorrq_s8(high_nibbles(b), vreinterpretq_s8_u8(h1));
        }
    }
    v
}

/// Q6_K levels minus 32, in [-32, 31].
#[inline(always)]
unsafe fn q6k_levels(xb: &[u8; Q6K]) -> Levels {
    let mut v = [vdupq_n_s8(0); 16];
    let m2 = vdupq_n_u8(3);
    let off = vdupq_n_s8(32);
    for n in 0..2 {
        for h in 0..2 {
            let l0 = ld_u8(xb, 64 * n + 16 * h);
            let l1 = ld_u8(xb, 64 * n + 32 + 16 * h);
            let qh = ld_u8(xb, 128 + 32 * n + 16 * h);
            let hb = |s: i32| {
                let shifted = match s {
                    0 => qh,
                    2 => vshrq_n_u8::<2>(qh),
                    4 => vshrq_n_u8::<4>(qh),
                    _ => vshrq_n_u8::<6>(qh),
                };
                vreinterpretq_s8_u8(vshlq_n_u8::<4>(vandq_u8(shifted, m2)))
            };
            let at = 8 * n + h;
            v[at] = vsubq_s8(vorrq_s8(low_nibbles(l0), hb(0)), off);
            v[at + 2] = vsubq_s8(vorrq_s8(low_nibbles(l1), hb(2)), off);
            v[at + 4] = vsubq_s8(vorrq_s8(high_nibbles(l0), hb(4)), off);
            v[at + 6] = vsubq_s8(vorrq_s8(high_nibbles(l1), hb(6)), off);
        }
    }
    v
}

/// Q3_K levels in [-4, 3].
#[inline(always)]
unsafe fn q3k_levels(xb: &[u8; Q3K]) -> Levels {
    let mut v = [vdupq_n_s8(0); 16];
    let m3 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let hm = [ld_u8(xb, 0), ld_u8(xb, 16)];
    for n in 0..2 {
        for h in 0..2 {
            let q = ld_u8(xb, 32 + 32 * n + 16 * h);
            let parts = [q, vshrq_n_u8::<2>(q), vshrq_n_u8::<4>(q), vshrq_n_u8::<6>(q)];
            for (j, p) in parts.into_iter().enumerate() {
                let bit = vdupq_n_u8(1 << (4 * n + j));
                // 4 where the high bit is clear.
                let sub = vbicq_u8(four, vtstq_u8(hm[h], bit));
                v[8 * n + 2 * j + h] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(p, m3)), vreinterpretq_s8_u8(sub));
            }
        }
    }
    v
}

#[inline(always)]
unsafe fn q2k_levels(xb: &[u8; Q2K]) -> Levels {
    let mut v = [vdupq_n_s8(0); 16];
    let m3 = vdupq_n_u8(3);
    for n in 0..2 {
        for h in 0..2 {
            let q = ld_u8(xb, 16 + 32 * n + 16 * h);
            let parts = [q, vshrq_n_u8::<2>(q), vshrq_n_u8::<4>(q), vshrq_n_u8::<6>(q)];
            for (j, p) in parts.into_iter().enumerate() {
                v[8 * n + 2 * j + h] = vreinterpretq_s8_u8(vandq_u8(p, m3));
            }
        }
    }
    v
}

#[inline(always)]
unsafe fn iq4xs_levels(xb: &[u8; IQ4XS]) -> Levels {
    let table = vld1q_s8(IQ4NL_LEVELS.as_ptr());
    let mut v = [vdupq_n_s8(0); 16];
    for ib in 0..8 {
        let b = ld_u8(xb, 8 + 16 * ib);
        v[2 * ib] = vqtbl1q_s8(table, vandq_u8(b, vdupq_n_u8(0x0f)));
        v[2 * ib + 1] = vqtbl1q_s8(table, vshrq_n_u8::<4>(b));
    }
    v
}

// ---------------------------------------------------------------- dequantize

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q4_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q4K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q4K>(xb);
        dequantize_k4(xb, &q4k_levels(xb), floats_mut::<QK_K>(yb));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q5_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q5K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q5K>(xb);
        dequantize_k4(xb, &q5k_levels(xb), floats_mut::<QK_K>(yb));
    }
}

/// `d * sc * level - dmin * m` per 32 values: scale products first, then two roundings.
#[inline(always)]
unsafe fn dequantize_k4<const B: usize>(xb: &[u8; B], v: &Levels, yb: &mut [f32; QK_K]) {
    let d = f16_at(xb, 0);
    let min = f16_at(xb, 2);
    let (sc, m) = k4_scales_mins(&scales_12(xb, 4));
    for j in 0..8 {
        let d1 = vdupq_n_f32(d * sc[j] as f32);
        let m1 = vdupq_n_f32(min * m[j] as f32);
        scale_sub_i8x16(v[2 * j], d1, m1, yb, 32 * j);
        scale_sub_i8x16(v[2 * j + 1], d1, m1, yb, 32 * j + 16);
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q6_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q6K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q6K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 208);
        let v = q6k_levels(xb);
        for (g, vg) in v.iter().enumerate() {
            scale_i8x16(*vg, vdupq_n_f32(d * xb[192 + g] as i8 as f32), yb, 16 * g);
        }
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q3_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q3K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q3K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 108);
        let sc = q3k_scales(&scales_12(xb, 96));
        let v = q3k_levels(xb);
        for (g, vg) in v.iter().enumerate() {
            scale_i8x16(*vg, vdupq_n_f32(d * sc[g] as f32), yb, 16 * g);
        }
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q2_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q2K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q2K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 80);
        let min = f16_at(xb, 82);
        let v = q2k_levels(xb);
        for (g, vg) in v.iter().enumerate() {
            let sc = xb[g];
            let dl = vdupq_n_f32(d * (sc & 0x0f) as f32);
            let ml = vdupq_n_f32(min * (sc >> 4) as f32);
            scale_sub_i8x16(*vg, dl, ml, yb, 16 * g);
        }
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq4_xs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(IQ4XS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<IQ4XS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        let ls = iq4xs_scales(u16::from_le_bytes([xb[2], xb[3]]), &xb[4..8]);
        let v = iq4xs_levels(xb);
        for ib in 0..8 {
            let dl = vdupq_n_f32(d * ls[ib] as f32);
            scale_i8x16(v[2 * ib], dl, yb, 32 * ib);
            scale_i8x16(v[2 * ib + 1], dl, yb, 32 * ib + 16);
        }
    }
}

// ---------------------------------------------------------------- dots

/// Sum over the 16-value groups of `scale(g) * (levels . q8)`, exact in i32, for
/// the SDOT path.
#[inline(always)]
unsafe fn sdot_groups(v: &Levels, yb: &[u8; Q8K], scale: impl Fn(usize) -> i32) -> i32 {
    let mut acc = vdupq_n_s32(0);
    for (g, vg) in v.iter().enumerate() {
        let p = sdot(vdupq_n_s32(0), *vg, ld_s8(yb, QS + 16 * g));
        acc = vmlaq_n_s32(acc, p, scale(g));
    }
    vaddvq_s32(acc)
}

/// The reference's eight integer lanes (positions mod 8) of one block.
#[inline(always)]
unsafe fn lane_groups(v: &Levels, yb: &[u8; Q8K], scale: impl Fn(usize) -> i16) -> [int32x4_t; 2] {
    let mut aux = [vdupq_n_s32(0); 2];
    for (g, vg) in v.iter().enumerate() {
        lanes_mla(&mut aux, *vg, ld_s8(yb, QS + 16 * g), scale(g));
    }
    aux
}

/// Q4_K / Q5_K: levels times 6-bit scales, minus the mins through the Q8_K sums.
#[inline(always)]
unsafe fn dot_k4<const DOT: bool, const B: usize>(q: &[u8], yq: &[u8], levels: impl Fn(&[u8; B]) -> Levels) -> f32 {
    let mut lanes = [vdupq_n_f32(0.0); 2];
    let mut sumf = 0.0f32;
    let mut exact = 0.0f64;
    for (xb, yb) in q.chunks_exact(B).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<B>(xb), block::<Q8K>(yb));
        let (sc, m) = k4_scales_mins(&scales_12(xb, 4));
        let summ: i32 = (0..16).map(|j| bsum(yb, j) * m[j / 2] as i32).sum();
        let v = levels(xb);
        let yd = f32_at(yb, 0);
        if DOT {
            // The SDOT lanes are not the reference's, so rounding like it is moot;
            // f64 (exact scale products) keeps the scale and min parts from cancelling
            // into rounding noise.
            let isum = sdot_groups(&v, yb, |g| sc[g / 2] as i32);
            let (d, dmin) = (f16_at(xb, 0) as f64 * yd as f64, f16_at(xb, 2) as f64 * yd as f64);
            exact += d * isum as f64 - dmin * summ as f64;
        } else {
            let d = f16_at(xb, 0) * yd;
            lanes_accumulate(&mut lanes, d, &lane_groups(&v, yb, |g| sc[g / 2] as i16));
            let dmin = f16_at(xb, 2) * yd;
            sumf -= dmin * summ as f32;
        }
    }
    if DOT {
        exact as f32
    } else {
        lanes_finish(sumf, &lanes)
    }
}

#[inline(always)]
pub unsafe fn vec_dot_q4_k<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_k4::<DOT, Q4K>(q, yq, |b| q4k_levels(b))
}

#[inline(always)]
pub unsafe fn vec_dot_q5_k<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_k4::<DOT, Q5K>(q, yq, |b| q5k_levels(b))
}

/// Q6_K / Q3_K: signed levels, one signed scale per 16 values, no minimum.
#[inline(always)]
unsafe fn dot_signed16<const DOT: bool, const B: usize>(
    q: &[u8],
    yq: &[u8],
    d_at: usize,
    levels: impl Fn(&[u8; B]) -> Levels,
    scales: impl Fn(&[u8; B]) -> [i8; 16],
) -> f32 {
    let mut lanes = [vdupq_n_f32(0.0); 2];
    let mut exact = 0.0f64;
    for (xb, yb) in q.chunks_exact(B).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<B>(xb), block::<Q8K>(yb));
        let sc = scales(xb);
        let v = levels(xb);
        if DOT {
            let isum = sdot_groups(&v, yb, |g| sc[g] as i32);
            exact += f16_at(xb, d_at) as f64 * f32_at(yb, 0) as f64 * isum as f64;
        } else {
            let d = f16_at(xb, d_at) * f32_at(yb, 0);
            lanes_accumulate(&mut lanes, d, &lane_groups(&v, yb, |g| sc[g] as i16));
        }
    }
    if DOT {
        exact as f32
    } else {
        lanes_finish(0.0, &lanes)
    }
}

#[inline(always)]
pub unsafe fn vec_dot_q6_k<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_signed16::<DOT, Q6K>(q, yq, 208, |b| q6k_levels(b), |b| std::array::from_fn(|g| b[192 + g] as i8))
}

#[inline(always)]
pub unsafe fn vec_dot_q3_k<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_signed16::<DOT, Q3K>(q, yq, 108, |b| q3k_levels(b), |b| q3k_scales(&scales_12(b, 96)))
}

/// Q2_K: one float step per block, as the reference.
#[inline(always)]
pub unsafe fn vec_dot_q2_k<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(Q2K).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<Q2K>(xb), block::<Q8K>(yb));
        let summs: i32 = (0..16).map(|j| bsum(yb, j) * (xb[j] >> 4) as i32).sum();
        let v = q2k_levels(xb);
        let mut acc = vdupq_n_s32(0);
        for (g, vg) in v.iter().enumerate() {
            let p = dot16::<DOT>(vdupq_n_s32(0), *vg, ld_s8(yb, QS + 16 * g));
            acc = vmlaq_n_s32(acc, p, (xb[g] & 0x0f) as i32);
        }
        let isum = vaddvq_s32(acc);
        let yd = f32_at(yb, 0);
        let dall = yd * f16_at(xb, 80);
        let dmin = yd * f16_at(xb, 82);
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// IQ4_XS: one float step per 32 values, as the reference.
#[inline(always)]
pub unsafe fn vec_dot_iq4_xs<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(IQ4XS).zip(yq.chunks_exact(Q8K)) {
        let (xb, yb) = (block::<IQ4XS>(xb), block::<Q8K>(yb));
        let d4d8 = f16_at(xb, 0) * f32_at(yb, 0);
        let ls = iq4xs_scales(u16::from_le_bytes([xb[2], xb[3]]), &xb[4..8]);
        let v = iq4xs_levels(xb);
        for ib in 0..8 {
            let acc = dot16::<DOT>(vdupq_n_s32(0), v[2 * ib], ld_s8(yb, QS + 32 * ib));
            let acc = dot16::<DOT>(acc, v[2 * ib + 1], ld_s8(yb, QS + 32 * ib + 16));
            let dl = d4d8 * ls[ib] as f32;
            sumf += dl * vaddvq_s32(acc) as f32;
        }
    }
    sumf
}
