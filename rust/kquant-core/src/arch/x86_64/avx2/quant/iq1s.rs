//! The IQ1_S sub-block search with eight lanes.
//!
//! ggml sorts the 32 values, then scores all 561 splits of the sorted order into the
//! levels -1, 0, 1 for both shift signs, one split after another, keeping the first
//! best. Here:
//!
//! - the sort is a rank count (stable: equal values keep their index order, as the
//!   reference's stable sort does for NaN-free input; other input goes to the reference);
//! - eight second boundaries are scored at once. Each lane computes the reference's
//!   float expressions in its order, so its `sumqx`, `sumq2` are the reference's bits.
//!   A lane can change the running best only if it passes the reference's test against
//!   the current best; when no lane of a vector does, the reference would have skipped
//!   all of them too. Otherwise the lanes are replayed one by one in the reference's
//!   order (split, then shift +, then shift -), with the best updated as they go;
//! - the neighbour search of an off-grid group scores eight candidates per step
//!   (`iq2::best_at`, the same per-coordinate terms summed in coordinate order).

use std::arch::x86_64::*;

use super::iq2::best_at;
use super::v8::*;
use crate::arch::iq2_soa::Soa;
use crate::reference::iq1::{self, X_M, X_P};
use crate::reference::iq1_s::{self, SubBlock};
use crate::reference::lattice::Lookup;

/// Drop-in for `iq1_s::quantize_sub_block`.
#[inline(always)]
pub unsafe fn sub_block(soa: &Soa, xb: &[f32], weight: &[f32]) -> SubBlock {
    let skipped = SubBlock { index: [0; 4], scale: 0.0, shift: 1, written: false };
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        max = if max > v.abs() { max } else { v.abs() };
    }
    if max < 1e-12 {
        return skipped;
    }
    let xs: [V; 4] = std::array::from_fn(|c| loadx(xb, 8 * c));
    let mut finite = set(0.0);
    for &v in &xs {
        finite = add(finite, sub(v, v)); // NaN from any NaN or infinity
    }
    if any(ne(finite, finite)) {
        // the reference's comparison sort is not a total order with NaN; keep its result
        return iq1_s::quantize_sub_block(xb, weight);
    }
    let idx = sorted_order(&xs);
    let mut sumx = [0.0f32; 40];
    let mut sumw = [0.0f32; 40];
    for j in 0..32 {
        let i = idx[j];
        sumx[j + 1] = sumx[j] + weight[i] * xb[i];
        sumw[j + 1] = sumw[j] + weight[i];
    }
    let Some((b1, b2, shift, scale)) = boundary_search(&sumx, &sumw) else {
        return skipped;
    };
    let lat = iq1::lattice();
    iq1_s::finish_sub_block(xb, weight, &idx, b1, b2, shift, scale, |l, x8, w8, s, xx| {
        let mut u = 0u16;
        for (j, &v) in l.iter().enumerate() {
            u |= (v as u16) << (2 * j);
        }
        match lat.lookup(u) {
            Lookup::OnGrid(g) => (g as usize, true),
            Lookup::Near(_) => {
                let list = soa.list(u).expect("an off-grid point with levels 0..=2 has neighbours");
                let sq = [s * xx[0], s * xx[1], s * xx[2]];
                let code = list.codes[best_at(&list, x8, w8, sq)];
                match lat.lookup(code) {
                    Lookup::OnGrid(g) => (g as usize, false),
                    Lookup::Near(_) => unreachable!("neighbour lists hold grid points"),
                }
            }
        }
    })
}

/// Indices of the 32 values in ascending order, equal values in index order: value
/// `i` goes to the number of values below it plus the equal ones before it.
#[inline(always)]
unsafe fn sorted_order(xs: &[V; 4]) -> [usize; 32] {
    let x: [[f32; 8]; 4] = std::array::from_fn(|c| lanes(xs[c]));
    let mut rank = [_mm256_setzero_si256(); 4];
    let iota = [
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15),
        _mm256_setr_epi32(16, 17, 18, 19, 20, 21, 22, 23),
        _mm256_setr_epi32(24, 25, 26, 27, 28, 29, 30, 31),
    ];
    for j in 0..32 {
        let xj = set(x[j / 8][j % 8]);
        let jv = _mm256_set1_epi32(j as i32);
        for c in 0..4 {
            // lanes i > j count x[j] <= x[i], lanes i <= j count x[j] < x[i]
            let after = _mm256_castsi256_ps(_mm256_cmpgt_epi32(iota[c], jv));
            let m = sel(after, le(xj, xs[c]), lt(xj, xs[c]));
            rank[c] = _mm256_sub_epi32(rank[c], _mm256_castps_si256(m));
        }
    }
    let mut idx = [0usize; 32];
    for c in 0..4 {
        let r: [i32; 8] = std::mem::transmute(rank[c]);
        for k in 0..8 {
            idx[r[k] as usize] = 8 * c + k;
        }
    }
    idx
}

/// `iq1_s::boundary_search` over prefix sums padded to 40 entries: the winning split
/// (i1, i2, shift, scale), None when no split scores.
#[inline(always)]
unsafe fn boundary_search(sumx: &[f32; 40], sumw: &[f32; 40]) -> Option<(usize, usize, i8, f32)> {
    // the third terms depend on i2 only
    let mut cxp = [0.0f32; 40];
    let mut cwp = [0.0f32; 40];
    let mut cxm = [0.0f32; 40];
    let mut cwm = [0.0f32; 40];
    for i2 in 0..=32 {
        let (cx, cw) = (sumx[32] - sumx[i2], sumw[32] - sumw[i2]);
        cxp[i2] = cx * X_P[2];
        cwp[i2] = cw * X_P[2] * X_P[2];
        cxm[i2] = cx * X_M[2];
        cwm[i2] = cw * X_M[2] * X_M[2];
    }
    let (p1, m1) = (set(X_P[1]), set(X_M[1]));
    let mut best_score = -f32::MAX;
    let mut scale = 0.0f32;
    let mut win: Option<(usize, usize, i8)> = None;
    for i1 in 0..=32 {
        let (ax, aw) = (sumx[i1] - sumx[0], sumw[i1] - sumw[0]);
        let apx = set(ax * X_P[0]);
        let apw = set(aw * X_P[0] * X_P[0]);
        let amx = set(ax * X_M[0]);
        let amw = set(aw * X_M[0] * X_M[0]);
        let (s1x, s1w) = (set(sumx[i1]), set(sumw[i1]));
        let mut i2 = i1;
        while i2 <= 32 {
            let bx = sub(loadx(sumx, i2), s1x);
            let bw = sub(loadx(sumw, i2), s1w);
            let qxp = add(add(apx, mul(bx, p1)), loadx(&cxp, i2));
            let q2p = add(add(apw, mul(mul(bw, p1), p1)), loadx(&cwp, i2));
            let qxm = add(add(amx, mul(bx, m1)), loadx(&cxm, i2));
            let q2m = add(add(amw, mul(mul(bw, m1), m1)), loadx(&cwm, i2));
            let bs = set(best_score);
            let z = zero();
            let okp = and(gt(q2p, z), gt(mul(qxp, qxp), mul(bs, q2p)));
            let okm = and(gt(q2m, z), gt(mul(qxm, qxm), mul(bs, q2m)));
            let n = (33 - i2).min(8);
            let bits = mask_bits(or(okp, okm)) & ((1u32 << n) - 1);
            if bits != 0 {
                let (xp, wp, xm, wm) = (lanes(qxp), lanes(q2p), lanes(qxm), lanes(q2m));
                for j in bits.trailing_zeros() as usize..n {
                    for (sumqx, sumq2, s) in [(xp[j], wp[j], 1i8), (xm[j], wm[j], -1i8)] {
                        if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                            scale = sumqx / sumq2;
                            best_score = scale * sumqx;
                            win = Some((i1, i2 + j, s));
                        }
                    }
                }
            }
            i2 += 8;
        }
    }
    win.map(|(b1, b2, s)| (b1, b2, s, scale))
}
