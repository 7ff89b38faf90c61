//! IQ4_XS: super-blocks of 256 made of 8 sub-blocks of 32 (136 bytes): an f16 scale
//! `d`, the 6-bit sub-block multipliers (stored offset by 32) split into 2 high bits each
//! in a u16 and 4 low bits each in 4 bytes, then 128 bytes of 4-bit indices into the
//! non-linear `iq4::KVALUES` table laid out per sub-block like IQ4_NL. Sub-block `ib`
//! has scale `d * (ls - 32)`. Dots pair it with Q8_K.

use super::common::{read_f16, read_f32};
use super::iq4::{self, level};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 136;
/// Offsets inside a block.
const SCALES_H: usize = 2;
const SCALES_L: usize = 4;
const QS: usize = 8;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_iq4_xs`: the 7-try weighted search, with or without importance weights
/// (ggml's `_ref` is the same function without them).
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    for (ibl, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = imat.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let s = iq4::quantize_impl(xb, qw, iq4::NTRY, &mut qb[QS..]);
        qb[..2].copy_from_slice(&s.d.to_le_bytes());
        qb[SCALES_H..SCALES_H + 2].copy_from_slice(&s.scales_h.to_le_bytes());
        qb[SCALES_L..SCALES_L + 4].copy_from_slice(&s.scales_l);
    }
}

/// The 6-bit multiplier of sub-block `ib`, still offset by 32.
#[inline(always)]
fn sub_scale(qb: &[u8], ib: usize) -> i32 {
    let h = u16::from_le_bytes([qb[SCALES_H], qb[SCALES_H + 1]]);
    let lo = (qb[SCALES_L + ib / 2] >> (4 * (ib % 2))) & 0xf;
    let hi = ((h >> (2 * ib)) & 3) as u8;
    (lo | (hi << 4)) as i32
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let dl = d * (sub_scale(qb, ib) - 32) as f32;
            let qs = &qb[QS + 16 * ib..QS + 16 * ib + 16];
            for j in 0..16 {
                ys[j] = dl * level(qs[j]) as f32;
                ys[j + 16] = dl * level(qs[j] >> 4) as f32;
            }
        }
    }
}

/// `ggml_vec_dot_iq4_xs_q8_K_generic`: one float accumulation per sub-block.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let d4d8 = read_f16(xb, 0) * read_f32(yb, 0);
        for ib in 0..QK_K / 32 {
            let dl = d4d8 * (sub_scale(xb, ib) - 32) as f32;
            let qs = &xb[QS + 16 * ib..QS + 16 * ib + 16];
            let q8 = &yb[q8_k::QS + 32 * ib..q8_k::QS + 32 * ib + 32];
            let mut sumi1 = 0i32;
            let mut sumi2 = 0i32;
            for j in 0..16 {
                sumi1 += q8[j] as i8 as i32 * level(qs[j]);
                sumi2 += q8[j + 16] as i8 as i32 * level(qs[j] >> 4);
            }
            sumf += dl * (sumi1 + sumi2) as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
        crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, x, imat)
    }

    fn amax(x: &[f32]) -> f32 {
        x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    #[test]
    fn zero_and_tiny_super_blocks_dequantize_to_zero() {
        for v in [0.0f32, -0.0, 1e-30, -1e-30] {
            let (q, y) = roundtrip(&[v; 512], None);
            for qb in q.chunks_exact(BLOCK_BYTES) {
                assert_eq!(&qb[..2], &0x8000u16.to_le_bytes(), "-0 super-scale as in ggml");
                assert_eq!(&qb[SCALES_H..SCALES_L], &0xaaaau16.to_le_bytes());
                assert!(qb[SCALES_L..QS].iter().all(|&b| b == 0));
                assert!(qb[QS..].iter().all(|&b| b == 0x88));
            }
            assert!(y.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn zero_sub_blocks_stay_zero_next_to_large_ones() {
        let x: Vec<f32> = (0..256).map(|i| if (i / 32) % 2 == 0 { 0.0 } else { (i % 13) as f32 - 6.0 }).collect();
        let (_, y) = roundtrip(&x, None);
        for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact(32)) {
            if xb.iter().all(|&v| v == 0.0) {
                assert!(yb.iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn constant_ramp_alternating_have_bounded_error() {
        let ramp: Vec<f32> = (0..512).map(|i| (i as f32 - 256.0) * 0.01).collect();
        let alt: Vec<f32> = (0..512).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 } * (1 + i % 7) as f32).collect();
        let c = vec![-3.0f32; 512];
        let imat: Vec<f32> = (0..512).map(|i| 0.1 + (i % 5) as f32).collect();
        for x in [&ramp, &alt, &c] {
            for w in [None, Some(&imat[..])] {
                let (_, y) = roundtrip(x, w);
                for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact(32)) {
                    let err = xb.iter().zip(yb).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    // half the widest table gap, plus the 6-bit scale's rounding
                    assert!(err <= 0.2 * amax(xb), "{xb:?} -> {yb:?}");
                }
            }
        }
    }

    #[test]
    fn huge_values_do_not_panic() {
        let big: Vec<f32> =
            (0..256).map(|i| if i % 3 == 0 { -1.0e8 } else { 4.0e7 } * ((i % 5) as f32 + 0.5) / 4.5).collect();
        let (_, y) = roundtrip(&big, None);
        let err = big.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err <= 0.2 * amax(&big));
        let huge: Vec<f32> = (0..256).map(|i| if i % 2 == 0 { 1e30 } else { -3e38 }).collect();
        let _ = roundtrip(&huge, Some(&[1.0; 256]));
        let _ = roundtrip(&huge, None);
    }

    #[test]
    fn dot_matches_dequantized_product() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let yv: Vec<f32> = (0..512).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.7).collect();
        let (q, xd) = roundtrip(&x, None);
        let mut yq = vec![0u8; 2 * q8_k::BLOCK_BYTES];
        q8_k::quantize_ref(&yv, &mut yq);
        let mut yd = vec![0f32; 512];
        (q8_k::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = xd.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
        let scale: f64 = xd.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let got = vec_dot(&q, &yq) as f64;
        assert!((got - want).abs() <= 1e-5 * scale, "{got} vs {want}");
    }
}
