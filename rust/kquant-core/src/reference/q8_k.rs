//! Q8_K: the k-quants' activation format. Blocks of 256: an f32 scale, 256 int8 values
//! and 16 int16 sums of 16 values each (292 bytes). |q| <= 127 so that SIMD dots can
//! use unsigned-by-signed byte products without overflow.

use super::common::{nearest_int, read_f32, signed_absmax, write_f32};
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 292;
/// Offsets inside a block.
pub const QS: usize = 4;
pub const BSUMS: usize = 4 + QK_K;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: None };

fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    quantize_ref(x, q);
}

/// `quantize_row_q8_K_ref`; an all-zero block is written as zeros throughout.
pub fn quantize_ref(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let (amax, max) = signed_absmax(xb);
        if amax == 0.0 {
            qb.fill(0);
            continue;
        }
        let iscale = -127.0f32 / max;
        for (o, &v) in qb[QS..QS + QK_K].iter_mut().zip(xb) {
            *o = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let s: i32 = qb[QS + 16 * j..QS + 16 * j + 16].iter().map(|&b| b as i8 as i32).sum();
            qb[BSUMS + 2 * j..BSUMS + 2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        write_f32(qb, 0, 1.0 / iscale);
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f32(qb, 0);
        for (o, &b) in yb.iter_mut().zip(&qb[QS..QS + QK_K]) {
            *o = d * (b as i8) as f32;
        }
    }
}

/// The 16-value sum `j` of a Q8_K block.
#[inline(always)]
pub fn bsum(qb: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([qb[BSUMS + 2 * j], qb[BSUMS + 2 * j + 1]]) as i32
}
