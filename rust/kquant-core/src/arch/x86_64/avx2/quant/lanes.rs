//! The reference's scale searches with one independent group per lane.
//!
//! Every search of `reference::search` and `reference::common` runs a sequential float
//! sum over the values of ONE group, so it cannot be split inside a group without
//! changing its rounding. Eight groups (the sub-blocks of a super-block, or eight
//! consecutive blocks) are independent, though: here lane `j` of every vector belongs
//! to group `j`, the values are transposed so that vector `i` holds value `i` of all
//! eight groups, and each lane repeats the reference's operations in the reference's
//! order (multiplies and adds, never fused). Data-dependent branches become per-lane
//! selects, which leaves every lane with exactly the state the scalar code reaches.
//!
//! `K` vectors of groups run side by side only to overlap the long chains of
//! dependent adds; they share nothing.

//! The searches use only the eight-lane primitives of `v8`, so that one source serves
//! every instruction set that provides them.

use super::v8::*;
use crate::reference::common::GROUP_MAX_EPS;
use crate::reference::iq4::KVALUES;
use crate::reference::search::ScaleSteps;

/// Lane `j` of vector-set `k` of each per-lane result, in group order (group `8k + j`).
#[inline(always)]
pub unsafe fn to_groups<const K: usize, const G: usize>(v: &[V; K]) -> [f32; G] {
    debug_assert_eq!(G, 8 * K);
    let mut out = [0.0f32; G];
    for k in 0..K {
        out[8 * k..8 * k + 8].copy_from_slice(&lanes(v[k]));
    }
    out
}

/// Sequential `sum x*x` over the `N` values of each lane (the reference's order).
#[inline(always)]
pub unsafe fn sum_sq<const N: usize, const K: usize>(x: &[[V; K]; N]) -> [V; K] {
    let mut s = [zero(); K];
    for xi in x {
        for k in 0..K {
            s[k] = add(s[k], mul(xi[k], xi[k]));
        }
    }
    s
}

/// Sequential sum over the `N` values of each lane.
#[inline(always)]
pub unsafe fn sum<const N: usize, const K: usize>(x: &[[V; K]; N]) -> [V; K] {
    let mut s = [zero(); K];
    for xi in x {
        for k in 0..K {
            s[k] = add(s[k], xi[k]);
        }
    }
    s
}

/// `signed_absmax` per lane: the largest |x| and the first value that has it.
#[inline(always)]
pub unsafe fn signed_absmax<const N: usize, const K: usize>(x: &[[V; K]; N]) -> ([V; K], [V; K]) {
    let mut amax = [zero(); K];
    let mut max = [zero(); K];
    for xi in x {
        for k in 0..K {
            let a = abs(xi[k]);
            let m = gt(a, amax[k]);
            amax[k] = sel(m, a, amax[k]);
            max[k] = sel(m, xi[k], max[k]);
        }
    }
    (amax, max)
}

/// Result of [`asym_search`] per lane. The levels are not kept: lane `j`'s are
/// `clamp(nearest_int(lev_iscale * (x - lev_min)), 0, nmax)`, or all zero where
/// `zero` is set, which recomputes exactly the levels the reference keeps.
#[derive(Clone, Copy)]
pub struct AsymFit<const K: usize> {
    pub scale: [V; K],
    /// The returned (negated) minimum, as `ScaleMin::min`.
    pub min: [V; K],
    pub lev_iscale: [V; K],
    pub lev_min: [V; K],
    pub zero: [V; K],
}

#[inline(always)]
unsafe fn err(d: V, abs_err: bool) -> V {
    if abs_err {
        abs(d)
    } else {
        mul(d, d)
    }
}

/// `clamp(nearest_int(iscale * xm), 0, nmax)` as a float.
#[inline(always)]
unsafe fn level_u(iscale: V, xm: V, nmax: I) -> V {
    tof(mini(maxi(nearest(mul(iscale, xm)), zeroi()), nmax))
}

/// `search::make_qkx2_quants` (`le_degenerate = false`) and `make_qkx3_quants` with
/// weights (`true`) in lanes. `abs_err` selects `ErrorNorm::Abs`.
#[inline(always)]
pub unsafe fn asym_search<const N: usize, const K: usize>(
    x: &[[V; K]; N],
    w: &[[V; K]; N],
    nmax: i32,
    steps: ScaleSteps,
    abs_err: bool,
    le_degenerate: bool,
) -> AsymFit<K> {
    let nm = seti(nmax);
    let nmaxf = nmax as f32;

    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = [zero(); K];
    for k in 0..K {
        sum_x[k] = mul(w[0][k], x[0][k]);
    }
    for i in 1..N {
        for k in 0..K {
            // minps/maxps return their second operand unless the first is strictly
            // smaller/larger: the reference's `if v < min { min = v }`
            min[k] = min_lt(x[i][k], min[k]);
            max[k] = max_gt(x[i][k], max[k]);
            sum_w[k] = add(sum_w[k], w[i][k]);
            sum_x[k] = add(sum_x[k], mul(w[i][k], x[i][k]));
        }
    }
    let mut zero_lanes = [zero(); K];
    let mut min0 = [zero(); K];
    let mut iscale = [zero(); K];
    let mut scale = [zero(); K];
    for k in 0..K {
        min[k] = andnot(gt(min[k], zero()), min[k]);
        min0[k] = min[k];
        zero_lanes[k] = if le_degenerate { le(max[k], min[k]) } else { eq(max[k], min[k]) };
        iscale[k] = div(set(nmaxf), sub(max[k], min[k]));
        scale[k] = div(set(1.0), iscale[k]);
    }
    let mut best_error = [zero(); K];
    for i in 0..N {
        for k in 0..K {
            let q = level_u(iscale[k], sub(x[i][k], min[k]), nm);
            let diff = sub(add(mul(scale[k], q), min[k]), x[i][k]);
            best_error[k] = add(best_error[k], mul(w[i][k], err(diff, abs_err)));
        }
    }
    let mut lev_iscale = iscale;
    let mut lev_min = min;
    if steps.nstep > 0 {
        let mut qs = [[zero(); K]; N];
        for is in 0..=steps.nstep {
            let num = set(steps.rmin + steps.rdelta * is as f32 + nmaxf);
            let mut sum_l = [zero(); K];
            let mut sum_l2 = [zero(); K];
            let mut sum_xl = [zero(); K];
            for k in 0..K {
                iscale[k] = div(num, sub(max[k], min[k]));
            }
            for i in 0..N {
                for k in 0..K {
                    let q = level_u(iscale[k], sub(x[i][k], min[k]), nm);
                    qs[i][k] = q;
                    let wq = mul(w[i][k], q);
                    sum_l[k] = add(sum_l[k], wq);
                    sum_l2[k] = add(sum_l2[k], mul(wq, q));
                    sum_xl[k] = add(sum_xl[k], mul(wq, x[i][k]));
                }
            }
            let mut this_scale = [zero(); K];
            let mut this_min = [zero(); K];
            let mut det_pos = [zero(); K];
            for k in 0..K {
                let det = sub(mul(sum_w[k], sum_l2[k]), mul(sum_l[k], sum_l[k]));
                det_pos[k] = gt(det, zero());
                let s = div(sub(mul(sum_w[k], sum_xl[k]), mul(sum_x[k], sum_l[k])), det);
                let m = div(sub(mul(sum_l2[k], sum_x[k]), mul(sum_l[k], sum_xl[k])), det);
                let pos = gt(m, zero());
                this_min[k] = andnot(pos, m);
                this_scale[k] = sel(pos, div(sum_xl[k], sum_l2[k]), s);
            }
            let mut cur_error = [zero(); K];
            for i in 0..N {
                for k in 0..K {
                    let diff = sub(add(mul(this_scale[k], qs[i][k]), this_min[k]), x[i][k]);
                    cur_error[k] = add(cur_error[k], mul(w[i][k], err(diff, abs_err)));
                }
            }
            for k in 0..K {
                let take = and(det_pos[k], lt(cur_error[k], best_error[k]));
                best_error[k] = sel(take, cur_error[k], best_error[k]);
                scale[k] = sel(take, this_scale[k], scale[k]);
                lev_iscale[k] = sel(take, iscale[k], lev_iscale[k]);
                lev_min[k] = sel(take, min[k], lev_min[k]);
                min[k] = sel(take, this_min[k], min[k]);
            }
        }
    }
    let mut out_min = [zero(); K];
    for k in 0..K {
        scale[k] = andnot(zero_lanes[k], scale[k]);
        out_min[k] = neg(sel(zero_lanes[k], min0[k], min[k]));
    }
    AsymFit { scale, min: out_min, lev_iscale, lev_min, zero: zero_lanes }
}

/// Result of [`sym_search`] per lane: lane `j`'s levels (before the `+ nmax` offset)
/// are `clamp(nearest_int(lev_iscale * x), -nmax, nmax - 1)`, or all zero (after the
/// offset) where `zero` is set.
#[derive(Clone, Copy)]
pub struct SymFit<const K: usize> {
    pub scale: [V; K],
    pub lev_iscale: [V; K],
    pub zero: [V; K],
}

/// `clamp(nearest_int(iscale * x), -nmax, nmax - 1)` as a float.
#[inline(always)]
unsafe fn level_s(iscale: V, x: V, lo: I, hi: I) -> V {
    tof(mini(maxi(nearest(mul(iscale, x)), lo), hi))
}

#[inline(always)]
unsafe fn sym_sums<const N: usize, const K: usize>(
    x: &[[V; K]; N],
    w: &[[V; K]; N],
    wx: &[[V; K]; N],
    iscale: &[V; K],
    lo: I,
    hi: I,
) -> ([V; K], [V; K]) {
    let mut sumlx = [zero(); K];
    let mut suml2 = [zero(); K];
    for i in 0..N {
        for k in 0..K {
            let q = level_s(iscale[k], x[i][k], lo, hi);
            sumlx[k] = add(sumlx[k], mul(wx[i][k], q));
            suml2[k] = add(suml2[k], mul(mul(w[i][k], q), q));
        }
    }
    (sumlx, suml2)
}

/// `common::make_qx_quants` (rmse_type 1) with explicit weights `w` in lanes; for
/// `RmseWeight::Square` without importance weights pass `w = x * x`.
#[inline(always)]
pub unsafe fn sym_search<const N: usize, const K: usize>(x: &[[V; K]; N], w: &[[V; K]; N], nmax: i32) -> SymFit<K> {
    let (lo, hi) = (seti(-nmax), seti(nmax - 1));
    let nmaxf = nmax as f32;
    let (amax, max) = signed_absmax(x);
    let mut wx = [[zero(); K]; N];
    for i in 0..N {
        for k in 0..K {
            wx[i][k] = mul(w[i][k], x[i][k]);
        }
    }
    let mut iscale = [zero(); K];
    for k in 0..K {
        iscale[k] = div(set(-nmaxf), max[k]);
    }
    let (sumlx, suml2) = sym_sums(x, w, &wx, &iscale, lo, hi);
    let mut scale = [zero(); K];
    let mut best = [zero(); K];
    for k in 0..K {
        let nz = ne(suml2[k], zero());
        scale[k] = and(nz, div(sumlx[k], suml2[k]));
        best[k] = mul(scale[k], sumlx[k]);
    }
    let mut lev_iscale = iscale;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let num = set(-(nmaxf + 0.1f32 * is as f32));
        for k in 0..K {
            iscale[k] = div(num, max[k]);
        }
        let (sumlx, suml2) = sym_sums(x, w, &wx, &iscale, lo, hi);
        for k in 0..K {
            let take = and(gt(suml2[k], zero()), gt(mul(sumlx[k], sumlx[k]), mul(best[k], suml2[k])));
            let s = div(sumlx[k], suml2[k]);
            scale[k] = sel(take, s, scale[k]);
            best[k] = sel(take, mul(s, sumlx[k]), best[k]);
            lev_iscale[k] = sel(take, iscale[k], lev_iscale[k]);
        }
    }
    let mut zero_lanes = [zero(); K];
    for k in 0..K {
        zero_lanes[k] = lt(amax[k], set(GROUP_MAX_EPS));
        scale[k] = andnot(zero_lanes[k], scale[k]);
    }
    SymFit { scale, lev_iscale, zero: zero_lanes }
}

/// Q3_K's `make_q3_quants` (weights x^2, then up to five passes moving single values
/// to a better level) in lanes. Returns the scales and the levels (offset by `nmax`,
/// all zero for an all-zero lane) as floats.
#[inline(always)]
pub unsafe fn q3_search<const N: usize, const K: usize>(x: &[[V; K]; N], nmax: i32) -> ([V; K], [[V; K]; N]) {
    let (lo, hi) = (seti(-nmax), seti(nmax - 1));
    let nmaxf = nmax as f32;
    let (amax, max) = signed_absmax(x);
    let mut w = [[zero(); K]; N];
    let mut wx = [[zero(); K]; N];
    let mut l = [[zero(); K]; N];
    let mut sumlx = [zero(); K];
    let mut suml2 = [zero(); K];
    let mut iscale = [zero(); K];
    for k in 0..K {
        iscale[k] = div(set(-nmaxf), max[k]);
    }
    for i in 0..N {
        for k in 0..K {
            let v = x[i][k];
            let q = level_s(iscale[k], v, lo, hi);
            l[i][k] = q;
            w[i][k] = mul(v, v);
            wx[i][k] = mul(w[i][k], v);
            sumlx[k] = add(sumlx[k], mul(wx[i][k], q));
            suml2[k] = add(suml2[k], mul(mul(w[i][k], q), q));
        }
    }
    // A pass without changes leaves a lane's state as it was, so a vector of lanes
    // stops at its first pass without changes (the reference stops each lane at its
    // own; further passes would not disturb those lanes).
    let mut active = [true; K];
    for _ in 0..5 {
        let mut changed = [zero(); K];
        for i in 0..N {
            for k in 0..K {
                if !active[k] {
                    continue;
                }
                let v = x[i][k];
                let cur = l[i][k];
                let slx = sub(sumlx[k], mul(wx[i][k], cur));
                let sl2 = sub(suml2[k], mul(mul(w[i][k], cur), cur));
                let new_l = tof(mini(maxi(nearest(div(mul(v, sl2), slx)), lo), hi));
                let slx2 = add(slx, mul(wx[i][k], new_l));
                let sl22 = add(sl2, mul(mul(w[i][k], new_l), new_l));
                let better = gt(mul(mul(slx2, slx2), suml2[k]), mul(mul(sumlx[k], sumlx[k]), sl22));
                let take = and(and(gt(slx, zero()), ne_num(new_l, cur)), and(gt(sl22, zero()), better));
                l[i][k] = sel(take, new_l, cur);
                sumlx[k] = sel(take, slx2, sumlx[k]);
                suml2[k] = sel(take, sl22, suml2[k]);
                changed[k] = or(changed[k], take);
            }
        }
        let mut any_active = false;
        for k in 0..K {
            active[k] = active[k] && any(changed[k]);
            any_active |= active[k];
        }
        if !any_active {
            break;
        }
    }
    let mut scale = [zero(); K];
    for k in 0..K {
        let z = lt(amax[k], set(GROUP_MAX_EPS));
        let s = and(gt(suml2[k], zero()), div(sumlx[k], suml2[k]));
        scale[k] = andnot(z, s);
        for li in l.iter_mut() {
            li[k] = andnot(z, add(li[k], set(nmaxf)));
        }
    }
    (scale, l)
}

/// Midpoints between neighbouring `KVALUES`. For every float `x` (checked over all
/// 2^32 patterns by a test), `iq4::best_index_int8(x)` is the number of midpoints
/// `m` with `!(x < m)`: the bisection's `x - lo < hi - x` decides exactly like
/// `x < m` because both differences are exact near a midpoint, ties go up, and NaN,
/// unordered with everything, lands on the last level as in the reference.
pub(crate) const IQ4_MIDS: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut k = 0;
    while k < 15 {
        m[k] = (KVALUES[k] as i32 + KVALUES[k + 1] as i32) as f32 * 0.5;
        k += 1;
    }
    m
};

#[inline(always)]
unsafe fn iq4_sums<const N: usize, const K: usize>(x: &[[V; K]; N], w: &[[V; K]; N], id: &[V; K]) -> ([V; K], [V; K]) {
    let mut sumqx = [zero(); K];
    let mut sumq2 = [zero(); K];
    for i in 0..N {
        for k in 0..K {
            let q = iq4_value(iq4_index(mul(id[k], x[i][k])));
            let wq = mul(w[i][k], q);
            sumqx[k] = add(sumqx[k], mul(wq, x[i][k]));
            sumq2[k] = add(sumq2[k], mul(wq, q));
        }
    }
    (sumqx, sumq2)
}

/// The per-sub-block search of `iq4::quantize_impl` (with `ntry > 0`) in lanes:
/// returns each lane's scale `d` (0 for an all-zero lane). `w` are the weights.
#[inline(always)]
pub unsafe fn iq4_search<const N: usize, const K: usize>(x: &[[V; K]; N], w: &[[V; K]; N], ntry: i32) -> [V; K] {
    let (amax, max) = signed_absmax(x);
    let lowest = KVALUES[0] as f32;
    let mut id = [zero(); K];
    for k in 0..K {
        let d = div(neg(max[k]), set(lowest));
        id[k] = div(set(1.0), d);
    }
    let (sumqx, sumq2) = iq4_sums(x, w, &id);
    let mut d = [zero(); K];
    let mut best = [zero(); K];
    for k in 0..K {
        d[k] = and(gt(sumq2[k], zero()), div(sumqx[k], sumq2[k]));
        best[k] = mul(d[k], sumqx[k]);
    }
    for itry in -ntry..=ntry {
        let num = set((itry + KVALUES[0] as i32) as f32);
        for k in 0..K {
            id[k] = div(num, max[k]);
        }
        let (sumqx, sumq2) = iq4_sums(x, w, &id);
        for k in 0..K {
            let take = and(gt(sumq2[k], zero()), gt(mul(sumqx[k], sumqx[k]), mul(best[k], sumq2[k])));
            let s = div(sumqx[k], sumq2[k]);
            d[k] = sel(take, s, d[k]);
            best[k] = sel(take, mul(s, sumqx[k]), best[k]);
        }
    }
    for k in 0..K {
        d[k] = andnot(lt(amax[k], set(GROUP_MAX_EPS)), d[k]);
    }
    d
}
