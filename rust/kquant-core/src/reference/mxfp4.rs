//! MXFP4 (OCP microscaling FP4): blocks of 32 E2M1 values sharing one E8M0 exponent
//! (17 bytes): `e`, then 16 bytes with value j in the low nibble of byte j and value
//! j+16 in the high nibble. The E2M1 codes are kept doubled as integers (`KVALUES`),
//! so the scale is half the E8M0 power of two. Dots pair it with Q8_0.
//! Also the E2M1 / E8M0 helpers NVFP4 shares.

use super::common::{read_f16, trunc_x86};
use super::q8_0;
use super::Kernels;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 17;

/// E2M1 values times two, by 4-bit code (ggml's `kvalues_mxfp4`).
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

/// Half of the E8M0 value 2^(e-127): 2^(e-128), subnormal for e < 2.
#[inline(always)]
pub fn e8m0_half(e: u8) -> f32 {
    f32::from_bits(if e < 2 { 0x0020_0000 << e } else { ((e as u32) - 1) << 23 })
}

/// ggml's `best_index_mxfp4`: the first code with the least |KVALUES[i] * d - x|,
/// float arithmetic as written (so ties and saturated scales pick what ggml picks).
#[inline(always)]
pub fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES[0] as f32 * d - x).abs();
    for i in 1..16u8 {
        let err = (KVALUES[i as usize] as f32 * d - x).abs();
        if err < best_err {
            best = i;
            best_err = err;
        }
    }
    best
}

/// The shared exponent of a block with absolute maximum `amax`: C's
/// `(uint8_t)(floorf(log2f(amax)) - 2 + 127)`, 0 for an all-zero block. The float to
/// byte conversion goes through int32 on x86, so out-of-range exponents wrap.
#[inline(always)]
pub fn exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        trunc_x86(amax.log2().floor() - 2.0 + 127.0) as u8
    } else {
        0
    }
}

/// `quantize_row_mxfp4_ref`; ggml ignores importance weights for MXFP4.
fn quantize(x: &[f32], q: &mut [u8], _imat: Option<&[f32]>) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        let e = exponent(amax);
        let d = e8m0_half(e);
        qb[0] = e;
        for j in 0..QK / 2 {
            qb[1 + j] = best_index(xb[j], d) | (best_index(xb[j + QK / 2], d) << 4);
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = e8m0_half(qb[0]);
        for j in 0..QK / 2 {
            let b = qb[1 + j];
            yb[j] = KVALUES[(b & 15) as usize] as f32 * d;
            yb[j + QK / 2] = KVALUES[(b >> 4) as usize] as f32 * d;
        }
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_0::BLOCK_BYTES)) {
        let d = read_f16(yb, 0) * e8m0_half(xb[0]);
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let b = xb[1 + j];
            sumi += yb[2 + j] as i8 as i32 * KVALUES[(b & 15) as usize] as i32;
            sumi += yb[2 + j + QK / 2] as i8 as i32 * KVALUES[(b >> 4) as usize] as i32;
        }
        sumf += d * sumi as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_a_power_of_two() {
        for e in 0..=254u8 {
            assert_eq!(e8m0_half(e) as f64, 2f64.powi(e as i32 - 128), "e = {e}");
        }
    }

    #[test]
    fn best_index_ties_go_to_the_smaller_magnitude() {
        assert_eq!(best_index(0.25, 0.5), 0); // between 0 and 1*d
        assert_eq!(best_index(-0.25, 0.5), 0);
        assert_eq!(best_index(1.25, 0.5), 2); // between 2 and 3 (times d)
        assert_eq!(best_index(-1.25, 0.5), 10);
        assert_eq!(best_index(100.0, 0.5), 7);
        assert_eq!(best_index(-100.0, 0.5), 15);
        assert_eq!(best_index(5.0, 0.0), 0);
    }

    #[test]
    fn exact_grid_roundtrips() {
        // amax 6 -> e = floor(log2 6) - 2 + 127 = 127, d = 0.5: E2M1 values are exact
        let x: Vec<f32> = (0..QK).map(|i| KVALUES[i % 16] as f32 * 0.5).collect();
        let (q, y) = crate::reference::roundtrip(&KERNELS, QK, BLOCK_BYTES, &x, None);
        assert_eq!(q[0], 127);
        assert_eq!(x, y);
    }
}
