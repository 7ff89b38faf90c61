//! Q1_0: blocks of 128 signs with one f16 magnitude (18 bytes): value j is +d when bit
//! j%8 of byte j/8 is set, else -d. Dots pair one block with four Q8_0 blocks.

use super::common::{read_f16, write_f16};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 128;
pub const BLOCK_BYTES: usize = 18;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_row_q1_0_ref`: d is the mean |x| (summed in order), the bit the sign
/// (`x >= 0`, so -0.0 counts as positive). ggml's `quantize_q1_0` runs the same code row
/// by row when given importance weights, so they change nothing.
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let mut sum_abs = 0.0f32;
        for &v in xb {
            sum_abs += v.abs();
        }
        write_f16(qb, 0, sum_abs / QK as f32);
        for (o, xs) in qb[2..].iter_mut().zip(xb.chunks_exact(8)) {
            *o = xs.iter().enumerate().fold(0u8, |b, (k, &v)| b | (((v >= 0.0) as u8) << k));
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for (j, o) in yb.iter_mut().enumerate() {
            *o = if (qb[2 + j / 8] >> (j % 8)) & 1 != 0 { d } else { -d };
        }
    }
}

/// ggml's order: an integer sum per Q8_0 block, scaled by that block's d and summed in
/// float, then scaled by the Q1_0 d.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb4) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(4 * q8_0::BLOCK_BYTES)) {
        let mut sumi = 0.0f32;
        for (k, yb) in yb4.chunks_exact(q8_0::BLOCK_BYTES).enumerate() {
            let bits = &xb[2 + 4 * k..6 + 4 * k];
            let s: i32 = (0..32)
                .map(|j| {
                    let v = yb[2 + j] as i8 as i32;
                    if (bits[j / 8] >> (j % 8)) & 1 != 0 {
                        v
                    } else {
                        -v
                    }
                })
                .sum();
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
    fn signs_and_mean_magnitude() {
        let x: Vec<f32> = (0..QK)
            .map(|i| {
                if i % 3 == 0 {
                    -0.0
                } else if i % 3 == 1 {
                    2.0
                } else {
                    -1.0
                }
            })
            .collect();
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, &x, None);
        let d = read_f16(&q, 0);
        assert_eq!(d, half::f16::from_f32((2.0 * 43.0 + 42.0) / 128.0).to_f32());
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*b, if *a >= 0.0 { d } else { -d });
        }
    }
}
