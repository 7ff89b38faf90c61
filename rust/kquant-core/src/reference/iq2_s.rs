//! IQ2_S: super-blocks of 256 (82 bytes): an f16 scale `d`, 32 low bytes of 10-bit
//! indices into the 1024-point grid, 32 sign bytes (one per 8 values, all 8 bits
//! stored), 8 bytes of the indices' high 2 bits (four per byte), then 8 bytes of two
//! 4-bit group scales `s` each (one per 16 values). Group scale `d * (0.5 + s) * 0.25`.
//! Dots pair it with Q8_K.

use super::common::{read_f16, read_f32};
use super::iq2::{self, f16_bits, grid_index, scale_code, split_signs, GRID_S};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 82;
/// Offsets inside a block.
pub const QS: usize = 2;
pub const SIGNS: usize = 2 + QK_K / 8;
pub const QH: usize = 2 + QK_K / 4;
pub const SCALES: usize = QH + QK_K / 32;
/// ggml's GROUP_MAX_EPS_IQ2_S.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// Grid index of the 8 values `i8` (0..32).
#[inline(always)]
fn index(qb: &[u8], i8: usize) -> usize {
    qb[QS + i8] as usize | ((qb[QH + i8 / 4] as usize >> (2 * (i8 % 4))) & 3) << 8
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let sc = qb[SCALES + ib];
            let db = [d * (0.5 + (sc & 0xf) as f32) * 0.25, d * (0.5 + (sc >> 4) as f32) * 0.25];
            for (l, yo) in ys.chunks_exact_mut(8).enumerate() {
                let g = iq2::grid_bytes(&GRID_S, index(qb, 4 * ib + l));
                let signs = qb[SIGNS + 4 * ib + l];
                for j in 0..8 {
                    let v = db[l / 2] * g[j] as f32;
                    yo[j] = if signs & (1 << j) != 0 { -v } else { v };
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq2_s_q8_K_generic`: one integer sum per super-block.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let d = read_f16(xb, 0) * read_f32(yb, 0);
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let mut bsum = 0i32;
        for ib in 0..QK_K / 32 {
            let sc = xb[SCALES + ib];
            let ls = [2 * (sc & 0xf) as i32 + 1, 2 * (sc >> 4) as i32 + 1];
            for half in 0..2 {
                let mut sumi = 0i32;
                for l in 2 * half..2 * half + 2 {
                    let p = iq2::signed_point(&GRID_S, index(xb, 4 * ib + l), xb[SIGNS + 4 * ib + l]);
                    let y8 = &q8[32 * ib + 8 * l..][..8];
                    for j in 0..8 {
                        sumi += p[j] * y8[j] as i8 as i32;
                    }
                }
                bsum += sumi * ls[half];
            }
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

/// `quantize_row_iq2_s_impl`, with or without importance weights.
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let lat = iq2::lattice_s();
    quantize_with(x, q, imat, &|xv, w, wa, max| iq2::candidates16(lat, xv, w, wa, max), &|xv, wa, id, s, l| {
        iq2::round_point(lat, xv, wa, id, s, l)
    });
}

/// The quantizer with the candidate search `search` (the reference's, or a SIMD one
/// giving the same result).
#[inline(always)]
pub fn quantize_with(x: &[f32], q: &mut [u8], imat: Option<&[f32]>, search: iq2::Search16, round: iq2::RoundPoint) {
    let lat = iq2::lattice_s();
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        qb.fill(0);
        let sigma2 = 2.0 * iq2::sumx2(xbl) / QK_K as f32;
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let mut weight = [0.0f32; 16];
            let mut waux = [0.0f32; 16];
            let mut xval = [0.0f32; 16];
            match imat {
                Some(w) => {
                    let qw = &w[QK_K * ibl + 16 * ib..][..16];
                    for i in 0..16 {
                        weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                    }
                }
                None => {
                    for i in 0..16 {
                        weight[i] = 0.25 * sigma2 + xb[i] * xb[i];
                    }
                }
            }
            for i in 0..16 {
                waux[i] = weight[i].sqrt();
            }
            let mut signs = [0u8; 2];
            for k in 0..2 {
                signs[k] = split_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], false);
            }
            let mut max = xval[0];
            for &v in &xval[1..] {
                max = if max > v { max } else { v };
            }
            if max < GROUP_MAX_EPS_IQ2_S {
                continue;
            }
            let mut b = search(&xval, &weight, &waux, max);
            let mut scale = iq2::refine16(&xval, &weight, &waux, &mut b, round);
            let l = b.l;
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s;
                }
            }
            for k in 0..2 {
                let j = grid_index(lat, &l[8 * k..]) as usize;
                let i8 = 2 * ib + k;
                qb[QS + i8] = j as u8;
                qb[QH + i8 / 4] |= ((j >> 8) as u8) << (2 * (i8 % 4));
                qb[SIGNS + i8] = signs[k];
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        qb[..2].copy_from_slice(&f16_bits(d * 0.9875));
        let id = 1.0 / d;
        for ib in 0..QK_K / 16 {
            qb[SCALES + ib / 2] |= scale_code(id, scales[ib]) << (4 * (ib % 2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
        crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, x, imat)
    }

    #[test]
    fn zero_block_is_all_zero_bytes() {
        let (q, y) = roundtrip(&[0.0; 512], None);
        assert!(q.iter().all(|&b| b == 0));
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn roundtrip_error_is_bounded_and_dot_matches() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let imat: Vec<f32> = (0..512).map(|i| 0.5 + (i % 3) as f32).collect();
        for w in [None, Some(&imat[..])] {
            let (q, xd) = roundtrip(&x, w);
            let rel =
                x.iter().zip(&xd).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.iter().map(|a| a * a).sum::<f32>();
            assert!(rel < 0.2, "relative squared error {rel}");
            let yv: Vec<f32> = (0..512).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.7).collect();
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
}
