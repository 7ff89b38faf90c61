//! The activation formats Q8_0, Q8_1 and Q8_K: quantizers byte-identical to the
//! reference and dequantizers. Q8_0/Q8_1 round half away from zero and model x86's
//! truncating conversion like `common::trunc_x86`; Q8_K keeps ggml's 1.5*2^23 rounding
//! trick; both keep the low byte.

use std::arch::aarch64::*;

use super::util::*;
use crate::arch::{block, block_mut, floats, floats_mut};
use crate::reference::common::f32_to_f16;
use crate::reference::q8_k::{BLOCK_BYTES as Q8K_BYTES, BSUMS, QS};
use crate::types::QK_K;

const QK: usize = 32;

/// `common::trunc_x86(v.round())` on four lanes: FRINTA rounds half away from zero;
/// NaN, infinities and values outside the i32 range become i32::MIN, as x86's
/// truncating conversion (which the reference models) gives.
#[inline(always)]
unsafe fn round_away_trunc(v: float32x4_t) -> int32x4_t {
    let r = vrndaq_f32(v);
    let in_range = vcaltq_f32(r, vdupq_n_f32(2_147_483_648.0));
    vbslq_s32(in_range, vcvtq_s32_f32(r), vdupq_n_s32(i32::MIN))
}

/// One 32-value block: (d, the 32 bytes as two vectors).
#[inline(always)]
unsafe fn q8_block(x: &[f32; QK]) -> (f32, [int8x16_t; 2]) {
    let mut m = vabsq_f32(ld_f32(x, 0));
    for k in 1..8 {
        m = vmaxq_f32(m, vabsq_f32(ld_f32(x, 4 * k)));
    }
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [vdupq_n_s8(0); 2];
    if id.is_infinite() {
        // d is subnormal: every x*id is +-inf or NaN, which the reference's x86-style
        // float-to-int conversion turns into the byte 0 (see `common::trunc_x86`)
        return (d, out);
    }
    for (h, o) in out.iter_mut().enumerate() {
        let r: [int32x4_t; 4] = std::array::from_fn(|k| round_away_trunc(vmulq_n_f32(ld_f32(x, 16 * h + 4 * k), id)));
        // Truncating narrows: `as i8` keeps the low byte.
        let a = vcombine_s16(vmovn_s32(r[0]), vmovn_s32(r[1]));
        let b = vcombine_s16(vmovn_s32(r[2]), vmovn_s32(r[3]));
        *o = vcombine_s8(vmovn_s16(a), vmovn_s16(b));
    }
    (d, out)
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_0(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(34)) {
        let qb = block_mut::<34>(qb);
        let (d, v) = q8_block(floats(xb));
        qb[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        st_u8(qb, 2, vreinterpretq_u8_s8(v[0]));
        st_u8(qb, 18, vreinterpretq_u8_s8(v[1]));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_1(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(36)) {
        let qb = block_mut::<36>(qb);
        let (d, v) = q8_block(floats(xb));
        let sum = vaddlvq_s8(v[0]) as i32 + vaddlvq_s8(v[1]) as i32;
        qb[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        qb[2..4].copy_from_slice(&f32_to_f16(sum as f32 * d).to_le_bytes());
        st_u8(qb, 4, vreinterpretq_u8_s8(v[0]));
        st_u8(qb, 20, vreinterpretq_u8_s8(v[1]));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_k(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(Q8K_BYTES)) {
        let xb = floats::<QK_K>(xb);
        let qb = block_mut::<Q8K_BYTES>(qb);
        let mut m = vdupq_n_f32(0.0);
        for k in 0..QK_K / 4 {
            m = vmaxq_f32(m, vabsq_f32(ld_f32(xb, 4 * k)));
        }
        let amax = vmaxvq_f32(m);
        if amax == 0.0 {
            qb.fill(0);
            continue;
        }
        // The first value of largest magnitude gives the scale its sign.
        let av = vdupq_n_f32(amax);
        let mut max = 0.0f32;
        for k in 0..QK_K / 4 {
            if vmaxvq_u32(vceqq_f32(vabsq_f32(ld_f32(xb, 4 * k)), av)) != 0 {
                max = xb[4 * k..4 * k + 4].iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let magic = vdupq_n_f32(12_582_912.0);
        let mant = vdupq_n_s32(0x007f_ffff);
        let off = vdupq_n_s32(0x0040_0000);
        let lim = vdupq_n_s32(127);
        for g in 0..QK_K / 16 {
            let r: [int32x4_t; 4] = std::array::from_fn(|k| {
                let v = vaddq_f32(vmulq_n_f32(ld_f32(xb, 16 * g + 4 * k), iscale), magic);
                vminq_s32(vsubq_s32(vandq_s32(vreinterpretq_s32_f32(v), mant), off), lim)
            });
            // Truncating narrows: `as i8` keeps the low byte.
            let a = vcombine_s16(vmovn_s32(r[0]), vmovn_s32(r[1]));
            let b = vcombine_s16(vmovn_s32(r[2]), vmovn_s32(r[3]));
            let bytes = vcombine_s8(vmovn_s16(a), vmovn_s16(b));
            st_u8(qb, QS + 16 * g, vreinterpretq_u8_s8(bytes));
            let s = vaddlvq_s8(bytes);
            qb[BSUMS + 2 * g..BSUMS + 2 * g + 2].copy_from_slice(&s.to_le_bytes());
        }
        qb[0..4].copy_from_slice(&(1.0f32 / iscale).to_le_bytes());
    }
}

#[inline(always)]
unsafe fn dequantize_q8<const B: usize, const AT: usize>(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(B).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<B>(qb);
        let yb = floats_mut::<QK>(yb);
        let d = vdupq_n_f32(f16_at(qb, 0));
        scale_i8x16(ld_s8(qb, AT), d, yb, 0);
        scale_i8x16(ld_s8(qb, AT + 16), d, yb, 16);
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q8_0(q: &[u8], y: &mut [f32]) {
    dequantize_q8::<34, 2>(q, y)
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q8_1(q: &[u8], y: &mut [f32]) {
    dequantize_q8::<36, 4>(q, y)
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q8_k(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(Q8K_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let qb = block::<Q8K_BYTES>(qb);
        let yb = floats_mut::<QK_K>(yb);
        let d = vdupq_n_f32(f32_at(qb, 0));
        for g in 0..QK_K / 16 {
            scale_i8x16(ld_s8(qb, QS + 16 * g), d, yb, 16 * g);
        }
    }
}
