//! AVX2 flavour of the few integer and table primitives the IQ2 quantizers need on
//! top of `v8` (same contract: eight lanes, exact).

use std::arch::x86_64::*;

use super::v8::{I, V};

#[inline(always)]
pub unsafe fn shli<const S: i32>(a: I) -> I {
    _mm256_slli_epi32::<S>(a)
}
/// Logical right shift.
#[inline(always)]
pub unsafe fn shri<const S: i32>(a: I) -> I {
    _mm256_srli_epi32::<S>(a)
}
#[inline(always)]
pub unsafe fn ori(a: I, b: I) -> I {
    _mm256_or_si256(a, b)
}
#[inline(always)]
pub unsafe fn lanesi(a: I) -> [i32; 8] {
    std::mem::transmute(a)
}
/// Lane `j` is lane `idx[j]` of `table`, for `idx` in `0..4`.
#[inline(always)]
pub unsafe fn pick4(table: V, idx: I) -> V {
    _mm256_permutevar8x32_ps(table, idx)
}
/// Four floats as a table for `pick4`.
#[inline(always)]
pub unsafe fn table4(t: [f32; 4]) -> V {
    _mm256_castps128_ps256(_mm_loadu_ps(t.as_ptr()))
}
/// Bytes `b[at..at + 8]`, zero-extended.
#[inline(always)]
pub unsafe fn load_u8x8(b: &[u8], at: usize) -> I {
    assert!(at + 8 <= b.len());
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().add(at).cast()))
}
/// Lane `j` is lane `idx[j]` of `table`, for `idx` in `0..8`.
#[inline(always)]
pub unsafe fn pick8(table: V, idx: I) -> V {
    _mm256_permutevar8x32_ps(table, idx)
}
/// Per-coordinate tables of three values: `out[i]` holds `(t[0][i], t[1][i], t[2][i], 0)`
/// in lanes 0..4 and `(t[0][i+4], t[1][i+4], t[2][i+4], 0)` in lanes 4..8, for `pick8`
/// with an index of `level` (coordinates 0..4) or `level + 4` (coordinates 4..8).
#[inline(always)]
pub unsafe fn level_tables(t: [V; 3]) -> [V; 4] {
    let z = _mm256_setzero_ps();
    let a = _mm256_unpacklo_ps(t[0], t[1]);
    let b = _mm256_unpacklo_ps(t[2], z);
    let c = _mm256_unpackhi_ps(t[0], t[1]);
    let d = _mm256_unpackhi_ps(t[2], z);
    [
        _mm256_shuffle_ps::<0b01_00_01_00>(a, b),
        _mm256_shuffle_ps::<0b11_10_11_10>(a, b),
        _mm256_shuffle_ps::<0b01_00_01_00>(c, d),
        _mm256_shuffle_ps::<0b11_10_11_10>(c, d),
    ]
}
/// The least lane of a vector without NaN, in every lane.
#[inline(always)]
pub unsafe fn hmin_all(v: V) -> V {
    let m = _mm256_min_ps(v, _mm256_permute2f128_ps::<1>(v, v));
    let m = _mm256_min_ps(m, _mm256_permute_ps::<0b0100_1110>(m));
    _mm256_min_ps(m, _mm256_permute_ps::<0b1011_0001>(m))
}
