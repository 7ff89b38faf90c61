//! IQ3_XXS: super-blocks of 256 (98 bytes): an f16 scale `d`, 64 bytes of grid indices
//! (one per group of 4, into `iq3::XXS_GRID`), then per sub-block of 32 a u32 holding
//! four 7-bit sign codes (through `iq3::KSIGNS`) and a 4-bit scale `ls` in the top bits.
//! Value = `d * (0.5 + ls) * 0.5 * grid * sign`. Dots pair it with Q8_K.

use super::common::{read_f16, read_f32};
use super::iq3::{self, Variant, KSIGNS, XXS_GRID};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 98;
/// Offset of the per-sub-block sign and scale words.
pub const SIGNS: usize = 2 + QK_K / 4;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_iq3_xxs` (`quantize_row_iq3_xxs_impl` with the 256-point grid).
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
    let lat = iq3::lattice(256);
    let mut weight = [0.0f32; QK_K];
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = imat.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        iq3::weights(xbl, qw, &mut weight);
        let subs: [iq3::SubBlock; 8] = std::array::from_fn(|ib| {
            sub(Variant::Xxs, lat, &xbl[32 * ib..32 * ib + 32], &weight[32 * ib..32 * ib + 32])
        });
        pack(subs, qb);
    }
}

/// Writes one super-block from its quantized sub-blocks.
pub(crate) fn pack(subs: [iq3::SubBlock; 8], qb: &mut [u8]) {
    qb.fill(0);
    let mut scales = [0.0f32; 8];
    let mut words = [0u32; 8];
    for (ib, sb) in subs.iter().enumerate() {
        if !sb.written {
            continue;
        }
        for k in 0..8 {
            qb[2 + 8 * ib + k] = sb.grid[k] as u8;
        }
        let s = sb.signs.map(u32::from);
        words[ib] = s[0] | (s[1] << 7) | (s[2] << 14) | (s[3] << 21);
        scales[ib] = sb.scale;
    }
    let Some((dh, id)) = iq3::super_scale(&scales, 1.0125) else {
        return;
    };
    qb[..2].copy_from_slice(&dh.to_le_bytes());
    for ib in 0..8 {
        let w = words[ib] | (u32::from(iq3::scale_code(id, scales[ib])) << 28);
        qb[SIGNS + 4 * ib..SIGNS + 4 * ib + 4].copy_from_slice(&w.to_le_bytes());
    }
}

#[inline(always)]
fn word(qb: &[u8], ib: usize) -> u32 {
    u32::from_le_bytes(qb[SIGNS + 4 * ib..SIGNS + 4 * ib + 4].try_into().unwrap())
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let w = word(qb, ib);
            let db = d * (0.5 + (w >> 28) as f32) * 0.5;
            for (l, y8) in ys.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS[((w >> (7 * l)) & 127) as usize];
                for h in 0..2 {
                    let g = XXS_GRID[qb[2 + 8 * ib + 2 * l + h] as usize].to_le_bytes();
                    for j in 0..4 {
                        let v = db * g[j] as f32;
                        y8[4 * h + j] = if signs & (1 << (4 * h + j)) != 0 { -v } else { v };
                    }
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq3_xxs_q8_K_generic`: exact integer sums per super-block.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let d = read_f16(xb, 0) * read_f32(yb, 0);
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let mut bsum = 0i32;
        for ib in 0..8 {
            let w = word(xb, ib);
            let ls = (2 * (w >> 28) + 1) as i32;
            let mut sumi = 0i32;
            for l in 0..4 {
                let signs = KSIGNS[((w >> (7 * l)) & 127) as usize];
                for h in 0..2 {
                    let g = XXS_GRID[xb[2 + 8 * ib + 2 * l + h] as usize].to_le_bytes();
                    for j in 0..4 {
                        let p = g[j] as i32 * q8[32 * ib + 8 * l + 4 * h + j] as i8 as i32;
                        sumi += if signs & (1 << (4 * h + j)) != 0 { -p } else { p };
                    }
                }
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    0.25 * sumf
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

    #[test]
    fn zeros_give_a_zero_block() {
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, &[0.0; 256], None);
        assert!(q.iter().all(|&b| b == 0));
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
