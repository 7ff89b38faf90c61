//! Q3_K: super-blocks of 256 in 16 groups of 16 (110 bytes): `hmask` (32 bytes),
//! `qs` (64 bytes of 2-bit pairs), 12 bytes of 6-bit group scales, f16 `d`.
//!
//! Value i (h = i / 128, p = (i % 128) / 32, l = i % 32) has its low two bits at bit
//! pair p of `qs[32h + l]` and its high bit at bit 4h + p of `hmask[l]`; a clear high
//! bit means the value is 4 less (levels -4..=3). Group scale j is stored as j + 32 in
//! six bits: the low nibble in byte j (j < 8) or the high nibble of byte j - 8, the top
//! two bits at bit pair j / 4 of byte 8 + j % 4.

use super::common::{
    make_qx_quants, nearest_int, read_f16, read_f32, signed_absmax, write_f16, RmseWeight, GROUP_MAX_EPS,
};
use super::q6_k::{accumulate, lane_sums};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 110;
const HMASK: usize = 0;
const QS: usize = 32;
const SCALES: usize = 96;
const D: usize = 108;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => {
            for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
                quantize_block_ref(xb, qb);
            }
        }
        Some(w) => {
            for ((xb, qb), wb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).zip(w.chunks_exact(QK_K)) {
                quantize_block_imat(xb, qb, wb);
            }
        }
    }
}

/// ggml's `make_q3_quants` with `do_rmse` (the only way Q3_K calls it): round against
/// the signed extreme mapped to -nmax, then up to five passes of coordinate descent,
/// each moving single levels when that improves the x^2-weighted fit. Returns the
/// least-squares scale; levels are written offset by nmax.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l[..x.len()].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = q as i8;
        let w = v * v;
        let qf = q as f32;
        sumlx += w * v * qf;
        suml2 += w * qf * qf;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = *li as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    let nf = new_l as f32;
                    slx += w * v * nf;
                    sl2 += w * nf * nf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for li in l.iter_mut().take(x.len()) {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Stores 16 six-bit scale codes (0..=63).
fn pack_scales(qb: &mut [u8], codes: &[u8; 16]) {
    let s = &mut qb[SCALES..SCALES + 12];
    s.fill(0);
    for (j, &c) in codes.iter().enumerate() {
        if j < 8 {
            s[j] = c & 0x0f;
        } else {
            s[j - 8] |= (c & 0x0f) << 4;
        }
        s[8 + j % 4] |= (c >> 4) << (2 * (j / 4));
    }
}

/// The 16 signed group scales, -32..=31.
fn unpack_scales(qb: &[u8]) -> [i32; 16] {
    let s = &qb[SCALES..SCALES + 12];
    std::array::from_fn(|j| {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    })
}

/// Requantizes every group against its scale as stored (a group whose scale is zero
/// keeps the levels of its own search), then writes `hmask` and `qs`.
fn finish_block(x: &[f32], qb: &mut [u8], l: &mut [i8; QK_K]) {
    let d_all = read_f16(qb, D);
    for (j, sc) in unpack_scales(qb).into_iter().enumerate() {
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    qb[HMASK..HMASK + 32].fill(0);
    for (i, li) in l.iter_mut().enumerate() {
        if *li > 3 {
            qb[HMASK + i % 32] |= 1 << (i / 32);
            *li -= 4;
        }
    }
    for h in 0..2 {
        let lh = &l[128 * h..128 * h + 128];
        for i in 0..32 {
            let v = [lh[i] as u8, lh[i + 32] as u8, lh[i + 64] as u8, lh[i + 96] as u8];
            qb[QS + 32 * h + i] = v[0] | (v[1] << 2) | (v[2] << 4) | (v[3] << 6);
        }
    }
}

/// `quantize_row_q3_K_ref`: per-group `make_q3_quants`, the group scales quantized
/// symmetrically against the largest one.
fn quantize_block_ref(x: &[f32], qb: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let mut codes = [0u8; 16];
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        for (c, &s) in codes.iter_mut().zip(&scales) {
            // ggml narrows to int8 before clamping
            *c = ((nearest_int(iscale * s) as i8 as i32).clamp(-32, 31) + 32) as u8;
        }
        pack_scales(qb, &codes);
        write_f16(qb, D, 1.0 / iscale);
    } else {
        qb[SCALES..SCALES + 12].fill(0);
        write_f16(qb, D, 0.0);
    }
    finish_block(x, qb, &mut l);
}

/// `quantize_row_q3_K_impl` with an importance matrix: groups searched with weights
/// imat * sqrt(sigma2 + x^2) (sigma2 = twice the block's mean square), and the group
/// scales themselves searched with the groups' total weights.
fn quantize_block_imat(x: &[f32], qb: &mut [u8], qw: &[f32]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut weight = [0.0f32; 16];
    let mut sumx2 = 0.0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    for j in 0..16 {
        let r = 16 * j..16 * j + 16;
        for ((w, &q), &v) in weight.iter_mut().zip(&qw[r.clone()]).zip(&x[r.clone()]) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        sw[j] = weight.iter().fold(0.0f32, |a, &w| a + w);
        scales[j] = make_qx_quants(4, &x[r.clone()], &mut l[r], RmseWeight::Square, Some(&weight));
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, RmseWeight::Square, Some(&sw));
    let codes: [u8; 16] = std::array::from_fn(|j| ls[j] as u8);
    pack_scales(qb, &codes);
    write_f16(qb, D, d_block);
    finish_block(x, qb, &mut l);
}

/// The 256 signed values of a block, -4..=3.
fn unpack(qb: &[u8]) -> [i8; QK_K] {
    std::array::from_fn(|i| {
        let (h, p, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = ((qb[QS + 32 * h + l] >> (2 * p)) & 3) as i8;
        let high = qb[HMASK + l] & (1 << (4 * h + p)) != 0;
        if high {
            low
        } else {
            low - 4
        }
    })
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d_all = read_f16(qb, D);
        let scales = unpack_scales(qb);
        let a = unpack(qb);
        for (j, (yg, ag)) in yb.chunks_exact_mut(16).zip(a.chunks_exact(16)).enumerate() {
            let dl = d_all * scales[j] as f32;
            for (o, &v) in yg.iter_mut().zip(ag) {
                *o = dl * v as f32;
            }
        }
    }
}

/// `ggml_vec_dot_q3_K_q8_K_generic`.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        let aux32 = lane_sums(&unpack(xb), &unpack_scales(xb), &yb[q8_k::QS..]);
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

    fn max_err_frac(x: &[f32], y: &[f32]) -> f32 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / amax
    }

    fn cases() -> Vec<Vec<f32>> {
        let n = QK_K;
        vec![
            (0..n).map(|i| i as f32 / 7.0 - 18.0).collect(),
            vec![0.5f32; n],
            vec![-3.0f32; n],
            (0..n).map(|i| if i % 2 == 0 { 1.0e5 } else { -0.7e5 }).collect(),
            (0..n).map(|i| if i < 128 { 0.0 } else { ((i * 7 % 13) as f32 - 6.0) * 0.01 }).collect(),
            (0..n).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.25).collect(),
        ]
    }

    #[test]
    fn scales_roundtrip_through_packing() {
        let codes: [u8; 16] = std::array::from_fn(|j| (j as u8 * 7 + 3) % 64);
        let mut qb = [0xffu8; BLOCK_BYTES];
        pack_scales(&mut qb, &codes);
        let back = unpack_scales(&qb);
        for j in 0..16 {
            assert_eq!(back[j], codes[j] as i32 - 32);
        }
    }

    #[test]
    fn zeros_stay_zero() {
        let x = vec![0.0f32; 2 * QK_K];
        let w = vec![1.0f32; 2 * QK_K];
        for imat in [None, Some(&w[..])] {
            let (q, y) = roundtrip(&x, imat);
            assert_eq!(read_f16(&q, D), 0.0);
            assert!(y.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn adversarial_blocks_are_bounded() {
        let w: Vec<f32> = (0..QK_K).map(|i| 0.1 + (i % 11) as f32).collect();
        for x in cases() {
            // three bits per value: a level is up to amax/4 wide, plus the coarse scales
            let (_, y) = roundtrip(&x, None);
            assert!(y.iter().all(|v| v.is_finite()));
            assert!(max_err_frac(&x, &y) <= 0.3, "{}", max_err_frac(&x, &y));
            let (_, yi) = roundtrip(&x, Some(&w));
            assert!(yi.iter().all(|v| v.is_finite()));
            assert!(max_err_frac(&x, &yi) <= 0.3, "{}", max_err_frac(&x, &yi));
        }
        // constant blocks: the search lands on an exact level
        let (_, y) = roundtrip(&cases()[2], None);
        assert!(y.iter().all(|&v| (v + 3.0).abs() <= 3.0 * 1e-3), "{:?}", &y[..4]);
        // exact zeros of a half-zero block stay zero
        let (_, y) = roundtrip(&cases()[4], None);
        assert!(y[..128].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn extreme_magnitudes_do_not_panic() {
        let tiny: Vec<f32> = (0..QK_K).map(|i| ((i * 31 % 17) as f32 - 8.0) * 1e-30).collect();
        let (_, y) = roundtrip(&tiny, None);
        assert!(y.iter().all(|&v| v == 0.0));
        let huge: Vec<f32> = (0..QK_K).map(|i| if i == 9 { -3e38 } else { i as f32 * 1e30 }).collect();
        let w = vec![1.0f32; QK_K];
        roundtrip(&huge, None);
        roundtrip(&huge, Some(&w));
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
