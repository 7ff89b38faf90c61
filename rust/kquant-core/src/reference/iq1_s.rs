//! IQ1_S: super-blocks of 256 (50 bytes): an f16 scale `d`, 32 low bytes of 11-bit grid
//! indices (one per group of 8, into `iq1::GRID`), and per sub-block of 32 a u16 with the
//! 3 high index bits of its 4 groups, a 3-bit scale `ls` (bits 12..15) and the sign of
//! its shift (bit 15). Value = `d * (2 ls + 1) * (grid ± DELTA)`. ggml quantizes it
//! only with an importance matrix. Dots pair it with Q8_K.

use super::common::{f32_to_f16, nearest_int, read_f16, read_f32};
use super::iq1::{self, DELTA, GRID, X_M, X_P};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 50;
/// Offsets inside a block.
pub const QS: usize = 2;
pub const QH: usize = QS + QK_K / 8;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// One sub-block of 32 quantized.
pub struct SubBlock {
    pub index: [u16; 4],
    pub scale: f32,
    /// +1 or -1: the sign of the shift; 1 for a skipped sub-block.
    pub shift: i8,
    pub written: bool,
}

/// `quantize_iq1_s`. `ops::quantize` refuses a missing importance matrix before this runs
/// (ggml asserts); unit weights stand in if it is called without one anyway.
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    quantize_with(x, q, imat, quantize_sub_block);
}

/// `quantize` with the sub-block search supplied (the SIMD paths pass theirs; it must
/// return exactly what `quantize_sub_block` returns).
#[inline(always)]
pub(crate) fn quantize_with(x: &[f32], q: &mut [u8], imat: Option<&[f32]>, sub: impl Fn(&[f32], &[f32]) -> SubBlock) {
    let ones = [1.0f32; QK_K];
    let mut weight = [0.0f32; 32];
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qwb = imat.map_or(&ones[..], |w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let mut sumx2 = 0.0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        let subs: [SubBlock; 8] = std::array::from_fn(|ib| {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let qw = &qwb[32 * ib..32 * ib + 32];
            for i in 0..32 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
            sub(xb, &weight)
        });
        pack(&subs, qb);
    }
}

/// The body of ggml's sub-block loop: an exhaustive search over the two boundaries that
/// split the sorted values into the levels -1, 0, 1, for both shift signs.
pub fn quantize_sub_block(xb: &[f32], weight: &[f32]) -> SubBlock {
    let skipped = SubBlock { index: [0; 4], scale: 0.0, shift: 1, written: false };
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        max = if max > v.abs() { max } else { v.abs() };
    }
    if max < 1e-12 {
        return skipped;
    }
    let idx: [usize; 32] = iq1::sorted_order(xb);
    let mut sumx = [0.0f32; 33];
    let mut sumw = [0.0f32; 33];
    for j in 0..32 {
        let i = idx[j];
        sumx[j + 1] = sumx[j] + weight[i] * xb[i];
        sumw[j + 1] = sumw[j] + weight[i];
    }
    let (besti1, besti2, best_shift, scale) = boundary_search(&sumx, &sumw);
    if best_shift == 0 {
        return skipped;
    }
    finish_sub_block(xb, weight, &idx, besti1, besti2, best_shift, scale, iq1::grid_index)
}

/// The rest of ggml's sub-block loop once the split is chosen: levels, grid points (by
/// `grid_index`, which must behave as `iq1::grid_index`) and the refit of the scale.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn finish_sub_block(
    xb: &[f32],
    weight: &[f32],
    idx: &[usize; 32],
    besti1: usize,
    besti2: usize,
    best_shift: i8,
    mut scale: f32,
    grid_index: impl Fn(&[i8], &[f32], &[f32], f32, &[f32; 3]) -> (usize, bool),
) -> SubBlock {
    let mut shift = best_shift;
    let mut l = [0i8; 32];
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < besti1 {
            0
        } else if j < besti2 {
            1
        } else {
            2
        };
    }
    if scale < 0.0 {
        for v in l.iter_mut() {
            *v = 2 - *v;
        }
        scale = -scale;
        shift = -shift;
    }
    let xx = if shift == 1 { &X_P } else { &X_M };
    let mut index = [0u16; 4];
    let mut all_on_grid = true;
    for k in 0..4 {
        let (g, on) = grid_index(&l[8 * k..8 * k + 8], &xb[8 * k..8 * k + 8], &weight[8 * k..8 * k + 8], scale, xx);
        all_on_grid &= on;
        index[k] = g as u16;
    }
    if !all_on_grid {
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for k in 0..4 {
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xx[iq1::level(index[k] as usize, j)];
                sumqx += w * q * xb[8 * k + j];
                sumq2 += w * q * q;
            }
        }
        if sumqx > 0.0 && sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    SubBlock { index, scale, shift, written: true }
}

/// The split search over the prefix sums: (i1, i2, shift, scale) of the best split,
/// shift 0 when none scores.
#[inline]
pub fn boundary_search(sumx: &[f32; 33], sumw: &[f32; 33]) -> (usize, usize, i8, f32) {
    let mut best_score = -f32::MAX;
    let mut scale = 0.0f32;
    let (mut b1, mut b2, mut bs) = (0usize, 0usize, 0i8);
    for i1 in 0..=32 {
        for i2 in i1..=32 {
            let (ax, bx, cx) = (sumx[i1] - sumx[0], sumx[i2] - sumx[i1], sumx[32] - sumx[i2]);
            let (aw, bw, cw) = (sumw[i1] - sumw[0], sumw[i2] - sumw[i1], sumw[32] - sumw[i2]);
            for (xx, s) in [(&X_P, 1i8), (&X_M, -1i8)] {
                let sumqx = ax * xx[0] + bx * xx[1] + cx * xx[2];
                let sumq2 = aw * xx[0] * xx[0] + bw * xx[1] * xx[1] + cw * xx[2] * xx[2];
                if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                    scale = sumqx / sumq2;
                    best_score = scale * sumqx;
                    b1 = i1;
                    b2 = i2;
                    bs = s;
                }
            }
        }
    }
    (b1, b2, bs, scale)
}

/// Writes one super-block from its sub-blocks.
pub fn pack(subs: &[SubBlock; 8], qb: &mut [u8]) {
    qb.fill(0);
    let mut qh = [0u16; 8];
    let mut max_scale = 0.0f32;
    for (ib, sb) in subs.iter().enumerate() {
        if !sb.written {
            continue;
        }
        for k in 0..4 {
            qb[QS + 4 * ib + k] = sb.index[k] as u8;
            qh[ib] |= (sb.index[k] >> 8) << (3 * k);
        }
        max_scale = if max_scale > sb.scale { max_scale } else { sb.scale };
    }
    if max_scale != 0.0 {
        let d = max_scale / 15.0;
        qb[..2].copy_from_slice(&f32_to_f16(d * 1.125).to_le_bytes());
        let id = 1.0 / d;
        for (ib, sb) in subs.iter().enumerate() {
            let mut l = nearest_int(0.5 * (id * sb.scale - 1.0)).clamp(0, 7) as u16;
            if sb.shift == -1 {
                l |= 8;
            }
            qh[ib] |= l << 12;
        }
    }
    for ib in 0..8 {
        qb[QH + 2 * ib..QH + 2 * ib + 2].copy_from_slice(&qh[ib].to_le_bytes());
    }
}

#[inline(always)]
fn qh(qb: &[u8], ib: usize) -> u16 {
    u16::from_le_bytes([qb[QH + 2 * ib], qb[QH + 2 * ib + 1]])
}

/// Grid point of group `l` of sub-block `ib`.
#[inline(always)]
fn point(qb: &[u8], ib: usize, l: usize) -> [u8; 8] {
    let h = qh(qb, ib);
    GRID[qb[QS + 4 * ib + l] as usize | ((((h >> (3 * l)) & 7) as usize) << 8)].to_le_bytes()
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, 0);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let h = qh(qb, ib);
            let dl = d * (2 * ((h >> 12) & 7) + 1) as f32;
            let delta = if h & 0x8000 != 0 { -DELTA } else { DELTA };
            for (l, y8) in ys.chunks_exact_mut(8).enumerate() {
                let g = point(qb, ib, l);
                for j in 0..8 {
                    y8[j] = dl * (g[j] as i8 as f32 + delta);
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq1_s_q8_K_generic`: integer sums, the shift through Q8_K's block sums.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let bsum = |i: usize| i16::from_le_bytes([yb[q8_k::BSUMS + 2 * i], yb[q8_k::BSUMS + 2 * i + 1]]) as i32;
        let mut sumi = 0i32;
        let mut sumi1 = 0i32;
        for ib in 0..8 {
            let h = qh(xb, ib);
            let ls = (2 * ((h >> 12) & 7) + 1) as i32;
            let delta = if h & 0x8000 != 0 { -1 } else { 1 };
            let mut lsum = 0i32;
            for l in 0..4 {
                let g = point(xb, ib, l);
                for j in 0..8 {
                    lsum += q8[32 * ib + 8 * l + j] as i8 as i32 * g[j] as i8 as i32;
                }
            }
            sumi += ls * lsum;
            sumi1 += ls * delta * (bsum(2 * ib) + bsum(2 * ib + 1));
        }
        sumf += read_f16(xb, 0) * read_f32(yb, 0) * (sumi as f32 + DELTA * sumi1 as f32);
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
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, &x, Some(&imat));
        let num: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f32 = x.iter().map(|a| a * a).sum();
        assert!(num / den < 0.3, "relative squared error {}", num / den);
        let mut yq = vec![0u8; 2 * q8_k::BLOCK_BYTES];
        q8_k::quantize_ref(&x, &mut yq);
        let mut yd = vec![0f32; 512];
        (q8_k::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = y.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
        let scale: f64 = y.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        assert!((vec_dot(&q, &yq) as f64 - want).abs() <= 1e-5 * scale);
    }
}
