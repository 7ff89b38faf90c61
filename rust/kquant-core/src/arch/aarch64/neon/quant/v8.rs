//! The NEON flavour of the eight-lane primitives the shared quantizer code is written
//! in (see `arch/x86_64/avx2/quant/v8.rs` for the contract): a pair of 128-bit
//! registers is eight lanes. Each primitive is one IEEE operation per lane with the
//! scalar reference's rounding (no fused multiply-add), and comparisons and selects
//! have Rust's semantics for NaN. Where x86 and AArch64 instructions differ on NaN or
//! out-of-range inputs (min/max, float-to-int), the x86 behaviour the reference pins
//! down is built from compares and selects.

use std::arch::aarch64::*;

use super::lanes::IQ4_MIDS;

/// Eight f32 lanes.
#[derive(Clone, Copy)]
pub(super) struct V(pub(super) float32x4_t, pub(super) float32x4_t);
/// Eight i32 lanes.
#[derive(Clone, Copy)]
pub(super) struct I(pub(super) int32x4_t, pub(super) int32x4_t);
/// 32 bytes.
#[derive(Clone, Copy)]
pub(super) struct B(uint8x16_t, uint8x16_t);
/// 16 bytes.
pub(super) type H = uint8x16_t;

#[inline(always)]
unsafe fn m(v: float32x4_t) -> uint32x4_t {
    vreinterpretq_u32_f32(v)
}
#[inline(always)]
unsafe fn f(v: uint32x4_t) -> float32x4_t {
    vreinterpretq_f32_u32(v)
}

#[inline(always)]
pub unsafe fn set(v: f32) -> V {
    V(vdupq_n_f32(v), vdupq_n_f32(v))
}
#[inline(always)]
pub unsafe fn seti(v: i32) -> I {
    I(vdupq_n_s32(v), vdupq_n_s32(v))
}
#[inline(always)]
pub unsafe fn zero() -> V {
    set(0.0)
}
#[inline(always)]
pub unsafe fn add(a: V, b: V) -> V {
    V(vaddq_f32(a.0, b.0), vaddq_f32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn sub(a: V, b: V) -> V {
    V(vsubq_f32(a.0, b.0), vsubq_f32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn mul(a: V, b: V) -> V {
    V(vmulq_f32(a.0, b.0), vmulq_f32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn div(a: V, b: V) -> V {
    V(vdivq_f32(a.0, b.0), vdivq_f32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn sqrt(a: V) -> V {
    V(vsqrtq_f32(a.0), vsqrtq_f32(a.1))
}
/// `a > b`, false when either is NaN (Rust's `>`).
#[inline(always)]
pub unsafe fn gt(a: V, b: V) -> V {
    V(f(vcgtq_f32(a.0, b.0)), f(vcgtq_f32(a.1, b.1)))
}
#[inline(always)]
pub unsafe fn lt(a: V, b: V) -> V {
    V(f(vcltq_f32(a.0, b.0)), f(vcltq_f32(a.1, b.1)))
}
#[inline(always)]
pub unsafe fn le(a: V, b: V) -> V {
    V(f(vcleq_f32(a.0, b.0)), f(vcleq_f32(a.1, b.1)))
}
#[inline(always)]
pub unsafe fn eq(a: V, b: V) -> V {
    V(f(vceqq_f32(a.0, b.0)), f(vceqq_f32(a.1, b.1)))
}
/// `a != b` (true for NaN, as Rust's `!=`).
#[inline(always)]
pub unsafe fn ne(a: V, b: V) -> V {
    V(f(vmvnq_u32(vceqq_f32(a.0, b.0))), f(vmvnq_u32(vceqq_f32(a.1, b.1))))
}
/// `a != b` for values that are never NaN.
#[inline(always)]
pub unsafe fn ne_num(a: V, b: V) -> V {
    ne(a, b)
}
#[inline(always)]
pub unsafe fn and(a: V, b: V) -> V {
    V(f(vandq_u32(m(a.0), m(b.0))), f(vandq_u32(m(a.1), m(b.1))))
}
#[inline(always)]
pub unsafe fn or(a: V, b: V) -> V {
    V(f(vorrq_u32(m(a.0), m(b.0))), f(vorrq_u32(m(a.1), m(b.1))))
}
/// `!mask & v`: zero where the mask is set.
#[inline(always)]
pub unsafe fn andnot(mask: V, v: V) -> V {
    V(f(vbicq_u32(m(v.0), m(mask.0))), f(vbicq_u32(m(v.1), m(mask.1))))
}
/// `if mask { yes } else { no }` per lane (the mask is all ones or all zeros).
#[inline(always)]
pub unsafe fn sel(mask: V, yes: V, no: V) -> V {
    V(vbslq_f32(m(mask.0), yes.0, no.0), vbslq_f32(m(mask.1), yes.1, no.1))
}
#[inline(always)]
pub unsafe fn abs(a: V) -> V {
    V(vabsq_f32(a.0), vabsq_f32(a.1))
}
/// Rust's unary minus: flips the sign bit, NaN included.
#[inline(always)]
pub unsafe fn neg(a: V) -> V {
    V(vnegq_f32(a.0), vnegq_f32(a.1))
}
#[inline(always)]
pub unsafe fn any(mask: V) -> bool {
    vmaxvq_u32(vorrq_u32(m(mask.0), m(mask.1))) != 0
}
/// `if a < b { a } else { b }`, x86's minps (NEON's fmin would propagate NaN).
#[inline(always)]
pub unsafe fn min_lt(a: V, b: V) -> V {
    sel(lt(a, b), a, b)
}
/// `if a > b { a } else { b }`, x86's maxps.
#[inline(always)]
pub unsafe fn max_gt(a: V, b: V) -> V {
    sel(gt(a, b), a, b)
}

/// `common::nearest_int` in eight lanes, bit for bit.
#[inline(always)]
pub unsafe fn nearest(v: V) -> I {
    let magic = vdupq_n_f32(12_582_912.0);
    let (mant, off) = (vdupq_n_s32(0x007f_ffff), vdupq_n_s32(0x0040_0000));
    let r0 = vreinterpretq_s32_f32(vaddq_f32(v.0, magic));
    let r1 = vreinterpretq_s32_f32(vaddq_f32(v.1, magic));
    I(vsubq_s32(vandq_s32(r0, mant), off), vsubq_s32(vandq_s32(r1, mant), off))
}
#[inline(always)]
pub unsafe fn zeroi() -> I {
    seti(0)
}
#[inline(always)]
pub unsafe fn addi(a: I, b: I) -> I {
    I(vaddq_s32(a.0, b.0), vaddq_s32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn mini(a: I, b: I) -> I {
    I(vminq_s32(a.0, b.0), vminq_s32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn maxi(a: I, b: I) -> I {
    I(vmaxq_s32(a.0, b.0), vmaxq_s32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn andi(a: I, b: I) -> I {
    I(vandq_s32(a.0, b.0), vandq_s32(a.1, b.1))
}
#[inline(always)]
pub unsafe fn clampi(q: I, lo: i32, hi: i32) -> I {
    mini(maxi(q, seti(lo)), seti(hi))
}
/// Exact for the small integers it is used on.
#[inline(always)]
pub unsafe fn tof(q: I) -> V {
    V(vcvtq_f32_s32(q.0), vcvtq_f32_s32(q.1))
}

/// Eight i32 from an array.
#[inline(always)]
pub unsafe fn from_i32s(a: [i32; 8]) -> I {
    I(vld1q_s32(a.as_ptr()), vld1q_s32(a.as_ptr().add(4)))
}

/// Eight consecutive floats from `x[at..]`.
#[inline(always)]
pub unsafe fn loadx(x: &[f32], at: usize) -> V {
    assert!(at + 8 <= x.len());
    V(vld1q_f32(x.as_ptr().add(at)), vld1q_f32(x.as_ptr().add(at + 4)))
}

/// Lanes of a vector as an array.
#[inline(always)]
pub unsafe fn lanes(v: V) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    vst1q_f32(out.as_mut_ptr(), v.0);
    vst1q_f32(out.as_mut_ptr().add(4), v.1);
    out
}

/// Rows `r[j]` (4 floats each) to columns.
#[inline(always)]
unsafe fn transpose4(r: [float32x4_t; 4]) -> [float32x4_t; 4] {
    let t0 = vtrn1q_f32(r[0], r[1]);
    let t1 = vtrn2q_f32(r[0], r[1]);
    let t2 = vtrn1q_f32(r[2], r[3]);
    let t3 = vtrn2q_f32(r[2], r[3]);
    let d = vreinterpretq_f64_f32;
    let back = vreinterpretq_f32_f64;
    [
        back(vtrn1q_f64(d(t0), d(t2))),
        back(vtrn1q_f64(d(t1), d(t3))),
        back(vtrn2q_f64(d(t0), d(t2))),
        back(vtrn2q_f64(d(t1), d(t3))),
    ]
}

/// `K * 8` groups of `N` values, group `g` starting at `x[g * stride]`, transposed:
/// `out[i][k]` lane `j` is value `i` of group `8k + j`.
#[inline(always)]
pub unsafe fn load_groups<const N: usize, const K: usize>(x: &[f32], stride: usize) -> [[V; K]; N] {
    assert!(N % 8 == 0 && stride >= N && x.len() >= (8 * K - 1) * stride + N);
    let mut out = [[zero(); K]; N];
    for k in 0..K {
        for c in 0..N / 4 {
            let mut lo = [vdupq_n_f32(0.0); 4];
            let mut hi = [vdupq_n_f32(0.0); 4];
            for j in 0..4 {
                lo[j] = vld1q_f32(x.as_ptr().add((8 * k + j) * stride + 4 * c));
                hi[j] = vld1q_f32(x.as_ptr().add((8 * k + 4 + j) * stride + 4 * c));
            }
            let (lo, hi) = (transpose4(lo), transpose4(hi));
            for e in 0..4 {
                out[4 * c + e][k] = V(lo[e], hi[e]);
            }
        }
    }
    out
}

/// `best_index_int8(&KVALUES, v)` per lane: the number of midpoints `m` with
/// `!(v < m)` (see `lanes::IQ4_MIDS`).
#[inline(always)]
pub unsafe fn iq4_index(v: V) -> I {
    let (mut c0, mut c1) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for mid in IQ4_MIDS {
        let mv = vdupq_n_f32(mid);
        c0 = vsubq_s32(c0, vreinterpretq_s32_u32(vmvnq_u32(vcltq_f32(v.0, mv))));
        c1 = vsubq_s32(c1, vreinterpretq_s32_u32(vmvnq_u32(vcltq_f32(v.1, mv))));
    }
    I(c0, c1)
}

/// `KVALUES[idx]` as floats, by a byte table lookup of the four bytes of each float.
#[inline(always)]
pub unsafe fn iq4_value(idx: I) -> V {
    static TABLE: [f32; 16] =
        [-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0];
    let t = vld1q_u8_x4(TABLE.as_ptr().cast());
    let pick = |i: int32x4_t| {
        let b = vaddq_u32(vmulq_n_u32(vreinterpretq_u32_s32(i), 0x0404_0404), vdupq_n_u32(0x0302_0100));
        vreinterpretq_f32_u8(vqtbl4q_u8(t, vreinterpretq_u8_u32(b)))
    };
    V(pick(idx.0), pick(idx.1))
}

/// Four vectors of i32 in 0..=255 to 32 bytes in order.
#[inline(always)]
pub unsafe fn pack_u8(a: I, b: I, c: I, d: I) -> B {
    let h = |x: I| vcombine_u16(vmovn_u32(vreinterpretq_u32_s32(x.0)), vmovn_u32(vreinterpretq_u32_s32(x.1)));
    B(vcombine_u8(vmovn_u16(h(a)), vmovn_u16(h(b))), vcombine_u8(vmovn_u16(h(c)), vmovn_u16(h(d))))
}

/// `trunc_x86(v) as i8` widened back to i32: truncation, x86's 0x80000000 for NaN and
/// anything outside the i32 range (AArch64 would saturate), then the low byte with
/// its sign.
#[inline(always)]
pub unsafe fn trunc_x86_i8(v: V) -> I {
    let one = |v: float32x4_t| {
        let inside = vandq_u32(vcgeq_f32(v, vdupq_n_f32(-2_147_483_648.0)), vcltq_f32(v, vdupq_n_f32(2_147_483_648.0)));
        let t = vbslq_s32(inside, vcvtq_s32_f32(v), vdupq_n_s32(i32::MIN));
        vshrq_n_s32::<24>(vshlq_n_s32::<24>(t))
    };
    I(one(v.0), one(v.1))
}

/// The largest lane of a vector without NaN.
#[inline(always)]
pub unsafe fn hmax(v: V) -> f32 {
    vmaxvq_f32(vmaxq_f32(v.0, v.1))
}

/// Bit `j` set where lane `j` of the mask is.
#[inline(always)]
pub unsafe fn mask_bits(mask: V) -> u32 {
    let w0 = vld1q_u32([1u32, 2, 4, 8].as_ptr());
    let w1 = vld1q_u32([16u32, 32, 64, 128].as_ptr());
    vaddvq_u32(vandq_u32(m(mask.0), w0)) + vaddvq_u32(vandq_u32(m(mask.1), w1))
}

#[inline(always)]
pub unsafe fn zerob() -> B {
    splatb(0)
}
#[inline(always)]
pub unsafe fn splatb(v: u8) -> B {
    B(vdupq_n_u8(v), vdupq_n_u8(v))
}
#[inline(always)]
pub unsafe fn orb(a: B, b: B) -> B {
    B(vorrq_u8(a.0, b.0), vorrq_u8(a.1, b.1))
}
#[inline(always)]
pub unsafe fn andb(a: B, b: B) -> B {
    B(vandq_u8(a.0, b.0), vandq_u8(a.1, b.1))
}
/// Each byte shifted left by `S`.
#[inline(always)]
pub unsafe fn shlb<const S: i32>(a: B) -> B {
    B(vshlq_n_u8::<S>(a.0), vshlq_n_u8::<S>(a.1))
}
/// Each byte shifted right by `S` (zeros in; the shared code masks anyway).
#[inline(always)]
pub unsafe fn shrb<const S: i32>(a: B) -> B {
    B(vshrq_n_u8::<S>(a.0), vshrq_n_u8::<S>(a.1))
}
/// Signed byte `a > b`, all ones or zero.
#[inline(always)]
pub unsafe fn gtb(a: B, b: B) -> B {
    let s = vreinterpretq_s8_u8;
    B(vcgtq_s8(s(a.0), s(b.0)), vcgtq_s8(s(a.1), s(b.1)))
}
#[inline(always)]
pub unsafe fn storeb(q: &mut [u8], at: usize, v: B) {
    assert!(at + 32 <= q.len());
    vst1q_u8(q.as_mut_ptr().add(at), v.0);
    vst1q_u8(q.as_mut_ptr().add(at + 16), v.1);
}
#[inline(always)]
pub unsafe fn storeh(q: &mut [u8], at: usize, v: H) {
    assert!(at + 16 <= q.len());
    vst1q_u8(q.as_mut_ptr().add(at), v)
}
/// Bytes 0..16 and 16..32 of `b` into one nibble each: byte `j` gets the low nibble
/// of byte `j` low and that of byte `j + 16` high.
#[inline(always)]
pub unsafe fn nibbles16(b: B) -> H {
    vorrq_u8(vandq_u8(b.0, vdupq_n_u8(0x0f)), vshlq_n_u8::<4>(b.1))
}
/// Bit `j` is bit 4 of byte `j`.
#[inline(always)]
pub unsafe fn bit4_mask(b: B) -> u32 {
    let w = vld1q_u8([1u8, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128].as_ptr());
    let half = |v: uint8x16_t| {
        let bits = vmulq_u8(vandq_u8(vshrq_n_u8::<4>(v), vdupq_n_u8(1)), w);
        vaddv_u8(vget_low_u8(bits)) as u32 | (vaddv_u8(vget_high_u8(bits)) as u32) << 8
    };
    half(b.0) | half(b.1) << 16
}
