//! Small exact helpers shared by the reference kernels.

use half::{bf16, f16};

/// Below this magnitude a group counts as all zero (ggml's GROUP_MAX_EPS).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adding 1.5 * 2^23 leaves the rounded integer in the low
/// mantissa bits. Ties go to even. Kept as the same float trick (rather than
/// `round_ties_even`) so that out-of-range inputs also give ggml's bits.
#[inline(always)]
pub fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// C's float-to-integer conversion as x86 performs it (cvttss2si): truncation, and
/// the "integer indefinite" value for NaN or anything out of range. ggml relies on
/// it when a degenerate block gives an infinite inverse scale. Narrowing the result
/// to a byte then keeps its low bits (`as i8`), as C's `(int8_t)` cast does there.
#[inline(always)]
pub fn trunc_x86(v: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    }
}

#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// Round to nearest even, as ggml's FP32_TO_FP16.
#[inline(always)]
pub fn f32_to_f16(v: f32) -> u16 {
    f16::from_f32(v).to_bits()
}

#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    bf16::from_bits(bits).to_f32()
}

/// Round to nearest even; NaN stays a quiet NaN with the sign kept (ggml's rule).
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[inline(always)]
pub fn read_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline(always)]
pub fn write_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
}

#[inline(always)]
pub fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub fn write_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Index of the first entry with the largest |x|, and that entry's signed value.
#[inline]
pub fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    (amax, max)
}

/// How `make_qx_quants` weighs each value when no importance weights are given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RmseWeight {
    /// x^2
    Square,
    /// 1
    Unit,
    /// |x|
    Abs,
    /// sqrt|x|
    SqrtAbs,
}

/// Symmetric search for a scale with levels in [-nmax, nmax-1], stored offset by
/// nmax in `l`. Mirrors ggml's `make_qx_quants` for rmse_type >= 1 (the variants
/// ggml's quantizers actually call), including its order of float operations.
/// `rmse_type` 0 is `make_qx_quants_plain`; negative types are not used by any
/// format kquant supports.
pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], weight: RmseWeight, qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let w_at = |i: usize| -> f32 {
        match qw {
            Some(q) => q[i],
            None => match weight {
                RmseWeight::Square => x[i] * x[i],
                RmseWeight::Unit => 1.0,
                RmseWeight::Abs => x[i].abs(),
                RmseWeight::SqrtAbs => x[i].abs().sqrt(),
            },
        }
    };
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let w = w_at(i);
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1) as f32;
            let w = w_at(i);
            sumlx += w * x[i] * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l[i] = (q + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qx_quants` with rmse_type 0: one rounding pass, no search.
pub fn make_qx_quants_plain(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l[..x.len()].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
    }
    1.0 / iscale
}

/// Mean square of a whole row; legacy formats weight their importance search by it.
pub fn row_sigma2(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s / x.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-7.49), -7);
        for v in [-1000.25f32, -3.7, 0.0, 3.2, 77.5, 4194303.0] {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32);
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // halfway between two bf16 values: goes to the even one
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
