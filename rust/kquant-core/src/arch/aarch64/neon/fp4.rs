//! MXFP4 and NVFP4: dequantize and their dots with Q8_0. The doubled E2M1 levels come
//! from one table lookup; every float is `level * scale`, the reference's rounding.

use std::arch::aarch64::*;

use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::mxfp4::{e8m0_half, KVALUES};

const MX_BYTES: usize = 17;
const NV_BYTES: usize = 36;
const Q8_0_BYTES: usize = 34;

#[inline(always)]
unsafe fn levels(nibbles: uint8x16_t) -> int8x16_t {
    vqtbl1q_s8(vld1q_s8(KVALUES.as_ptr()), nibbles)
}

/// Halved UE4M3 (ggml's `ggml_ue4m3_to_fp32`): a 4-bit significand times a power of two.
#[inline(always)]
fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let (e, m) = (((x >> 3) & 15) as u32, (x & 7) as u32);
    let (sig, pow) = if e == 0 { (m, 117u32) } else { (8 + m, 116 + e) };
    sig as f32 * f32::from_bits(pow << 23)
}

/// Values 0..16 and 16..32 of an MXFP4 block.
#[inline(always)]
unsafe fn mx_levels(xb: &[u8; MX_BYTES]) -> (int8x16_t, int8x16_t) {
    let v = ld_u8(xb, 1);
    (levels(vandq_u8(v, vdupq_n_u8(15))), levels(vshrq_n_u8::<4>(v)))
}

/// Groups 2k and 2k+1 of an NVFP4 block, each in value order (8 low nibbles, 8 high).
#[inline(always)]
unsafe fn nv_levels(xb: &[u8; NV_BYTES], k: usize) -> (int8x16_t, int8x16_t) {
    let v = ld_u8(xb, 4 + 16 * k);
    let (lo, hi) = (vandq_u8(v, vdupq_n_u8(15)), vshrq_n_u8::<4>(v));
    (levels(vcombine_u8(vget_low_u8(lo), vget_low_u8(hi))), levels(vcombine_u8(vget_high_u8(lo), vget_high_u8(hi))))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_mxfp4(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(MX_BYTES).zip(y.chunks_exact_mut(32)) {
        let qb = block::<MX_BYTES>(qb);
        let yb = floats_mut::<32>(yb);
        let d = vdupq_n_f32(e8m0_half(qb[0]));
        let (a, b) = mx_levels(qb);
        scale_i8x16(a, d, yb, 0);
        scale_i8x16(b, d, yb, 16);
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_nvfp4(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(NV_BYTES).zip(y.chunks_exact_mut(64)) {
        let qb = block::<NV_BYTES>(qb);
        let yb = floats_mut::<64>(yb);
        for k in 0..2 {
            let (a, b) = nv_levels(qb, k);
            scale_i8x16(a, vdupq_n_f32(ue4m3_half(qb[2 * k])), yb, 32 * k);
            scale_i8x16(b, vdupq_n_f32(ue4m3_half(qb[2 * k + 1])), yb, 32 * k + 16);
        }
    }
}

#[inline(always)]
pub unsafe fn vec_dot_mxfp4<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(MX_BYTES).zip(yq.chunks_exact(Q8_0_BYTES)) {
        let (xb, yb) = (block::<MX_BYTES>(xb), block::<Q8_0_BYTES>(yb));
        let (a, b) = mx_levels(xb);
        let acc = dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), a, ld_s8(yb, 2)), b, ld_s8(yb, 18));
        let d = f16_at(yb, 0) * e8m0_half(xb[0]);
        sumf += d * vaddvq_s32(acc) as f32;
    }
    sumf
}

#[inline(always)]
pub unsafe fn vec_dot_nvfp4<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, y2) in q.chunks_exact(NV_BYTES).zip(yq.chunks_exact(2 * Q8_0_BYTES)) {
        let xb = block::<NV_BYTES>(xb);
        for k in 0..2 {
            let yb = block::<Q8_0_BYTES>(&y2[k * Q8_0_BYTES..(k + 1) * Q8_0_BYTES]);
            let dy = f16_at(yb, 0);
            let (a, b) = nv_levels(xb, k);
            let sa = vaddvq_s32(dot16::<DOT>(vdupq_n_s32(0), a, ld_s8(yb, 2)));
            let sb = vaddvq_s32(dot16::<DOT>(vdupq_n_s32(0), b, ld_s8(yb, 18)));
            sumf += dy * ue4m3_half(xb[2 * k]) * sa as f32;
            sumf += dy * ue4m3_half(xb[2 * k + 1]) * sb as f32;
        }
    }
    sumf
}

/// `quantize_row_mxfp4_ref` by midpoint counts (see the AVX2 version for why that is
/// exact); extreme maxima take the reference path.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_mxfp4(x: &[f32], q: &mut [u8]) {
    use super::ternary::amax;
    use crate::arch::{block_mut, floats};
    use crate::reference::mxfp4::{best_index, exponent};
    const MID: [f32; 7] = [0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0];
    for (xb, qb) in x.chunks_exact(32).zip(q.chunks_exact_mut(MX_BYTES)) {
        let (xb, qb) = (floats::<32>(xb), block_mut::<MX_BYTES>(qb));
        let m = amax(xb);
        let e = exponent(m);
        let d = e8m0_half(e);
        qb[0] = e;
        let mut c = [0u8; 32];
        if !(1e-36..=1e37).contains(&m) {
            for (j, o) in c.iter_mut().enumerate() {
                *o = best_index(xb[j], d);
            }
        } else {
            for k in 0..8 {
                let v = ld_f32(xb, 4 * k);
                let a = vabsq_f32(v);
                let mut n = vdupq_n_u32(0);
                for mid in MID {
                    n = vsubq_u32(n, vcgtq_f32(a, vdupq_n_f32(mid * d)));
                }
                let neg = vandq_u32(vcltq_f32(v, vdupq_n_f32(0.0)), vcgtq_u32(n, vdupq_n_u32(0)));
                let code = vorrq_u32(n, vandq_u32(neg, vdupq_n_u32(8)));
                let mut lanes = [0u32; 4];
                vst1q_u32(lanes.as_mut_ptr(), code);
                for (i, l) in lanes.iter().enumerate() {
                    c[4 * k + i] = *l as u8;
                }
            }
        }
        for j in 0..16 {
            qb[1 + j] = c[j] | (c[j + 16] << 4);
        }
    }
}
