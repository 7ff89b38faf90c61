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
