//! IQ2_XS: super-blocks of 256 (74 bytes): an f16 scale `d`, 32 little-endian u16 (a
//! 9-bit index into the 512-point grid and a 7-bit sign code, `KSIGNS`, per 8 values),
//! then 8 bytes of two 4-bit group scales `s` each (one per 16 values). Group scale
//! `d * (0.5 + s) * 0.25`. ggml quantizes it only with an importance matrix. Dots pair
//! it with Q8_K.

use super::common::{read_f16, read_f32, GROUP_MAX_EPS};
use super::iq2::{self, f16_bits, grid_index, scale_code, split_signs, GRID_XS, KSIGNS};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 74;
/// Offset of the group scales.
pub const SCALES: usize = 66;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

#[inline(always)]
fn code(qb: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([qb[2 + 2 * i], qb[3 + 2 * i]])
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let sc = qb[SCALES + ib];
            let db = [d * (0.5 + (sc & 0xf) as f32) * 0.25, d * (0.5 + (sc >> 4) as f32) * 0.25];
            for (l, yo) in ys.chunks_exact_mut(8).enumerate() {
                let c = code(qb, 4 * ib + l);
                let g = iq2::grid_bytes(&GRID_XS, (c & 511) as usize);
                let signs = KSIGNS[(c >> 9) as usize];
                for j in 0..8 {
                    let v = db[l / 2] * g[j] as f32;
                    yo[j] = if signs & (1 << j) != 0 { -v } else { v };
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq2_xs_q8_K_generic`: one integer sum per super-block.
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
                    let c = code(xb, 4 * ib + l);
                    let p = iq2::signed_point(&GRID_XS, (c & 511) as usize, KSIGNS[(c >> 9) as usize]);
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

/// `quantize_row_iq2_xs_impl`. ggml requires importance weights; `ops::quantize` refuses
/// a call without them, so `None` (a direct call) counts as weights of 1.
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let lat = iq2::lattice_xs();
    quantize_with(x, q, imat, &|xv, w, wa, max| iq2::candidates16(lat, xv, w, wa, max), &|xv, wa, id, s, l| {
        iq2::round_point(lat, xv, wa, id, s, l)
    });
}

/// The quantizer with the candidate search `search` (the reference's, or a SIMD one
/// giving the same result).
#[inline(always)]
pub fn quantize_with(x: &[f32], q: &mut [u8], imat: Option<&[f32]>, search: iq2::Search16, round: iq2::RoundPoint) {
    let lat = iq2::lattice_xs();
    let ones = [1.0f32; QK_K];
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qwb = imat.map_or(&ones[..], |w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let sigma2 = iq2::sumx2(xbl) / QK_K as f32;
        let mut scales = [0.0f32; QK_K / 16];
        let mut q2 = [0u16; QK_K / 8];
        let mut max_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let qw = &qwb[16 * ib..16 * ib + 16];
            let mut weight = [0.0f32; 16];
            let mut waux = [0.0f32; 16];
            let mut xval = [0.0f32; 16];
            for i in 0..16 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                waux[i] = weight[i].sqrt();
            }
            let mut signs = [0u8; 2];
            for k in 0..2 {
                signs[k] = split_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], true) & 127;
            }
            let mut max = xval[0];
            for &v in &xval[1..] {
                max = if max > v { max } else { v };
            }
            if max < GROUP_MAX_EPS {
                continue;
            }
            let mut b = search(&xval, &weight, &waux, max);
            let mut scale = iq2::refine16(&xval, &weight, &waux, &mut b, round);
            let l = b.l;
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..2 {
                q2[2 * ib + k] = grid_index(lat, &l[8 * k..]) | (signs[k] as u16) << 9;
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        qb.fill(0);
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        qb[..2].copy_from_slice(&f16_bits(d));
        let id = 1.0 / d;
        for ib in 0..QK_K / 16 {
            qb[SCALES + ib / 2] |= scale_code(id, scales[ib]) << (4 * (ib % 2));
        }
        for (o, w) in qb[2..SCALES].chunks_exact_mut(2).zip(&q2) {
            o.copy_from_slice(&w.to_le_bytes());
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
        let (q, y) = roundtrip(&[0.0; 512], Some(&[1.0; 512]));
        assert!(q.iter().all(|&b| b == 0));
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn roundtrip_error_is_bounded_and_dot_matches() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let imat: Vec<f32> = (0..512).map(|i| 0.5 + (i % 3) as f32).collect();
        let (q, xd) = roundtrip(&x, Some(&imat));
        let rel = x.iter().zip(&xd).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.iter().map(|a| a * a).sum::<f32>();
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
