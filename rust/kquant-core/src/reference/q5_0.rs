//! Q5_0: blocks of 32, an f16 scale, 32 high bits and 16 bytes of low nibbles (22 bytes).
//! Values are stored offset by 16. Byte j of `qs` holds the low nibbles of values j and
//! j+16; bit j of the little-endian u32 `qh` is the fifth bit of value j.

use super::common::{make_qx_quants, read_f16, row_sigma2, signed_absmax, trunc_x86, write_f16, RmseWeight};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 22;
const QH: usize = 2;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => quantize_ref(x, q),
        Some(w) => quantize_imat(x, q, w),
    }
}

/// Packs 32 levels in 0..=31 into `hq`: the 4-byte `qh` followed by the 16-byte `qs`
/// (the tail shared by Q5_0 and Q5_1).
pub(super) fn pack_5bit(hq: &mut [u8], l: &[u8; QK]) {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (a, b) = (l[j], l[j + QK / 2]);
        hq[4 + j] = (a & 0x0f) | ((b & 0x0f) << 4);
        qh |= (((a & 0x10) >> 4) as u32) << j;
        qh |= (((b & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    hq[..4].copy_from_slice(&qh.to_le_bytes());
}

/// The 32 levels, 0..=31, stored in a `qh` + `qs` tail.
#[inline(always)]
pub(super) fn unpack_5bit(hq: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([hq[0], hq[1], hq[2], hq[3]]);
    let mut l = [0u8; QK];
    for j in 0..QK / 2 {
        let b = hq[4 + j];
        l[j] = (b & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        l[j + QK / 2] = (b >> 4) | ((((qh >> (j + QK / 2)) & 1) as u8) << 4);
    }
    l
}

/// `quantize_row_q5_0_ref`: the signed extreme maps to -16; values are truncated after
/// adding 16.5, which is how ggml rounds here.
fn quantize_ref(x: &[f32], q: &mut [u8]) {
    let mut l = [0u8; QK];
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let (_, max) = signed_absmax(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(qb, 0, d);
        for (o, &v) in l.iter_mut().zip(xb) {
            // the C code narrows to int8 before clamping; the byte keeps the low 5 bits
            *o = (trunc_x86(v * id + 16.5) as i8).min(31) as u8;
        }
        pack_5bit(&mut qb[QH..], &l);
    }
}

/// `quantize_row_q5_0_impl`: the symmetric search weighted by imat * sqrt(sigma2 + x^2),
/// sigma2 being the mean square of the whole row.
fn quantize_imat(x: &[f32], q: &mut [u8], imat: &[f32]) {
    let sigma2 = row_sigma2(x);
    let mut weight = [0.0f32; QK];
    let mut li = [0i8; QK];
    let mut l = [0u8; QK];
    for ((xb, qb), qw) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)).zip(imat.chunks_exact(QK)) {
        for j in 0..QK {
            weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        let d = make_qx_quants(16, xb, &mut li, RmseWeight::Square, Some(&weight));
        write_f16(qb, 0, d);
        for (o, &v) in l.iter_mut().zip(&li) {
            *o = v as u8;
        }
        pack_5bit(&mut qb[QH..], &l);
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for (o, &v) in yb.iter_mut().zip(&unpack_5bit(&qb[QH..])) {
            *o = (v as i32 - 16) as f32 * d;
        }
    }
}

/// `ggml_vec_dot_q5_0_q8_0_generic`: exact integer sums, one float product per block.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_0::BLOCK_BYTES)) {
        let ys = &yb[2..];
        let sumi: i32 = unpack_5bit(&xb[QH..]).iter().zip(ys).map(|(&a, &b)| (a as i32 - 16) * (b as i8 as i32)).sum();
        sumf += (read_f16(xb, 0) * read_f16(yb, 0)) * sumi as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, x, None)
    }

    fn assert_close(x: &[f32], y: &[f32]) {
        for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (&a, &b) in xb.iter().zip(yb) {
                assert!(b.is_finite());
                // one level (amax / 16) at worst: +amax clamps to level 15 when -amax maps to -16
                assert!((a - b).abs() <= amax * (1.0 / 16.0 + 2e-3), "{a} vs {b} (amax {amax})");
            }
        }
    }

    #[test]
    fn zeros_stay_zero() {
        let x = vec![0.0f32; 64];
        let (q, y) = roundtrip(&x);
        assert!(y.iter().all(|&v| v == 0.0));
        // ggml writes 0 / -16 = -0.0 as the scale
        assert_eq!(read_f16(&q, 0), 0.0);
        let w = vec![1.0f32; 64];
        let mut qi = vec![0u8; q.len()];
        quantize(&x, &mut qi, Some(&w));
        let mut yi = vec![1.0f32; 64];
        dequantize(&qi, &mut yi);
        assert!(yi.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn adversarial_blocks_are_bounded() {
        let ramp: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        let constant = vec![-3.0f32; 32];
        // the largest magnitudes whose scale (amax / 16) still fits in an f16
        let big: Vec<f32> = (0..32).map(|i| if i % 2 == 0 { 1.0e6 } else { -7.0e5 }).collect();
        let tiny: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 1e-30).collect();
        for x in [ramp, constant.clone(), big] {
            let (_, y) = roundtrip(&x);
            assert_close(&x, &y);
            let w: Vec<f32> = (0..32).map(|i| 0.5 + i as f32).collect();
            let mut q = vec![0u8; BLOCK_BYTES];
            quantize(&x, &mut q, Some(&w));
            let mut yi = vec![0.0f32; 32];
            dequantize(&q, &mut yi);
            assert_close(&x, &yi);
        }
        // a constant block is exactly representable: -16 * (c / -16)
        let (_, y) = roundtrip(&constant);
        assert!(y.iter().all(|&v| v == -3.0));
        // the scale of 1e-30 values underflows f16: everything decodes to zero, no NaN
        let (_, y) = roundtrip(&tiny);
        assert!(y.iter().all(|&v| v == 0.0));
        // beyond f16 range the scale saturates to infinity, as in ggml; no panic
        let huge: Vec<f32> = (0..32).map(|i| if i == 3 { -3e38 } else { i as f32 * 1e30 }).collect();
        let (q, _) = roundtrip(&huge);
        assert_eq!(read_f16(&q, 0), f32::INFINITY);
        let sub: Vec<f32> = (0..32).map(|i| if i == 5 { 1e-40 } else { 0.0 }).collect();
        roundtrip(&sub);
    }

    #[test]
    fn dot_matches_dequantized_product() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
        let y: Vec<f32> = (0..64).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.1).collect();
        let (q, xd) = roundtrip(&x);
        let mut yq = vec![0u8; 2 * q8_0::BLOCK_BYTES];
        q8_0::quantize_ref(&y, &mut yq);
        let mut yd = vec![0.0f32; 64];
        (q8_0::KERNELS.dequantize)(&yq, &mut yd);
        let want: f64 = xd.iter().zip(&yd).map(|(&a, &b)| a as f64 * b as f64).sum();
        let got = vec_dot(&q, &yq) as f64;
        assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{got} vs {want}");
    }
}
