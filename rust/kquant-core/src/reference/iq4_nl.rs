//! IQ4_NL: blocks of 32, an f16 scale and 16 bytes of 4-bit indices into the non-linear
//! `iq4::KVALUES` table (18 bytes). Byte j holds value j in its low nibble and value
//! j+16 in its high nibble. Dots pair it with Q8_0.

use super::common::read_f16;
use super::iq4::{self, level};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 18;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_iq4_nl`: the 7-try weighted search with or without importance weights
/// (what llama-quantize writes; ggml's plain `_ref` variant is never used for files).
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    for (ib, (xb, qb)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = imat.map(|w| &w[ib * QK..(ib + 1) * QK]);
        let s = iq4::quantize_impl(xb, qw, iq4::NTRY, &mut qb[2..]);
        qb[..2].copy_from_slice(&s.d.to_le_bytes());
    }
}

/// `quantize_row_iq4_nl_ref`: one rounding pass from the extreme, no search. Kept for
/// completeness; ggml only uses it where file bytes do not matter.
pub fn quantize_ref(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let s = iq4::quantize_impl(xb, None, -1, &mut qb[2..]);
        qb[..2].copy_from_slice(&s.d.to_le_bytes());
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for j in 0..QK / 2 {
            let b = qb[2 + j];
            yb[j] = d * level(b) as f32;
            yb[j + QK / 2] = d * level(b >> 4) as f32;
        }
    }
}

/// `ggml_vec_dot_iq4_nl_q8_0_generic`.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_0::BLOCK_BYTES)) {
        let d = read_f16(yb, 0) * read_f16(xb, 0);
        let ys = &yb[2..];
        let mut sumi1 = 0i32;
        let mut sumi2 = 0i32;
        for j in 0..QK / 2 {
            let b = xb[2 + j];
            sumi1 += ys[j] as i8 as i32 * level(b);
            sumi2 += ys[j + QK / 2] as i8 as i32 * level(b >> 4);
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
        crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, x, imat)
    }

    /// Largest error relative to the block's largest magnitude.
    fn rel_err(x: &[f32], y: &[f32]) -> f32 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / amax
    }

    #[test]
    fn zero_and_tiny_blocks_are_zero_scale_mid_level() {
        for v in [0.0f32, -0.0, 1e-30, -1e-30, 1e-16] {
            let (q, y) = roundtrip(&[v; 64], None);
            for qb in q.chunks_exact(BLOCK_BYTES) {
                assert_eq!(&qb[..2], &[0, 0]);
                assert!(qb[2..].iter().all(|&b| b == 0x88));
            }
            assert!(y.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn constant_block_hits_a_level_exactly() {
        for c in [0.5f32, -3.0, 1234.0, -7.25e5] {
            let (_, y) = roundtrip(&[c; 32], None);
            // one level times a scale fitted by least squares reproduces c up to f16
            assert!(rel_err(&[c; 32], &y) < 1e-3, "{c}: {y:?}");
        }
    }

    #[test]
    fn ramps_and_signs_have_bounded_error() {
        let ramp: Vec<f32> = (0..256).map(|i| i as f32 - 128.0).collect();
        let alt: Vec<f32> = (0..256).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 } * (1 + i % 7) as f32).collect();
        let imat: Vec<f32> = (0..256).map(|i| 0.1 + (i % 5) as f32).collect();
        for x in [&ramp, &alt] {
            for w in [None, Some(&imat[..])] {
                let (_, y) = roundtrip(x, w);
                for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact(QK)) {
                    // the widest gap in the table is 24 of 127, so 1/2 of it relative
                    // to the extreme, plus slack for the fitted scale
                    assert!(rel_err(xb, yb) < 0.15, "{xb:?} -> {yb:?}");
                }
            }
        }
    }

    #[test]
    fn huge_values_do_not_panic() {
        // Up to ~7e6 the f16 scale stays finite and the error stays bounded.
        let big: Vec<f32> =
            (0..64).map(|i| if i % 3 == 0 { -7.0e6 } else { 3.1e6 } * ((i % 5) as f32 + 0.5) / 4.5).collect();
        let (_, y) = roundtrip(&big, None);
        for (xb, yb) in big.chunks_exact(QK).zip(y.chunks_exact(QK)) {
            assert!(rel_err(xb, yb) < 0.15);
        }
        // Beyond, the squares overflow; ggml's arithmetic gives non-finite scales, and
        // so do we, without panicking.
        let huge: Vec<f32> = (0..64).map(|i| if i % 2 == 0 { 1e30 } else { -3e38 }).collect();
        let _ = roundtrip(&huge, Some(&[1.0; 64]));
        let _ = roundtrip(&huge, None);
    }

    #[test]
    fn dot_matches_dequantized_product() {
        let x: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let yv: Vec<f32> = (0..128).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.7).collect();
        let (q, xd) = roundtrip(&x, None);
        let mut yq = vec![0u8; 128 / q8_0::QK * q8_0::BLOCK_BYTES];
        q8_0::quantize_ref(&yv, &mut yq);
        let mut yd = vec![0f32; 128];
        (q8_0::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = xd.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
        let scale: f64 = xd.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let got = vec_dot(&q, &yq) as f64;
        assert!((got - want).abs() <= 1e-5 * scale, "{got} vs {want}");
    }

    #[test]
    fn ref_variant_is_close_to_search() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 29 % 61) as f32 - 30.0) * 0.1).collect();
        let mut q = vec![0u8; 2 * BLOCK_BYTES];
        quantize_ref(&x, &mut q);
        let mut y = vec![0f32; 64];
        dequantize(&q, &mut y);
        for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact(QK)) {
            assert!(rel_err(xb, yb) < 0.15);
        }
    }
}
