//! The 32-value formats Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL: dequantize and their dots
//! with Q8_0 / Q8_1, and Q8_0 x Q8_0. Integer block sums are exact (SDOT or widening
//! products); the float steps then follow the reference's order, so every dot here is
//! bit-identical to the reference.

use std::arch::aarch64::*;

use super::util::*;
use crate::arch::{block, floats_mut};

const QK: usize = 32;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// ggml's non-linear 4-bit levels (`kvalues_iq4nl`).
pub const IQ4NL_LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// 32 bits to two vectors of 16 bytes, 0xff where the bit is set (bit i to byte i).
#[inline(always)]
pub unsafe fn bits_to_bytes32(bits: u32) -> [uint8x16_t; 2] {
    const LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const SEL: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let v = vreinterpretq_u8_u32(vdupq_n_u32(bits));
    let sel = vld1q_u8(SEL.as_ptr());
    [vtstq_u8(vqtbl1q_u8(v, vld1q_u8(LO.as_ptr())), sel), vtstq_u8(vqtbl1q_u8(v, vld1q_u8(HI.as_ptr())), sel)]
}

#[inline(always)]
unsafe fn q4_0_values(xb: &[u8; 18]) -> [int8x16_t; 2] {
    let b = ld_u8(xb, 2);
    let eight = vdupq_n_s8(8);
    [vsubq_s8(low_nibbles(b), eight), vsubq_s8(high_nibbles(b), eight)]
}

#[inline(always)]
unsafe fn q4_1_values(xb: &[u8; 20]) -> [int8x16_t; 2] {
    let b = ld_u8(xb, 4);
    [low_nibbles(b), high_nibbles(b)]
}

/// Q5_0 levels: where the fifth bit is clear the top nibble is set instead, which is
/// `nibble - 16` as a signed byte.
#[inline(always)]
unsafe fn q5_0_values(xb: &[u8; 22]) -> [int8x16_t; 2] {
    let h = bits_to_bytes32(u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]));
    let b = ld_u8(xb, 6);
    let top = vdupq_n_u8(0xf0);
    [
        vorrq_s8(low_nibbles(b), vreinterpretq_s8_u8(vbicq_u8(top, h[0]))),
        vorrq_s8(high_nibbles(b), vreinterpretq_s8_u8(vbicq_u8(top, h[1]))),
    ]
}

#[inline(always)]
unsafe fn q5_1_values(xb: &[u8; 24]) -> [int8x16_t; 2] {
    let h = bits_to_bytes32(u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]));
    let b = ld_u8(xb, 8);
    let bit = vdupq_n_u8(0x10);
    [
        vorrq_s8(low_nibbles(b), vreinterpretq_s8_u8(vandq_u8(h[0], bit))),
        vorrq_s8(high_nibbles(b), vreinterpretq_s8_u8(vandq_u8(h[1], bit))),
    ]
}

#[inline(always)]
unsafe fn iq4_nl_values(xb: &[u8; 18]) -> [int8x16_t; 2] {
    let table = vld1q_s8(IQ4NL_LEVELS.as_ptr());
    let b = ld_u8(xb, 2);
    [vqtbl1q_s8(table, vandq_u8(b, vdupq_n_u8(0x0f))), vqtbl1q_s8(table, vshrq_n_u8::<4>(b))]
}

#[inline(always)]
unsafe fn dequantize_scaled<const B: usize>(q: &[u8], y: &mut [f32], values: impl Fn(&[u8; B]) -> [int8x16_t; 2]) {
    for (qb, yb) in q.chunks_exact(B).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<B>(qb);
        let yb = floats_mut::<QK>(yb);
        let d = vdupq_n_f32(f16_at(qb, 0));
        let v = values(qb);
        scale_i8x16(v[0], d, yb, 0);
        scale_i8x16(v[1], d, yb, 16);
    }
}

#[inline(always)]
unsafe fn dequantize_offset<const B: usize>(q: &[u8], y: &mut [f32], values: impl Fn(&[u8; B]) -> [int8x16_t; 2]) {
    for (qb, yb) in q.chunks_exact(B).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<B>(qb);
        let yb = floats_mut::<QK>(yb);
        let d = vdupq_n_f32(f16_at(qb, 0));
        let m = vdupq_n_f32(f16_at(qb, 2));
        let v = values(qb);
        scale_add_i8x16(v[0], d, m, yb, 0);
        scale_add_i8x16(v[1], d, m, yb, 16);
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q4_0(q: &[u8], y: &mut [f32]) {
    dequantize_scaled::<18>(q, y, |b| q4_0_values(b))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q5_0(q: &[u8], y: &mut [f32]) {
    dequantize_scaled::<22>(q, y, |b| q5_0_values(b))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_iq4_nl(q: &[u8], y: &mut [f32]) {
    dequantize_scaled::<18>(q, y, |b| iq4_nl_values(b))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q4_1(q: &[u8], y: &mut [f32]) {
    dequantize_offset::<20>(q, y, |b| q4_1_values(b))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q5_1(q: &[u8], y: &mut [f32]) {
    dequantize_offset::<24>(q, y, |b| q5_1_values(b))
}

/// The block loop shared by the 32-value dots: an exact integer sum per block, turned
/// into the reference's float term by `term`, added in block order.
#[inline(always)]
unsafe fn dot_blocks<const DOT: bool, const B: usize, const Y: usize, const YQ: usize>(
    q: &[u8],
    yq: &[u8],
    values: impl Fn(&[u8; B]) -> [int8x16_t; 2],
    term: impl Fn(i32, &[u8; B], &[u8; Y]) -> f32,
) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(B).zip(yq.chunks_exact(Y)) {
        let (xb, yb) = (block::<B>(xb), block::<Y>(yb));
        let v = values(xb);
        let acc = dot16::<DOT>(vdupq_n_s32(0), v[0], ld_s8(yb, YQ));
        let acc = dot16::<DOT>(acc, v[1], ld_s8(yb, YQ + 16));
        sumf += term(vaddvq_s32(acc), xb, yb);
    }
    sumf
}

#[inline(always)]
pub unsafe fn vec_dot_q4_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<DOT, 18, Q8_0_BYTES, 2>(
        q,
        yq,
        |b| q4_0_values(b),
        |s, xb, yb| s as f32 * f16_at(xb, 0) * f16_at(yb, 0),
    )
}

#[inline(always)]
pub unsafe fn vec_dot_q5_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<DOT, 22, Q8_0_BYTES, 2>(
        q,
        yq,
        |b| q5_0_values(b),
        |s, xb, yb| (f16_at(xb, 0) * f16_at(yb, 0)) * s as f32,
    )
}

#[inline(always)]
pub unsafe fn vec_dot_iq4_nl<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<DOT, 18, Q8_0_BYTES, 2>(
        q,
        yq,
        |b| iq4_nl_values(b),
        |s, xb, yb| (f16_at(yb, 0) * f16_at(xb, 0)) * s as f32,
    )
}

#[inline(always)]
pub unsafe fn vec_dot_q8_0<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<DOT, Q8_0_BYTES, Q8_0_BYTES, 2>(
        q,
        yq,
        |b| [ld_s8(b, 2), ld_s8(b, 18)],
        |s, xb, yb| s as f32 * (f16_at(xb, 0) * f16_at(yb, 0)),
    )
}

#[inline(always)]
pub unsafe fn vec_dot_q4_1<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<DOT, 20, Q8_1_BYTES, 4>(
        q,
        yq,
        |b| q4_1_values(b),
        |s, xb, yb| (f16_at(xb, 0) * f16_at(yb, 0)) * s as f32 + f16_at(xb, 2) * f16_at(yb, 2),
    )
}

#[inline(always)]
pub unsafe fn vec_dot_q5_1<const DOT: bool>(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<DOT, 24, Q8_1_BYTES, 4>(
        q,
        yq,
        |b| q5_1_values(b),
        |s, xb, yb| (f16_at(xb, 0) * f16_at(yb, 0)) * s as f32 + f16_at(xb, 2) * f16_at(yb, 2),
    )
}
