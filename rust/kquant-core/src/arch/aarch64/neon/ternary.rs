//! TQ1_0 and TQ2_0: dequantize and their dots with Q8_K. The trits of a block come out
//! as sixteen vectors of 16 bytes in value order. TQ1_0's trit n of a byte is the top
//! trit of `b * 3^n (mod 256)`: a wrapping byte multiply, then `(q * 3) >> 8`.

use std::arch::aarch64::*;

use super::util::*;
use crate::arch::{block, floats_mut};
use crate::types::QK_K;

const TQ1_BYTES: usize = 54;
const TQ2_BYTES: usize = 66;
const Q8K_BYTES: usize = 292;

#[inline(always)]
unsafe fn top_trit(b: uint8x16_t, mul: uint8x16_t) -> int8x16_t {
    let q = vmulq_u8(b, mul);
    let three = vdup_n_u8(3);
    let lo = vshrn_n_u16::<8>(vmull_u8(vget_low_u8(q), three));
    let hi = vshrn_n_u16::<8>(vmull_high_u8(q, vdupq_n_u8(3)));
    vreinterpretq_s8_u8(vcombine_u8(lo, hi))
}

#[inline(always)]
unsafe fn tq1_trits(qb: &[u8; TQ1_BYTES]) -> [int8x16_t; 16] {
    let (a, b, c) = (ld_u8(qb, 0), ld_u8(qb, 16), ld_u8(qb, 32));
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes([qb[48], qb[49], qb[50], qb[51]])));
    const QH_MUL: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    let p = |n: u8| vdupq_n_u8(n);
    [
        top_trit(a, p(1)),
        top_trit(b, p(1)),
        top_trit(a, p(3)),
        top_trit(b, p(3)),
        top_trit(a, p(9)),
        top_trit(b, p(9)),
        top_trit(a, p(27)),
        top_trit(b, p(27)),
        top_trit(a, p(81)),
        top_trit(b, p(81)),
        top_trit(c, p(1)),
        top_trit(c, p(3)),
        top_trit(c, p(9)),
        top_trit(c, p(27)),
        top_trit(c, p(81)),
        top_trit(qh, vld1q_u8(QH_MUL.as_ptr())),
    ]
}

#[inline(always)]
unsafe fn tq2_codes(qb: &[u8; TQ2_BYTES]) -> [int8x16_t; 16] {
    let m3 = vdupq_n_u8(3);
    let v = [ld_u8(qb, 0), ld_u8(qb, 16), ld_u8(qb, 32), ld_u8(qb, 48)];
    let c = |k: usize| {
        let (h, l, half) = (k / 8, (k % 8) / 2, k % 2);
        let b = v[2 * h + half];
        let s = match l {
            0 => b,
            1 => vshrq_n_u8::<2>(b),
            2 => vshrq_n_u8::<4>(b),
            _ => vshrq_n_u8::<6>(b),
        };
        vreinterpretq_s8_u8(vandq_u8(s, m3))
    };
    std::array::from_fn(c)
}

#[inline(always)]
unsafe fn write_minus_one(t: &[int8x16_t; 16], d: f32, y: &mut [f32; QK_K]) {
    let (one, d) = (vdupq_n_s8(1), vdupq_n_f32(d));
    for (k, v) in t.iter().enumerate() {
        scale_i8x16(vsubq_s8(*v, one), d, y, 16 * k);
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_tq1_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(TQ1_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let qb = block::<TQ1_BYTES>(qb);
        write_minus_one(&tq1_trits(qb), f16_at(qb, 52), floats_mut::<QK_K>(yb));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_tq2_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(TQ2_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let qb = block::<TQ2_BYTES>(qb);
        write_minus_one(&tq2_codes(qb), f16_at(qb, 64), floats_mut::<QK_K>(yb));
    }
}

/// Exact `sum (t - 1) * y` over a block (signed bytes, any y).
#[inline(always)]
unsafe fn block_sum<const DOT: bool>(t: &[int8x16_t; 16], yb: &[u8; Q8K_BYTES]) -> i32 {
    let one = vdupq_n_s8(1);
    let mut acc = vdupq_n_s32(0);
    for (k, v) in t.iter().enumerate() {
        acc = dot16::<DOT>(acc, vsubq_s8(*v, one), ld_s8(yb, 4 + 16 * k));
    }
    vaddvq_s32(acc)
}

#[inline(always)]
pub unsafe fn vec_dot_tq1_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (qb, yb) in q.chunks_exact(TQ1_BYTES).zip(yq.chunks_exact(Q8K_BYTES)) {
        let (qb, yb) = (block::<TQ1_BYTES>(qb), block::<Q8K_BYTES>(yb));
        let sum = block_sum::<DOT>(&tq1_trits(qb), yb);
        sumf += sum as f32 * (f16_at(qb, 52) * f32_at(yb, 0));
    }
    sumf
}

#[inline(always)]
pub unsafe fn vec_dot_tq2_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (qb, yb) in q.chunks_exact(TQ2_BYTES).zip(yq.chunks_exact(Q8K_BYTES)) {
        let (qb, yb) = (block::<TQ2_BYTES>(qb), block::<Q8K_BYTES>(yb));
        let sum = block_sum::<DOT>(&tq2_codes(qb), yb);
        sumf += sum as f32 * (f32_at(yb, 0) * f16_at(qb, 64));
    }
    sumf
}
