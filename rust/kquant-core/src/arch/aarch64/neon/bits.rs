//! Q1_0 and Q2_0: dequantize and their dots with Q8_0 (four and two Q8_0 blocks per
//! block). Integer sums are exact; the float steps follow the reference.

use std::arch::aarch64::*;

use super::util::*;
use crate::arch::{block, floats_mut};

const Q1_BYTES: usize = 18;
const Q2_BYTES: usize = 18;
const Q8_0_BYTES: usize = 34;

const BIT8: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// +1 where the bit of value j is set, -1 elsewhere, for the 16 values of bytes
/// `b[at]` and `b[at + 1]`.
#[inline(always)]
unsafe fn signs16(b: &[u8; Q1_BYTES], at: usize) -> int8x16_t {
    let rep = vcombine_u8(vdup_n_u8(b[at]), vdup_n_u8(b[at + 1]));
    let set = vtstq_u8(rep, vld1q_u8(BIT8.as_ptr()));
    vbslq_s8(set, vdupq_n_s8(1), vdupq_n_s8(-1))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q1_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(Q1_BYTES).zip(y.chunks_exact_mut(128)) {
        let qb = block::<Q1_BYTES>(qb);
        let yb = floats_mut::<128>(yb);
        let d = vdupq_n_f32(f16_at(qb, 0));
        // (+-1) * d is exactly d or -d
        for j in 0..8 {
            scale_i8x16(signs16(qb, 2 + 2 * j), d, yb, 16 * j);
        }
    }
}

#[inline(always)]
pub unsafe fn vec_dot_q1_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, y4) in q.chunks_exact(Q1_BYTES).zip(yq.chunks_exact(4 * Q8_0_BYTES)) {
        let xb = block::<Q1_BYTES>(xb);
        let mut sumi = 0.0f32;
        for k in 0..4 {
            let yb = block::<Q8_0_BYTES>(&y4[k * Q8_0_BYTES..(k + 1) * Q8_0_BYTES]);
            let acc = dot16::<DOT>(vdupq_n_s32(0), signs16(xb, 2 + 4 * k), ld_s8(yb, 2));
            let acc = dot16::<DOT>(acc, signs16(xb, 4 + 4 * k), ld_s8(yb, 18));
            sumi += f16_at(yb, 0) * vaddvq_s32(acc) as f32;
        }
        sumf += f16_at(xb, 0) * sumi;
    }
    sumf
}

/// The 64 levels (code - 1) of a Q2_0 block as four vectors of 16 in value order.
#[inline(always)]
unsafe fn q2_levels(xb: &[u8; Q2_BYTES]) -> [int8x16_t; 4] {
    let v = ld_u8(xb, 2);
    let m = vdupq_n_u8(3);
    let c0 = vandq_u8(v, m);
    let c1 = vandq_u8(vshrq_n_u8::<2>(v), m);
    let c2 = vandq_u8(vshrq_n_u8::<4>(v), m);
    let c3 = vshrq_n_u8::<6>(v);
    // byte i holds values 4i..4i+4
    let (a0, a1) = (vzip1q_u8(c0, c1), vzip2q_u8(c0, c1));
    let (b0, b1) = (vzip1q_u8(c2, c3), vzip2q_u8(c2, c3));
    let w = |a: uint8x16_t, b: uint8x16_t, hi: bool| {
        let (a, b) = (vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(b));
        let z = if hi { vzip2q_u16(a, b) } else { vzip1q_u16(a, b) };
        vsubq_s8(vreinterpretq_s8_u16(z), vdupq_n_s8(1))
    };
    [w(a0, b0, false), w(a0, b0, true), w(a1, b1, false), w(a1, b1, true)]
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q2_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(Q2_BYTES).zip(y.chunks_exact_mut(64)) {
        let qb = block::<Q2_BYTES>(qb);
        let yb = floats_mut::<64>(yb);
        let d = vdupq_n_f32(f16_at(qb, 0));
        for (k, v) in q2_levels(qb).iter().enumerate() {
            scale_i8x16(*v, d, yb, 16 * k);
        }
    }
}

#[inline(always)]
pub unsafe fn vec_dot_q2_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, y2) in q.chunks_exact(Q2_BYTES).zip(yq.chunks_exact(2 * Q8_0_BYTES)) {
        let xb = block::<Q2_BYTES>(xb);
        let l = q2_levels(xb);
        let mut sumi = 0.0f32;
        for k in 0..2 {
            let yb = block::<Q8_0_BYTES>(&y2[k * Q8_0_BYTES..(k + 1) * Q8_0_BYTES]);
            let acc = dot16::<DOT>(vdupq_n_s32(0), l[2 * k], ld_s8(yb, 2));
            let acc = dot16::<DOT>(acc, l[2 * k + 1], ld_s8(yb, 18));
            sumi += f16_at(yb, 0) * vaddvq_s32(acc) as f32;
        }
        sumf += f16_at(xb, 0) * sumi;
    }
    sumf
}

/// `quantize_row_q2_0_ref`: codes `roundf(x / amax) + 1` by compares (|v| <= 1); an
/// infinite inverse scale gives INT_MIN on x86, code 0 throughout.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q2_0(x: &[f32], q: &mut [u8]) {
    use super::ternary::{amax, round_codes16};
    use crate::arch::{block_mut, floats};
    for (xb, qb) in x.chunks_exact(64).zip(q.chunks_exact_mut(Q2_BYTES)) {
        let (xb, qb) = (floats::<64>(xb), block_mut::<Q2_BYTES>(qb));
        let m = amax(xb);
        let id = if m > 0.0 { 1.0 / m } else { 0.0 };
        qb[..2].copy_from_slice(&crate::reference::common::f32_to_f16(m).to_le_bytes());
        if !id.is_finite() {
            qb[2..].fill(0);
            continue;
        }
        let mut c = [0u8; 64];
        for k in 0..4 {
            st_u8(&mut c, 16 * k, round_codes16(xb, 16 * k, id));
        }
        for (i, o) in qb[2..].iter_mut().enumerate() {
            *o = c[4 * i] | (c[4 * i + 1] << 2) | (c[4 * i + 2] << 4) | (c[4 * i + 3] << 6);
        }
    }
}
