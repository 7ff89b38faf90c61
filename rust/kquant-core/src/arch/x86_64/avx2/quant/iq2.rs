//! The candidate loops of the IQ2 quantizers with one candidate scale per lane.
//!
//! ggml tries 19 (IQ2_XS, IQ2_S) or 13 (IQ2_XXS) inverse scales per group; for each it
//! rounds the group's values to levels 0..=2, moves every 8-value point that is off
//! the grid to its best listed neighbour, and scores the fit by two sequential sums
//! over the group. Candidates are independent until the scalar pick of the winner, so
//! here lane `c` of each vector is candidate `c`: the rounding and the sums run for all
//! candidates at once, each lane repeating the reference's operations in its order.
//!
//! Levels take only three values, so every per-value term of a sum is one of three
//! numbers computed once per group in the reference's order (`(w*x)*q`, `(w*q)*q`)
//! and picked per lane by level; the sums add the same numbers in the same order. The
//! neighbour search does the same with eight neighbours per lane: the weighted
//! squared error of each coordinate at each level is computed once per search
//! (`(w*diff)*diff`, `diff = s*q - x`) and each lane adds its eight picks in coordinate
//! order, then the first strict minimum wins as in `iq2_find_best_neighbour`.

use super::v8::*;
use super::v8_iq2::*;
use crate::arch::iq2_soa::{List, Soa};
use crate::reference::common::{nearest_int, GROUP_MAX_EPS};
use crate::reference::iq2::{self, cand_id16, Best16, KMAXQ, NCAND16};
use crate::reference::iq2_xxs::{cand_id, NCAND};
use crate::reference::lattice::{unpack, Lattice, Lookup};
use crate::reference::search::qp_finish;

/// The grid point (packed levels) `iq2_find_best_neighbour` picks from `list` for
/// the 8 values `xval` with weights `w` at scale `scale`.
#[inline(always)]
unsafe fn best_neighbour(list: &List, xval: &[f32], w: &[f32], scale: f32) -> u16 {
    let sq = [scale * 1.0, scale * 3.0, scale * 5.0];
    list.codes[best_at(list, xval, w, sq)]
}

/// Position in `list` of the first candidate with the strictly least
/// `sum_i w[i] * (sq[level_i] - xval[i])^2` (summed in coordinate order, each term
/// `(w * diff) * diff`), 0 when no error is below `f32::MAX`.
#[inline(always)]
pub(super) unsafe fn best_at(list: &List, xval: &[f32], w: &[f32], sq: [f32; 3]) -> usize {
    // the error of each coordinate (lane) at each level, as the reference computes it
    let (x8, w8) = (loadx(xval, 0), loadx(w, 0));
    let mut t = [zero(); 3];
    for (l, tl) in t.iter_mut().enumerate() {
        let diff = sub(set(sq[l]), x8);
        *tl = mul(mul(w8, diff), diff);
    }
    let tabs = level_tables(t);
    // the best error so far in every lane, so the test and the resolution of a chunk
    // need no scalar round trip
    let mut best = set(f32::MAX);
    let mut at = 0;
    for c in 0..list.codes.len() / 8 {
        let mut d = zero();
        for i in 0..8 {
            d = add(d, pick8(tabs[i % 4], load_u8x8(list.levels, 64 * c + 8 * i)));
        }
        // padding lanes repeat the first candidate and cannot beat it
        if any(lt(d, best)) {
            if any(ne(d, d)) {
                let d = lanes(d);
                let mut b = lanes(best)[0];
                for j in 0..8 {
                    if d[j] < b {
                        b = d[j];
                        at = 8 * c + j;
                    }
                }
                best = set(b);
            } else {
                // without NaN the lane-order scan ends on the first lane holding the
                // least value (ties keep the earlier lane), and that value beats `best`
                best = hmin_all(d);
                at = 8 * c + mask_bits(eq(d, best)).trailing_zeros() as usize;
            }
        }
    }
    at
}

/// `iq2::round_point` with the neighbour search above.
#[inline(always)]
pub unsafe fn round_point(
    lat: &Lattice,
    soa: &Soa,
    xval: &[f32],
    waux: &[f32],
    id: f32,
    scale: f32,
    l: &mut [u8],
) -> bool {
    let mut u = 0u16;
    for i in 0..8 {
        let v = nearest_int(0.5 * (id * xval[i] - 1.0)).clamp(0, KMAXQ - 1);
        l[i] = v as u8;
        u |= (v as u16) << (2 * i);
    }
    match soa.list(u) {
        Some(list) => {
            l[..8].copy_from_slice(&unpack(best_neighbour(&list, xval, waux, scale)));
            false
        }
        // on the grid, or (never for levels below 3) off it without candidates
        None => matches!(lat.lookup(u), Lookup::OnGrid(_)) || iq2::round_point(lat, xval, waux, id, scale, l),
    }
}

/// Per candidate (lane): the packed points of the group after the grid step, whether
/// each was on the grid, and the sums `sum w*x*q`, `sum w*q*q`.
struct Cands<const P: usize> {
    codes: [[u16; P]; 24],
    on: [[bool; P]; 24],
    sumqx: [f32; 24],
    sumq2: [f32; 24],
}

/// The candidate loop body for `P` points of 8 values and `8 * K` candidate lanes with
/// inverse scales `ids` (the first `nc` are real).
#[inline(always)]
unsafe fn candidates<const P: usize, const K: usize>(
    soa: &Soa,
    xval: &[f32],
    weight: &[f32],
    waux: &[f32],
    ids: &[f32; 24],
    nc: usize,
) -> Cands<P> {
    let mut idv = [zero(); K];
    for k in 0..K {
        idv[k] = loadx(ids, 8 * k);
    }
    // the searches' scales `1.0 / id`, divided once per group rather than per search
    let mut scales = [0.0f32; 24];
    for k in 0..K {
        scales[8 * k..8 * k + 8].copy_from_slice(&lanes(div(set(1.0), idv[k])));
    }
    let mut out = Cands { codes: [[0; P]; 24], on: [[true; P]; 24], sumqx: [0.0; 24], sumq2: [0.0; 24] };
    for p in 0..P {
        // packed levels of point p for every candidate: coordinate i in bits 2i..2i+2
        let mut u = [zeroi(); K];
        for i in (0..8).rev() {
            let xi = set(xval[8 * p + i]);
            for k in 0..K {
                let l = clampi(nearest(mul(set(0.5), sub(mul(idv[k], xi), set(1.0)))), 0, KMAXQ - 1);
                u[k] = ori(shli::<2>(u[k]), l);
            }
        }
        for k in 0..K {
            let lanes_u = lanesi(u[k]);
            for j in 0..8 {
                let c = 8 * k + j;
                if c >= nc {
                    break;
                }
                let code = lanes_u[j] as u16;
                out.codes[c][p] = match soa.list(code) {
                    None => code,
                    Some(list) => {
                        out.on[c][p] = false;
                        best_neighbour(&list, &xval[8 * p..], &waux[8 * p..], scales[c])
                    }
                };
            }
        }
    }
    let mut sx = [zero(); K];
    let mut s2 = [zero(); K];
    for p in 0..P {
        let mut cur = [zeroi(); K];
        for k in 0..K {
            let mut a = [0i32; 8];
            for j in 0..8 {
                a[j] = out.codes[8 * k + j][p] as i32;
            }
            cur[k] = from_i32s(a);
        }
        for i in 0..8 {
            let w = weight[8 * p + i];
            let wx = w * xval[8 * p + i];
            let tx = table4([wx, wx * 3.0, wx * 5.0, 0.0]);
            let t2 = table4([w, w * 3.0 * 3.0, w * 5.0 * 5.0, 0.0]);
            for k in 0..K {
                let l = andi(cur[k], seti(3));
                cur[k] = shri::<2>(cur[k]);
                sx[k] = add(sx[k], pick4(tx, l));
                s2[k] = add(s2[k], pick4(t2, l));
            }
        }
    }
    for k in 0..K {
        out.sumqx[8 * k..8 * k + 8].copy_from_slice(&lanes(sx[k]));
        out.sumq2[8 * k..8 * k + 8].copy_from_slice(&lanes(s2[k]));
    }
    out
}

fn levels_of<const P: usize, const N: usize>(codes: &[u16; P]) -> [u8; N] {
    let mut l = [0u8; N];
    for p in 0..P {
        l[8 * p..8 * p + 8].copy_from_slice(&unpack(codes[p]));
    }
    l
}

/// `reference::iq2::candidates16`, all 19 candidates at once.
#[inline(always)]
pub unsafe fn candidates16(soa: &Soa, xval: &[f32; 16], weight: &[f32; 16], waux: &[f32; 16], max: f32) -> Best16 {
    let mut ids = [0.0f32; 24];
    for (c, id) in ids.iter_mut().enumerate() {
        *id = cand_id16(c.min(NCAND16 - 1), max);
    }
    let r = candidates::<2, 3>(soa, xval, weight, waux, &ids, NCAND16);
    let mut best = 0.0f32;
    let mut out = Best16 { scale: max / (2 * KMAXQ - 1) as f32, l: [0; 16], on_grid: [true; 2] };
    let mut win = None;
    for c in 0..NCAND16 {
        let (sumqx, sumq2) = (r.sumqx[c], r.sumq2[c]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            out.scale = sumqx / sumq2;
            best = out.scale * sumqx;
            win = Some(c);
        }
    }
    if let Some(c) = win {
        out.l = levels_of::<2, 16>(&r.codes[c]);
        out.on_grid = r.on[c];
    }
    out
}

/// `reference::iq2_xxs::candidates`, all 13 candidates at once.
#[inline(always)]
pub unsafe fn candidates32(
    soa: &Soa,
    xval: &[f32; 32],
    weight: &[f32; 32],
    waux: &[f32; 32],
    eff_max: f32,
) -> Option<(f32, [u8; 32])> {
    let mut ids = [0.0f32; 24];
    for (c, id) in ids.iter_mut().enumerate() {
        *id = cand_id(c.min(NCAND - 1), eff_max);
    }
    let r = candidates::<4, 2>(soa, xval, weight, waux, &ids, NCAND);
    let mut best = 0.0f32;
    let mut win = None;
    for c in 0..NCAND {
        let (sumqx, sumq2) = (r.sumqx[c], r.sumq2[c]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            let scale = sumqx / sumq2;
            best = scale * sumqx;
            win = Some((scale, c));
        }
    }
    win.map(|(scale, c)| (scale, levels_of::<4, 32>(&r.codes[c])))
}

/// `make_qp_quants(32, 4, x, l, w)` with its eight trial scales in lanes.
#[inline(always)]
pub unsafe fn make_qp_quants32(x: &[f32; 32], l: &mut [u8; 32], w: &[f32; 32]) -> f32 {
    const NMAX: i32 = KMAXQ + 1;
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        *l = [0; 32];
        return 0.0;
    }
    let nmaxf = NMAX as f32;
    let mut iscale = nmaxf / max;
    for i in 0..32 {
        // the unclamped level wraps into the byte, as in ggml
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..32 {
        let diff = x[i] - scale * (l[i] as f32);
        best_mse += w[i] * diff * diff;
    }
    let mut isc = [0.0f32; 8];
    for (j, is) in [-4i32, -3, -2, -1, 1, 2, 3, 4].into_iter().enumerate() {
        isc[j] = (0.1f32 * is as f32 + nmaxf) / max;
    }
    let iv = loadx(&isc, 0);
    let sv = div(set(1.0), iv);
    let mut mse = zero();
    for i in 0..32 {
        let xi = set(x[i]);
        let q = mini(nearest(mul(iv, xi)), seti(NMAX));
        let diff = sub(xi, mul(sv, tof(q)));
        mse = add(mse, mul(mul(set(w[i]), diff), diff));
    }
    let m = lanes(mse);
    for j in 0..8 {
        if m[j] < best_mse {
            best_mse = m[j];
            iscale = isc[j];
        }
    }
    qp_finish(NMAX, x, l, w, iscale)
}
