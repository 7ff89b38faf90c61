//! Q6_K: super-blocks of 256 in 16 groups of 16 (210 bytes): `ql` (128 bytes, low
//! nibbles), `qh` (64 bytes, high 2-bit pairs), 16 int8 group scales, f16 `d`.
//! Values are stored offset by 32. Within each half of 128 values, `ql[l]` holds
//! values l and l+64 and `ql[l+32]` values l+32 and l+96; `qh[l]` holds the high bits
//! of l, l+32, l+64, l+96 in bit pairs 0, 2, 4, 6.

use super::common::{make_qx_quants, nearest_int, read_f16, read_f32, write_f16, RmseWeight, GROUP_MAX_EPS};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 210;
const QL: usize = 0;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// `quantize_row_q6_K_ref` without weights, `quantize_row_q6_K_impl` with them; the
/// two differ only in the weights of the per-group search (x^2 or the raw imatrix).
fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    for (i, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        quantize_block(xb, qb, imat.map(|w| &w[i * QK_K..(i + 1) * QK_K]));
    }
}

fn quantize_block(x: &[f32], qb: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, s) in scales.iter_mut().enumerate() {
        let r = 16 * ib..16 * ib + 16;
        let scale = make_qx_quants(32, &x[r.clone()], &mut l[r.clone()], RmseWeight::Square, qw.map(|w| &w[r]));
        *s = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        qb.fill(0);
        return;
    }

    let iscale = -128.0f32 / max_scale;
    write_f16(qb, D, 1.0 / iscale);
    for (ib, &s) in scales.iter().enumerate() {
        qb[SCALES + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
    }

    // requantize against the scales as stored; a group whose scale rounds to zero
    // keeps the levels of its own search
    let d_all = read_f16(qb, D);
    for j in 0..QK_K / 16 {
        let d = d_all * (qb[SCALES + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 16 * j..16 * j + 16 {
            l[ii] = (nearest_int(x[ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }

    for h in 0..2 {
        let lh = &l[128 * h..128 * h + 128];
        let (ql, qh) = (QL + 64 * h, QH + 32 * h);
        for i in 0..32 {
            let v = [lh[i] as u8, lh[i + 32] as u8, lh[i + 64] as u8, lh[i + 96] as u8];
            qb[ql + i] = (v[0] & 0x0f) | ((v[2] & 0x0f) << 4);
            qb[ql + i + 32] = (v[1] & 0x0f) | ((v[3] & 0x0f) << 4);
            qb[qh + i] = (v[0] >> 4) | ((v[1] >> 4) << 2) | ((v[2] >> 4) << 4) | ((v[3] >> 4) << 6);
        }
    }
}

/// The 256 signed values of a block, -32..=31.
fn unpack(qb: &[u8]) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for h in 0..2 {
        let (ql, qh) = (&qb[QL + 64 * h..QL + 64 * h + 64], &qb[QH + 32 * h..QH + 32 * h + 32]);
        let out = &mut a[128 * h..128 * h + 128];
        for i in 0..32 {
            out[i] = ((ql[i] & 0x0f) | ((qh[i] & 3) << 4)) as i8 - 32;
            out[i + 32] = ((ql[i + 32] & 0x0f) | (((qh[i] >> 2) & 3) << 4)) as i8 - 32;
            out[i + 64] = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i8 - 32;
            out[i + 96] = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, D);
        let a = unpack(qb);
        for (j, (o, &v)) in yb.iter_mut().zip(&a).enumerate() {
            *o = d * (qb[SCALES + j / 16] as i8) as f32 * v as f32;
        }
    }
}

/// The integer part of ggml's generic k-quant dots: eight lanes, lane `l` summing
/// `scale(group) * a[i] * q8[i]` over the values i = l (mod 8). The lane split fixes
/// the order of the later float sums.
pub(super) fn lane_sums(a: &[i8; QK_K], scales: &[i32; QK_K / 16], q8: &[u8]) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (i, (&av, &qv)) in a.iter().zip(&q8[..QK_K]).enumerate() {
        // the product is an int16 in ggml; |a| <= 32 keeps it exact
        let p = (av as i32 * qv as i8 as i32) as i16 as i32;
        aux32[i % 8] += scales[i / 16] * p;
    }
    aux32
}

/// Adds one block's lanes, scaled by `d`, into the running float lanes.
#[inline]
pub(super) fn accumulate(sums: &mut [f32; 8], d: f32, aux32: &[i32; 8]) {
    for (s, &v) in sums.iter_mut().zip(aux32) {
        *s += d * v as f32;
    }
}

/// `ggml_vec_dot_q6_K_q8_K_generic`.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let a = unpack(xb);
        let scales: [i32; QK_K / 16] = std::array::from_fn(|j| (xb[SCALES + j] as i8) as i32);
        let aux32 = lane_sums(&a, &scales, &yb[q8_k::QS..]);
        let d = read_f16(xb, D) * read_f32(yb, 0);
        accumulate(&mut sums, d, &aux32);
    }
    sums.iter().fold(0.0f32, |acc, &s| acc + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
        crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, x, imat)
    }

    /// Error bound per group of 16: about one level of the group's own scale, which
    /// is at most amax/32 plus the 8-bit quantization of the scale itself.
    fn assert_close(x: &[f32], y: &[f32], block_amax_frac: f32) {
        for (xb, yb) in x.chunks(QK_K).zip(y.chunks(QK_K)) {
            let bmax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (xg, yg) in xb.chunks(16).zip(yb.chunks(16)) {
                let amax = xg.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (&a, &b) in xg.iter().zip(yg) {
                    assert!(b.is_finite());
                    let tol = amax / 16.0 + bmax * block_amax_frac;
                    assert!((a - b).abs() <= tol, "{a} vs {b} (group amax {amax}, block amax {bmax})");
                }
            }
        }
    }

    fn cases() -> Vec<Vec<f32>> {
        let n = QK_K;
        vec![
            (0..n).map(|i| i as f32 / 7.0 - 18.0).collect(),
            vec![0.5f32; n],
            vec![-3.0f32; n],
            (0..n).map(|i| if i % 2 == 0 { 2.0e6 } else { -1.5e6 }).collect(),
            (0..n).map(|i| ((i * 31 % 17) as f32 - 8.0) * 1e-30).collect(),
            (0..n).map(|i| if i < 128 { 0.0 } else { ((i * 7 % 13) as f32 - 6.0) * 0.01 }).collect(),
            (0..n).map(|i| if i % 37 == 0 { 100.0 } else { 0.01 * (i % 5) as f32 }).collect(),
        ]
    }

    #[test]
    fn zeros_stay_zero() {
        let x = vec![0.0f32; 2 * QK_K];
        let w = vec![1.0f32; 2 * QK_K];
        for imat in [None, Some(&w[..])] {
            let (q, y) = roundtrip(&x, imat);
            assert!(q.iter().all(|&b| b == 0));
            assert!(y.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn adversarial_blocks_are_bounded() {
        let w: Vec<f32> = (0..QK_K).map(|i| 0.1 + (i % 11) as f32).collect();
        for x in cases() {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let (_, y) = roundtrip(&x, None);
            if amax < 1e-20 {
                // 1e-30 scales are below f16's range: the block decodes to zeros
                assert!(y.iter().all(|&v| v == 0.0));
                continue;
            }
            assert_close(&x, &y, 1.0 / 128.0 + 1e-3);
            let (_, yi) = roundtrip(&x, Some(&w));
            assert_close(&x, &yi, 1.0 / 128.0 + 1e-3);
        }
        // half-zero blocks keep exact zeros
        let x = &cases()[5];
        let (_, y) = roundtrip(x, None);
        assert!(y[..128].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn beyond_f16_range_does_not_panic() {
        // x^2 overflows f32 here, so every group's search fails and ggml writes zeros
        let x: Vec<f32> = (0..QK_K).map(|i| if i == 9 { -3e38 } else { i as f32 * 1e30 }).collect();
        let (q, _) = roundtrip(&x, None);
        assert!(q.iter().all(|&b| b == 0));
        // the searches succeed but the super-block scale saturates f16
        let x: Vec<f32> = (0..QK_K).map(|i| (i as f32 - 100.0) * 1e13).collect();
        let (q, _) = roundtrip(&x, None);
        assert!(read_f16(&q, D).is_infinite());
    }

    #[test]
    fn dot_matches_dequantized_product() {
        let x: Vec<f32> = (0..2 * QK_K).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
        let y: Vec<f32> = (0..2 * QK_K).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.1).collect();
        let (q, xd) = roundtrip(&x, None);
        let mut yq = vec![0u8; 2 * q8_k::BLOCK_BYTES];
        q8_k::quantize_ref(&y, &mut yq);
        let mut yd = vec![0.0f32; y.len()];
        (q8_k::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = xd.iter().zip(&yd).map(|(&a, &b)| a as f64 * b as f64).sum();
        let got = vec_dot(&q, &yq) as f64;
        assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{got} vs {want}");
    }
}
