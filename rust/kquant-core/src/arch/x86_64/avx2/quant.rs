//! AVX2 quantizers for the k-quants, IQ4 and the legacy 32-value formats, giving
//! exactly the reference's bytes with and without an importance matrix.
//!
//! The reference's searches sum over the values of a group in one fixed order, and
//! which candidate wins depends on every rounding of those sums, so no sum is ever
//! split or reordered here. Speed comes from running independent groups side by side
//! (`lanes`): the sub-blocks of a super-block, or consecutive 32-value blocks, one per
//! SIMD lane, each lane repeating the scalar code's operations in its order, and from
//! vectorizing the per-value maps (re-rounding against stored scales, packing).
//!
//! `lanes` (the searches), `kquants` and `legacy` (the formats) are written against
//! the eight-lane primitives of `v8`; the NEON path includes these three files by
//! path with its own `v8`, so both instruction sets run the same code.

// Lanes, groups and values are all addressed by index, as in the reference.
#![allow(clippy::needless_range_loop)]

mod kquants;
mod lanes;
mod legacy;
mod v8;

/// The entry points: the shared code compiled with AVX2 (and FMA/F16C, which it does
/// not use: no multiply-add may be fused).
macro_rules! entries {
    ($($name:ident = $imp:path;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
            $imp(x, q, imat)
        }
    )*};
}

entries! {
    quantize_q2_k = kquants::quantize_q2_k;
    quantize_q3_k = kquants::quantize_q3_k;
    quantize_q4_k = kquants::quantize_q4_k;
    quantize_q5_k = kquants::quantize_q5_k;
    quantize_q6_k = kquants::quantize_q6_k;
    quantize_iq4_xs = kquants::quantize_iq4_xs;
    quantize_iq4_nl = legacy::quantize_iq4_nl;
    quantize_q4_0 = legacy::quantize_q4_0;
    quantize_q4_1 = legacy::quantize_q4_1;
    quantize_q5_0 = legacy::quantize_q5_0;
    quantize_q5_1 = legacy::quantize_q5_1;
}

#[cfg(test)]
mod tests;
