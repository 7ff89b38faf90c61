//! AVX2 quantizers for the k-quants, IQ4 and the legacy 32-value formats, giving
//! exactly the reference's bytes with and without an importance matrix.
//!
//! The reference's searches sum over the values of a group in one fixed order, and
//! which candidate wins depends on every rounding of those sums, so no sum is ever
//! split or reordered here. Speed comes from running independent groups side by side
//! (`lanes`): the sub-blocks of a super-block, or consecutive 32-value blocks, one per
//! SIMD lane, each lane repeating the scalar code's operations in its order, and from
//! vectorizing the per-value maps (re-rounding against stored scales, packing).

// Lanes, groups and values are all addressed by index, as in the reference.
#![allow(clippy::needless_range_loop)]

mod kquants;
mod lanes;
mod legacy;

pub(super) use kquants::*;
pub(super) use legacy::*;

#[cfg(test)]
mod tests;
