//! AVX2 kernels (with FMA and F16C). Each `unsafe fn` here is compiled with
//! `#[target_feature(enable = "avx2,fma,f16c")]` and is sound to call exactly when the
//! CPU has those features; its slices may have any lengths (whole blocks are taken
//! with `chunks_exact`, like the reference). The safe wrappers below are private and
//! reach `dispatch` only through `overrides`, which demands an [`Avx2`] token.

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
use crate::types::QuantType;

/// Proof that this CPU has AVX2, FMA and F16C; only [`Avx2::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    pub fn detect() -> Option<Avx2> {
        let ok = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        ok.then_some(Avx2(()))
    }
}

macro_rules! safe {
    (quantize $name:ident = $imp:path) => {
        fn $name(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
            // SAFETY: `$name` leaves this module only through `overrides`, whose `Avx2`
            // argument exists only after AVX2, FMA and F16C were detected; `$imp` has no
            // other precondition.
            unsafe { $imp(x, q) }
        }
    };
    (quantize_imat $name:ident = $imp:path) => {
        fn $name(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
            // SAFETY: as for the quantizers above: reachable only with an `Avx2` token.
            unsafe { $imp(x, q, imat) }
        }
    };
    (dequantize $name:ident = $imp:path) => {
        fn $name(q: &[u8], y: &mut [f32]) {
            // SAFETY: as for the quantizers: reachable only with an `Avx2` token.
            unsafe { $imp(q, y) }
        }
    };
    (vec_dot $name:ident = $imp:path) => {
        fn $name(q: &[u8], yq: &[u8]) -> f32 {
            // SAFETY: as for the quantizers: reachable only with an `Avx2` token.
            unsafe { $imp(q, yq) }
        }
    };
}

safe!(quantize quantize_q8_0 = q8::quantize_q8_0);
safe!(quantize quantize_q8_1 = q8::quantize_q8_1);
safe!(quantize quantize_q8_k = q8::quantize_q8_k);
safe!(quantize quantize_f16 = float::quantize_f16);
safe!(quantize quantize_bf16 = float::quantize_bf16);
safe!(quantize_imat quantize_q4_k = quant::quantize_q4_k);
safe!(quantize_imat quantize_q5_k = quant::quantize_q5_k);
safe!(quantize_imat quantize_q6_k = quant::quantize_q6_k);
safe!(quantize_imat quantize_q3_k = quant::quantize_q3_k);
safe!(quantize_imat quantize_q2_k = quant::quantize_q2_k);
safe!(quantize_imat quantize_iq4_xs = quant::quantize_iq4_xs);
safe!(quantize_imat quantize_iq4_nl = quant::quantize_iq4_nl);
safe!(quantize_imat quantize_q4_0 = quant::quantize_q4_0);
safe!(quantize_imat quantize_q4_1 = quant::quantize_q4_1);
safe!(quantize_imat quantize_q5_0 = quant::quantize_q5_0);
safe!(quantize_imat quantize_q5_1 = quant::quantize_q5_1);
safe!(quantize_imat quantize_iq2_xxs = quant::quantize_iq2_xxs);
safe!(quantize_imat quantize_iq2_xs = quant::quantize_iq2_xs);
safe!(quantize_imat quantize_iq2_s = quant::quantize_iq2_s);
safe!(quantize_imat quantize_iq3_xxs = iq3::quantize_iq3_xxs);
safe!(quantize_imat quantize_iq3_s = iq3::quantize_iq3_s);
safe!(quantize_imat quantize_iq1_m = iq3::quantize_iq1_m);
safe!(quantize_imat quantize_iq1_s = quant::quantize_iq1_s);

safe!(dequantize dequantize_q4_0 = legacy::dequantize_q4_0);
safe!(dequantize dequantize_q4_1 = legacy::dequantize_q4_1);
safe!(dequantize dequantize_q5_0 = legacy::dequantize_q5_0);
safe!(dequantize dequantize_q5_1 = legacy::dequantize_q5_1);
safe!(dequantize dequantize_q8_0 = q8::dequantize_q8_0);
safe!(dequantize dequantize_q8_1 = q8::dequantize_q8_1);
safe!(dequantize dequantize_q8_k = q8::dequantize_q8_k);
safe!(dequantize dequantize_iq4_nl = legacy::dequantize_iq4_nl);
safe!(dequantize dequantize_q2_k = kquants::dequantize_q2_k);
safe!(dequantize dequantize_q3_k = kquants::dequantize_q3_k);
safe!(dequantize dequantize_q4_k = kquants::dequantize_q4_k);
safe!(dequantize dequantize_q5_k = kquants::dequantize_q5_k);
safe!(dequantize dequantize_q6_k = kquants::dequantize_q6_k);
safe!(dequantize dequantize_iq4_xs = kquants::dequantize_iq4_xs);
safe!(dequantize dequantize_f16 = float::dequantize_f16);
safe!(dequantize dequantize_bf16 = float::dequantize_bf16);

safe!(dequantize dequantize_iq2_xxs = iq2::dequantize_iq2_xxs);
safe!(dequantize dequantize_iq2_xs = iq2::dequantize_iq2_xs);
safe!(dequantize dequantize_iq2_s = iq2::dequantize_iq2_s);
safe!(vec_dot vec_dot_iq2_xxs = iq2::vec_dot_iq2_xxs);
safe!(vec_dot vec_dot_iq2_xs = iq2::vec_dot_iq2_xs);
safe!(vec_dot vec_dot_iq2_s = iq2::vec_dot_iq2_s);
safe!(dequantize dequantize_iq3_xxs = iq3::dequantize_iq3_xxs);
safe!(dequantize dequantize_iq3_s = iq3::dequantize_iq3_s);
safe!(vec_dot vec_dot_iq3_xxs = iq3::vec_dot_iq3_xxs);
safe!(vec_dot vec_dot_iq3_s = iq3::vec_dot_iq3_s);
safe!(dequantize dequantize_iq1_s = iq1::dequantize_iq1_s);
safe!(dequantize dequantize_iq1_m = iq1::dequantize_iq1_m);
safe!(vec_dot vec_dot_iq1_s = iq1::vec_dot_iq1_s);
safe!(vec_dot vec_dot_iq1_m = iq1::vec_dot_iq1_m);

safe!(vec_dot vec_dot_q4_0 = legacy::vec_dot_q4_0);
safe!(vec_dot vec_dot_q4_1 = legacy::vec_dot_q4_1);
safe!(vec_dot vec_dot_q5_0 = legacy::vec_dot_q5_0);
safe!(vec_dot vec_dot_q5_1 = legacy::vec_dot_q5_1);
safe!(vec_dot vec_dot_q8_0 = legacy::vec_dot_q8_0);
safe!(vec_dot vec_dot_iq4_nl = legacy::vec_dot_iq4_nl);
safe!(vec_dot vec_dot_q2_k = kquants::vec_dot_q2_k);
safe!(vec_dot vec_dot_q3_k = kquants::vec_dot_q3_k);
safe!(vec_dot vec_dot_q4_k = kquants::vec_dot_q4_k);
safe!(vec_dot vec_dot_q5_k = kquants::vec_dot_q5_k);
safe!(vec_dot vec_dot_q6_k = kquants::vec_dot_q6_k);
safe!(vec_dot vec_dot_iq4_xs = kquants::vec_dot_iq4_xs);
safe!(vec_dot vec_dot_f16 = float::vec_dot_f16);
safe!(vec_dot vec_dot_bf16 = float::vec_dot_bf16);
safe!(vec_dot vec_dot_f32 = float::vec_dot_f32);

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
safe!(vec_dot vec_dot_tq1_0 = ternary::vec_dot_tq1_0);
safe!(vec_dot vec_dot_tq2_0 = ternary::vec_dot_tq2_0);
safe!(vec_dot vec_dot_mxfp4 = fp4::vec_dot_mxfp4);
safe!(vec_dot vec_dot_nvfp4 = fp4::vec_dot_nvfp4);
safe!(vec_dot vec_dot_q1_0 = bits::vec_dot_q1_0);
safe!(vec_dot vec_dot_q2_0 = bits::vec_dot_q2_0);

/// The entries AVX2 accelerates for `t`.
pub(crate) fn overrides(_: Avx2, t: QuantType) -> Overrides {
    use QuantType::*;
    let (quantize, dequantize, vec_dot): (Option<crate::reference::QuantizeFn>, _, _) = match t {
        F32 => (None, None, Some(vec_dot_f32 as _)),
        F16 => (Some(quantize_f16 as _), Some(dequantize_f16 as _), Some(vec_dot_f16 as _)),
        BF16 => (Some(quantize_bf16 as _), Some(dequantize_bf16 as _), Some(vec_dot_bf16 as _)),
        Q4_0 => (Some(quantize_q4_0 as _), Some(dequantize_q4_0 as _), Some(vec_dot_q4_0 as _)),
        Q4_1 => (Some(quantize_q4_1 as _), Some(dequantize_q4_1 as _), Some(vec_dot_q4_1 as _)),
        Q5_0 => (Some(quantize_q5_0 as _), Some(dequantize_q5_0 as _), Some(vec_dot_q5_0 as _)),
        Q5_1 => (Some(quantize_q5_1 as _), Some(dequantize_q5_1 as _), Some(vec_dot_q5_1 as _)),
        Q8_0 => (Some(quantize_q8_0 as _), Some(dequantize_q8_0 as _), Some(vec_dot_q8_0 as _)),
        Q8_1 => (Some(quantize_q8_1 as _), Some(dequantize_q8_1 as _), None),
        Q8K => (Some(quantize_q8_k as _), Some(dequantize_q8_k as _), None),
        Q2K => (Some(quantize_q2_k as _), Some(dequantize_q2_k as _), Some(vec_dot_q2_k as _)),
        Q3K => (Some(quantize_q3_k as _), Some(dequantize_q3_k as _), Some(vec_dot_q3_k as _)),
        Q4K => (Some(quantize_q4_k as _), Some(dequantize_q4_k as _), Some(vec_dot_q4_k as _)),
        Q5K => (Some(quantize_q5_k as _), Some(dequantize_q5_k as _), Some(vec_dot_q5_k as _)),
        Q6K => (Some(quantize_q6_k as _), Some(dequantize_q6_k as _), Some(vec_dot_q6_k as _)),
        IQ4NL => (Some(quantize_iq4_nl as _), Some(dequantize_iq4_nl as _), Some(vec_dot_iq4_nl as _)),
        IQ4XS => (Some(quantize_iq4_xs as _), Some(dequantize_iq4_xs as _), Some(vec_dot_iq4_xs as _)),
        IQ2XXS => (Some(quantize_iq2_xxs as _), Some(dequantize_iq2_xxs as _), Some(vec_dot_iq2_xxs as _)),
        IQ2XS => (Some(quantize_iq2_xs as _), Some(dequantize_iq2_xs as _), Some(vec_dot_iq2_xs as _)),
        IQ2S => (Some(quantize_iq2_s as _), Some(dequantize_iq2_s as _), Some(vec_dot_iq2_s as _)),
        IQ3XXS => (Some(quantize_iq3_xxs as _), Some(dequantize_iq3_xxs as _), Some(vec_dot_iq3_xxs as _)),
        IQ3S => (Some(quantize_iq3_s as _), Some(dequantize_iq3_s as _), Some(vec_dot_iq3_s as _)),
        IQ1S => (Some(quantize_iq1_s as _), Some(dequantize_iq1_s as _), Some(vec_dot_iq1_s as _)),
        IQ1M => (Some(quantize_iq1_m as _), Some(dequantize_iq1_m as _), Some(vec_dot_iq1_m as _)),
        TQ1_0 => (Some(quantize_tq1_0 as _), Some(dequantize_tq1_0 as _), Some(vec_dot_tq1_0 as _)),
        TQ2_0 => (Some(quantize_tq2_0 as _), Some(dequantize_tq2_0 as _), Some(vec_dot_tq2_0 as _)),
        MXFP4 => (Some(quantize_mxfp4 as _), Some(dequantize_mxfp4 as _), Some(vec_dot_mxfp4 as _)),
        NVFP4 => (None, Some(dequantize_nvfp4 as _), Some(vec_dot_nvfp4 as _)),
        Q1_0 => (None, Some(dequantize_q1_0 as _), Some(vec_dot_q1_0 as _)),
        Q2_0 => (Some(quantize_q2_0 as _), Some(dequantize_q2_0 as _), Some(vec_dot_q2_0 as _)),
        // the reference kernels serve the rest (none at present; kept for new formats)
        #[allow(unreachable_patterns)]
        _ => (None, None, None),
    };
    Overrides { quantize, dequantize, vec_dot }
}
