//! TQ1_0 (ternary, BitNet b1.58 / TriLM): super-blocks of 256 values in {-1, 0, 1} * d
//! (54 bytes): `qs` (48 bytes, five trits each), `qh` (4 bytes, four trits each), f16 `d`.
//! A byte stores its trits as a base-3 number scaled to 0..=255 (ceil(v * 256 / 243)),
//! so trit n is the top trit of `byte * 3^n` (mod 256), read as `(b * 3) >> 8`.
//! Value order: `qs[0..32]` hold values m + 32n (n = trit, m = byte), `qs[32..48]` values
//! 160 + m + 16n, `qh[0..4]` values 240 + m + 4n (trits 0..4 of 5, the last one unused).

use super::common::{read_f16, read_f32, write_f16};
use super::q8_k;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 54;
pub const QS: usize = 0;
pub const QH: usize = 48;
pub const D: usize = 52;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

pub const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// C's `lroundf(v) + 1` narrowed to `int`, as x86 glibc gives it: half away from zero,
/// and for NaN or infinity (a subnormal maximum makes the inverse scale infinite) the
/// "indefinite" long whose low 32 bits are zero, so the trit becomes 1 (value 0).
#[inline(always)]
pub fn trit(v: f32) -> u8 {
    if v.is_finite() {
        (v.round() as i32 + 1) as u8
    } else {
        1
    }
}

/// The inverse scale: ggml's `d ? 1/d : 0` on the block's absolute maximum.
#[inline(always)]
pub fn amax_inv(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (amax, if amax != 0.0 { 1.0 / amax } else { 0.0 })
}

/// Packs `n` trits (most significant first) into the 0..=255 byte code.
#[inline(always)]
pub fn pack5(t: [u8; 5]) -> u8 {
    let mut q: u8 = 0;
    for v in t {
        q = q.wrapping_mul(3).wrapping_add(v);
    }
    (q as u16 * 256).div_ceil(243) as u8
}

/// Trit `n` (0..5) of a byte code, in 0..=2 for well-formed bytes (any byte gives 0..=2).
#[inline(always)]
pub fn unpack(b: u8, n: usize) -> i32 {
    ((b.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as i32
}

/// `quantize_row_tq1_0_ref`; ggml ignores importance weights for TQ1_0.
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let (d, id) = amax_inv(xb);
        write_f16(qb, D, d);
        for m in 0..32 {
            qb[QS + m] = pack5(std::array::from_fn(|n| trit(xb[m + 32 * n] * id)));
        }
        for m in 0..16 {
            qb[QS + 32 + m] = pack5(std::array::from_fn(|n| trit(xb[160 + m + 16 * n] * id)));
        }
        for m in 0..4 {
            // four trits, then a zero trit so the first lands in the top position
            let t = std::array::from_fn(|n| if n < 4 { trit(xb[240 + m + 4 * n] * id) } else { 0 });
            qb[QH + m] = pack5(t);
        }
    }
}

/// The 256 trits of a block in value order, each in 0..=2.
#[inline(always)]
pub fn unpack_block(qb: &[u8], l: &mut [i8; QK_K]) {
    for n in 0..5 {
        for m in 0..32 {
            l[m + 32 * n] = unpack(qb[QS + m], n) as i8;
        }
        for m in 0..16 {
            l[160 + m + 16 * n] = unpack(qb[QS + 32 + m], n) as i8;
        }
    }
    for n in 0..4 {
        for m in 0..4 {
            l[240 + m + 4 * n] = unpack(qb[QH + m], n) as i8;
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    let mut l = [0i8; QK_K];
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        let d = read_f16(qb, D);
        unpack_block(qb, &mut l);
        for (o, &t) in yb.iter_mut().zip(&l) {
            *o = (t as i32 - 1) as f32 * d;
        }
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    let mut l = [0i8; QK_K];
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        unpack_block(qb, &mut l);
        let ys = &yb[q8_k::QS..q8_k::QS + QK_K];
        let sum: i32 = l.iter().zip(ys).map(|(&t, &v)| (t as i32 - 1) * v as i8 as i32).sum();
        sumf += sum as f32 * (read_f16(qb, D) * read_f32(yb, 0));
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trit_pattern_roundtrips() {
        for v in 0..243u32 {
            let t: [u8; 5] = std::array::from_fn(|n| ((v / 3u32.pow(4 - n as u32)) % 3) as u8);
            let b = pack5(t);
            for n in 0..5 {
                assert_eq!(unpack(b, n), t[n] as i32, "code {v} trit {n}");
            }
        }
    }

    #[test]
    fn ternary_values() {
        // block amax 2.5: values round to -1, 0, 1 of the scale, half away from zero
        let x: Vec<f32> = (0..QK_K).map(|i| [-2.5f32, 0.0, 2.0, 1.25, -1.0][i % 5]).collect();
        let (_, y) = crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, &x, None);
        for (a, b) in x.iter().zip(&y) {
            let want = if *a >= 1.25 {
                2.5
            } else if *a <= -1.25 {
                -2.5
            } else {
                0.0
            };
            assert_eq!(*b, want, "{a} -> {b}");
        }
    }
}
