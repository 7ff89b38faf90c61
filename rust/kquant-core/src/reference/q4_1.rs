//! Q4_1: blocks of 32, an f16 scale `d`, an f16 offset `m` and 16 bytes of 4-bit levels
//! (20 bytes); value = level * d + m. Byte j holds level j in its low nibble and level
//! j+16 in its high nibble.

use super::common::trunc_x86;
use super::common::{read_f16, row_sigma2, write_f16};
use super::q8_1;
use super::search::{make_qkx3_quants, ErrorNorm, ScaleSteps};
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 20;
const QS: usize = 4;

/// The scale candidates ggml's weighted legacy quantizers try.
pub(super) const LEGACY_STEPS: ScaleSteps = ScaleSteps { rmin: -0.9, rdelta: 0.05, nstep: 36 };

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => quantize_ref(x, q),
        Some(w) => quantize_imat(x, q, w),
    }
}

/// Minimum and maximum of a block, skipping NaN like ggml's `<`/`>` comparisons.
pub(super) fn min_max(xb: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in xb {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `quantize_row_q4_1_ref`: the block's range split into 15 steps from its minimum;
/// values truncated after adding 0.5.
fn quantize_ref(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(qb, 0, d);
        write_f16(qb, 2, min);
        // ggml narrows to int8 before clamping to 15
        let level = |v: f32| (trunc_x86((v - min) * id + 0.5) as i8).min(15) as u8;
        for j in 0..QK / 2 {
            qb[QS + j] = level(xb[j]) | (level(xb[j + QK / 2]) << 4);
        }
    }
}

/// `quantize_row_q4_1_impl`: ggml's asymmetric search weighted by
/// imat * sqrt(sigma2 + x^2), sigma2 being the mean square of the whole row.
fn quantize_imat(x: &[f32], q: &mut [u8], imat: &[f32]) {
    let sigma2 = row_sigma2(x);
    let mut weight = [0.0f32; QK];
    let mut l = [0u8; QK];
    for ((xb, qb), qw) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)).zip(imat.chunks_exact(QK)) {
        for j in 0..QK {
            weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        let fit = make_qkx3_quants(15, xb, Some(&weight), &mut l, LEGACY_STEPS, ErrorNorm::Square);
        write_f16(qb, 0, fit.scale);
        write_f16(qb, 2, -fit.min);
        for j in 0..QK / 2 {
            qb[QS + j] = l[j] | (l[j + QK / 2] << 4);
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        let m = read_f16(qb, 2);
        for j in 0..QK / 2 {
            let b = qb[QS + j];
            yb[j] = (b & 0x0f) as f32 * d + m;
            yb[j + QK / 2] = (b >> 4) as f32 * d + m;
        }
    }
}

/// `ggml_vec_dot_q4_1_q8_1_generic`: the offset term uses Q8_1's precomputed
/// `s = d * sum(q)`, so an overflowed `s` makes the dot NaN or infinite as in ggml.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_1::BLOCK_BYTES)) {
        let ys = &yb[4..];
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let b = xb[QS + j];
            sumi += (b & 0x0f) as i32 * ys[j] as i8 as i32;
            sumi += (b >> 4) as i32 * ys[j + QK / 2] as i8 as i32;
        }
        sumf += (read_f16(xb, 0) * read_f16(yb, 0)) * sumi as f32 + read_f16(xb, 2) * read_f16(yb, 2);
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
        crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, x, imat)
    }

    /// Half a step of the block's range, plus f16 rounding of d and m.
    fn assert_close(x: &[f32], y: &[f32], steps: f32) {
        for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
            let (min, max) = min_max(xb);
            let amax = min.abs().max(max.abs());
            let tol = (max - min) / steps + amax * 4e-3;
            for (&a, &b) in xb.iter().zip(yb) {
                assert!(b.is_finite());
                assert!((a - b).abs() <= tol, "{a} vs {b} (range {min}..{max})");
            }
        }
    }

    fn cases() -> Vec<Vec<f32>> {
        vec![
            (0..64).map(|i| i as f32 - 20.5).collect(),
            vec![0.5f32; 64],
            vec![-3.0f32; 64],
            // the offset m is an f16 too, so this is about as large as Q4_1 can hold
            (0..64).map(|i| if i % 2 == 0 { 6.0e4 } else { -6.5e4 }).collect(),
            (0..64).map(|i| if i < 32 { 0.0 } else { (i % 7) as f32 * 0.1 }).collect(),
            (0..64).map(|i| -((i * 13 % 29) as f32) - 1.0).collect(),
        ]
    }

    #[test]
    fn zeros_stay_zero() {
        let x = vec![0.0f32; 64];
        let w = vec![1.0f32; 64];
        for imat in [None, Some(&w[..])] {
            let (_, y) = roundtrip(&x, imat);
            assert!(y.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn adversarial_blocks_are_bounded() {
        let w: Vec<f32> = (0..64).map(|i| 0.5 + (i % 9) as f32).collect();
        for x in cases() {
            let (_, y) = roundtrip(&x, None);
            assert_close(&x, &y, 30.0);
            // the weighted search trades error between values: allow a full step
            let (_, yi) = roundtrip(&x, Some(&w));
            assert_close(&x, &yi, 15.0);
        }
        // constant blocks come back exactly (m = c, d = 0)
        let (_, y) = roundtrip(&cases()[2], None);
        assert!(y.iter().all(|&v| v == -3.0));
    }

    #[test]
    fn extreme_magnitudes_do_not_panic() {
        let tiny: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 1e-30).collect();
        let (_, y) = roundtrip(&tiny, None);
        assert!(y.iter().all(|&v| v == 0.0));
        // the range overflows f32: ggml's d is infinite and its inverse zero
        let huge: Vec<f32> = (0..32).map(|i| if i == 3 { -3e38 } else { 3e38 - i as f32 * 1e36 }).collect();
        let (q, _) = roundtrip(&huge, None);
        assert!(read_f16(&q, 0).is_infinite());
        let w = vec![1.0f32; 32];
        roundtrip(&huge, Some(&w));
    }

    #[test]
    fn dot_matches_dequantized_product() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
        let y: Vec<f32> = (0..64).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.1).collect();
        let (q, xd) = roundtrip(&x, None);
        let mut yq = vec![0u8; 2 * q8_1::BLOCK_BYTES];
        q8_1::quantize_ref(&y, &mut yq);
        let mut yd = vec![0.0f32; 64];
        (q8_1::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = xd.iter().zip(&yd).map(|(&a, &b)| a as f64 * b as f64).sum();
        let scale: f64 = xd.iter().zip(&yd).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        let got = vec_dot(&q, &yq) as f64;
        // s is rounded to f16, so the offset term is only f16-accurate
        assert!((got - want).abs() < 1e-3 * scale, "{got} vs {want}");
    }
}
