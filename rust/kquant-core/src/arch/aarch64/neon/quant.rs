//! NEON quantizers for the k-quants, IQ4 and the legacy 32-value formats, giving
//! exactly the reference's bytes with and without an importance matrix.
//!
//! The searches and the format code are the AVX2 path's (see
//! `arch/x86_64/avx2/quant.rs` for how they keep the reference's bytes), included
//! from there by path: they are written against eight-lane primitives, of which
//! `quant/v8.rs` is the NEON flavour (a pair of 128-bit registers per vector).

// Lanes, groups and values are all addressed by index, as in the reference.
#![allow(clippy::needless_range_loop)]

#[path = "../../x86_64/avx2/quant/iq2.rs"]
mod iq2;
#[path = "../../x86_64/avx2/quant/kquants.rs"]
mod kquants;
#[path = "../../x86_64/avx2/quant/lanes.rs"]
mod lanes;
#[path = "../../x86_64/avx2/quant/legacy.rs"]
mod legacy;
mod v8;
mod v8_iq2;

/// The entry points: the shared code compiled with NEON.
macro_rules! entries {
    ($($name:ident = $imp:path;)*) => {$(
        #[target_feature(enable = "neon")]
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

/// The IQ2 quantizers: the reference's code around the shared eight-lane candidate
/// search (`iq2`, with `v8_iq2` for its extra primitives) compiled with NEON.
mod iq2_entries {
    use super::iq2;
    use crate::arch::iq2_soa::{soa_s, soa_xs, soa_xxs, Soa};
    use crate::reference::iq2::Best16;
    use crate::reference::lattice::Lattice;
    use crate::reference::{iq2_s, iq2_xs, iq2_xxs};

    #[target_feature(enable = "neon")]
    unsafe fn cand16(soa: &Soa, xv: &[f32; 16], w: &[f32; 16], wa: &[f32; 16], max: f32) -> Best16 {
        iq2::candidates16(soa, xv, w, wa, max)
    }
    #[target_feature(enable = "neon")]
    unsafe fn cand32(soa: &Soa, xv: &[f32; 32], w: &[f32; 32], wa: &[f32; 32], m: f32) -> Option<(f32, [u8; 32])> {
        iq2::candidates32(soa, xv, w, wa, m)
    }
    #[target_feature(enable = "neon")]
    unsafe fn qp32(x: &[f32; 32], l: &mut [u8; 32], w: &[f32; 32]) -> f32 {
        iq2::make_qp_quants32(x, l, w)
    }
    #[target_feature(enable = "neon")]
    unsafe fn round8(lat: &Lattice, soa: &Soa, xv: &[f32], wa: &[f32], id: f32, s: f32, l: &mut [u8]) -> bool {
        iq2::round_point(lat, soa, xv, wa, id, s, l)
    }
    /// # Safety
    /// The CPU must have NEON.
    pub(in super::super) unsafe fn quantize_iq2_xxs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
        let soa = soa_xxs();
        // SAFETY: the caller guarantees NEON, which `cand32`, `qp32` and `round8` are
        // compiled for.
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
        // SAFETY: the caller guarantees NEON, which `cand16` and `round8` are compiled
        // for.
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
        // SAFETY: the caller guarantees NEON, which `cand16` and `round8` are compiled
        // for.
        iq2_s::quantize_with(x, q, imat, &|a, b, c, d| unsafe { cand16(soa, a, b, c, d) }, &|xv, wa, id, s, l| unsafe {
            round8(lat, soa, xv, wa, id, s, l)
        })
    }
}
pub(super) use iq2_entries::{quantize_iq2_s, quantize_iq2_xs, quantize_iq2_xxs};
