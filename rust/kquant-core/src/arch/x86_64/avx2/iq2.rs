//! IQ2_XXS, IQ2_XS and IQ2_S: dequantize and dots with Q8_K.
//!
//! Each 32 values are four grid points: a gather of four 8-byte table entries makes 32
//! unsigned grid bytes (8, 25 or 43), and the four sign bytes become ±1 bytes that
//! `sign_epi8` applies, so a group is 32 signed bytes within ±43. Dequantization multiplies them by the group
//! scale (`(-g) * db == -(g * db)` exactly, so this is the reference's rounding); dots
//! take exact `maddubs` products with the activations (the sign moved onto them) and
//! apply the odd group multipliers `2s + 1` in integers, leaving one exact integer per
//! block for the shared k-quant block loop.

use std::arch::x86_64::*;

use super::kquants::dot_by4;
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::iq2::{GRID_S, GRID_XS, GRID_XXS, KSIGNS};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, QS};
use crate::types::QK_K;

const XXS: usize = 66;
const XS: usize = 74;
const S: usize = 82;

/// `KSIGNS` as eight ±1 bytes per entry, ready for `sign_epi8`.
pub(super) static SIGNS_PM1: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        let mut j = 0;
        while j < 8 {
            let b: u64 = if KSIGNS[i] >> j & 1 != 0 { 0xff } else { 0x01 };
            t[i] |= b << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
};

/// Every IQ2_XXS grid point under every sign code, as eight signed bytes: entry
/// `128 * index + code`. The dot then takes one gather per group and no sign work;
/// 256 KiB, but the dot over rows that all differ still ran 16% faster with it than
/// with the signs built in registers (benches/RESULTS.md, "IQ2 dots ... second pass").
static SIGNED_XXS: [u64; 32768] = {
    let mut t = [0u64; 32768];
    let mut i = 0;
    while i < 32768 {
        let g = GRID_XXS[i >> 7];
        let sg = KSIGNS[i & 127];
        let mut j = 0;
        while j < 8 {
            let b = (g >> (8 * j)) & 0xff;
            let v = if sg >> j & 1 != 0 { (256 - b) & 0xff } else { b };
            t[i] |= v << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
};

/// The four 8-byte entries of `table` at the i32 lanes of `idx`. Hardware gathers
/// beat four scalar loads and inserts on the CPUs measured (benches/RESULTS.md).
///
/// Safety: every lane of `idx` must be a valid index of `table` (callers mask them).
#[inline(always)]
pub(super) unsafe fn gather4_u64<const N: usize>(table: &[u64; N], idx: __m128i) -> __m256i {
    _mm256_i32gather_epi64::<8>(table.as_ptr().cast(), idx)
}

/// The eight 4-byte entries of `table` at the i32 lanes of `idx` (same contract).
#[inline(always)]
pub(super) unsafe fn gather8_u32<const N: usize>(table: &[u32; N], idx: __m256i) -> __m256i {
    _mm256_i32gather_epi32::<4>(table.as_ptr().cast(), idx)
}

/// The four bytes of `w` as i32 lanes.
#[inline(always)]
pub(super) unsafe fn bytes4(w: u32) -> __m128i {
    _mm_cvtepu8_epi32(_mm_cvtsi32_si128(w as i32))
}

/// ±1 bytes for four 7-bit sign codes at bits `shift[l]` of `w`, through `KSIGNS`.
#[inline(always)]
pub(super) unsafe fn ksigns4(w: __m128i, shift: __m128i) -> __m256i {
    gather4_u64(&SIGNS_PM1, _mm_and_si128(_mm_srlv_epi32(w, shift), _mm_set1_epi32(127)))
}

/// Byte `8l + j` of the result is -1 where bit `j` of byte `l` of `signs` is set, else 1.
#[inline(always)]
pub(super) unsafe fn sign_pm1(signs: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(signs as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ),
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let m = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
    _mm256_or_si256(m, _mm256_set1_epi8(1))
}

/// Lane `ib` of each half of `r` in all lanes of that half.
#[inline(always)]
pub(super) unsafe fn pick_lane(r: __m256i, ib: usize) -> __m256i {
    _mm256_shuffle_epi8(r, _mm256_set1_epi16((2 * ib as i16) | (2 * ib as i16 + 1) << 8))
}

/// The eight u16 `qh` words in i32 lanes, 16 bits up, so that one right shift per
/// index brings its high bits to bit 8.
#[inline(always)]
pub(super) unsafe fn high_bits(qh: __m128i) -> __m256i {
    _mm256_slli_epi32(_mm256_cvtepu16_epi32(qh), 16)
}

/// The grid points of groups `ib` and `ib + 1` (four each): index bytes at
/// `xb[at..at + 8]`, high bits from `qh` word `ib` (lanes 0..4) and `ib + 1`
/// (lanes 4..8) of `hs`, each shifted right by its lane of `shift` and masked to
/// `mask` (which keeps them inside `table`).
#[inline(always)]
pub(super) unsafe fn grid_pair<const T: usize, const N: usize>(
    table: &[u64; T],
    xb: &[u8; N],
    at: usize,
    hs: __m256i,
    ib: usize,
    shift: __m256i,
    mask: i32,
) -> (__m256i, __m256i) {
    debug_assert!(at + 8 <= N && (mask as usize | 255) < T);
    let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(xb.as_ptr().add(at).cast()));
    let (a, b) = (ib as i32, ib as i32 + 1);
    let h = _mm256_permutevar8x32_epi32(hs, _mm256_setr_epi32(a, a, a, a, b, b, b, b));
    let idx = _mm256_or_si256(lo, _mm256_and_si256(_mm256_srlv_epi32(h, shift), _mm256_set1_epi32(mask)));
    (gather4_u64(table, _mm256_castsi256_si128(idx)), gather4_u64(table, _mm256_extracti128_si256(idx, 1)))
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Group `ib` of an IQ2_XXS block: its signed values and 4-bit scale.
#[inline(always)]
unsafe fn xxs_group(xb: &[u8; XXS], ib: usize) -> (__m256i, u32) {
    let a = word(xb, 2 + 8 * ib);
    let b = word(xb, 6 + 8 * ib);
    // byte indices < 256, sign codes masked to 7 bits
    let g = gather4_u64(&GRID_XXS, bytes4(a));
    let signs = ksigns4(_mm_set1_epi32(b as i32), _mm_setr_epi32(0, 7, 14, 21));
    (_mm256_sign_epi8(g, signs), b >> 28)
}

#[inline(always)]
unsafe fn xs_group(xb: &[u8; XS], ib: usize) -> __m256i {
    let c = _mm_cvtepu16_epi32(_mm_loadl_epi64(xb.as_ptr().add(2 + 8 * ib).cast()));
    // 9-bit grid indices; the top 7 bits are the sign codes
    let g = gather4_u64(&GRID_XS, _mm_and_si128(c, _mm_set1_epi32(511)));
    _mm256_sign_epi8(g, ksigns4(c, _mm_set1_epi32(9)))
}

const S_QH: usize = 66;
const S_SIGNS: usize = 34;
const SCALES: usize = 66;
const S_SCALES: usize = 74;

#[inline(always)]
unsafe fn s_group(xb: &[u8; S], ib: usize) -> __m256i {
    // index l: byte l | bits 2l, 2l+1 of the qh byte as bits 8, 9 (< 1024)
    let hi = _mm_sllv_epi32(_mm_set1_epi32(xb[S_QH + ib] as i32), _mm_setr_epi32(8, 6, 4, 2));
    let idx = _mm_or_si128(bytes4(word(xb, 2 + 4 * ib)), _mm_and_si128(hi, _mm_set1_epi32(0x300)));
    _mm256_sign_epi8(gather4_u64(&GRID_S, idx), sign_pm1(word(xb, S_SIGNS + 4 * ib)))
}

/// `d * (0.5 + s) * 0.25`, the reference's group scale.
#[inline(always)]
fn group_scale(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq2_xxs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XXS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XXS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            let (v, s) = xxs_group(xb, ib);
            scale_i8x32(v, _mm256_set1_ps(group_scale(d, s)), yb, 32 * ib);
        }
    }
}

/// The two 16-value halves of a group, each with its own scale (IQ2_XS, IQ2_S).
#[inline(always)]
unsafe fn store_halves(v: __m256i, d: f32, sc: u8, yb: &mut [f32; QK_K], at: usize) {
    let d0 = _mm256_set1_ps(group_scale(d, (sc & 15) as u32));
    let d1 = _mm256_set1_ps(group_scale(d, (sc >> 4) as u32));
    scale_i8x16(_mm256_castsi256_si128(v), d0, yb, at);
    scale_i8x16(_mm256_extracti128_si256(v, 1), d1, yb, at + 16);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq2_xs(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(XS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<XS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            store_halves(xs_group(xb, ib), d, xb[SCALES + ib], yb, 32 * ib);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq2_s(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(S).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<S>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        for ib in 0..8 {
            store_halves(s_group(xb, ib), d, xb[S_SCALES + ib], yb, 32 * ib);
        }
    }
}

/// Multipliers `2s + 1` of the eight scale bytes at `xb[at..]` as i16: lane `ib` of
/// the low half for values `32 ib..32 ib + 16` (low nibble), of the high half for the
/// next 16 (high nibble).
#[inline(always)]
unsafe fn nibble_mults<const N: usize>(xb: &[u8; N], at: usize) -> __m256i {
    let v = _mm_cvtepu8_epi16(_mm_loadl_epi64(xb.as_ptr().add(at).cast()));
    let lo = _mm_and_si128(v, _mm_set1_epi16(15));
    let hi = _mm_srli_epi16(v, 4);
    let m = _mm256_set_m128i(hi, lo);
    _mm256_or_si256(_mm256_slli_epi16(m, 1), _mm256_set1_epi16(1))
}

/// A block's scaled group sums in 8 i32 lanes: `pair` gives the signed values of
/// groups `ib` and `ib + 1`, `mult(ib)` the i16 multipliers of group `ib`.
#[inline(always)]
unsafe fn block_sums<const B: usize>(
    xb: &[u8; B],
    yb: &[u8; Q8K],
    mult: impl Fn(usize) -> __m256i,
    pair: impl Fn(&[u8; B], usize) -> (__m256i, __m256i),
) -> (__m256i, __m256i) {
    let mut s0 = _mm256_setzero_si256();
    let mut s1 = _mm256_setzero_si256();
    for ib in (0..8).step_by(2) {
        let (v0, v1) = pair(xb, ib);
        let p0 = maddubs_signed(load256(yb, QS + 32 * ib), v0);
        let p1 = maddubs_signed(load256(yb, QS + 32 * ib + 32), v1);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, mult(ib)));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, mult(ib + 1)));
    }
    (_mm256_add_epi32(s0, s1), _mm256_setzero_si256())
}

/// Multipliers `2s + 1` of the eight 4-bit scales on top of an IQ2_XXS block's sign
/// words, each in both i16 halves of u32 `2 ib + 1` (group `ib`); one broadcast load
/// per group then costs no shuffle.
#[inline(always)]
unsafe fn xxs_mults(xb: &[u8; XXS]) -> [u32; 16] {
    let mult = |v: __m256i| {
        let m = _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(v, 28), 1), _mm256_set1_epi32(1));
        _mm256_or_si256(m, _mm256_slli_epi32(m, 16))
    };
    let mut a = [0u32; 16];
    // SAFETY: `a` has room for the two 32-byte stores.
    unsafe {
        _mm256_storeu_si256(a.as_mut_ptr().cast(), mult(load256(xb, 2)));
        _mm256_storeu_si256(a.as_mut_ptr().add(8).cast(), mult(load256(xb, 34)));
    }
    a
}

/// Groups `ib` and `ib + 1` of an IQ2_XXS block, signed.
#[inline(always)]
unsafe fn xxs_pair(xb: &[u8; XXS], ib: usize) -> (__m256i, __m256i) {
    // u32 a0 b0 a1 b1 at `at`: index bytes, then sign codes (and scale)
    let at = 2 + 8 * ib;
    debug_assert!(at + 16 <= XXS);
    let p = xb.as_ptr().add(at);
    let x = _mm_loadu_si128(p.cast());
    let shift = _mm_setr_epi32(0, 7, 14, 21);
    // SIGNED_XXS rows: byte index < 256 times 128, plus a code masked to 7 bits
    let entry = |a: __m128i, b: __m128i| {
        let code = _mm_and_si128(_mm_srlv_epi32(b, shift), _mm_set1_epi32(127));
        _mm_or_si128(_mm_slli_epi32(_mm_cvtepu8_epi32(a), 7), code)
    };
    let e0 = entry(x, _mm_shuffle_epi32::<0x55>(x));
    let e1 = entry(_mm_srli_si128::<8>(x), _mm_shuffle_epi32::<0xff>(x));
    (gather4_u64(&SIGNED_XXS, e0), gather4_u64(&SIGNED_XXS, e1))
}

/// Grid points at the eight i32 lanes of `idx` with the sign codes in `codes` applied,
/// as two groups of 32.
#[inline(always)]
unsafe fn pair_signed<const N: usize>(grid: &[u64; N], idx: __m256i, codes: __m256i) -> (__m256i, __m256i) {
    let half = |v: __m256i, k: usize| if k == 0 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256(v, 1) };
    let g0 = gather4_u64(grid, half(idx, 0));
    let g1 = gather4_u64(grid, half(idx, 1));
    let s0 = gather4_u64(&SIGNS_PM1, half(codes, 0));
    let s1 = gather4_u64(&SIGNS_PM1, half(codes, 1));
    (_mm256_sign_epi8(g0, s0), _mm256_sign_epi8(g1, s1))
}

/// Groups `ib` and `ib + 1` of an IQ2_XS block, signed.
#[inline(always)]
unsafe fn xs_pair(xb: &[u8; XS], ib: usize) -> (__m256i, __m256i) {
    let c = _mm256_cvtepu16_epi32(load128(xb, 2 + 8 * ib));
    // 9-bit grid indices under 7-bit sign codes
    pair_signed(&GRID_XS, _mm256_and_si256(c, _mm256_set1_epi32(511)), _mm256_srli_epi32(c, 9))
}

/// Groups `ib` and `ib + 1` of an IQ2_S block, signed.
#[inline(always)]
unsafe fn s_pair(xb: &[u8; S], ib: usize, hs: __m256i) -> (__m256i, __m256i) {
    let shift = _mm256_setr_epi32(8, 10, 12, 14, 8, 10, 12, 14);
    let (g0, g1) = grid_pair(&GRID_S, xb, 2 + 4 * ib, hs, ib, shift, 0x300);
    let s0 = sign_pm1(word(xb, S_SIGNS + 4 * ib));
    let s1 = sign_pm1(word(xb, S_SIGNS + 4 * ib + 4));
    (_mm256_sign_epi8(g0, s0), _mm256_sign_epi8(g1, s1))
}

/// IQ2_XXS x Q8_K: the reference's integer block sum, exact, times `d * yd / 8`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq2_xxs(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_by4::<XXS, false, 0, 0>(q, yq, |xb, yb| {
            let m = xxs_mults(xb);
            block_sums(xb, yb, |ib| _mm256_set1_epi32(m[2 * ib + 1] as i32), |xb, ib| xxs_pair(xb, ib))
        })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq2_xs(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_by4::<XS, false, 0, 0>(q, yq, |xb, yb| {
            let m = nibble_mults(xb, SCALES);
            block_sums(xb, yb, |ib| pick_lane(m, ib), |xb, ib| xs_pair(xb, ib))
        })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq2_s(q: &[u8], yq: &[u8]) -> f32 {
    0.125
        * dot_by4::<S, false, 0, 0>(q, yq, |xb, yb| {
            // the qh bytes as i32 lanes, 16 bits up (see `high_bits`)
            let hs = _mm256_slli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(xb.as_ptr().add(S_QH).cast())), 16);
            let m = nibble_mults(xb, S_SCALES);
            block_sums(xb, yb, |ib| pick_lane(m, ib), |xb, ib| s_pair(xb, ib, hs))
        })
}
