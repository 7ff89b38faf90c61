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

mod iq1s;
mod iq2;
pub(super) mod iq3;
mod kquants;
mod lanes;
mod legacy;
mod v8;
mod v8_iq2;

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

/// The IQ2 quantizers: the reference's code around a candidate search compiled with
/// AVX2 (called once per group).
mod iq2_entries {
    use super::iq2;
    use crate::arch::iq2_soa::{soa_s, soa_xs, soa_xxs, Soa};
    use crate::reference::iq2::Best16;
    use crate::reference::lattice::Lattice;
    use crate::reference::{iq2_s, iq2_xs, iq2_xxs};

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn cand16(soa: &Soa, xv: &[f32; 16], w: &[f32; 16], wa: &[f32; 16], max: f32) -> Best16 {
        iq2::candidates16(soa, xv, w, wa, max)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn cand32(soa: &Soa, xv: &[f32; 32], w: &[f32; 32], wa: &[f32; 32], m: f32) -> Option<(f32, [u8; 32])> {
        iq2::candidates32(soa, xv, w, wa, m)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn qp32(x: &[f32; 32], l: &mut [u8; 32], w: &[f32; 32]) -> f32 {
        iq2::make_qp_quants32(x, l, w)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn round8(lat: &Lattice, soa: &Soa, xv: &[f32], wa: &[f32], id: f32, s: f32, l: &mut [u8]) -> bool {
        iq2::round_point(lat, soa, xv, wa, id, s, l)
    }
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    pub(in super::super) unsafe fn quantize_iq2_xxs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
        let soa = soa_xxs();
        // SAFETY: the caller guarantees the CPU features `cand32`, `qp32` and `round8`
        // are compiled for.
        let lat = crate::reference::iq2::lattice_xxs();
        iq2_xxs::quantize_with(
            x,
            q,
            imat,
            &|a, b, c, d| unsafe { cand32(soa, a, b, c, d) },
            &|a, l, w| unsafe { qp32(a, l, w) },
            &|xv, wa, id, s, l| unsafe { round8(lat, soa, xv, wa, id, s, l) },
        )
    }
    /// # Safety
    /// As `quantize_iq2_xxs`.
    pub(in super::super) unsafe fn quantize_iq2_xs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
        let soa = soa_xs();
        let lat = crate::reference::iq2::lattice_xs();
        // SAFETY: the caller guarantees the CPU features `cand16` and `round8` are
        // compiled for.
        iq2_xs::quantize_with(
            x,
            q,
            imat,
            &|a, b, c, d| unsafe { cand16(soa, a, b, c, d) },
            &|xv, wa, id, s, l| unsafe { round8(lat, soa, xv, wa, id, s, l) },
        )
    }
    /// # Safety
    /// As `quantize_iq2_xxs`.
    pub(in super::super) unsafe fn quantize_iq2_s(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
        let soa = soa_s();
        let lat = crate::reference::iq2::lattice_s();
        // SAFETY: the caller guarantees the CPU features `cand16` and `round8` are
        // compiled for.
        iq2_s::quantize_with(x, q, imat, &|a, b, c, d| unsafe { cand16(soa, a, b, c, d) }, &|xv, wa, id, s, l| unsafe {
            round8(lat, soa, xv, wa, id, s, l)
        })
    }
}
pub(super) use iq2_entries::{quantize_iq2_s, quantize_iq2_xs, quantize_iq2_xxs};

/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_iq1_s(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let soa = crate::arch::iq2_soa::soa_iq1();
    // SAFETY: this function is compiled for, and only called on, CPUs with AVX2.
    crate::reference::iq1_s::quantize_with(x, q, imat, |xb, w| unsafe { iq1s::sub_block(soa, xb, w) })
}

#[cfg(test)]
mod tests;
