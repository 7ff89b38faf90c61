//! NEON flavour of the integer and table primitives the IQ2 quantizers use on top of
//! `v8` (the contract is `arch/x86_64/avx2/quant/v8_iq2.rs`'s: eight lanes, exact).
//! The lane permutes become byte table lookups: float lane `i` is bytes `4i..4i + 4`.

use std::arch::aarch64::*;

use super::v8::{I, V};

#[inline(always)]
pub unsafe fn shli<const S: i32>(a: I) -> I {
    I(vshlq_n_s32::<S>(a.0), vshlq_n_s32::<S>(a.1))
}
/// Logical right shift.
#[inline(always)]
pub unsafe fn shri<const S: i32>(a: I) -> I {
    let u = |x: int32x4_t| vreinterpretq_s32_u32(vshrq_n_u32::<S>(vreinterpretq_u32_s32(x)));
    I(u(a.0), u(a.1))
}
#[inline(always)]
pub unsafe fn ori(a: I, b: I) -> I {
    I(vorrq_s32(a.0, b.0), vorrq_s32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn lanesi(a: I) -> [i32; 8] {
    let mut out = [0i32; 8];
    vst1q_s32(out.as_mut_ptr(), a.0);
    vst1q_s32(out.as_mut_ptr().add(4), a.1);
    out
}
/// Byte indices selecting float lane `idx` (per i32 lane) of a byte table.
#[inline(always)]
unsafe fn lane_bytes(idx: int32x4_t) -> uint8x16_t {
    let b = vmlaq_n_u32(vdupq_n_u32(0x0302_0100), vreinterpretq_u32_s32(idx), 0x0404_0404);
    vreinterpretq_u8_u32(b)
}
/// Lane `j` is lane `idx[j]` of `table`, for `idx` in `0..4`.
#[inline(always)]
pub unsafe fn pick4(table: V, idx: I) -> V {
    let t = vreinterpretq_u8_f32(table.0);
    let p = |i: int32x4_t| vreinterpretq_f32_u8(vqtbl1q_u8(t, lane_bytes(i)));
    V(p(idx.0), p(idx.1))
}
/// Four floats as a table for `pick4`.
#[inline(always)]
pub unsafe fn table4(t: [f32; 4]) -> V {
    let v = vld1q_f32(t.as_ptr());
    V(v, v)
}
/// Bytes `b[at..at + 8]`, zero-extended.
#[inline(always)]
pub unsafe fn load_u8x8(b: &[u8], at: usize) -> I {
    assert!(at + 8 <= b.len());
    let w = vmovl_u8(vld1_u8(b.as_ptr().add(at)));
    I(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))), vreinterpretq_s32_u32(vmovl_high_u16(w)))
}
/// Lane `j` is lane `idx[j]` of `table`, for `idx` in `0..8`.
#[inline(always)]
pub unsafe fn pick8(table: V, idx: I) -> V {
    let t = uint8x16x2_t(vreinterpretq_u8_f32(table.0), vreinterpretq_u8_f32(table.1));
    let p = |i: int32x4_t| vreinterpretq_f32_u8(vqtbl2q_u8(t, lane_bytes(i)));
    V(p(idx.0), p(idx.1))
}
/// Per-coordinate tables of three values: `out[i]` holds `(t[0][i], t[1][i], t[2][i], 0)`
/// in lanes 0..4 and `(t[0][i+4], t[1][i+4], t[2][i+4], 0)` in lanes 4..8, for `pick8`
/// with an index of `level` (coordinates 0..4) or `level + 4` (coordinates 4..8).
#[inline(always)]
pub unsafe fn level_tables(t: [V; 3]) -> [V; 4] {
    // a 4x4 transpose of the rows t[0], t[1], t[2], 0 in each half
    let cols = |r0: float32x4_t, r1: float32x4_t, r2: float32x4_t| {
        let z = vdupq_n_f32(0.0);
        let d = vreinterpretq_f64_f32;
        let (a, b) = (d(vzip1q_f32(r0, r1)), d(vzip1q_f32(r2, z)));
        let (c, e) = (d(vzip2q_f32(r0, r1)), d(vzip2q_f32(r2, z)));
        let f = vreinterpretq_f32_f64;
        [f(vzip1q_f64(a, b)), f(vzip2q_f64(a, b)), f(vzip1q_f64(c, e)), f(vzip2q_f64(c, e))]
    };
    let lo = cols(t[0].0, t[1].0, t[2].0);
    let hi = cols(t[0].1, t[1].1, t[2].1);
    [V(lo[0], hi[0]), V(lo[1], hi[1]), V(lo[2], hi[2]), V(lo[3], hi[3])]
}

/// The least lane of a vector without NaN, in every lane.
#[inline(always)]
pub unsafe fn hmin_all(v: V) -> V {
    let m = vdupq_n_f32(vminvq_f32(vminq_f32(v.0, v.1)));
    V(m, m)
}
