//! NVFP4: blocks of 64 E2M1 values in four groups of 16, each with a UE4M3 scale
//! (36 bytes): the four scale bytes, then 32 bytes; group s uses bytes 8s..8s+8 with
//! value j in the low nibble of byte j and value j+8 in the high nibble. A block
//! spans two Q8_0 blocks in dots.

use super::common::read_f16;
use super::mxfp4::{best_index, KVALUES};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 64;
pub const SUB: usize = 16;
pub const BLOCK_BYTES: usize = 36;

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// Half of an unsigned E4M3 value (bias 7, no infinities; ggml reads 0x7f as zero and
/// ignores the top bit).
#[inline(always)]
pub fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = ((x >> 3) & 15) as i32;
    let man = (x & 7) as f32;
    // both are exact in f32: 4 significant bits times a power of two
    let raw = if exp == 0 { man * 2f32.powi(-9) } else { (1.0 + man / 8.0) * 2f32.powi(exp - 7) };
    raw * 0.5
}

/// ggml's `ggml_fp32_to_ue4m3`: round half up on the mantissa's fourth bit, clamp at
/// 448 (code 0x7e), subnormals by `(int)(x * 512 + 0.5)`; zero or negative gives 0.
#[inline(always)]
pub fn to_ue4m3(x: f32) -> u8 {
    // also catches NaN, as ggml's `!(x > 0.0f)`
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xff) as i32 - 127;
    let fp32_man = ((bits >> 20) & 7) as i32;
    let mut exp = fp32_exp + 7;
    if exp <= 0 {
        let scaled = x * 512.0;
        let man = (scaled + 0.5) as i32;
        return man.clamp(0, 7) as u8;
    }
    if exp >= 15 {
        return 0x7e;
    }
    let mut man = fp32_man + ((bits >> 19) & 1) as i32;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7e;
        }
    }
    ((exp << 3) | man) as u8
}

/// `quantize_row_nvfp4_ref`; ggml ignores importance weights for NVFP4.
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        for (s, xs) in xb.chunks_exact(SUB).enumerate() {
            let mut amax = 0.0f32;
            for &v in xs {
                if amax < v.abs() {
                    amax = v.abs();
                }
            }
            let ue = to_ue4m3(amax / 6.0);
            qb[s] = ue;
            let d = ue4m3_half(ue);
            for j in 0..SUB / 2 {
                qb[4 + 8 * s + j] = best_index(xs[j], d) | (best_index(xs[j + SUB / 2], d) << 4);
            }
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        for (s, ys) in yb.chunks_exact_mut(SUB).enumerate() {
            let d = ue4m3_half(qb[s]);
            for j in 0..SUB / 2 {
                let b = qb[4 + 8 * s + j];
                ys[j] = KVALUES[(b & 15) as usize] as f32 * d;
                ys[j + SUB / 2] = KVALUES[(b >> 4) as usize] as f32 * d;
            }
        }
    }
}

/// ggml's order: per group, `dy * d * sumi` added in float.
fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb2) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(2 * q8_0::BLOCK_BYTES)) {
        for s in 0..4 {
            let d = ue4m3_half(xb[s]);
            let yb = &yb2[(s / 2) * q8_0::BLOCK_BYTES..(s / 2 + 1) * q8_0::BLOCK_BYTES];
            let off = 2 + (s % 2) * SUB;
            let dy = read_f16(yb, 0);
            let mut sumi = 0i32;
            for j in 0..SUB / 2 {
                let b = xb[4 + 8 * s + j];
                sumi += yb[off + j] as i8 as i32 * KVALUES[(b & 15) as usize] as i32;
                sumi += yb[off + j + SUB / 2] as i8 as i32 * KVALUES[(b >> 4) as usize] as i32;
            }
            sumf += dy * d * sumi as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ue4m3_codes_roundtrip() {
        // codes below exponent 15 convert back to themselves; ggml's encoder sends
        // anything at exponent 15 to its maximum 0x7e (0x7f reads as zero)
        for c in 1..0x78u8 {
            assert_eq!(to_ue4m3(ue4m3_half(c) * 2.0), c, "code {c:#x}");
        }
        for c in 0x78..0x7fu8 {
            assert_eq!(to_ue4m3(ue4m3_half(c) * 2.0), 0x7e, "code {c:#x}");
        }
        assert_eq!(to_ue4m3(1e9), 0x7e);
        assert_eq!(to_ue4m3(-1.0), 0);
        assert_eq!(to_ue4m3(f32::NAN), 0);
        assert_eq!(ue4m3_half(0x7e), 224.0);
        assert_eq!(ue4m3_half(0x38), 0.5);
    }

    #[test]
    fn exact_grid_roundtrips() {
        // group amax 6 -> scale 1.0 (code 0x38, halved 0.5): E2M1 values are exact
        let x: Vec<f32> = (0..QK).map(|i| KVALUES[(i * 7 + 7) % 16] as f32 * 0.5).collect();
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, &x, None);
        assert_eq!(&q[..4], &[0x38; 4]);
        assert_eq!(x, y);
    }
}
