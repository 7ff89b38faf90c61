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

/// `(q * 3) >> 8` is 1 for q >= 86 and 2 for q >= 171: two byte compares (all-ones
/// masks, so their negated sum is the trit).
#[inline(always)]
unsafe fn top_trit(b: uint8x16_t, mul: uint8x16_t) -> int8x16_t {
    let q = vmulq_u8(b, mul);
    let m = vaddq_u8(vcgeq_u8(q, vdupq_n_u8(86)), vcgeq_u8(q, vdupq_n_u8(171)));
    vreinterpretq_s8_u8(vsubq_u8(vdupq_n_u8(0), m))
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

/// Largest |x| of a row piece.
#[inline(always)]
pub(super) unsafe fn amax<const N: usize>(x: &[f32; N]) -> f32 {
    let mut m = vdupq_n_f32(0.0);
    for k in 0..N / 4 {
        m = vmaxq_f32(m, vabsq_f32(ld_f32(x, 4 * k)));
    }
    vmaxvq_f32(m)
}

/// Codes `1 + [v >= 0.5] - [v <= -0.5]` of `v = x * id` for 16 values at `at`, as
/// bytes: `lroundf(v) + 1` (and `roundf`'s) wherever |v| <= 1 up to rounding.
#[inline(always)]
pub(super) unsafe fn round_codes16<const N: usize>(x: &[f32; N], at: usize, id: f32) -> uint8x16_t {
    let idv = vdupq_n_f32(id);
    let c = |k: usize| {
        let v = vmulq_f32(ld_f32(x, at + 4 * k), idv);
        let up = vreinterpretq_s32_u32(vcgeq_f32(v, vdupq_n_f32(0.5)));
        let dn = vreinterpretq_s32_u32(vcleq_f32(v, vdupq_n_f32(-0.5)));
        vaddq_s32(vsubq_s32(dn, up), vdupq_n_s32(1))
    };
    let a = vcombine_s16(vmovn_s32(c(0)), vmovn_s32(c(1)));
    let b = vcombine_s16(vmovn_s32(c(2)), vmovn_s32(c(3)));
    vreinterpretq_u8_s8(vcombine_s8(vmovn_s16(a), vmovn_s16(b)))
}

/// The block maximum and its 256 trits; an infinite inverse scale (subnormal maximum)
/// gives trit 1 throughout, as ggml's `lroundf` of NaN/inf does on x86.
#[inline(always)]
unsafe fn block_trits(x: &[f32; QK_K], t: &mut [u8; QK_K]) -> f32 {
    let m = amax(x);
    let id = if m != 0.0 { 1.0 / m } else { 0.0 };
    if !id.is_finite() {
        t.fill(1);
        return m;
    }
    for k in 0..QK_K / 16 {
        st_u8(t, 16 * k, round_codes16(x, 16 * k, id));
    }
    m
}

const fn pack_table() -> [u8; 243] {
    let mut t = [0u8; 243];
    let mut v = 0;
    while v < 243 {
        t[v] = (v * 256).div_ceil(243) as u8;
        v += 1;
    }
    t
}
/// `ceil(v * 256 / 243)` for a base-3 code of five trits.
static PACK: [u8; 243] = pack_table();

#[target_feature(enable = "neon")]
pub unsafe fn quantize_tq1_0(x: &[f32], q: &mut [u8]) {
    use crate::arch::{block_mut, floats};
    let mut t = [0u8; QK_K];
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(TQ1_BYTES)) {
        let qb = block_mut::<TQ1_BYTES>(qb);
        let m = block_trits(floats::<QK_K>(xb), &mut t);
        let code = |idx: [usize; 5]| PACK[idx.iter().fold(0usize, |a, &i| a * 3 + t[i] as usize)];
        for (j, o) in qb[..32].iter_mut().enumerate() {
            *o = code([j, j + 32, j + 64, j + 96, j + 128]);
        }
        for j in 0..16 {
            qb[32 + j] = code([160 + j, 176 + j, 192 + j, 208 + j, 224 + j]);
        }
        for j in 0..4 {
            qb[48 + j] = PACK[(0..4).fold(0usize, |a, n| a * 3 + t[240 + j + 4 * n] as usize) * 3];
        }
        qb[52..54].copy_from_slice(&crate::reference::common::f32_to_f16(m).to_le_bytes());
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_tq2_0(x: &[f32], q: &mut [u8]) {
    use crate::arch::{block_mut, floats};
    let mut t = [0u8; QK_K];
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(TQ2_BYTES)) {
        let qb = block_mut::<TQ2_BYTES>(qb);
        let m = block_trits(floats::<QK_K>(xb), &mut t);
        for h in 0..2 {
            for half in 0..2 {
                let c = |l: usize| ld_u8(&t, 128 * h + 32 * l + 16 * half);
                let v = vorrq_u8(
                    vorrq_u8(c(0), vshlq_n_u8::<2>(c(1))),
                    vorrq_u8(vshlq_n_u8::<4>(c(2)), vshlq_n_u8::<6>(c(3))),
                );
                st_u8(qb, 32 * h + 16 * half, v);
            }
        }
        qb[64..66].copy_from_slice(&crate::reference::common::f32_to_f16(m).to_le_bytes());
    }
}
