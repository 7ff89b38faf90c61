//! IQ2_XXS: super-blocks of 256 (66 bytes): an f16 scale `d`, then per group of 32 two
//! little-endian u32: four 8-bit indices into the 256-point grid, and four 7-bit sign
//! codes (`KSIGNS`) with a 4-bit scale `s` on top. Group scale `d * (0.5 + s) * 0.25`.
//! ggml quantizes it only with an importance matrix. Dots pair it with Q8_K.

use super::common::{read_f16, read_f32, GROUP_MAX_EPS};
use super::iq2::{
    self, f16_bits, fit_sums, grid_index, round_point, scale_code, split_signs, RoundPoint, GRID_XXS, KMAXQ, KSIGNS,
};
use super::lattice::Lattice;
use super::q8_k;
use super::search::make_qp_quants;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 66;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// The two words of group `ib`.
#[inline(always)]
fn words(qb: &[u8], ib: usize) -> (u32, u32) {
    let at = 2 + 8 * ib;
    (
        u32::from_le_bytes([qb[at], qb[at + 1], qb[at + 2], qb[at + 3]]),
        u32::from_le_bytes([qb[at + 4], qb[at + 5], qb[at + 6], qb[at + 7]]),
    )
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let (a, b) = words(qb, ib);
            let db = d * (0.5 + (b >> 28) as f32) * 0.25;
            for (l, yo) in ys.chunks_exact_mut(8).enumerate() {
                let g = iq2::grid_bytes(&GRID_XXS, (a >> (8 * l)) as u8 as usize);
                let signs = KSIGNS[((b >> (7 * l)) & 127) as usize];
                for j in 0..8 {
                    let v = db * g[j] as f32;
                    yo[j] = if signs & (1 << j) != 0 { -v } else { v };
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq2_xxs_q8_K_generic`: one integer sum per super-block.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let d = read_f16(xb, 0) * read_f32(yb, 0);
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let mut bsum = 0i32;
        for ib in 0..QK_K / 32 {
            let (a, b) = words(xb, ib);
            let ls = 2 * (b >> 28) as i32 + 1;
            let mut sumi = 0i32;
            for l in 0..4 {
                let p = iq2::signed_point(
                    &GRID_XXS,
                    (a >> (8 * l)) as u8 as usize,
                    KSIGNS[((b >> (7 * l)) & 127) as usize],
                );
                let y8 = &q8[32 * ib + 8 * l..][..8];
                for j in 0..8 {
                    sumi += p[j] * y8[j] as i8 as i32;
                }
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

/// `quantize_row_iq2_xxs_impl`. ggml requires importance weights; `ops::quantize` refuses
/// a call without them, so `None` (a direct call) counts as weights of 1.
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let lat = iq2::lattice_xxs();
    quantize_with(
        x,
        q,
        imat,
        &|xv, w, wa, m| candidates(lat, xv, w, wa, m),
        &|xv, l, w| make_qp_quants(KMAXQ + 1, xv, l, w),
        &|xv, wa, id, s, l| round_point(lat, xv, wa, id, s, l),
    );
}

/// The quantizer with the candidate loop `search` (the reference's, or a SIMD one
/// giving the same result).
#[inline(always)]
pub fn quantize_with(x: &[f32], q: &mut [u8], imat: Option<&[f32]>, search: Search32, qp: Qp32, round: RoundPoint) {
    let lat = iq2::lattice_xxs();
    let ones = [1.0f32; QK_K];
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qwb = imat.map_or(&ones[..], |w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let sigma2 = iq2::sumx2(xbl) / QK_K as f32;
        let mut scales = [0.0f32; QK_K / 32];
        let mut q2 = [0u32; QK_K / 16];
        let mut max_scale = 0.0f32;
        for ib in 0..QK_K / 32 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let qw = &qwb[32 * ib..32 * ib + 32];
            let (scale, l, signs) = quantize_group(xb, qw, sigma2, search, qp, round);
            let Some(signs) = signs else { continue };
            for k in 0..4 {
                let j = grid_index(lat, &l[8 * k..8 * k + 8]) as u32;
                q2[2 * ib] |= j << (8 * k);
                q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
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
        for ib in 0..QK_K / 32 {
            q2[2 * ib + 1] |= (scale_code(id, scales[ib]) as u32) << 28;
        }
        for (o, w) in qb[2..].chunks_exact_mut(4).zip(&q2) {
            o.copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Candidate inverse scales for a group with `eff_max = 3 * scale`: `(5 + is/10) /
/// eff_max` for `is` in -6..=6.
pub const NCAND: usize = 13;
#[inline(always)]
pub fn cand_id(c: usize, eff_max: f32) -> f32 {
    ((2 * KMAXQ - 1) as f32 + (c as i32 - 6) as f32 * 0.1) / eff_max
}

/// The candidate loop over the 32 values of a group: the last candidate that improved
/// on the best fit (scale and levels), or None when none did.
pub type Search32<'a> = &'a dyn Fn(&[f32; 32], &[f32; 32], &[f32; 32], f32) -> Option<(f32, [u8; 32])>;
/// ggml's `make_qp_quants(32, 4, xval, L, weight)` (the reference's or a SIMD one).
pub type Qp32<'a> = &'a dyn Fn(&[f32; 32], &mut [u8; 32], &[f32; 32]) -> f32;

/// ggml's candidate loop, one candidate at a time.
pub fn candidates(
    lat: &Lattice,
    xval: &[f32; 32],
    weight: &[f32; 32],
    waux: &[f32; 32],
    eff_max: f32,
) -> Option<(f32, [u8; 32])> {
    let mut laux = [0u8; 32];
    let mut best = 0.0f32;
    let mut out = None;
    for c in 0..NCAND {
        let id = cand_id(c, eff_max);
        let this_scale = 1.0 / id;
        for k in 0..4 {
            round_point(lat, &xval[8 * k..], &waux[8 * k..], id, this_scale, &mut laux[8 * k..]);
        }
        let (sumqx, sumq2) = fit_sums(xval, weight, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            let scale = sumqx / sumq2;
            best = scale * sumqx;
            out = Some((scale, laux));
        }
    }
    out
}

/// One group of 32: its scale, levels and 7-bit sign codes; `(0, _, None)` for a group
/// ggml leaves empty (all zero, or no positive scale).
pub fn quantize_group(
    xb: &[f32],
    qw: &[f32],
    sigma2: f32,
    search: Search32,
    qp: Qp32,
    round: RoundPoint,
) -> (f32, [u8; 32], Option<[u8; 4]>) {
    let mut weight = [0.0f32; 32];
    let mut waux = [0.0f32; 32];
    let mut xval = [0.0f32; 32];
    for i in 0..32 {
        weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
        waux[i] = weight[i].sqrt();
    }
    let mut signs = [0u8; 4];
    for k in 0..4 {
        signs[k] =
            split_signs(&xb[8 * k..8 * k + 8], &weight[8 * k..8 * k + 8], &mut xval[8 * k..8 * k + 8], true) & 127;
    }
    let mut max = xval[0];
    for &v in &xval[1..] {
        max = if max > v { max } else { v };
    }
    let mut l = [0u8; 32];
    if max < GROUP_MAX_EPS {
        return (0.0, l, None);
    }
    let mut scale = qp(&xval, &mut l, &weight);
    let eff_max = scale * KMAXQ as f32;
    if eff_max <= 0.0 {
        return (0.0, [0; 32], None);
    }
    if let Some((sc, lw)) = search(&xval, &weight, &waux, eff_max) {
        scale = sc;
        l = lw;
    }
    if scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..4 {
            round(&xval[8 * k..], &waux[8 * k..], id, scale, &mut l[8 * k..]);
        }
        let (sumqx, sumq2) = fit_sums(&xval, &weight, &l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        scale = -scale;
        for s in &mut signs {
            *s = !*s & 127;
        }
    }
    (scale, l, Some(signs))
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
        assert!(rel < 0.25, "relative squared error {rel}");
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
