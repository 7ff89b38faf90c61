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

use std::arch::x86_64::*;

use crate::reference::common::GROUP_MAX_EPS;
use crate::reference::iq4::KVALUES;
use crate::reference::search::ScaleSteps;

pub(super) type V = __m256;
pub(super) type I = __m256i;

#[inline(always)]
pub unsafe fn set(v: f32) -> V {
    _mm256_set1_ps(v)
}
#[inline(always)]
pub unsafe fn seti(v: i32) -> I {
    _mm256_set1_epi32(v)
}
#[inline(always)]
pub unsafe fn zero() -> V {
    _mm256_setzero_ps()
}
#[inline(always)]
pub unsafe fn add(a: V, b: V) -> V {
    _mm256_add_ps(a, b)
}
#[inline(always)]
pub unsafe fn sub(a: V, b: V) -> V {
    _mm256_sub_ps(a, b)
}
#[inline(always)]
pub unsafe fn mul(a: V, b: V) -> V {
    _mm256_mul_ps(a, b)
}
#[inline(always)]
pub unsafe fn div(a: V, b: V) -> V {
    _mm256_div_ps(a, b)
}
/// `a > b`, false when either is NaN (Rust's `>`).
#[inline(always)]
pub unsafe fn gt(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
}
#[inline(always)]
pub unsafe fn lt(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
}
#[inline(always)]
pub unsafe fn and(a: V, b: V) -> V {
    _mm256_and_ps(a, b)
}
#[inline(always)]
pub unsafe fn or(a: V, b: V) -> V {
    _mm256_or_ps(a, b)
}
/// `if mask { yes } else { no }` per lane (the mask is all ones or all zeros).
#[inline(always)]
pub unsafe fn sel(mask: V, yes: V, no: V) -> V {
    _mm256_blendv_ps(no, yes, mask)
}
#[inline(always)]
pub unsafe fn abs(a: V) -> V {
    _mm256_andnot_ps(set(-0.0), a)
}
/// Rust's unary minus: flips the sign bit, NaN included.
#[inline(always)]
pub unsafe fn neg(a: V) -> V {
    _mm256_xor_ps(a, set(-0.0))
}
#[inline(always)]
pub unsafe fn any(mask: V) -> bool {
    _mm256_movemask_ps(mask) != 0
}

/// `common::nearest_int` in eight lanes, bit for bit (the same magic-number add; the
/// low mantissa bits are the result for every input, NaN and overflow included).
#[inline(always)]
pub unsafe fn nearest(v: V) -> I {
    let r = _mm256_castps_si256(add(v, set(12_582_912.0)));
    _mm256_sub_epi32(_mm256_and_si256(r, seti(0x007f_ffff)), seti(0x0040_0000))
}

#[inline(always)]
pub unsafe fn clampi(q: I, lo: i32, hi: i32) -> I {
    _mm256_min_epi32(_mm256_max_epi32(q, seti(lo)), seti(hi))
}

#[inline(always)]
pub unsafe fn tof(q: I) -> V {
    _mm256_cvtepi32_ps(q)
}

/// Rows `r[j]` (8 floats each) to columns: `out[i]` lane `j` is `r[j]` lane `i`.
#[inline(always)]
pub unsafe fn transpose8(r: [V; 8]) -> [V; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// `K * 8` groups of `N` values, group `g` starting at `x[g * stride]`, transposed:
/// `out[i][k]` lane `j` is value `i` of group `8k + j`.
#[inline(always)]
pub unsafe fn load_groups<const N: usize, const K: usize>(x: &[f32], stride: usize) -> [[V; K]; N] {
    assert!(N % 8 == 0 && stride >= N && x.len() >= (8 * K - 1) * stride + N);
    let mut out = [[zero(); K]; N];
    for k in 0..K {
        for c in 0..N / 8 {
            let mut rows = [zero(); 8];
            for (j, r) in rows.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(x.as_ptr().add((8 * k + j) * stride + 8 * c));
            }
            let cols = transpose8(rows);
            for (e, v) in cols.into_iter().enumerate() {
                out[8 * c + e][k] = v;
            }
        }
    }
    out
}

/// Lanes of a vector as an array.
#[inline(always)]
pub unsafe fn lanes(v: V) -> [f32; 8] {
    std::mem::transmute(v)
}

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
    tof(_mm256_min_epi32(_mm256_max_epi32(nearest(mul(iscale, xm)), _mm256_setzero_si256()), nmax))
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
            min[k] = _mm256_min_ps(x[i][k], min[k]);
            max[k] = _mm256_max_ps(x[i][k], max[k]);
            sum_w[k] = add(sum_w[k], w[i][k]);
            sum_x[k] = add(sum_x[k], mul(w[i][k], x[i][k]));
        }
    }
    let mut zero_lanes = [zero(); K];
    let mut min0 = [zero(); K];
    let mut iscale = [zero(); K];
    let mut scale = [zero(); K];
    for k in 0..K {
        min[k] = _mm256_andnot_ps(gt(min[k], zero()), min[k]);
        min0[k] = min[k];
        zero_lanes[k] = if le_degenerate {
            _mm256_cmp_ps::<_CMP_LE_OQ>(max[k], min[k])
        } else {
            _mm256_cmp_ps::<_CMP_EQ_OQ>(max[k], min[k])
        };
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
                this_min[k] = _mm256_andnot_ps(pos, m);
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
        scale[k] = _mm256_andnot_ps(zero_lanes[k], scale[k]);
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
    tof(_mm256_min_epi32(_mm256_max_epi32(nearest(mul(iscale, x)), lo), hi))
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
        let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2[k], zero());
        scale[k] = _mm256_and_ps(nz, div(sumlx[k], suml2[k]));
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
        scale[k] = _mm256_andnot_ps(zero_lanes[k], scale[k]);
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
                let new_l = tof(_mm256_min_epi32(_mm256_max_epi32(nearest(div(mul(v, sl2), slx)), lo), hi));
                let slx2 = add(slx, mul(wx[i][k], new_l));
                let sl22 = add(sl2, mul(mul(w[i][k], new_l), new_l));
                let better = gt(mul(mul(slx2, slx2), suml2[k]), mul(mul(sumlx[k], sumlx[k]), sl22));
                let take =
                    and(and(gt(slx, zero()), _mm256_cmp_ps::<_CMP_NEQ_OQ>(new_l, cur)), and(gt(sl22, zero()), better));
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
        let s = _mm256_and_ps(gt(suml2[k], zero()), div(sumlx[k], suml2[k]));
        scale[k] = _mm256_andnot_ps(z, s);
        for li in l.iter_mut() {
            li[k] = _mm256_andnot_ps(z, add(li[k], set(nmaxf)));
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

/// `best_index_int8(&KVALUES, v)` per lane.
#[inline(always)]
pub unsafe fn iq4_index(v: V) -> I {
    let mut c = _mm256_setzero_si256();
    for m in IQ4_MIDS {
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_NLT_UQ>(v, set(m))));
    }
    c
}

/// `KVALUES[idx]` as floats.
#[inline(always)]
pub unsafe fn iq4_value(idx: I) -> V {
    let lo = _mm256_setr_ps(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0);
    let hi = _mm256_setr_ps(1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
    let a = _mm256_permutevar8x32_ps(lo, idx);
    let b = _mm256_permutevar8x32_ps(hi, idx);
    sel(_mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)), b, a)
}

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
        d[k] = _mm256_and_ps(gt(sumq2[k], zero()), div(sumqx[k], sumq2[k]));
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
        d[k] = _mm256_andnot_ps(lt(amax[k], set(GROUP_MAX_EPS)), d[k]);
    }
    d
}

/// Four vectors of i32 in 0..=255 to 32 bytes in order.
#[inline(always)]
pub unsafe fn pack_u8(a: I, b: I, c: I, d: I) -> I {
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[inline(always)]
pub unsafe fn loadx(x: &[f32], at: usize) -> V {
    debug_assert!(at + 8 <= x.len());
    _mm256_loadu_ps(x.as_ptr().add(at))
}
