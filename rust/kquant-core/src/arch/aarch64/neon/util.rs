//! Small NEON building blocks shared by the kernels; `#[inline(always)]`, called from
//! functions compiled with NEON enabled (part of the aarch64 base architecture).

use std::arch::aarch64::*;
use std::arch::asm;

/// One f16 (little-endian bytes at `at`) to f32; exact.
#[inline(always)]
pub unsafe fn f16_at(b: &[u8], at: usize) -> f32 {
    crate::reference::common::read_f16(b, at)
}

#[inline(always)]
pub unsafe fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub unsafe fn ld_u8<const N: usize>(b: &[u8; N], at: usize) -> uint8x16_t {
    debug_assert!(at + 16 <= N);
    vld1q_u8(b.as_ptr().add(at))
}

#[inline(always)]
pub unsafe fn ld_s8<const N: usize>(b: &[u8; N], at: usize) -> int8x16_t {
    debug_assert!(at + 16 <= N);
    vld1q_s8(b.as_ptr().add(at).cast())
}

#[inline(always)]
pub unsafe fn ld_f32<const N: usize>(x: &[f32; N], at: usize) -> float32x4_t {
    debug_assert!(at + 4 <= N);
    vld1q_f32(x.as_ptr().add(at))
}

#[inline(always)]
pub unsafe fn st_f32<const N: usize>(y: &mut [f32; N], at: usize, v: float32x4_t) {
    debug_assert!(at + 4 <= N);
    vst1q_f32(y.as_mut_ptr().add(at), v)
}

#[inline(always)]
pub unsafe fn st_u8<const N: usize>(b: &mut [u8; N], at: usize, v: uint8x16_t) {
    debug_assert!(at + 16 <= N);
    vst1q_u8(b.as_mut_ptr().add(at), v)
}

/// SDOT (FEAT_DotProd): `acc[i] += sum of the four byte products of lane i`. Rust has
/// no stable intrinsic for it yet, hence the one instruction of inline assembly.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    asm!(
        "sdot {r:v}.4s, {a:v}.16b, {b:v}.16b",
        r = inout(vreg) r,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// Exact dot of 16 signed byte pairs into 4 i32 lanes, added to `acc`. With `DOT` it is
/// one SDOT; without, widening products (|p| <= 2^14) summed pairwise.
#[inline(always)]
pub unsafe fn dot16<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        sdot(acc, a, b)
    } else {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// 16 signed bytes as 16 floats `q * d` (one rounding each).
#[inline(always)]
pub unsafe fn scale_i8x16<const N: usize>(q: int8x16_t, d: float32x4_t, y: &mut [f32; N], at: usize) {
    let lo = vmovl_s8(vget_low_s8(q));
    let hi = vmovl_high_s8(q);
    st_f32(y, at, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
    st_f32(y, at + 4, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d));
    st_f32(y, at + 8, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
    st_f32(y, at + 12, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d));
}

/// 16 bytes as 16 floats `d * q - m`: two roundings, in the reference's order.
#[inline(always)]
pub unsafe fn scale_sub_i8x16<const N: usize>(
    q: int8x16_t,
    d: float32x4_t,
    m: float32x4_t,
    y: &mut [f32; N],
    at: usize,
) {
    let lo = vmovl_s8(vget_low_s8(q));
    let hi = vmovl_high_s8(q);
    let parts = [vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)), vmovl_high_s16(hi)];
    for (k, p) in parts.into_iter().enumerate() {
        st_f32(y, at + 4 * k, vsubq_f32(vmulq_f32(d, vcvtq_f32_s32(p)), m));
    }
}

/// 16 bytes as 16 floats `q * d + m` (Q4_1 / Q5_1 order).
#[inline(always)]
pub unsafe fn scale_add_i8x16<const N: usize>(
    q: int8x16_t,
    d: float32x4_t,
    m: float32x4_t,
    y: &mut [f32; N],
    at: usize,
) {
    let lo = vmovl_s8(vget_low_s8(q));
    let hi = vmovl_high_s8(q);
    let parts = [vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)), vmovl_high_s16(hi)];
    for (k, p) in parts.into_iter().enumerate() {
        st_f32(y, at + 4 * k, vaddq_f32(vmulq_f32(vcvtq_f32_s32(p), d), m));
    }
}

#[inline(always)]
pub unsafe fn low_nibbles(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)))
}

#[inline(always)]
pub unsafe fn high_nibbles(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(vshrq_n_u8::<4>(v))
}

/// Widening per-position products of 16 byte pairs, times `scale`, added to the
/// 8 lanes `acc` (lane k holds positions congruent to k mod 8): the reference's
/// `aux32[k] += scale * (q8 * a)` exactly.
#[inline(always)]
pub unsafe fn lanes_mla(acc: &mut [int32x4_t; 2], a: int8x16_t, b: int8x16_t, scale: i16) {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    acc[0] = vmlal_n_s16(acc[0], vget_low_s16(lo), scale);
    acc[1] = vmlal_high_n_s16(acc[1], lo, scale);
    acc[0] = vmlal_n_s16(acc[0], vget_low_s16(hi), scale);
    acc[1] = vmlal_high_n_s16(acc[1], hi, scale);
}

/// The reference's float lanes: `lanes[k] += d * aux32[k]` (multiply, then add).
#[inline(always)]
pub unsafe fn lanes_accumulate(lanes: &mut [float32x4_t; 2], d: f32, aux: &[int32x4_t; 2]) {
    lanes[0] = vaddq_f32(lanes[0], vmulq_n_f32(vcvtq_f32_s32(aux[0]), d));
    lanes[1] = vaddq_f32(lanes[1], vmulq_n_f32(vcvtq_f32_s32(aux[1]), d));
}

/// `start + lanes[0] + lanes[1] + ... + lanes[7]`, left to right.
#[inline(always)]
pub unsafe fn lanes_finish(start: f32, lanes: &[float32x4_t; 2]) -> f32 {
    let mut v = [0f32; 8];
    vst1q_f32(v.as_mut_ptr(), lanes[0]);
    vst1q_f32(v.as_mut_ptr().add(4), lanes[1]);
    let mut s = start;
    for x in v {
        s += x;
    }
    s
}
