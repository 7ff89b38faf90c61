//! F32, F16 and BF16 as plain storage: narrowing rounds to nearest even.

use super::common::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use super::Kernels;

pub static F32: Kernels = Kernels { quantize: q_f32, dequantize: dq_f32, vec_dot: Some(dot_f32) };
pub static F16: Kernels = Kernels { quantize: q_f16, dequantize: dq_f16, vec_dot: Some(dot_f16) };
pub static BF16: Kernels = Kernels { quantize: q_bf16, dequantize: dq_bf16, vec_dot: Some(dot_bf16) };

fn q_f32(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (o, v) in q.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

fn dq_f32(q: &[u8], y: &mut [f32]) {
    for (o, b) in y.iter_mut().zip(q.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn narrow(x: &[f32], q: &mut [u8], f: fn(f32) -> u16) {
    for (o, &v) in q.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f(v).to_le_bytes());
    }
}

fn widen(q: &[u8], y: &mut [f32], f: fn(u16) -> f32) {
    for (o, b) in y.iter_mut().zip(q.chunks_exact(2)) {
        *o = f(u16::from_le_bytes([b[0], b[1]]));
    }
}

fn q_f16(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    narrow(x, q, f32_to_f16)
}
fn dq_f16(q: &[u8], y: &mut [f32]) {
    widen(q, y, f16_to_f32)
}
fn q_bf16(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    narrow(x, q, f32_to_bf16)
}
fn dq_bf16(q: &[u8], y: &mut [f32]) {
    widen(q, y, bf16_to_f32)
}

/// Float dots accumulate in f64, as ggml's f16/bf16 scalar dots do.
fn dot_widened(a: &[u8], b: &[u8], width: usize, f: fn(&[u8]) -> f32) -> f32 {
    let mut s = 0.0f64;
    for (x, y) in a.chunks_exact(width).zip(b.chunks_exact(width)) {
        s += f(x) as f64 * f(y) as f64;
    }
    s as f32
}

fn dot_f32(a: &[u8], b: &[u8]) -> f32 {
    dot_widened(a, b, 4, |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}
fn dot_f16(a: &[u8], b: &[u8]) -> f32 {
    dot_widened(a, b, 2, |x| f16_to_f32(u16::from_le_bytes([x[0], x[1]])))
}
fn dot_bf16(a: &[u8], b: &[u8]) -> f32 {
    dot_widened(a, b, 2, |x| bf16_to_f32(u16::from_le_bytes([x[0], x[1]])))
}
