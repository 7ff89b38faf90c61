//! Q4_0: blocks of 32, an f16 scale and 16 bytes of 4-bit values offset by 8 (18 bytes).
//! Byte j holds value j in its low nibble and value j+16 in its high nibble.

use super::common::{make_qx_quants, read_f16, row_sigma2, signed_absmax, trunc_x86, write_f16, RmseWeight};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 18;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => quantize_ref(x, q),
        Some(w) => quantize_imat(x, q, w),
    }
}

/// `quantize_row_q4_0_ref`: the signed extreme maps to -8; values are truncated
/// after adding 8.5, which is how ggml rounds here.
fn quantize_ref(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let (_, max) = signed_absmax(xb);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(qb, 0, d);
        for j in 0..QK / 2 {
            let lo = (trunc_x86(xb[j] * id + 8.5) as i8).min(15) as u8;
            let hi = (trunc_x86(xb[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            qb[2 + j] = lo | (hi << 4);
        }
    }
}

fn quantize_imat(x: &[f32], q: &mut [u8], imat: &[f32]) {
    let sigma2 = row_sigma2(x);
    let mut weight = [0.0f32; QK];
    let mut l = [0i8; QK];
    for ((xb, qb), qw) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)).zip(imat.chunks_exact(QK)) {
        for j in 0..QK {
            weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        let d = make_qx_quants(8, xb, &mut l, RmseWeight::Square, Some(&weight));
        write_f16(qb, 0, d);
        for j in 0..QK / 2 {
            qb[2 + j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for j in 0..QK / 2 {
            let b = qb[2 + j];
            yb[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
            yb[j + QK / 2] = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_0::BLOCK_BYTES)) {
        let ys = &yb[2..];
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let b = xb[2 + j];
            sumi += ((b & 0x0f) as i32 - 8) * ys[j] as i8 as i32;
            sumi += ((b >> 4) as i32 - 8) * ys[j + QK / 2] as i8 as i32;
        }
        sumf += sumi as f32 * read_f16(xb, 0) * read_f16(yb, 0);
    }
    sumf
}
