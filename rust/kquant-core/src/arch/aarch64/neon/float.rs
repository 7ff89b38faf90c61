//! F16, BF16 and F32 storage. f16 widening and narrowing are FCVTL / FCVTN (base
//! AArch64, round to nearest even under the default FPCR, NaNs quieted with the payload
//! kept, exactly as `common::{f16_to_f32, f32_to_f16}`); Rust has no stable intrinsic
//! for them, hence one instruction of inline assembly each. Dots accumulate exact
//! f32 x f32 products in f64, like the reference.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::reference::common::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

#[inline(always)]
unsafe fn ld_u16x8(b: &[u8], at: usize) -> uint16x8_t {
    let c: &[u8; 16] = b[at..at + 16].try_into().unwrap();
    vld1q_u16(c.as_ptr().cast())
}

/// Eight f16 (as bits) to two vectors of four f32.
#[inline(always)]
unsafe fn widen_f16(h: uint16x8_t) -> [float32x4_t; 2] {
    let lo: float32x4_t;
    let hi: float32x4_t;
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    [lo, hi]
}

/// Two vectors of four f32 to eight f16 bits, rounding to nearest even.
#[inline(always)]
unsafe fn narrow_f16(lo: float32x4_t, hi: float32x4_t) -> uint16x8_t {
    let h: uint16x8_t;
    asm!(
        "fcvtn {h:v}.4h, {lo:v}.4s",
        "fcvtn2 {h:v}.8h, {hi:v}.4s",
        h = out(vreg) h,
        lo = in(vreg) lo,
        hi = in(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    h
}

#[inline(always)]
unsafe fn widen_bf16(h: uint16x8_t) -> [float32x4_t; 2] {
    [vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))), vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h))]
}

/// `common::f32_to_bf16` on four lanes.
#[inline(always)]
unsafe fn bf16x4(x: float32x4_t) -> uint16x4_t {
    let u = vreinterpretq_u32_f32(x);
    let lsb = vandq_u32(vshrq_n_u32::<16>(u), vdupq_n_u32(1));
    let rounded = vshrq_n_u32::<16>(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), lsb));
    let quiet = vorrq_u32(vshrq_n_u32::<16>(u), vdupq_n_u32(64));
    let nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fff_ffff)), vdupq_n_u32(0x7f80_0000));
    vmovn_u32(vbslq_u32(nan, quiet, rounded))
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_f16(q: &[u8], y: &mut [f32]) {
    let n = y.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, yc) in y[..main].chunks_exact_mut(8).enumerate() {
        let [lo, hi] = widen_f16(ld_u16x8(q, 16 * i));
        vst1q_f32(yc.as_mut_ptr(), lo);
        vst1q_f32(yc.as_mut_ptr().add(4), hi);
    }
    for i in main..n {
        y[i] = f16_to_f32(u16::from_le_bytes([q[2 * i], q[2 * i + 1]]));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_f16(x: &[f32], q: &mut [u8]) {
    let n = x.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, xc) in x[..main].chunks_exact(8).enumerate() {
        let h = narrow_f16(vld1q_f32(xc.as_ptr()), vld1q_f32(xc.as_ptr().add(4)));
        let out: &mut [u8; 16] = (&mut q[16 * i..16 * i + 16]).try_into().unwrap();
        vst1q_u16(out.as_mut_ptr().cast(), h);
    }
    for i in main..n {
        q[2 * i..2 * i + 2].copy_from_slice(&f32_to_f16(x[i]).to_le_bytes());
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn dequantize_bf16(q: &[u8], y: &mut [f32]) {
    let n = y.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, yc) in y[..main].chunks_exact_mut(8).enumerate() {
        let [lo, hi] = widen_bf16(ld_u16x8(q, 16 * i));
        vst1q_f32(yc.as_mut_ptr(), lo);
        vst1q_f32(yc.as_mut_ptr().add(4), hi);
    }
    for i in main..n {
        y[i] = bf16_to_f32(u16::from_le_bytes([q[2 * i], q[2 * i + 1]]));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_bf16(x: &[f32], q: &mut [u8]) {
    let n = x.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, xc) in x[..main].chunks_exact(8).enumerate() {
        let h = vcombine_u16(bf16x4(vld1q_f32(xc.as_ptr())), bf16x4(vld1q_f32(xc.as_ptr().add(4))));
        let out: &mut [u8; 16] = (&mut q[16 * i..16 * i + 16]).try_into().unwrap();
        vst1q_u16(out.as_mut_ptr().cast(), h);
    }
    for i in main..n {
        q[2 * i..2 * i + 2].copy_from_slice(&f32_to_bf16(x[i]).to_le_bytes());
    }
}

/// Sum of products of 8-value f32 chunks produced by `load`, in f64.
#[inline(always)]
unsafe fn dot_f64(chunks: usize, load: impl Fn(usize) -> ([float32x4_t; 2], [float32x4_t; 2])) -> f64 {
    let mut acc = [vdupq_n_f64(0.0); 4];
    for i in 0..chunks {
        let (a, b) = load(i);
        for h in 0..2 {
            // f32 x f32 is exact in f64, so the fused multiply-add rounds only the sum.
            acc[2 * h] = vfmaq_f64(acc[2 * h], vcvt_f64_f32(vget_low_f32(a[h])), vcvt_f64_f32(vget_low_f32(b[h])));
            acc[2 * h + 1] = vfmaq_f64(acc[2 * h + 1], vcvt_high_f64_f32(a[h]), vcvt_high_f64_f32(b[h]));
        }
    }
    vaddvq_f64(vaddq_f64(vaddq_f64(acc[0], acc[1]), vaddq_f64(acc[2], acc[3])))
}

fn tail(a: &[u8], b: &[u8], width: usize, from: usize, n: usize, f: fn(&[u8]) -> f32) -> f64 {
    (from..n).map(|i| f(&a[width * i..]) as f64 * f(&b[width * i..]) as f64).sum()
}

#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f16(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len()) / 2;
    let s = dot_f64(n / 8, |i| (widen_f16(ld_u16x8(a, 16 * i)), widen_f16(ld_u16x8(b, 16 * i))));
    (s + tail(a, b, 2, n / 8 * 8, n, |x| f16_to_f32(u16::from_le_bytes([x[0], x[1]])))) as f32
}

#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_bf16(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len()) / 2;
    let s = dot_f64(n / 8, |i| (widen_bf16(ld_u16x8(a, 16 * i)), widen_bf16(ld_u16x8(b, 16 * i))));
    (s + tail(a, b, 2, n / 8 * 8, n, |x| bf16_to_f32(u16::from_le_bytes([x[0], x[1]])))) as f32
}

#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f32(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len()) / 4;
    let load = |v: &[u8], i: usize| {
        let c: &[u8; 32] = v[32 * i..32 * i + 32].try_into().unwrap();
        let p = c.as_ptr().cast::<f32>();
        [vld1q_f32(p), vld1q_f32(p.add(4))]
    };
    let s = dot_f64(n / 8, |i| (load(a, i), load(b, i)));
    (s + tail(a, b, 4, n / 8 * 8, n, |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))) as f32
}
