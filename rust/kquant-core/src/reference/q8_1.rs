//! Q8_1: Q8_0 plus an f16 `s = d * sum(q)` (36 bytes: d, s, 32 int8). Only ever an
//! activation format: the partner of Q4_1 and Q5_1, whose dots use `s` for the minimum.

use super::common::{read_f16, trunc_x86, write_f16};
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 36;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: None };

fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    quantize_ref(x, q);
}

/// `quantize_row_q8_1_ref`.
pub fn quantize_ref(x: &[f32], q: &mut [u8]) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(qb, 0, d);
        let mut sum = 0i32;
        for (o, &v) in qb[4..].iter_mut().zip(xb) {
            let r = trunc_x86((v * id).round()) as i8;
            *o = r as u8;
            sum += r as i32;
        }
        write_f16(qb, 2, sum as f32 * d);
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = read_f16(qb, 0);
        for (o, &b) in yb.iter_mut().zip(&qb[4..]) {
            *o = (b as i8) as f32 * d;
        }
    }
}
