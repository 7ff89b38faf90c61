//! Portable scalar kernels: the definition of correct output for every format.
//!
//! Each format module exposes a `KERNELS` table. All functions work on one row:
//! `x.len()` values and `q.len()` bytes, both whole numbers of blocks (checked by
//! `ops`, assumed here). Importance-matrix quantization needs the whole row because
//! the legacy formats weight by the row's mean square.

pub mod common;
pub mod float;
pub mod iq1;
pub mod iq1_m;
pub mod iq1_s;
pub mod iq2;
pub mod iq2_s;
pub mod iq2_tables;
pub mod iq2_xs;
pub mod iq2_xxs;
pub mod iq3;
pub mod iq3_s;
pub mod iq3_xxs;
pub mod iq4;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod lattice;
pub mod mxfp4;
pub mod nvfp4;
pub mod q1_0;
pub mod q2_0;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
pub mod search;
pub mod tq1_0;
pub mod tq2_0;

use crate::types::QuantType;

/// Quantize one row; `imat` (same length as `x`) selects ggml's weighted search.
pub type QuantizeFn = fn(x: &[f32], q: &mut [u8], imat: Option<&[f32]>);
/// Dequantize one row.
pub type DequantizeFn = fn(q: &[u8], y: &mut [f32]);
/// Dot of one row with a row of the partner type (`QuantType::vec_dot_type`).
pub type VecDotFn = fn(q: &[u8], yq: &[u8]) -> f32;

pub struct Kernels {
    pub quantize: QuantizeFn,
    pub dequantize: DequantizeFn,
    /// None for activation-only formats without a ggml dot (Q8_1, Q8_K).
    pub vec_dot: Option<VecDotFn>,
}

/// The reference kernels of `t`; None for a type whose kernels do not exist yet.
pub fn kernels(t: QuantType) -> Option<&'static Kernels> {
    use QuantType::*;
    Some(match t {
        F32 => &float::F32,
        F16 => &float::F16,
        BF16 => &float::BF16,
        Q4_0 => &q4_0::KERNELS,
        Q8_0 => &q8_0::KERNELS,
        Q8_1 => &q8_1::KERNELS,
        Q8K => &q8_k::KERNELS,
        Q4_1 => &q4_1::KERNELS,
        Q5_0 => &q5_0::KERNELS,
        Q5_1 => &q5_1::KERNELS,
        Q2K => &q2_k::KERNELS,
        Q3K => &q3_k::KERNELS,
        Q4K => &q4_k::KERNELS,
        Q5K => &q5_k::KERNELS,
        Q6K => &q6_k::KERNELS,
        IQ4NL => &iq4_nl::KERNELS,
        IQ4XS => &iq4_xs::KERNELS,
        TQ1_0 => &tq1_0::KERNELS,
        TQ2_0 => &tq2_0::KERNELS,
        MXFP4 => &mxfp4::KERNELS,
        NVFP4 => &nvfp4::KERNELS,
        Q1_0 => &q1_0::KERNELS,
        Q2_0 => &q2_0::KERNELS,
        IQ2XXS => &iq2_xxs::KERNELS,
        IQ2XS => &iq2_xs::KERNELS,
        IQ2S => &iq2_s::KERNELS,
        IQ3XXS => &iq3_xxs::KERNELS,
        IQ3S => &iq3_s::KERNELS,
        IQ1S => &iq1_s::KERNELS,
        IQ1M => &iq1_m::KERNELS,
    })
}

/// Quantizes `x` with `k` (one row) and dequantizes it back: the shared core of the
/// per-format unit tests.
#[cfg(test)]
pub(crate) fn roundtrip(
    k: &Kernels,
    block: usize,
    block_bytes: usize,
    x: &[f32],
    imat: Option<&[f32]>,
) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; x.len() / block * block_bytes];
    (k.quantize)(x, &mut q, imat);
    let mut y = vec![0f32; x.len()];
    (k.dequantize)(&q, &mut y);
    (q, y)
}
