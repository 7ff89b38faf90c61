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
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for c in 0..4 {
        // values of earlier chunks count when <=, of later chunks when <
        for j in 0..8 * c {
            let m = le(set(x[j / 8][j % 8]), xs[c]);
            rank[c] = _mm256_sub_epi32(rank[c], _mm256_castps_si256(m));
        }
        for j in 8 * (c + 1)..32 {
            let m = lt(set(x[j / 8][j % 8]), xs[c]);
            rank[c] = _mm256_sub_epi32(rank[c], _mm256_castps_si256(m));
        }
        // within the chunk: lanes after k count value k when <=, lanes up to k when <
        for k in 0..8 {
            let xk = set(x[c][k]);
            let after = _mm256_castsi256_ps(_mm256_cmpgt_epi32(iota, _mm256_set1_epi32(k as i32)));
            let m = sel(after, le(xk, xs[c]), lt(xk, xs[c]));
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

/// The split scores' per-split terms that depend on one boundary only.
struct Terms<'a> {
    sumx: &'a [f32; 40],
    sumw: &'a [f32; 40],
    cxp: [f32; 40],
    cwp: [f32; 40],
    cxm: [f32; 40],
    cwm: [f32; 40],
}

/// `sumqx`, `sumq2` of both shifts for first boundary `i1` and eight second
/// boundaries from `i2`, each lane in the reference's operation order.
#[inline(always)]
unsafe fn scores(t: &Terms, i1: usize, i2: usize) -> [V; 4] {
    let (ax, aw) = (t.sumx[i1] - t.sumx[0], t.sumw[i1] - t.sumw[0]);
    let (p1, m1) = (set(X_P[1]), set(X_M[1]));
    let bx = sub(loadx(t.sumx, i2), set(t.sumx[i1]));
    let bw = sub(loadx(t.sumw, i2), set(t.sumw[i1]));
    let qxp = add(add(set(ax * X_P[0]), mul(bx, p1)), loadx(&t.cxp, i2));
    let q2p = add(add(set(aw * X_P[0] * X_P[0]), mul(mul(bw, p1), p1)), loadx(&t.cwp, i2));
    let qxm = add(add(set(ax * X_M[0]), mul(bx, m1)), loadx(&t.cxm, i2));
    let q2m = add(add(set(aw * X_M[0] * X_M[0]), mul(mul(bw, m1), m1)), loadx(&t.cwm, i2));
    [qxp, q2p, qxm, q2m]
}

/// The outcome of a scan: the last split that raised the best, with what is needed
/// to check it against the reference's scan.
#[derive(Clone, Copy)]
struct Win {
    i1: usize,
    i2: usize,
    shift: i8,
    scale: f32,
    sumqx: f32,
    sumq2: f32,
    /// The largest best the scan held before this split raised it.
    bmax_before: f32,
}

/// The reference's scan over all splits in its order, starting from `best_score`.
/// Eight second boundaries are tested at once against the running best; lanes that
/// pass are replayed one by one in order.
#[inline(always)]
unsafe fn scan(t: &Terms, mut best_score: f32) -> Option<Win> {
    let mut bmax = best_score;
    let mut win: Option<Win> = None;
    for i1 in 0..=32 {
        let mut i2 = i1;
        while i2 <= 32 {
            let [qxp, q2p, qxm, q2m] = scores(t, i1, i2);
            let bs = set(best_score);
            let z = zero();
            let okp = and(gt(q2p, z), gt(mul(qxp, qxp), mul(bs, q2p)));
            let okm = and(gt(q2m, z), gt(mul(qxm, qxm), mul(bs, q2m)));
            let n = (33 - i2).min(8);
            let bits = mask_bits(or(okp, okm)) & ((1u32 << n) - 1);
            if bits != 0 {
                let (xp, wp, xm, wm) = (lanes(qxp), lanes(q2p), lanes(qxm), lanes(q2m));
                // A lane that failed against the vector's best fails against any
                // larger best (q2 > 0, so best * q2 only grows), so only flagged lanes
                // need a look while the best does not decrease; after a rounding that
                // lowers it, every later lane is checked.
                let mut all = false;
                for j in bits.trailing_zeros() as usize..n {
                    if !all && bits & (1 << j) == 0 {
                        continue;
                    }
                    for (sumqx, sumq2, s) in [(xp[j], wp[j], 1i8), (xm[j], wm[j], -1i8)] {
                        if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                            let before = best_score;
                            let scale = sumqx / sumq2;
                            best_score = scale * sumqx;
                            win = Some(Win { i1, i2: i2 + j, shift: s, scale, sumqx, sumq2, bmax_before: bmax });
                            bmax = if bmax > best_score { bmax } else { best_score };
                            all |= best_score < before || best_score.is_nan() || before.is_nan();
                        }
                    }
                }
            }
            i2 += 8;
        }
    }
    win
}

/// An estimate of the largest `sumqx^2 / sumq2` over all splits (reciprocal
/// approximation, relative error well under 1e-3), 0 where no split has `sumq2 > 0`.
#[inline(always)]
unsafe fn approx_max(t: &Terms, step: usize) -> f32 {
    let mut m = zero();
    let z = zero();
    for i1 in (0..=32).step_by(step) {
        let mut i2 = i1;
        while i2 <= 32 {
            let [qxp, q2p, qxm, q2m] = scores(t, i1, i2);
            let valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                _mm256_set1_epi32((33 - i2) as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            ));
            let rp = and(and(valid, gt(q2p, z)), mul(mul(qxp, qxp), _mm256_rcp_ps(q2p)));
            let rm = and(and(valid, gt(q2m, z)), mul(mul(qxm, qxm), _mm256_rcp_ps(q2m)));
            m = _mm256_max_ps(m, _mm256_max_ps(rp, rm));
            i2 += 8;
        }
    }
    hmax(m)
}

/// `iq1_s::boundary_search` over prefix sums padded to 40 entries: the winning split
/// (i1, i2, shift, scale), None when no split scores.
///
/// The reference's scan starts from `-f32::MAX` and raises its best some fifty times
/// per sub-block, each a short dependent chain. Here the scan first starts from a
/// threshold `T` just under an estimate of the best score, so only splits within a
/// fraction of a percent of the top can raise it; its result `W` is then proven to be
/// the reference's: every split the reference saw before `W` has a score
/// `scale * sumqx` of at most `U` (`U` bounds `T` and each best this scan held before
/// `W`, and a split that failed against a best `b` scores at most `b * (1 + 6 eps)`),
/// so if `W` passes the reference's test against `U` it passes against whatever best
/// the reference held, after which both scans are in the same state. Otherwise (near
/// ties, no estimate) the scan reruns from `-f32::MAX`.
#[inline(always)]
unsafe fn boundary_search(sumx: &[f32; 40], sumw: &[f32; 40]) -> Option<(usize, usize, i8, f32)> {
    let mut t = Terms { sumx, sumw, cxp: [0.0; 40], cwp: [0.0; 40], cxm: [0.0; 40], cwm: [0.0; 40] };
    for i2 in 0..=32 {
        let (cx, cw) = (sumx[32] - sumx[i2], sumw[32] - sumw[i2]);
        t.cxp[i2] = cx * X_P[2];
        t.cwp[i2] = cw * X_P[2] * X_P[2];
        t.cxm[i2] = cx * X_M[2];
        t.cwm[i2] = cw * X_M[2] * X_M[2];
    }
    let m = approx_max(&t, 4);
    // The proof takes relative rounding bounds, which subnormal products break (tiny
    // sub-blocks: values near 1e-12 have weights near 1e-12 and scores near 1e-35).
    // Every level is at least DELTA = 1/8 in size, so every split has sumq2 of at least
    // sumw[32] / 64; with `floor` normal, `best * sumq2` of any best from T up and
    // `sumqx^2` of any split scoring near T are normal too.
    let floor = m * (sumw[32] * (1.0 / 64.0));
    if m > 0.0 && m < f32::MAX && floor > 1e-30 {
        let threshold = m * (1.0 - 1.0 / 128.0);
        if let Some(w) = scan(&t, threshold) {
            let u = w.bmax_before * (1.0 + 1.0 / 262_144.0);
            if w.bmax_before > 0.0 && u < f32::MAX && w.sumqx * w.sumqx > u * w.sumq2 {
                return Some((w.i1, w.i2, w.shift, w.scale));
            }
        }
    }
    scan(&t, -f32::MAX).map(|w| (w.i1, w.i2, w.shift, w.scale))
}
