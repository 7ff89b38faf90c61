//! Q8_0: blocks of 32, an f16 scale and 32 int8 values (34 bytes).

use super::common::{read_f16, trunc_x86, write_f16};
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 34;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// ggml's Q8_0 ignores importance weights.
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    quantize_ref(x, q);
}

/// `quantize_row_q8_0_ref`: scale amax/127, rounding half away from zero.
pub fn quantize_ref(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(qb, 0, d);
        for (o, &v) in qb[2..].iter_mut().zip(xb) {
            *o = trunc_x86((v * id).round()) as i8 as u8;
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for (o, &b) in yb.iter_mut().zip(&qb[2..]) {
            *o = (b as i8) as f32 * d;
        }
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(BLOCK_BYTES)) {
        let sumi: i32 = xb[2..].iter().zip(&yb[2..]).map(|(&a, &b)| (a as i8 as i32) * (b as i8 as i32)).sum();
        sumf += sumi as f32 * (read_f16(xb, 0) * read_f16(yb, 0));
    }
    sumf
}
