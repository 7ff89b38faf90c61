//! TQ2_0 (ternary in 2 bits): super-blocks of 256 values in {-1, 0, 1} * d (66 bytes):
//! `qs` (64 bytes) then f16 `d`. Byte m of each 32-byte half holds values m + 32l of
//! that half's 128 in bit pairs l = 0..4, stored offset by 1 (code 3 reads as +2).

use super::common::{read_f16, read_f32, write_f16};
use super::q8_k;
use super::tq1_0::{amax_inv, trit};
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 66;
pub const D: usize = 64;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_row_tq2_0_ref`; ggml ignores importance weights for TQ2_0.
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let (d, id) = amax_inv(xb);
        write_f16(qb, D, d);
        for h in 0..2 {
            for m in 0..32 {
                let mut b = 0u8;
                for l in 0..4 {
                    b |= (trit(xb[128 * h + m + 32 * l] * id) & 3) << (2 * l);
                }
                qb[32 * h + m] = b;
            }
        }
    }
}

/// Code (0..=3) of value `i` of a block.
#[inline(always)]
fn code(qb: &[u8], i: usize) -> i32 {
    let (h, r) = (i / 128, i % 128);
    ((qb[32 * h + r % 32] >> (2 * (r / 32))) & 3) as i32
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, D);
        for (i, o) in yb.iter_mut().enumerate() {
            *o = (code(qb, i) - 1) as f32 * d;
        }
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let ys = &yb[q8_k::QS..q8_k::QS + QK_K];
        let sumi: i32 = (0..QK_K).map(|i| (code(qb, i) - 1) * ys[i] as i8 as i32).sum();
        sumf += sumi as f32 * (read_f32(yb, 0) * read_f16(qb, D));
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_values() {
        let x: Vec<f32> = (0..QK_K).map(|i| [-2.5f32, 0.0, 2.0, 1.25, -1.0][i % 5]).collect();
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, &x, None);
        assert!(q[..64].iter().all(|b| b & 0xaa & (b << 1) == 0), "no code 3 from the quantizer");
        for (a, b) in x.iter().zip(&y) {
            let want = if *a >= 1.25 {
                2.5
            } else if *a <= -1.25 {
                -2.5
            } else {
                0.0
            };
            assert_eq!(*b, want, "{a} -> {b}");
        }
    }

    #[test]
    fn code_three_reads_as_two() {
        let mut qb = [0xffu8; BLOCK_BYTES];
        write_f16(&mut qb, D, 0.5);
        let mut y = [0f32; QK_K];
        dequantize(&qb, &mut y);
        assert!(y.iter().all(|&v| v == 1.0));
    }
}
