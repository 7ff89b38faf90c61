//! IQ3_XXS / IQ3_S scale search with eight trials side by side.
//!
//! ggml tries 31 (IQ3_XXS) or 19 (IQ3_S) scales per sub-block, one after another. The
//! trials are independent until the final choice, so here eight run at once, one per
//! lane: rounding, the neighbour search (lanes that round a group to the same off-grid
//! point share one pass over its candidates) and the two weighted sums. Each lane does
//! exactly the reference's float operations in the reference's order, and the choice
//! between trials is then made in trial order, so the bytes are the reference's.
//!
//! Plain Rust over fixed-size arrays: the compiler vectorizes the lane loops, for AVX2
//! when called from a `#[target_feature(enable = "avx2")]` wrapper, for NEON natively.

use crate::reference::common::nearest_int;
use crate::reference::iq3::{self, Lattice, Prepared, Search, SubBlock, Variant};

const T: usize = 8;

/// Drop-in for `iq3::quantize_sub_block`.
#[inline(always)]
pub(crate) fn quantize_sub_block(v: Variant, lat: &Lattice, xb: &[f32], weight: &[f32]) -> SubBlock {
    match iq3::prepare(v, xb, weight) {
        Err(signs) => SubBlock { grid: [0; 8], signs, scale: 0.0, written: false },
        Ok(p) => {
            let s = search(v, lat, &p, weight);
            iq3::finish(v, lat, &p, weight, s)
        }
    }
}

#[inline(always)]
fn search(v: Variant, lat: &Lattice, p: &Prepared, weight: &[f32]) -> Search {
    let xval = &p.xval;
    let waux = &p.waux;
    let mut out = Search { l: [0; 32], on_grid: [v == Variant::Xxs; 8], scale: p.max / 15.0 };
    let mut best = 0.0f32;
    let n = iq3::ntry(v);
    let ntrials = (2 * n + 1) as usize;
    let mut wx = [0.0f32; 32];
    for i in 0..32 {
        wx[i] = weight[i] * xval[i];
    }
    let mut start = 0;
    while start < ntrials {
        let valid = (ntrials - start).min(T);
        let mut id = [0.0f32; T];
        let mut ts = [0.0f32; T];
        for t in 0..T {
            // lanes past the last trial repeat it and are ignored
            let is = -n + (start + t.min(valid - 1)) as i32;
            id[t] = (15.0 + is as f32 * 0.2f32) / p.max;
            ts[t] = 1.0 / id[t];
        }
        // levels, value-major: laux[i][t]
        let mut laux = [[0i32; T]; 32];
        for i in 0..32 {
            let xv = xval[i];
            for t in 0..T {
                laux[i][t] = nearest_int(0.5 * (id[t] * xv - 1.0)).clamp(0, 7);
            }
        }
        let mut on_grid = [[true; T]; 8];
        for k in 0..8 {
            let mut u = [0usize; T];
            for t in 0..T {
                u[t] = (laux[4 * k][t]
                    | (laux[4 * k + 1][t] << 3)
                    | (laux[4 * k + 2][t] << 6)
                    | (laux[4 * k + 3][t] << 9)) as usize;
            }
            let mut done = [false; T];
            for t in 0..valid {
                if done[t] {
                    continue;
                }
                let key = u[t];
                let cands = match lat.lookup(key) {
                    Ok(_) => {
                        for t2 in t..valid {
                            done[t2] |= u[t2] == key;
                        }
                        continue;
                    }
                    Err(c) => c,
                };
                let bi = best_neighbours(lat, cands, &xval[4 * k..4 * k + 4], &waux[4 * k..4 * k + 4], &ts);
                for t2 in t..valid {
                    if u[t2] == key {
                        done[t2] = true;
                        on_grid[k][t2] = false;
                        let l = &lat.l[bi[t2] as usize];
                        for i in 0..4 {
                            laux[4 * k + i][t2] = l[i] as i32;
                        }
                    }
                }
            }
        }
        let mut sumqx = [0.0f32; T];
        let mut sumq2 = [0.0f32; T];
        for i in 0..32 {
            let w = weight[i];
            let a = wx[i];
            for t in 0..T {
                let q = (2 * laux[i][t] + 1) as f32;
                sumqx[t] += a * q;
                sumq2[t] += w * q * q;
            }
        }
        for t in 0..valid {
            if sumq2[t] > 0.0 && sumqx[t] * sumqx[t] > best * sumq2[t] {
                out.scale = sumqx[t] / sumq2[t];
                best = out.scale * sumqx[t];
                for i in 0..32 {
                    out.l[i] = laux[i][t] as i8;
                }
                for k in 0..8 {
                    out.on_grid[k] = on_grid[k][t];
                }
            }
        }
        start += T;
    }
    out
}

/// `Lattice::best_neighbour` for eight scales at once: per lane the first candidate
/// with the strictly least weighted error.
#[inline(always)]
fn best_neighbours(lat: &Lattice, cands: &[u16], xv: &[f32], w: &[f32], ts: &[f32; T]) -> [u16; T] {
    let mut bd = [f32::MAX; T];
    let mut bi = [cands[0]; T];
    for &c in cands {
        let q = &lat.q[c as usize];
        let mut d2 = [0.0f32; T];
        for i in 0..4 {
            for t in 0..T {
                let diff = ts[t] * q[i] - xv[i];
                d2[t] += w[i] * diff * diff;
            }
        }
        for t in 0..T {
            let better = d2[t] < bd[t];
            bd[t] = if better { d2[t] } else { bd[t] };
            bi[t] = if better { c } else { bi[t] };
        }
    }
    bi
}
