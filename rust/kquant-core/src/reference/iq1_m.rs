//! IQ1_M: super-blocks of 256 (56 bytes): 32 low bytes of 11-bit grid indices (one per
//! group of 8, into `iq1::GRID`), 16 bytes holding per pair of groups their 3 high index
//! bits and shift signs (bits 3 and 7), and 8 bytes of four u16 words with 3-bit scales
//! for the 16 sub-blocks of 16, whose top nibbles together form the f16 super-scale.
//! Value = `d * (2 ls + 1) * (grid ± DELTA)`. Dots pair it with Q8_K.

use super::common::{f16_to_f32, f32_to_f16, nearest_int, read_f32};
use super::iq1::{self, DELTA, GRID, X_M, X_P};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 56;
/// Offsets inside a block.
pub const QH: usize = QK_K / 8;
pub const SCALES: usize = QH + QK_K / 16;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// One sub-block of 16 quantized.
pub struct SubBlock {
    pub index: [u16; 2],
    pub scale: f32,
    /// ggml's shift code: bit 1 set = first group shifted down, bit 0 = second group.
    pub shift: u8,
    pub written: bool,
}

/// The per-value weights of sub-block `xb` (ggml recomputes them where it needs them).
#[inline]
pub fn weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; 16]) {
    match qw {
        Some(qw) => {
            for i in 0..16 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..16 {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}

/// The levels of group `k` (0 or 1) under shift code `shift`.
#[inline(always)]
pub fn levels_of(shift: u8, k: usize) -> &'static [f32; 3] {
    let down = if k == 0 { shift >= 2 } else { shift % 2 == 1 };
    if down {
        &X_M
    } else {
        &X_P
    }
}

/// `quantize_iq1_m` (`quantize_row_iq1_m_impl`).
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    quantize_with(x, q, imat, quantize_sub_block);
}

/// The row loop around a sub-block quantizer (the reference one or a faster equivalent).
#[inline(always)]
pub(crate) fn quantize_with(
    x: &[f32],
    q: &mut [u8],
    imat: Option<&[f32]>,
    sub: impl Fn(&[f32], &[f32; 16]) -> SubBlock,
) {
    let mut weight = [0.0f32; 16];
    for (ibl, (xbl, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qwb = imat.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let mut sumx2 = 0.0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        let subs: [SubBlock; 16] = std::array::from_fn(|ib| {
            let xb = &xbl[16 * ib..16 * ib + 16];
            weights(xb, qwb.map(|w| &w[16 * ib..16 * ib + 16]), sigma2, &mut weight);
            sub(xb, &weight)
        });
        pack(&subs, xbl, qwb, sigma2, qb);
    }
}

/// The sums ggml's split search accumulates for one candidate split, in its order:
/// value by value in sorted order, four shift codes side by side.
#[inline(always)]
pub fn split_sums(idx: &[usize; 16], xb: &[f32], weight: &[f32], i1: usize, i2: usize) -> ([f32; 4], [f32; 4]) {
    let mut sumqx = [0.0f32; 4];
    let mut sumq2 = [0.0f32; 4];
    for (j, &i) in idx.iter().enumerate() {
        let b = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
        let (p, m) = (X_P[b], X_M[b]);
        // first half: codes 0,1 shift up; second half: codes 0,2
        let lv = if i < 8 { [p, p, m, m] } else { [p, m, p, m] };
        for k in 0..4 {
            sumqx[k] += weight[i] * lv[k] * xb[i];
            sumq2[k] += weight[i] * lv[k] * lv[k];
        }
    }
    (sumqx, sumq2)
}

/// The body of ggml's sub-block loop.
pub fn quantize_sub_block(xb: &[f32], weight: &[f32; 16]) -> SubBlock {
    let skipped = SubBlock { index: [0; 2], scale: 0.0, shift: 0, written: false };
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        max = if max > v.abs() { max } else { v.abs() };
    }
    if max < 1e-7 {
        return skipped;
    }
    let idx: [usize; 16] = iq1::sorted_order(xb);
    let mut best_score = -f32::MAX;
    let mut scale = max;
    let (mut besti1, mut besti2, mut best_k) = (0usize, 0usize, -1i32);
    for i1 in 0..=16 {
        for i2 in i1..=16 {
            let (sumqx, sumq2) = split_sums(&idx, xb, weight, i1, i2);
            for k in 0..4 {
                if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    besti1 = i1;
                    besti2 = i2;
                    best_k = k as i32;
                }
            }
        }
    }
    if best_k < 0 {
        return skipped;
    }
    finish_sub_block(xb, weight, &idx, besti1, besti2, best_k as u8, scale)
}

/// From the best split on: levels, grid points, and the refitted scale.
pub fn finish_sub_block(
    xb: &[f32],
    weight: &[f32; 16],
    idx: &[usize; 16],
    besti1: usize,
    besti2: usize,
    mut best_k: u8,
    mut scale: f32,
) -> SubBlock {
    let mut l = [0i8; 16];
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
        best_k = 3 - best_k;
    }
    let mut index = [0u16; 2];
    let mut all_on_grid = true;
    for k in 0..2 {
        let xx = levels_of(best_k, k);
        let (g, on) =
            iq1::grid_index(&l[8 * k..8 * k + 8], &xb[8 * k..8 * k + 8], &weight[8 * k..8 * k + 8], scale, xx);
        all_on_grid &= on;
        index[k] = g as u16;
    }
    if !all_on_grid {
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for k in 0..2 {
            let xx = levels_of(best_k, k);
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
    SubBlock { index, scale, shift: best_k, written: true }
}

/// Writes one super-block; the super-scale is refitted over the whole block as ggml does.
pub fn pack(subs: &[SubBlock; 16], xbl: &[f32], qwb: Option<&[f32]>, sigma2: f32, qb: &mut [u8]) {
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    qb.fill(0);
    let mut max_scale = 0.0f32;
    for (ib, sb) in subs.iter().enumerate() {
        if !sb.written {
            continue;
        }
        qb[2 * ib] = sb.index[0] as u8;
        qb[2 * ib + 1] = sb.index[1] as u8;
        qb[QH + ib] = ((sb.index[0] >> 8) | ((sb.index[1] >> 8) << 4)) as u8;
        max_scale = if max_scale > sb.scale { max_scale } else { sb.scale };
    }
    if max_scale == 0.0 {
        return;
    }
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    let mut weight = [0.0f32; 16];
    for (ib, sb) in subs.iter().enumerate() {
        let l = nearest_int(0.5 * (id * sb.scale - 1.0)).clamp(0, 7);
        sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
        qb[QH + ib] |= MASKS[sb.shift as usize];
        let xb = &xbl[16 * ib..16 * ib + 16];
        weights(xb, qwb.map(|w| &w[16 * ib..16 * ib + 16]), sigma2, &mut weight);
        let ls = (2 * l + 1) as f32;
        for k in 0..2 {
            let xx = levels_of(sb.shift, k);
            let g = qb[2 * ib + k] as usize | (((qb[QH + ib] as usize) << (8 - 4 * k)) & 0x700);
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xx[iq1::level(g, j)] * ls;
                sumqx += w * q * xb[8 * k + j];
                sumq2 += w * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    let s = f32_to_f16(d * 1.1125);
    sc[0] |= (s & 0x000f) << 12;
    sc[1] |= (s & 0x00f0) << 8;
    sc[2] |= (s & 0x0f00) << 4;
    sc[3] |= s & 0xf000;
    for j in 0..4 {
        qb[SCALES + 2 * j..SCALES + 2 * j + 2].copy_from_slice(&sc[j].to_le_bytes());
    }
}

#[inline(always)]
fn scale_words(qb: &[u8]) -> [u16; 4] {
    std::array::from_fn(|j| u16::from_le_bytes([qb[SCALES + 2 * j], qb[SCALES + 2 * j + 1]]))
}

/// The f16 super-scale spread over the scale words' top nibbles.
#[inline(always)]
fn super_scale(sc: &[u16; 4]) -> f32 {
    f16_to_f32((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000))
}

/// Grid point of group `l` (0..4) of 32-value block `ib`.
#[inline(always)]
fn point(qb: &[u8], ib: usize, l: usize) -> [u8; 8] {
    let h = qb[QH + 2 * ib + l / 2] as usize;
    GRID[qb[4 * ib + l] as usize | ((h << (8 - 4 * (l % 2))) & 0x700)].to_le_bytes()
}

#[inline(always)]
fn shift_down(qb: &[u8], ib: usize, l: usize) -> bool {
    qb[QH + 2 * ib + l / 2] & (0x08 << (4 * (l % 2))) != 0
}

/// The two 3-bit scales (`2 ls + 1`) of 32-value block `ib`.
#[inline(always)]
fn sub_scales(sc: &[u16; 4], ib: usize) -> [i32; 2] {
    let w = sc[ib / 2] >> (6 * (ib % 2));
    [2 * (w & 7) as i32 + 1, 2 * ((w >> 3) & 7) as i32 + 1]
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let sc = scale_words(qb);
        let d = super_scale(&sc);
        for (ib, ys) in yb.chunks_exact_mut(32).enumerate() {
            let ls = sub_scales(&sc, ib);
            for (l, y8) in ys.chunks_exact_mut(8).enumerate() {
                let dl = d * ls[l / 2] as f32;
                let delta = if shift_down(qb, ib, l) { -DELTA } else { DELTA };
                let g = point(qb, ib, l);
                for j in 0..8 {
                    y8[j] = dl * (g[j] as i8 as f32 + delta);
                }
            }
        }
    }
}

/// `ggml_vec_dot_iq1_m_q8_K_generic`.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let sc = scale_words(xb);
        let mut sumi1 = 0i32;
        let mut sumi2 = 0i32;
        for ib in 0..8 {
            let mut sum1 = [0i32; 2];
            let mut sum2 = [0i32; 2];
            for l in 0..4 {
                let g = point(xb, ib, l);
                let mut lsum1 = 0i32;
                let mut lsum2 = 0i32;
                for j in 0..8 {
                    let v = q8[32 * ib + 8 * l + j] as i8 as i32;
                    lsum1 += v * g[j] as i8 as i32;
                    lsum2 += v;
                }
                sum1[l / 2] += lsum1;
                sum2[l / 2] += if shift_down(xb, ib, l) { -lsum2 } else { lsum2 };
            }
            let ls = sub_scales(&sc, ib);
            sumi1 += sum1[0] * ls[0] + sum1[1] * ls[1];
            sumi2 += sum2[0] * ls[0] + sum2[1] * ls[1];
        }
        sumf += super_scale(&sc) * read_f32(yb, 0) * (sumi1 as f32 + DELTA * sumi2 as f32);
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
}
