//! NEON quantizers for the k-quants, IQ4 and the legacy 32-value formats, giving
//! exactly the reference's bytes with and without an importance matrix.
//!
//! The searches and the format code are the AVX2 path's (see
//! `arch/x86_64/avx2/quant.rs` for how they keep the reference's bytes), included
//! from there by path: they are written against eight-lane primitives, of which
//! `quant/v8.rs` is the NEON flavour (a pair of 128-bit registers per vector).

// Lanes, groups and values are all addressed by index, as in the reference.
#![allow(clippy::needless_range_loop)]

#[path = "../../x86_64/avx2/quant/kquants.rs"]
mod kquants;
#[path = "../../x86_64/avx2/quant/lanes.rs"]
mod lanes;
#[path = "../../x86_64/avx2/quant/legacy.rs"]
mod legacy;
mod v8;

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
