//! Q2_0: blocks of 64 two-bit codes with one f16 scale (18 bytes): value j is
//! (code - 1) * d, code in bits 2(j%4) of byte j/4; codes 0..=3 mean -1, 0, 1, 2.
//! Dots pair one block with two Q8_0 blocks.

use super::common::{read_f16, trunc_x86, write_f16};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 64;
pub const BLOCK_BYTES: usize = 18;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// Code of `v` for inverse scale `id`: C's `(int)roundf(v * id) + 1` clamped to 0..=3;
/// x86 turns NaN/inf (an infinite `id` from a subnormal maximum) into INT_MIN, code 0.
#[inline(always)]
pub fn code(v: f32, id: f32) -> u8 {
    (trunc_x86((v * id).round()).saturating_add(1)).clamp(0, 3) as u8
}

/// `quantize_row_q2_0_ref`: d is the block's max |x|, so the quantizer never writes
/// code 3 (+2). Importance weights change nothing (ggml's `quantize_q2_0` runs the same
/// code row by row).
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
            }
        }
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        write_f16(qb, 0, amax);
        for (o, xs) in qb[2..].iter_mut().zip(xb.chunks_exact(4)) {
            *o = xs.iter().enumerate().fold(0u8, |b, (k, &v)| b | (code(v, id) << (2 * k)));
        }
    }
}

#[inline(always)]
fn level(qb: &[u8], j: usize) -> i32 {
    ((qb[2 + j / 4] >> (2 * (j % 4))) & 3) as i32 - 1
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for (j, o) in yb.iter_mut().enumerate() {
            *o = level(qb, j) as f32 * d;
        }
    }
}

/// ggml's order: an integer sum per Q8_0 block, scaled by that block's d and summed in
/// float, then scaled by the Q2_0 d.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb2) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(2 * q8_0::BLOCK_BYTES)) {
        let mut sumi = 0.0f32;
        for (k, yb) in yb2.chunks_exact(q8_0::BLOCK_BYTES).enumerate() {
            let s: i32 = (0..32).map(|j| level(xb, 32 * k + j) * yb[2 + j] as i8 as i32).sum();
            sumi += read_f16(yb, 0) * s as f32;
        }
        sumf += read_f16(xb, 0) * sumi;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_half_away() {
        let x: Vec<f32> = (0..QK).map(|i| [-4.0f32, -2.0, 0.0, 1.9, 2.0, 4.0, -1.9, 0.5][i % 8]).collect();
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, &x, None);
        assert_eq!(read_f16(&q, 0), 4.0);
        let want = [-4.0f32, -4.0, 0.0, 0.0, 4.0, 4.0, 0.0, 0.0];
        for (i, b) in y.iter().enumerate() {
            assert_eq!(*b, want[i % 8], "value {i}");
        }
    }

    #[test]
    fn degenerate_scales() {
        assert_eq!(code(1e-40, f32::INFINITY), 0);
        assert_eq!(code(0.0, f32::INFINITY), 0);
        assert_eq!(code(3.0, 1.0), 3);
        assert_eq!(code(-3.0, 1.0), 0);
    }
}
