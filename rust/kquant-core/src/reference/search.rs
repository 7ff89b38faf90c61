//! Scale and minimum searches shared by the k-quants and the weighted legacy formats.
//!
//! These reproduce ggml's `make_qkx2_quants`, `make_qkx3_quants` and `make_qp_quants`
//! operation for operation: the chosen levels decide the output bytes, so a different
//! summation order or a fused multiply-add would change which candidate wins.

use super::common::{nearest_int, GROUP_MAX_EPS};

/// Largest group any caller searches (the 32-value sub-blocks of Q4_K/Q5_K, Q4_1, Q5_1).
pub const MAX_GROUP: usize = 32;

/// How a candidate's reconstruction error is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorNorm {
    /// weighted |diff| (ggml's `use_mad = true`)
    Abs,
    /// weighted diff^2
    Square,
}

/// Candidate scales tried after the first rounding: for `is` in `0..=nstep`, the level
/// count is stretched to `nmax + rmin + rdelta * is`.
#[derive(Clone, Copy, Debug)]
pub struct ScaleSteps {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: u32,
}

/// An asymmetric group fit: `x[i] ≈ scale * l[i] - min`, with `min >= 0` (ggml stores the
/// negated offset, so a group of positive values has `min == 0` or `-0.0`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct ScaleMin {
    pub scale: f32,
    pub min: f32,
}

/// ggml's `make_qkx2_quants`: levels `0..=nmax` for `x`, written to `l[..x.len()]`,
/// weighted by `weights` (one per value).
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    steps: ScaleSteps,
    norm: ErrorNorm,
) -> ScaleMin {
    asymmetric_search(nmax, x, |i| weights[i], l, steps, norm, |max, min| max == min)
}

/// ggml's `make_qkx3_quants`: as [`make_qkx2_quants`], but without weights each value
/// counts as `x^2`, and a group whose max does not exceed its (clamped) min is all zero.
pub fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    steps: ScaleSteps,
    norm: ErrorNorm,
) -> ScaleMin {
    match weights {
        Some(w) => asymmetric_search(nmax, x, |i| w[i], l, steps, norm, |max, min| max <= min),
        None => asymmetric_search(nmax, x, |i| x[i] * x[i], l, steps, norm, |max, min| max <= min),
    }
}

#[inline(always)]
fn asymmetric_search(
    nmax: i32,
    x: &[f32],
    w: impl Fn(usize) -> f32,
    l: &mut [u8],
    steps: ScaleSteps,
    norm: ErrorNorm,
    degenerate: impl Fn(f32, f32) -> bool,
) -> ScaleMin {
    let n = x.len();
    assert!(n > 0 && n <= MAX_GROUP && l.len() >= n);
    let err = |d: f32| match norm {
        ErrorNorm::Abs => d.abs(),
        ErrorNorm::Square => d * d,
    };
    let nmaxf = nmax as f32;

    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w(0);
    let mut sum_x = sum_w * x[0];
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        let wi = w(i);
        sum_w += wi;
        sum_x += wi * v;
    }
    // the offset may only pull values down: a group of positives keeps 0 as its base
    if min > 0.0 {
        min = 0.0;
    }
    if degenerate(max, min) {
        l[..n].fill(0);
        return ScaleMin { scale: 0.0, min: -min };
    }

    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * (q as f32) + min - x[i];
        best_error += w(i) * err(diff);
    }
    if steps.nstep == 0 {
        return ScaleMin { scale, min: -min };
    }

    let mut laux = [0u8; MAX_GROUP];
    for is in 0..=steps.nstep {
        iscale = (steps.rmin + steps.rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let wi = w(i);
            let qf = q as f32;
            sum_l += wi * qf;
            sum_l2 += wi * qf * qf;
            sum_xl += wi * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * (laux[i] as f32) + this_min - x[i];
                cur_error += w(i) * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    ScaleMin { scale, min: -min }
}

/// ggml's `make_qp_quants`: a scale for non-negative `x` with levels `0..=nmax` in `l`,
/// chosen by weighted squared error and then refined one level at a time.
/// Returns the scale (0 for an all-zero group).
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    // written as a comparison (not f32::max) so that NaN handling follows ggml's MAX macro
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    // ggml stores the unclamped level into a byte here; the wrap is kept on purpose
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * (l[i] as f32);
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    qp_finish(nmax, x, l, quant_weights, iscale)
}

/// The end of `make_qp_quants` once the inverse scale `iscale` is chosen: the levels
/// at that scale, refined one level at a time; returns the scale.
pub fn qp_finish(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32], iscale: f32) -> f32 {
    let n = x.len();
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = quant_weights[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    let nf = new_l as f32;
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
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
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: ScaleSteps = ScaleSteps { rmin: -1.0, rdelta: 0.1, nstep: 20 };

    #[test]
    fn constant_positive_group_fits_exactly() {
        // positives: min clamps to 0, max > 0, so both searches run and fit exactly
        let x = [0.5f32; 32];
        let w = [1.0f32; 32];
        let mut l = [0u8; 32];
        let r = make_qkx2_quants(15, &x, &w, &mut l, K4, ErrorNorm::Square);
        for &q in &l {
            assert!((r.scale * q as f32 - r.min - 0.5).abs() < 1e-6);
        }
        let r3 = make_qkx3_quants(15, &x, None, &mut l, K4, ErrorNorm::Square);
        for &q in &l {
            assert!((r3.scale * q as f32 - r3.min - 0.5).abs() < 1e-6);
        }
    }

    #[test]
    fn zero_group_gives_zero_levels() {
        let x = [0.0f32; 16];
        let mut l = [7u8; 16];
        let r = make_qkx2_quants(3, &x, &[1.0; 16], &mut l, K4, ErrorNorm::Abs);
        assert_eq!(r.scale, 0.0);
        assert!(l.iter().all(|&q| q == 0));
        let mut l = [7u8; 16];
        let r = make_qkx3_quants(3, &x, None, &mut l, K4, ErrorNorm::Square);
        assert_eq!(r.scale, 0.0);
        assert!(l.iter().all(|&q| q == 0));
        let mut l = [7u8; 8];
        assert_eq!(make_qp_quants(63, &[0.0; 8], &mut l, &[1.0; 8]), 0.0);
        assert!(l.iter().all(|&q| q == 0));
    }

    #[test]
    fn levels_stay_in_range_and_fit_a_ramp() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 * 0.25 - 3.0).collect();
        let w = vec![1.0f32; 32];
        let mut l = [0u8; 32];
        let r = make_qkx2_quants(15, &x, &w, &mut l, K4, ErrorNorm::Square);
        assert!(r.scale > 0.0 && r.min > 0.0);
        for (i, &q) in l.iter().enumerate() {
            assert!(q <= 15);
            assert!((r.scale * q as f32 - r.min - x[i]).abs() <= r.scale);
        }
    }

    #[test]
    fn qp_scale_reproduces_nonnegative_values() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut l = [0u8; 8];
        let d = make_qp_quants(63, &x, &mut l, &[1.0; 8]);
        for i in 0..8 {
            assert!(l[i] <= 63);
            assert!((d * l[i] as f32 - x[i]).abs() <= d);
        }
    }
}
