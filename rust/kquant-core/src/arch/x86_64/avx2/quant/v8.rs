//! The AVX2 flavour of the eight-lane primitives the shared quantizer code (`lanes`,
//! `kquants`, `legacy`) is written in: one `__m256` is eight lanes. Each primitive is
//! one IEEE operation per lane with the same rounding as the scalar reference (no
//! fusing), and comparisons and selects have Rust's semantics for NaN.

use std::arch::x86_64::*;

use super::lanes::IQ4_MIDS;

/// Eight f32 lanes.
pub(super) type V = __m256;
/// Eight i32 lanes.
pub(super) type I = __m256i;
/// 32 bytes.
pub(super) type B = __m256i;
/// 16 bytes.
pub(super) type H = __m128i;

#[inline(always)]
pub unsafe fn set(v: f32) -> V {
    _mm256_set1_ps(v)
}
#[inline(always)]
pub unsafe fn seti(v: i32) -> I {
    _mm256_set1_epi32(v)
}
#[inline(always)]
pub unsafe fn zero() -> V {
    _mm256_setzero_ps()
}
#[inline(always)]
pub unsafe fn add(a: V, b: V) -> V {
    _mm256_add_ps(a, b)
}
#[inline(always)]
pub unsafe fn sub(a: V, b: V) -> V {
    _mm256_sub_ps(a, b)
}
#[inline(always)]
pub unsafe fn mul(a: V, b: V) -> V {
    _mm256_mul_ps(a, b)
}
#[inline(always)]
pub unsafe fn div(a: V, b: V) -> V {
    _mm256_div_ps(a, b)
}
/// `a > b`, false when either is NaN (Rust's `>`).
#[inline(always)]
pub unsafe fn gt(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
}
#[inline(always)]
pub unsafe fn lt(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
}
#[inline(always)]
pub unsafe fn and(a: V, b: V) -> V {
    _mm256_and_ps(a, b)
}
#[inline(always)]
pub unsafe fn or(a: V, b: V) -> V {
    _mm256_or_ps(a, b)
}
/// `if mask { yes } else { no }` per lane (the mask is all ones or all zeros).
#[inline(always)]
pub unsafe fn sel(mask: V, yes: V, no: V) -> V {
    _mm256_blendv_ps(no, yes, mask)
}
#[inline(always)]
pub unsafe fn abs(a: V) -> V {
    _mm256_andnot_ps(set(-0.0), a)
}
/// Rust's unary minus: flips the sign bit, NaN included.
#[inline(always)]
pub unsafe fn neg(a: V) -> V {
    _mm256_xor_ps(a, set(-0.0))
}
#[inline(always)]
pub unsafe fn any(mask: V) -> bool {
    _mm256_movemask_ps(mask) != 0
}

/// `common::nearest_int` in eight lanes, bit for bit (the same magic-number add; the
/// low mantissa bits are the result for every input, NaN and overflow included).
#[inline(always)]
pub unsafe fn nearest(v: V) -> I {
    let r = _mm256_castps_si256(add(v, set(12_582_912.0)));
    _mm256_sub_epi32(_mm256_and_si256(r, seti(0x007f_ffff)), seti(0x0040_0000))
}

#[inline(always)]
pub unsafe fn clampi(q: I, lo: i32, hi: i32) -> I {
    _mm256_min_epi32(_mm256_max_epi32(q, seti(lo)), seti(hi))
}

#[inline(always)]
pub unsafe fn tof(q: I) -> V {
    _mm256_cvtepi32_ps(q)
}

/// Rows `r[j]` (8 floats each) to columns: `out[i]` lane `j` is `r[j]` lane `i`.
#[inline(always)]
pub unsafe fn transpose8(r: [V; 8]) -> [V; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// `K * 8` groups of `N` values, group `g` starting at `x[g * stride]`, transposed:
/// `out[i][k]` lane `j` is value `i` of group `8k + j`.
#[inline(always)]
pub unsafe fn load_groups<const N: usize, const K: usize>(x: &[f32], stride: usize) -> [[V; K]; N] {
    assert!(N % 8 == 0 && stride >= N && x.len() >= (8 * K - 1) * stride + N);
    let mut out = [[zero(); K]; N];
    for k in 0..K {
        for c in 0..N / 8 {
            let mut rows = [zero(); 8];
            for (j, r) in rows.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(x.as_ptr().add((8 * k + j) * stride + 8 * c));
            }
            let cols = transpose8(rows);
            for (e, v) in cols.into_iter().enumerate() {
                out[8 * c + e][k] = v;
            }
        }
    }
    out
}

/// Lanes of a vector as an array.
#[inline(always)]
pub unsafe fn lanes(v: V) -> [f32; 8] {
    std::mem::transmute(v)
}

/// `a <= b`, false for NaN.
#[inline(always)]
pub unsafe fn le(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_LE_OQ>(a, b)
}
#[inline(always)]
pub unsafe fn eq(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)
}
/// `a != b` (true for NaN, as Rust's `!=`).
#[inline(always)]
pub unsafe fn ne(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_NEQ_UQ>(a, b)
}
/// `a != b` for values that are never NaN.
#[inline(always)]
pub unsafe fn ne_num(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_NEQ_OQ>(a, b)
}
/// `!mask & v`: zero where the mask is set.
#[inline(always)]
pub unsafe fn andnot(mask: V, v: V) -> V {
    _mm256_andnot_ps(mask, v)
}
#[inline(always)]
pub unsafe fn sqrt(a: V) -> V {
    _mm256_sqrt_ps(a)
}
/// `if a < b { a } else { b }` (minps): the reference's `if v < min { min = v }`
/// with `min(v, min)`; NaN in `a` keeps `b`.
#[inline(always)]
pub unsafe fn min_lt(a: V, b: V) -> V {
    _mm256_min_ps(a, b)
}
/// `if a > b { a } else { b }` (maxps).
#[inline(always)]
pub unsafe fn max_gt(a: V, b: V) -> V {
    _mm256_max_ps(a, b)
}
#[inline(always)]
pub unsafe fn zeroi() -> I {
    _mm256_setzero_si256()
}
#[inline(always)]
pub unsafe fn addi(a: I, b: I) -> I {
    _mm256_add_epi32(a, b)
}
#[inline(always)]
pub unsafe fn mini(a: I, b: I) -> I {
    _mm256_min_epi32(a, b)
}
#[inline(always)]
pub unsafe fn maxi(a: I, b: I) -> I {
    _mm256_max_epi32(a, b)
}

/// `best_index_int8(&KVALUES, v)` per lane.
#[inline(always)]
pub unsafe fn iq4_index(v: V) -> I {
    let mut c = _mm256_setzero_si256();
    for m in IQ4_MIDS {
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_NLT_UQ>(v, set(m))));
    }
    c
}

/// `KVALUES[idx]` as floats.
#[inline(always)]
pub unsafe fn iq4_value(idx: I) -> V {
    let lo = _mm256_setr_ps(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0);
    let hi = _mm256_setr_ps(1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
    let a = _mm256_permutevar8x32_ps(lo, idx);
    let b = _mm256_permutevar8x32_ps(hi, idx);
    sel(_mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)), b, a)
}

/// Four vectors of i32 in 0..=255 to 32 bytes in order.
#[inline(always)]
pub unsafe fn pack_u8(a: I, b: I, c: I, d: I) -> B {
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[inline(always)]
pub unsafe fn loadx(x: &[f32], at: usize) -> V {
    debug_assert!(at + 8 <= x.len());
    _mm256_loadu_ps(x.as_ptr().add(at))
}

#[inline(always)]
pub unsafe fn andi(a: I, b: I) -> I {
    _mm256_and_si256(a, b)
}

/// Eight i32 from an array.
#[inline(always)]
pub unsafe fn from_i32s(a: [i32; 8]) -> I {
    _mm256_loadu_si256(a.as_ptr().cast())
}

/// `trunc_x86(v) as i8` widened back to i32: cvttps2dq's result (0x80000000 for NaN
/// and out of range, as `common::trunc_x86`), keeping the low byte with its sign.
#[inline(always)]
pub unsafe fn trunc_x86_i8(v: V) -> I {
    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(_mm256_cvttps_epi32(v)))
}

/// The largest lane of a vector without NaN.
#[inline(always)]
pub unsafe fn hmax(v: V) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Bit `j` set where lane `j` of the mask is.
#[inline(always)]
pub unsafe fn mask_bits(m: V) -> u32 {
    _mm256_movemask_ps(m) as u32
}

#[inline(always)]
pub unsafe fn zerob() -> B {
    _mm256_setzero_si256()
}
#[inline(always)]
pub unsafe fn splatb(v: u8) -> B {
    _mm256_set1_epi8(v as i8)
}
#[inline(always)]
pub unsafe fn orb(a: B, b: B) -> B {
    _mm256_or_si256(a, b)
}
#[inline(always)]
pub unsafe fn andb(a: B, b: B) -> B {
    _mm256_and_si256(a, b)
}
/// Each byte shifted left by `S`; the callers' bytes are small enough that no bit
/// leaves its byte (the shift is done on 16-bit lanes).
#[inline(always)]
pub unsafe fn shlb<const S: i32>(a: B) -> B {
    _mm256_slli_epi16::<S>(a)
}
/// Each byte shifted right by `S`; its top `S` bits are unspecified (they come from
/// the neighbouring byte), so callers mask them off.
#[inline(always)]
pub unsafe fn shrb<const S: i32>(a: B) -> B {
    _mm256_srli_epi16::<S>(a)
}
/// Signed byte `a > b`, all ones or zero.
#[inline(always)]
pub unsafe fn gtb(a: B, b: B) -> B {
    _mm256_cmpgt_epi8(a, b)
}
#[inline(always)]
pub unsafe fn storeb(q: &mut [u8], at: usize, v: B) {
    assert!(at + 32 <= q.len());
    _mm256_storeu_si256(q.as_mut_ptr().add(at).cast(), v)
}
#[inline(always)]
pub unsafe fn storeh(q: &mut [u8], at: usize, v: H) {
    assert!(at + 16 <= q.len());
    _mm_storeu_si128(q.as_mut_ptr().add(at).cast(), v)
}
/// Bytes 0..16 and 16..32 of `b` into one nibble each: byte `j` gets the low nibble
/// of byte `j` low and that of byte `j + 16` high.
#[inline(always)]
pub unsafe fn nibbles16(b: B) -> H {
    let lo = _mm_and_si128(_mm256_castsi256_si128(b), _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_slli_epi16::<4>(_mm256_extracti128_si256::<1>(b)), _mm_set1_epi8(-16));
    _mm_or_si128(lo, hi)
}
/// Bit `j` is bit 4 of byte `j`.
#[inline(always)]
pub unsafe fn bit4_mask(b: B) -> u32 {
    _mm256_movemask_epi8(_mm256_slli_epi16::<3>(b)) as u32
}
