//! NEON (Advanced SIMD) kernels. Each kernel is an `unsafe fn` compiled with
//! `#[target_feature(enable = "neon")]`, or `"neon,dotprod"` for the SDOT flavour of
//! the int8 dots, and is sound to call exactly when the CPU has those features; its
//! slices may have any lengths (whole blocks are taken with `chunks_exact`, like the
//! reference). The safe wrappers below are private and reach `dispatch` only through
//! `overrides`, which demands a [`Neon`] token (and checks SDOT itself).

mod bits;
mod float;
mod fp4;
mod iq1;
mod iq2;
mod iq3;
mod kquants;
mod legacy;
mod q8;
mod quant;
mod ternary;
mod util;

use crate::dispatch::Overrides;
use crate::reference::{DequantizeFn, QuantizeFn, VecDotFn};
use crate::types::QuantType;

/// Proof that this CPU has Advanced SIMD; only [`Neon::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon(());

impl Neon {
    pub fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }
}

fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

macro_rules! safe {
    (quantize $name:ident = $imp:path) => {
        fn $name(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
            // SAFETY: `$name` leaves this module only through `overrides`, whose `Neon`
            // argument exists only after NEON was detected; `$imp` has no other
            // precondition.
            unsafe { $imp(x, q) }
        }
    };
    (quantize_imat $name:ident = $imp:path) => {
        fn $name(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
            // SAFETY: as for the quantizers above: reachable only with a `Neon` token.
            unsafe { $imp(x, q, imat) }
        }
    };
    (dequantize $name:ident = $imp:path) => {
        fn $name(q: &[u8], y: &mut [f32]) {
            // SAFETY: as for the quantizers: reachable only with a `Neon` token.
            unsafe { $imp(q, y) }
        }
    };
    (vec_dot $name:ident = $imp:path) => {
        fn $name(q: &[u8], yq: &[u8]) -> f32 {
            // SAFETY: as for the quantizers: reachable only with a `Neon` token.
            unsafe { $imp(q, yq) }
        }
    };
    // An int8 dot in two flavours: `$plain` needs NEON, `$sdot` NEON and SDOT.
    (dots $plain:ident, $sdot:ident = $imp:ident) => {
        fn $plain(q: &[u8], yq: &[u8]) -> f32 {
            #[target_feature(enable = "neon")]
            unsafe fn imp(q: &[u8], yq: &[u8]) -> f32 {
                $imp::<false>(q, yq)
            }
            // SAFETY: reachable only through `overrides` with a `Neon` token.
            unsafe { imp(q, yq) }
        }
        fn $sdot(q: &[u8], yq: &[u8]) -> f32 {
            #[target_feature(enable = "neon,dotprod")]
            unsafe fn imp(q: &[u8], yq: &[u8]) -> f32 {
                $imp::<true>(q, yq)
            }
            // SAFETY: `overrides` hands this flavour out only with a `Neon` token and
            // after checking that the CPU has SDOT (FEAT_DotProd).
            unsafe { imp(q, yq) }
        }
    };
}

safe!(quantize quantize_q8_0 = q8::quantize_q8_0);
safe!(quantize quantize_q8_1 = q8::quantize_q8_1);
safe!(quantize quantize_q8_k = q8::quantize_q8_k);
safe!(quantize quantize_f16 = float::quantize_f16);
safe!(quantize quantize_bf16 = float::quantize_bf16);
safe!(quantize_imat quantize_q2_k = quant::quantize_q2_k);
safe!(quantize_imat quantize_q3_k = quant::quantize_q3_k);
safe!(quantize_imat quantize_q4_k = quant::quantize_q4_k);
safe!(quantize_imat quantize_q5_k = quant::quantize_q5_k);
safe!(quantize_imat quantize_q6_k = quant::quantize_q6_k);
safe!(quantize_imat quantize_iq4_xs = quant::quantize_iq4_xs);
safe!(quantize_imat quantize_iq4_nl = quant::quantize_iq4_nl);
safe!(quantize_imat quantize_q4_0 = quant::quantize_q4_0);
safe!(quantize_imat quantize_q4_1 = quant::quantize_q4_1);
safe!(quantize_imat quantize_q5_0 = quant::quantize_q5_0);
safe!(quantize_imat quantize_q5_1 = quant::quantize_q5_1);
safe!(quantize_imat quantize_iq2_xxs = quant::quantize_iq2_xxs);
safe!(quantize_imat quantize_iq2_xs = quant::quantize_iq2_xs);
safe!(quantize_imat quantize_iq2_s = quant::quantize_iq2_s);

safe!(dequantize dequantize_q4_0 = legacy::dequantize_q4_0);
safe!(dequantize dequantize_q4_1 = legacy::dequantize_q4_1);
safe!(dequantize dequantize_q5_0 = legacy::dequantize_q5_0);
safe!(dequantize dequantize_q5_1 = legacy::dequantize_q5_1);
safe!(dequantize dequantize_iq4_nl = legacy::dequantize_iq4_nl);
safe!(dequantize dequantize_q8_0 = q8::dequantize_q8_0);
safe!(dequantize dequantize_q8_1 = q8::dequantize_q8_1);
safe!(dequantize dequantize_q8_k = q8::dequantize_q8_k);
safe!(dequantize dequantize_q2_k = kquants::dequantize_q2_k);
safe!(dequantize dequantize_q3_k = kquants::dequantize_q3_k);
safe!(dequantize dequantize_q4_k = kquants::dequantize_q4_k);
safe!(dequantize dequantize_q5_k = kquants::dequantize_q5_k);
safe!(dequantize dequantize_q6_k = kquants::dequantize_q6_k);
safe!(dequantize dequantize_iq4_xs = kquants::dequantize_iq4_xs);
safe!(dequantize dequantize_f16 = float::dequantize_f16);
safe!(dequantize dequantize_bf16 = float::dequantize_bf16);

safe!(vec_dot vec_dot_f16 = float::vec_dot_f16);
safe!(vec_dot vec_dot_bf16 = float::vec_dot_bf16);
safe!(vec_dot vec_dot_f32 = float::vec_dot_f32);

use bits::{vec_dot_q1_0, vec_dot_q2_0};
use fp4::{vec_dot_mxfp4, vec_dot_nvfp4};
use iq1::{vec_dot_iq1_m, vec_dot_iq1_s};
use iq2::{vec_dot_iq2_s, vec_dot_iq2_xs, vec_dot_iq2_xxs};
use iq3::{vec_dot_iq3_s, vec_dot_iq3_xxs};
use kquants::{vec_dot_iq4_xs, vec_dot_q2_k, vec_dot_q3_k, vec_dot_q4_k, vec_dot_q5_k, vec_dot_q6_k};
use legacy::{vec_dot_iq4_nl, vec_dot_q4_0, vec_dot_q4_1, vec_dot_q5_0, vec_dot_q5_1, vec_dot_q8_0};
use ternary::{vec_dot_tq1_0, vec_dot_tq2_0};

safe!(dots dot_q4_0, sdot_q4_0 = vec_dot_q4_0);
safe!(dots dot_q4_1, sdot_q4_1 = vec_dot_q4_1);
safe!(dots dot_q5_0, sdot_q5_0 = vec_dot_q5_0);
safe!(dots dot_q5_1, sdot_q5_1 = vec_dot_q5_1);
safe!(dots dot_q8_0, sdot_q8_0 = vec_dot_q8_0);
safe!(dots dot_iq4_nl, sdot_iq4_nl = vec_dot_iq4_nl);
safe!(dots dot_q2_k, sdot_q2_k = vec_dot_q2_k);
safe!(dots dot_q3_k, sdot_q3_k = vec_dot_q3_k);
safe!(dots dot_q4_k, sdot_q4_k = vec_dot_q4_k);
safe!(dots dot_q5_k, sdot_q5_k = vec_dot_q5_k);
safe!(dots dot_q6_k, sdot_q6_k = vec_dot_q6_k);
safe!(dots dot_iq4_xs, sdot_iq4_xs = vec_dot_iq4_xs);
safe!(dots dot_tq1_0, sdot_tq1_0 = vec_dot_tq1_0);
safe!(dots dot_tq2_0, sdot_tq2_0 = vec_dot_tq2_0);
safe!(dots dot_mxfp4, sdot_mxfp4 = vec_dot_mxfp4);
safe!(dots dot_nvfp4, sdot_nvfp4 = vec_dot_nvfp4);
safe!(dots dot_q1_0, sdot_q1_0 = vec_dot_q1_0);
safe!(dots dot_q2_0, sdot_q2_0 = vec_dot_q2_0);
safe!(dots dot_iq2_xxs, sdot_iq2_xxs = vec_dot_iq2_xxs);
safe!(dots dot_iq2_xs, sdot_iq2_xs = vec_dot_iq2_xs);
safe!(dots dot_iq2_s, sdot_iq2_s = vec_dot_iq2_s);
safe!(dots dot_iq3_xxs, sdot_iq3_xxs = vec_dot_iq3_xxs);
safe!(dots dot_iq3_s, sdot_iq3_s = vec_dot_iq3_s);
safe!(dots dot_iq1_s, sdot_iq1_s = vec_dot_iq1_s);
safe!(dots dot_iq1_m, sdot_iq1_m = vec_dot_iq1_m);
safe!(quantize quantize_tq1_0 = ternary::quantize_tq1_0);
safe!(quantize quantize_tq2_0 = ternary::quantize_tq2_0);
safe!(quantize quantize_mxfp4 = fp4::quantize_mxfp4);
safe!(quantize quantize_q2_0 = bits::quantize_q2_0);
safe!(dequantize dequantize_tq1_0 = ternary::dequantize_tq1_0);
safe!(dequantize dequantize_tq2_0 = ternary::dequantize_tq2_0);
safe!(dequantize dequantize_mxfp4 = fp4::dequantize_mxfp4);
safe!(dequantize dequantize_nvfp4 = fp4::dequantize_nvfp4);
safe!(dequantize dequantize_q1_0 = bits::dequantize_q1_0);
safe!(dequantize dequantize_q2_0 = bits::dequantize_q2_0);
safe!(dequantize dequantize_iq2_xxs = iq2::dequantize_iq2_xxs);
safe!(dequantize dequantize_iq2_xs = iq2::dequantize_iq2_xs);
safe!(dequantize dequantize_iq2_s = iq2::dequantize_iq2_s);
safe!(dequantize dequantize_iq3_xxs = iq3::dequantize_iq3_xxs);
safe!(dequantize dequantize_iq3_s = iq3::dequantize_iq3_s);
safe!(dequantize dequantize_iq1_s = iq1::dequantize_iq1_s);
safe!(dequantize dequantize_iq1_m = iq1::dequantize_iq1_m);

/// The entries NEON accelerates for `t`; `dotprod` picks the SDOT int8 dots, and is
/// ignored (plain NEON is used) when the CPU lacks SDOT.
pub(crate) fn overrides(_: Neon, dotprod: bool, t: QuantType) -> Overrides {
    use QuantType::*;
    let sdot = dotprod && has_dotprod();
    let pick = |plain: VecDotFn, with_sdot: VecDotFn| Some(if sdot { with_sdot } else { plain });
    let (quantize, dequantize, vec_dot): (Option<QuantizeFn>, Option<DequantizeFn>, Option<VecDotFn>) = match t {
        F32 => (None, None, Some(vec_dot_f32)),
        F16 => (Some(quantize_f16), Some(dequantize_f16), Some(vec_dot_f16)),
        BF16 => (Some(quantize_bf16), Some(dequantize_bf16), Some(vec_dot_bf16)),
        Q4_0 => (Some(quantize_q4_0), Some(dequantize_q4_0), pick(dot_q4_0, sdot_q4_0)),
        Q4_1 => (Some(quantize_q4_1), Some(dequantize_q4_1), pick(dot_q4_1, sdot_q4_1)),
        Q5_0 => (Some(quantize_q5_0), Some(dequantize_q5_0), pick(dot_q5_0, sdot_q5_0)),
        Q5_1 => (Some(quantize_q5_1), Some(dequantize_q5_1), pick(dot_q5_1, sdot_q5_1)),
        Q8_0 => (Some(quantize_q8_0), Some(dequantize_q8_0), pick(dot_q8_0, sdot_q8_0)),
        Q8_1 => (Some(quantize_q8_1), Some(dequantize_q8_1), None),
        Q8K => (Some(quantize_q8_k), Some(dequantize_q8_k), None),
        Q2K => (Some(quantize_q2_k), Some(dequantize_q2_k), pick(dot_q2_k, sdot_q2_k)),
        Q3K => (Some(quantize_q3_k), Some(dequantize_q3_k), pick(dot_q3_k, sdot_q3_k)),
        Q4K => (Some(quantize_q4_k), Some(dequantize_q4_k), pick(dot_q4_k, sdot_q4_k)),
        Q5K => (Some(quantize_q5_k), Some(dequantize_q5_k), pick(dot_q5_k, sdot_q5_k)),
        Q6K => (Some(quantize_q6_k), Some(dequantize_q6_k), pick(dot_q6_k, sdot_q6_k)),
        IQ4NL => (Some(quantize_iq4_nl), Some(dequantize_iq4_nl), pick(dot_iq4_nl, sdot_iq4_nl)),
        IQ4XS => (Some(quantize_iq4_xs), Some(dequantize_iq4_xs), pick(dot_iq4_xs, sdot_iq4_xs)),
        IQ2XXS => (Some(quantize_iq2_xxs), Some(dequantize_iq2_xxs), pick(dot_iq2_xxs, sdot_iq2_xxs)),
        IQ2XS => (Some(quantize_iq2_xs), Some(dequantize_iq2_xs), pick(dot_iq2_xs, sdot_iq2_xs)),
        IQ2S => (Some(quantize_iq2_s), Some(dequantize_iq2_s), pick(dot_iq2_s, sdot_iq2_s)),
        IQ3XXS => {
            (Some(iq3::quantize_iq3_xxs as QuantizeFn), Some(dequantize_iq3_xxs), pick(dot_iq3_xxs, sdot_iq3_xxs))
        }
        IQ3S => (Some(iq3::quantize_iq3_s as QuantizeFn), Some(dequantize_iq3_s), pick(dot_iq3_s, sdot_iq3_s)),
        IQ1S => (None, Some(dequantize_iq1_s), pick(dot_iq1_s, sdot_iq1_s)),
        IQ1M => (Some(iq3::quantize_iq1_m as QuantizeFn), Some(dequantize_iq1_m), pick(dot_iq1_m, sdot_iq1_m)),
        // the reference kernels serve the rest
        TQ1_0 => (Some(quantize_tq1_0), Some(dequantize_tq1_0), pick(dot_tq1_0, sdot_tq1_0)),
        TQ2_0 => (Some(quantize_tq2_0), Some(dequantize_tq2_0), pick(dot_tq2_0, sdot_tq2_0)),
        MXFP4 => (Some(quantize_mxfp4), Some(dequantize_mxfp4), pick(dot_mxfp4, sdot_mxfp4)),
        NVFP4 => (None, Some(dequantize_nvfp4), pick(dot_nvfp4, sdot_nvfp4)),
        Q1_0 => (None, Some(dequantize_q1_0), pick(dot_q1_0, sdot_q1_0)),
        Q2_0 => (Some(quantize_q2_0), Some(dequantize_q2_0), pick(dot_q2_0, sdot_q2_0)),
        // Every type has an arm today; this one keeps types added later on the reference.
        #[allow(unreachable_patterns)]
        _ => (None, None, None),
    };
    Overrides { quantize, dequantize, vec_dot }
}
