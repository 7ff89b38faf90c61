//! Q4_K: super-blocks of 256 in eight sub-blocks of 32, each with its own 6-bit scale and
//! 6-bit min, themselves scaled by the f16 `d` and `dmin` (144 bytes):
//! `d`, `dmin`, 12 bytes of packed scales/mins, 128 bytes of nibbles.
//! Byte `32c + l` of the nibbles holds value `64c + l` low and `64c + l + 32` high.
//!
//! Q5_K has the same header and the same search, so the header packing, the
//! per-sub-block fit and the dot against Q8_K live here and `q5_k` reuses them.

use super::common::{nearest_int, read_f16, read_f32, write_f16};
use super::q8_k;
use super::search::{make_qkx2_quants, make_qkx3_quants, make_qp_quants, ErrorNorm, ScaleSteps};
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 144;
/// Offset of the 12 packed scale/min bytes (after `d` and `dmin`).
pub const SCALES: usize = 4;
pub const SCALE_BYTES: usize = 12;
/// Offset of the nibbles.
pub const QS: usize = SCALES + SCALE_BYTES;
/// Sub-blocks per super-block, each of `SUB` values.
pub const NSUB: usize = QK_K / SUB;
pub const SUB: usize = 32;

const NMAX: i32 = 15;
/// The reference quantizer's scale candidates.
const REF_STEPS: ScaleSteps = ScaleSteps { rmin: -1.0, rdelta: 0.1, nstep: 20 };
/// The weighted quantizers' scale candidates (Q4_K and Q5_K alike).
pub const WEIGHTED_STEPS: ScaleSteps = ScaleSteps { rmin: -0.9, rdelta: 0.05, nstep: 36 };

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// Scale and min of sub-block `j` from the 12 packed bytes: sub-blocks 0-3 keep all six
/// bits in bytes 0-7; sub-blocks 4-7 keep their low nibbles in bytes 8-11 and their top
/// two bits in the spare high bits of bytes 0-7.
#[inline(always)]
pub fn scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        let sc = (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4);
        let m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (sc, m)
    }
}

/// Inverse of [`scale_min`]. Levels are expected below 64; a larger one spills the way
/// ggml's packing does (its low byte is stored whole for sub-blocks 0-3).
pub fn pack_scales_mins(ls: &[u8; NSUB], lm: &[u8; NSUB]) -> [u8; SCALE_BYTES] {
    let mut s = [0u8; SCALE_BYTES];
    s[..4].copy_from_slice(&ls[..4]);
    s[4..8].copy_from_slice(&lm[..4]);
    for j in 4..NSUB {
        s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
        s[j - 4] |= (ls[j] >> 4) << 6;
        s[j] |= (lm[j] >> 4) << 6;
    }
    s
}

/// `quantize_row_q{4,5}_K_ref` up to the packing of the levels: fills the header
/// (`qb[..QS]`) and `l` with levels in `0..=nmax`.
pub fn fit_block_ref(xb: &[f32], qb: &mut [u8], l: &mut [u8; QK_K], nmax: i32, steps: ScaleSteps) {
    let mut scales = [0.0f32; NSUB];
    let mut mins = [0.0f32; NSUB];
    let mut weights = [0.0f32; SUB];
    // the min is subtracted, so the scales are never negative and 0 is a valid start
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..NSUB {
        let xs = &xb[SUB * j..SUB * (j + 1)];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / SUB as f32).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let r = make_qkx2_quants(nmax, xs, &weights, &mut l[SUB * j..], steps, ErrorNorm::Square);
        scales[j] = r.scale;
        mins[j] = r.min;
        if r.scale > max_scale {
            max_scale = r.scale;
        }
        if r.min > max_min {
            max_min = r.min;
        }
    }

    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; NSUB];
    let mut lm = [0u8; NSUB];
    for j in 0..NSUB {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    qb[SCALES..QS].copy_from_slice(&pack_scales_mins(&ls, &lm));
    write_f16(qb, 0, max_scale / 63.0);
    write_f16(qb, 2, max_min / 63.0);
    requantize(xb, qb, l, nmax);
}

/// `quantize_row_q{4,5}_K_impl` with an importance matrix, up to the packing of the
/// levels. `clamp_levels` is Q5_K's extra guard on the 6-bit scale levels.
pub fn fit_block_weighted(xb: &[f32], qw: &[f32], qb: &mut [u8], l: &mut [u8; QK_K], nmax: i32, clamp_levels: bool) {
    let mut scales = [0.0f32; NSUB];
    let mut mins = [0.0f32; NSUB];
    let mut sw = [0.0f32; NSUB];
    let mut weights = [0.0f32; SUB];

    let mut sum_x2 = 0.0f32;
    for &v in xb {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;

    for j in 0..NSUB {
        let xs = &xb[SUB * j..SUB * (j + 1)];
        let ws = &qw[SUB * j..SUB * (j + 1)];
        for l in 0..SUB {
            weights[l] = ws[l] * (sigma2 + xs[l] * xs[l]).sqrt();
        }
        let mut sumw = 0.0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let r = make_qkx3_quants(nmax, xs, Some(&weights), &mut l[SUB * j..], WEIGHTED_STEPS, ErrorNorm::Square);
        scales[j] = r.scale;
        mins[j] = r.min;
    }

    let mut ls = [0u8; NSUB];
    let mut lm = [0u8; NSUB];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp_levels {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    qb[SCALES..QS].copy_from_slice(&pack_scales_mins(&ls, &lm));
    write_f16(qb, 0, d_block);
    write_f16(qb, 2, m_block);
    requantize(xb, qb, l, nmax);
}

/// Re-round every value against the scales as stored (f16 `d` times the 6-bit level),
/// so that the levels fit what dequantization will actually see. A sub-block whose
/// stored scale is zero keeps the levels of its search.
fn requantize(xb: &[f32], qb: &[u8], l: &mut [u8; QK_K], nmax: i32) {
    let d_all = read_f16(qb, 0);
    let m_all = read_f16(qb, 2);
    for j in 0..NSUB {
        let (sc, m) = scale_min(&qb[SCALES..QS], j);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for ii in 0..SUB {
            let v = xb[SUB * j + ii];
            l[SUB * j + ii] = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Scales and mins of all eight sub-blocks (as the dot kernels unpack them).
#[inline]
pub fn unpack_scales_mins(scales: &[u8]) -> ([u8; NSUB], [u8; NSUB]) {
    let mut sc = [0u8; NSUB];
    let mut m = [0u8; NSUB];
    for j in 0..NSUB {
        (sc[j], m[j]) = scale_min(scales, j);
    }
    (sc, m)
}

/// ggml's scalar dot for Q4_K/Q5_K against Q8_K. The integer products are exact; the
/// float accumulation keeps ggml's eight running lanes so the result is bit-identical
/// to `ggml_vec_dot_q{4,5}_K_q8_K_generic`.
pub struct DotAcc {
    lanes: [f32; 8],
    sumf: f32,
}

impl DotAcc {
    pub fn new() -> Self {
        DotAcc { lanes: [0.0; 8], sumf: 0.0 }
    }

    /// One super-block: `levels` are its 256 unsigned levels in value order, `qb` its
    /// bytes (header at the start), `yb` the Q8_K block.
    pub fn add_block(&mut self, levels: &[u8; QK_K], qb: &[u8], yb: &[u8]) {
        let (sc, m) = unpack_scales_mins(&qb[SCALES..QS]);
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let mut sumi = 0i32;
        for j in 0..QK_K / 16 {
            sumi += q8_k::bsum(yb, j) * m[j / 2] as i32;
        }
        let mut aux32 = [0i32; 8];
        for (j, &scale) in sc.iter().enumerate() {
            for g in 0..4 {
                let at = SUB * j + 8 * g;
                for k in 0..8 {
                    let prod = q8[at + k] as i8 as i32 * levels[at + k] as i32;
                    aux32[k] += scale as i32 * prod;
                }
            }
        }
        let d = read_f16(qb, 0) * read_f32(yb, 0);
        for (lane, &a) in self.lanes.iter_mut().zip(&aux32) {
            *lane += d * a as f32;
        }
        let dmin = read_f16(qb, 2) * read_f32(yb, 0);
        self.sumf -= dmin * sumi as f32;
    }

    pub fn finish(self) -> f32 {
        let mut s = self.sumf;
        for v in self.lanes {
            s += v;
        }
        s
    }
}

impl Default for DotAcc {
    fn default() -> Self {
        Self::new()
    }
}

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let mut l = [0u8; QK_K];
    for (i, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        match imat {
            None => fit_block_ref(xb, qb, &mut l, NMAX, REF_STEPS),
            Some(w) => fit_block_weighted(xb, &w[QK_K * i..QK_K * (i + 1)], qb, &mut l, NMAX, false),
        }
        pack_nibbles(&l, &mut qb[QS..]);
    }
}

fn pack_nibbles(l: &[u8; QK_K], qs: &mut [u8]) {
    for c in 0..QK_K / 64 {
        for k in 0..32 {
            qs[32 * c + k] = l[64 * c + k] | (l[64 * c + k + 32] << 4);
        }
    }
}

fn unpack_nibbles(qs: &[u8], l: &mut [u8; QK_K]) {
    for c in 0..QK_K / 64 {
        for k in 0..32 {
            let b = qs[32 * c + k];
            l[64 * c + k] = b & 0x0f;
            l[64 * c + k + 32] = b >> 4;
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    let mut l = [0u8; QK_K];
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        unpack_nibbles(&qb[QS..], &mut l);
        dequantize_levels(qb, &l, yb);
    }
}

/// `y = d * sc * level - dmin * m` per sub-block, shared with Q5_K.
pub fn dequantize_levels(qb: &[u8], l: &[u8; QK_K], yb: &mut [f32]) {
    let d = read_f16(qb, 0);
    let min = read_f16(qb, 2);
    for j in 0..NSUB {
        let (sc, m) = scale_min(&qb[SCALES..QS], j);
        let d1 = d * sc as f32;
        let m1 = min * m as f32;
        for k in SUB * j..SUB * (j + 1) {
            yb[k] = d1 * l[k] as f32 - m1;
        }
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut acc = DotAcc::new();
    let mut l = [0u8; QK_K];
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        unpack_nibbles(&qb[QS..], &mut l);
        acc.add_block(&l, qb, yb);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> Vec<f32> {
        crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, x, imat).1
    }

    fn max_err(x: &[f32], y: &[f32]) -> f32 {
        x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn scale_packing_roundtrips() {
        let ls = [0u8, 63, 17, 40, 63, 1, 32, 5];
        let lm = [63u8, 0, 9, 33, 2, 63, 48, 31];
        let s = pack_scales_mins(&ls, &lm);
        for j in 0..NSUB {
            assert_eq!(scale_min(&s, j), (ls[j], lm[j]));
        }
        assert_eq!(unpack_scales_mins(&s), (ls, lm));
    }

    #[test]
    fn adversarial_blocks() {
        let ramp: Vec<f32> = (0..QK_K).map(|i| i as f32 / 64.0 - 2.0).collect();
        let cases: Vec<(Vec<f32>, f32)> = vec![
            (vec![0.0; QK_K], 0.0),
            (vec![0.5; QK_K], 0.01),
            (vec![-3.0; QK_K], 0.01),
            (ramp.clone(), 0.15),
            // the f16 dmin (max min / 63) caps the usable magnitude near 4e6
            (ramp.iter().map(|v| v * 1e6).collect(), 0.15),
            // far below f16 range: the scales flush to zero, so only "no worse than zero" holds
            (ramp.iter().map(|v| v * 1e-30).collect(), 1.0),
            ((0..QK_K).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect(), 0.1),
        ];
        let imat: Vec<f32> = (0..QK_K).map(|i| 0.5 + (i % 7) as f32).collect();
        for (x, rel) in &cases {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for w in [None, Some(&imat[..])] {
                let y = roundtrip(x, w);
                assert!(y.iter().all(|v| v.is_finite()));
                if amax == 0.0 {
                    assert!(y.iter().all(|&v| v == 0.0));
                } else {
                    assert!(max_err(x, &y) <= rel * amax, "err {} amax {amax}", max_err(x, &y));
                }
            }
        }
    }

    #[test]
    fn huge_values_do_not_panic() {
        for sign in [1.0f32, -1.0] {
            let x: Vec<f32> = (0..QK_K).map(|i| sign * (1e30 + i as f32 * 1e28)).collect();
            let imat = vec![1.0f32; QK_K];
            roundtrip(&x, None);
            roundtrip(&x, Some(&imat));
        }
    }

    #[test]
    fn dot_matches_dequantized_product() {
        let x: Vec<f32> = (0..2 * QK_K).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
        let y: Vec<f32> = (0..2 * QK_K).map(|i| ((i * 53 % 89) as f32 - 44.0) / 7.0).collect();
        let mut q = vec![0u8; 2 * BLOCK_BYTES];
        quantize(&x, &mut q, None);
        let mut yq = vec![0u8; 2 * q8_k::BLOCK_BYTES];
        q8_k::quantize_ref(&y, &mut yq);
        let mut xd = vec![0f32; x.len()];
        dequantize(&q, &mut xd);
        let mut yd = vec![0f32; y.len()];
        (q8_k::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = xd.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
        let scale: f64 = xd.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let got = vec_dot(&q, &yq) as f64;
        assert!((got - want).abs() <= 1e-5 * scale, "{got} vs {want}");
    }
}
