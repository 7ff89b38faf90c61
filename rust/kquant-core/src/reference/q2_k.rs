//! Q2_K: super-blocks of 256 in sixteen sub-blocks of 16 (84 bytes): 16 bytes holding a
//! 4-bit scale (low nibble) and 4-bit min (high nibble) per sub-block, 64 bytes of 2-bit
//! levels, then the f16 `d` and `dmin` that scale them.
//! Value `128h + 32s + k` (k < 32) sits in bits `2s..2s+2` of level byte `32h + k`.

use super::common::{nearest_int, read_f16, read_f32, write_f16};
use super::q8_k;
use super::search::{make_qkx2_quants, make_qkx3_quants, make_qp_quants, ErrorNorm, ScaleSteps};
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 84;
/// Offsets inside a block.
pub const SCALES: usize = 0;
pub const QS: usize = 16;
pub const D: usize = 80;
pub const DMIN: usize = 82;

const SUB: usize = 16;
const NSUB: usize = QK_K / SUB;
const NMAX: i32 = 3;
/// Scale and min levels are 4-bit.
const Q4SCALE: f32 = 15.0;
const REF_STEPS: ScaleSteps = ScaleSteps { rmin: -0.5, rdelta: 0.1, nstep: 15 };
const WEIGHTED_STEPS: ScaleSteps = ScaleSteps { rmin: -0.9, rdelta: 0.05, nstep: 36 };

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let mut l = [0u8; QK_K];
    for (i, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        match imat {
            None => fit_block_ref(xb, qb, &mut l),
            Some(w) => fit_block_weighted(xb, &w[QK_K * i..QK_K * (i + 1)], qb, &mut l),
        }
        pack_levels(&l, &mut qb[QS..D]);
    }
}

/// `quantize_row_q2_K_ref` up to the packing of the levels. Weights are |x|, and the
/// error is the weighted absolute difference.
fn fit_block_ref(xb: &[f32], qb: &mut [u8], l: &mut [u8; QK_K]) {
    let mut scales = [0.0f32; NSUB];
    let mut mins = [0.0f32; NSUB];
    let mut weights = [0.0f32; SUB];
    // the min is subtracted, so the scales are never negative and 0 is a valid start
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..NSUB {
        let xs = &xb[SUB * j..SUB * (j + 1)];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let r = make_qkx2_quants(NMAX, xs, &weights, &mut l[SUB * j..], REF_STEPS, ErrorNorm::Abs);
        scales[j] = r.scale;
        mins[j] = r.min;
        if r.scale > max_scale {
            max_scale = r.scale;
        }
        if r.min > max_min {
            max_min = r.min;
        }
    }

    let sc = &mut qb[SCALES..QS];
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..NSUB {
            // an out-of-range level wraps into the byte, as ggml stores it
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        write_f16(qb, D, max_scale / Q4SCALE);
    } else {
        sc.fill(0);
        write_f16(qb, D, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..NSUB {
            qb[SCALES + j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        write_f16(qb, DMIN, max_min / Q4SCALE);
    } else {
        write_f16(qb, DMIN, 0.0);
    }
    requantize(xb, qb, l);
}

/// `quantize_row_q2_K_impl`: weights from the importance matrix and the block's mean
/// square, and a weighted search for the 4-bit scale and min levels.
fn fit_block_weighted(xb: &[f32], qw: &[f32], qb: &mut [u8], l: &mut [u8; QK_K]) {
    let mut scales = [0.0f32; NSUB];
    let mut mins = [0.0f32; NSUB];
    let mut sw = [0.0f32; NSUB];
    let mut weight = [0.0f32; SUB];

    let mut sumx2 = 0.0f32;
    for &v in xb {
        sumx2 += v * v;
    }
    let sigma2 = sumx2 / QK_K as f32;
    for j in 0..NSUB {
        let xs = &xb[SUB * j..SUB * (j + 1)];
        let ws = &qw[SUB * j..SUB * (j + 1)];
        for k in 0..SUB {
            weight[k] = ws[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        for &w in &weight {
            sw[j] += w;
        }
        let r = make_qkx3_quants(NMAX, xs, Some(&weight), &mut l[SUB * j..], WEIGHTED_STEPS, ErrorNorm::Square);
        scales[j] = r.scale;
        mins[j] = r.min;
    }

    let mut ls = [0u8; NSUB];
    let mut lm = [0u8; NSUB];
    let dm = make_qp_quants(Q4SCALE as i32, &scales, &mut ls, &sw);
    let mm = make_qp_quants(Q4SCALE as i32, &mins, &mut lm, &sw);
    write_f16(qb, D, dm);
    write_f16(qb, DMIN, mm);
    for j in 0..NSUB {
        qb[SCALES + j] = ls[j] | (lm[j] << 4);
    }
    requantize(xb, qb, l);
}

/// Re-round every value against the scales as stored; a sub-block whose stored scale is
/// zero keeps the levels of its search.
fn requantize(xb: &[f32], qb: &[u8], l: &mut [u8; QK_K]) {
    let d_all = read_f16(qb, D);
    let m_all = read_f16(qb, DMIN);
    for j in 0..NSUB {
        let sc = qb[SCALES + j];
        let d = d_all * (sc & 0x0f) as f32;
        if d == 0.0 {
            continue;
        }
        let m = m_all * (sc >> 4) as f32;
        for k in 0..SUB {
            let v = xb[SUB * j + k];
            l[SUB * j + k] = nearest_int((v + m) / d).clamp(0, NMAX) as u8;
        }
    }
}

fn pack_levels(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..QK_K / 128 {
        let lh = &l[128 * h..128 * (h + 1)];
        for k in 0..32 {
            qs[32 * h + k] = lh[k] | (lh[k + 32] << 2) | (lh[k + 64] << 4) | (lh[k + 96] << 6);
        }
    }
}

/// Level of value `i` (0..256) of a block's level bytes.
#[inline(always)]
fn level(qs: &[u8], i: usize) -> u8 {
    let (h, r) = (i / 128, i % 128);
    (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, D);
        let min = read_f16(qb, DMIN);
        let qs = &qb[QS..D];
        for j in 0..NSUB {
            let sc = qb[SCALES + j];
            let dl = d * (sc & 0x0f) as f32;
            let ml = min * (sc >> 4) as f32;
            for (k, o) in yb[SUB * j..SUB * (j + 1)].iter_mut().enumerate() {
                *o = dl * level(qs, SUB * j + k) as f32 - ml;
            }
        }
    }
}

/// `ggml_vec_dot_q2_K_q8_K_generic`: exact integer sums per super-block, the mins folded
/// in through Q8_K's 16-value sums.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let sc = &qb[SCALES..QS];
        let qs = &qb[QS..D];
        let q8 = &yb[q8_k::QS..q8_k::QS + QK_K];
        let mut summs = 0i32;
        for (j, &s) in sc.iter().enumerate() {
            summs += q8_k::bsum(yb, j) * (s >> 4) as i32;
        }
        let yd = read_f32(yb, 0);
        let dall = yd * read_f16(qb, D);
        let dmin = yd * read_f16(qb, DMIN);
        let mut isum = 0i32;
        for (j, &s) in sc.iter().enumerate() {
            let mut isuml = 0i32;
            for (k, &y) in q8[SUB * j..SUB * (j + 1)].iter().enumerate() {
                isuml += y as i8 as i32 * level(qs, SUB * j + k) as i32;
            }
            isum += (s & 0x0f) as i32 * isuml;
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> Vec<f32> {
        crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, x, imat).1
    }

    #[test]
    fn level_packing_roundtrips() {
        let l: [u8; QK_K] = std::array::from_fn(|i| (i * 5 % 4) as u8);
        let mut qs = [0u8; QK_K / 4];
        pack_levels(&l, &mut qs);
        for (i, &want) in l.iter().enumerate() {
            assert_eq!(level(&qs, i), want);
        }
    }

    #[test]
    fn adversarial_blocks() {
        let ramp: Vec<f32> = (0..QK_K).map(|i| (i % 16) as f32 / 4.0 - 2.0).collect();
        let cases: Vec<(Vec<f32>, f32)> = vec![
            (vec![0.0; QK_K], 0.0),
            (vec![0.5; QK_K], 0.01),
            (vec![-3.0; QK_K], 0.01),
            // four levels across a 16-value ramp: about a sixth of the range per step
            (ramp.clone(), 0.5),
            // the f16 dmin (max min / 15) caps the usable magnitude near 1e6
            (ramp.iter().map(|v| v * 1e5).collect(), 0.5),
            // far below f16 range: the scales flush to zero, so only "no worse than zero" holds
            (ramp.iter().map(|v| v * 1e-30).collect(), 1.0),
            ((0..QK_K).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect(), 0.05),
        ];
        let imat: Vec<f32> = (0..QK_K).map(|i| 0.5 + (i % 7) as f32).collect();
        for (x, rel) in &cases {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for w in [None, Some(&imat[..])] {
                let y = roundtrip(x, w);
                assert!(y.iter().all(|v| v.is_finite()));
                let err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                if amax == 0.0 {
                    assert!(y.iter().all(|&v| v == 0.0));
                } else {
                    assert!(err <= rel * amax, "err {err} amax {amax} imat {}", w.is_some());
                }
            }
        }
    }

    #[test]
    fn huge_values_do_not_panic() {
        for sign in [1.0f32, -1.0] {
            let x: Vec<f32> = (0..QK_K).map(|i| sign * (1e30 + i as f32 * 1e28)).collect();
            roundtrip(&x, None);
            roundtrip(&x, Some(&vec![1.0f32; QK_K]));
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
