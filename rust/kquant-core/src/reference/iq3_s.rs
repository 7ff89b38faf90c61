//! IQ3_S: super-blocks of 256 (110 bytes): an f16 scale `d`, 64 low bytes of 9-bit grid
//! indices (one per group of 4, into `iq3::S_GRID`), 8 bytes of their high bits (one
//! byte per sub-block of 32), 32 sign bytes (one bit per value), and 4 bytes of 4-bit
//! sub-block scales `ls`. Value = `d * (1 + 2 ls) * grid * sign`. Dots pair it with Q8_K.

use super::common::{read_f16, read_f32};
use super::iq3::{self, Variant, S_GRID};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 110;
/// Offsets inside a block.
pub const QS: usize = 2;
pub const QH: usize = QS + QK_K / 4;
pub const SIGNS: usize = QH + QK_K / 32;
pub const SCALES: usize = SIGNS + QK_K / 8;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_iq3_s` (`quantize_row_iq3_s_impl` with sub-blocks of 32).
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    quantize_with(x, q, imat, iq3::quantize_sub_block);
}

/// The row loop around a sub-block quantizer (the reference one or a faster equivalent).
#[inline(always)]
pub(crate) fn quantize_with(
    x: &[f32],
    q: &mut [u8],
    imat: Option<&[f32]>,
    sub: impl Fn(Variant, &iq3::Lattice, &[f32], &[f32]) -> iq3::SubBlock,
) {
    let lat = iq3::lattice(512);
    let mut weight = [0.0f32; QK_K];
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = imat.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        iq3::weights(xbl, qw, &mut weight);
        let subs: [iq3::SubBlock; 8] =
            std::array::from_fn(|ib| sub(Variant::S, lat, &xbl[32 * ib..32 * ib + 32], &weight[32 * ib..32 * ib + 32]));
        pack(subs, qb);
    }
}

/// Writes one super-block from its quantized sub-blocks.
pub(crate) fn pack(subs: [iq3::SubBlock; 8], qb: &mut [u8]) {
    qb.fill(0);
    let mut scales = [0.0f32; 8];
    // ggml advances its index and sign write positions only past sub-blocks it wrote,
    // so a skipped (all-zero) sub-block shifts the later ones towards the front
    let mut qs = QS;
    let mut signs = SIGNS;
    for (ib, sb) in subs.iter().enumerate() {
        if !sb.written {
            continue;
        }
        for k in 0..8 {
            qb[qs + k] = sb.grid[k] as u8;
            qb[QH + ib] |= ((sb.grid[k] >> 8) as u8) << k;
        }
        qb[signs..signs + 4].copy_from_slice(&sb.signs);
        qs += 8;
        signs += 4;
        scales[ib] = sb.scale;
    }
    let Some((dh, id)) = iq3::super_scale(&scales, 1.033) else {
        return;
    };
    qb[..2].copy_from_slice(&dh.to_le_bytes());
    for j in 0..4 {
        qb[SCALES + j] = iq3::scale_code(id, scales[2 * j]) | (iq3::scale_code(id, scales[2 * j + 1]) << 4);
    }
}

/// The 4 magnitudes of group `k` of sub-block `ib`.
#[inline(always)]
fn group(qb: &[u8], ib: usize, k: usize) -> [u8; 4] {
    let idx = qb[QS + 8 * ib + k] as usize | ((((qb[QH + ib] >> k) & 1) as usize) << 8);
    S_GRID[idx].to_le_bytes()
}

#[inline(always)]
fn sub_scale(qb: &[u8], ib: usize) -> i32 {
    1 + 2 * ((qb[SCALES + ib / 2] >> (4 * (ib % 2))) & 15) as i32
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let db = d * sub_scale(qb, ib) as f32;
            for (k, y4) in ys.chunks_exact_mut(4).enumerate() {
                let g = group(qb, ib, k);
                let signs = qb[SIGNS + 4 * ib + k / 2];
                for j in 0..4 {
                    let v = db * g[j] as f32;
                    y4[j] = if signs & (1 << (4 * (k % 2) + j)) != 0 { -v } else { v };
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq3_s_q8_K_generic`: exact integer sums per super-block.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let d = read_f16(xb, 0) * read_f32(yb, 0);
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let mut bsum = 0i32;
        for ib in 0..8 {
            let mut sumi = 0i32;
            for k in 0..8 {
                let g = group(xb, ib, k);
                let signs = xb[SIGNS + 4 * ib + k / 2];
                for j in 0..4 {
                    let p = g[j] as i32 * q8[32 * ib + 4 * k + j] as i8 as i32;
                    sumi += if signs & (1 << (4 * (k % 2) + j)) != 0 { -p } else { p };
                }
            }
            bsum += sumi * sub_scale(xb, ib);
        }
        sumf += d * bsum as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_bounded() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let imat: Vec<f32> = (0..512).map(|i| 0.1 + (i % 5) as f32).collect();
        for w in [None, Some(&imat[..])] {
            let (q, y) = crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, &x, w);
            let num: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            let den: f32 = x.iter().map(|a| a * a).sum();
            assert!(num / den < 0.05, "relative squared error {}", num / den);
            let mut yq = vec![0u8; 2 * q8_k::BLOCK_BYTES];
            q8_k::quantize_ref(&x, &mut yq);
            let mut yd = vec![0f32; 512];
            (q8_k::KERNELS.dequantize)(&yq, &mut yd);
            let want: f64 = y.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = y.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
            assert!((vec_dot(&q, &yq) as f64 - want).abs() <= 1e-5 * scale);
        }
    }
}
