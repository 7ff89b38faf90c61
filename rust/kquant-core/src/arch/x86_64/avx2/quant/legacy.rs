//! Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL. Without an importance matrix the legacy
//! formats are one rounding pass per block, vectorized per value. With one (and
//! IQ4_NL always) each block runs a search; eight or sixteen consecutive blocks run it
//! side by side, one per lane, a short tail padded with zero blocks.

use super::kquants::iq4_indices;
use super::lanes::*;
use super::v8::*;
use crate::reference::common::{f32_to_f16, row_sigma2, write_f16};
use crate::reference::search::ScaleSteps;

const QK: usize = 32;
/// The weighted legacy quantizers' scale candidates (`q4_1::LEGACY_STEPS`).
const LEGACY_STEPS: ScaleSteps = ScaleSteps { rmin: -0.9, rdelta: 0.05, nstep: 36 };

#[inline(always)]
unsafe fn load4(xb: &[f32]) -> [V; 4] {
    [loadx(xb, 0), loadx(xb, 8), loadx(xb, 16), loadx(xb, 24)]
}

/// `signed_absmax(xb).1`: the first value of largest magnitude (NaN never wins), or
/// 0 for a block without a nonzero value.
#[inline(always)]
unsafe fn signed_absmax32(xb: &[f32], v: &[V; 4]) -> f32 {
    // `max_gt` keeps its second operand unless the first is larger, so a NaN never
    // enters the running maximum
    let mut m = zero();
    for vc in v {
        m = max_gt(abs(*vc), m);
    }
    let amax = hmax(m);
    if amax <= 0.0 {
        return 0.0;
    }
    let a = set(amax);
    let mut bits = 0u32;
    for (c, vc) in v.iter().enumerate() {
        bits |= mask_bits(eq(abs(*vc), a)) << (8 * c);
    }
    xb[bits.trailing_zeros() as usize]
}

/// `pack_5bit`: the four `qh` bytes (bit 4 of each level) and the 16 nibble bytes.
#[inline(always)]
unsafe fn store_5bit(b: B, hq: &mut [u8]) {
    hq[..4].copy_from_slice(&bit4_mask(b).to_le_bytes());
    storeh(hq, 4, nibbles16(b));
}

#[inline(always)]
unsafe fn store_f16(qb: &mut [u8], at: usize, v: f32) {
    qb[at..at + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
}

// ---------------------------------------------------------------------------------
// Reference (no importance matrix) paths

/// Q4_0 (`nmax` 8, 4 bits) and Q5_0 (16, 5 bits): the signed extreme maps to -nmax.
#[inline(always)]
unsafe fn sym_ref(x: &[f32], q: &mut [u8], bytes: usize, nmax: i32) {
    let (nf, top) = (nmax as f32, 2 * nmax - 1);
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(bytes)) {
        let v = load4(xb);
        let max = signed_absmax32(xb, &v);
        let d = max / -nf;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        store_f16(qb, 0, d);
        let (idv, off) = (set(id), set(nf + 0.5));
        let mut l = [zeroi(); 4];
        for c in 0..4 {
            let t = mini(trunc_x86_i8(add(mul(v[c], idv), off)), seti(top));
            l[c] = andi(t, seti(0xff));
        }
        let b = pack_u8(l[0], l[1], l[2], l[3]);
        if nmax == 8 {
            storeh(qb, 2, nibbles16(b));
        } else {
            store_5bit(b, &mut qb[2..]);
        }
    }
}

/// `q4_1::min_max`: minimum and maximum, NaN skipped; a zero extreme is taken from a
/// sequential scan because which signed zero comes first is stored.
#[inline(always)]
unsafe fn min_max32(xb: &[f32], v: &[V; 4]) -> (f32, f32) {
    let mut mn = set(f32::MAX);
    let mut mx = set(-f32::MAX);
    for vc in v {
        mn = min_lt(*vc, mn);
        mx = max_gt(*vc, mx);
    }
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for (a, b) in lanes(mn).into_iter().zip(lanes(mx)) {
        if a < min {
            min = a;
        }
        if b > max {
            max = b;
        }
    }
    if min == 0.0 || max == 0.0 {
        (min, max) = (f32::MAX, -f32::MAX);
        for &x in xb {
            if x < min {
                min = x;
            }
            if x > max {
                max = x;
            }
        }
    }
    (min, max)
}

/// Q4_1 (`nmax` 15, levels clamped) and Q5_1 (31, not clamped): the block's range in
/// `nmax` steps from its minimum.
#[inline(always)]
unsafe fn asym_ref(x: &[f32], q: &mut [u8], bytes: usize, nmax: i32) {
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(bytes)) {
        let v = load4(xb);
        let (min, max) = min_max32(xb, &v);
        let d = (max - min) / nmax as f32;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        store_f16(qb, 0, d);
        store_f16(qb, 2, min);
        let (idv, mn, half) = (set(id), set(min), set(0.5));
        let mut l = [zeroi(); 4];
        for c in 0..4 {
            let t = trunc_x86_i8(add(mul(sub(v[c], mn), idv), half));
            let t = if nmax == 15 { mini(t, seti(15)) } else { t };
            l[c] = andi(t, seti(0xff));
        }
        let b = pack_u8(l[0], l[1], l[2], l[3]);
        if nmax == 15 {
            storeh(qb, 4, nibbles16(b));
        } else {
            store_5bit(b, &mut qb[4..]);
        }
    }
}

// ---------------------------------------------------------------------------------
// Searching paths, eight blocks per set of lanes

#[derive(Clone, Copy, PartialEq, Eq)]
enum Search {
    Q4_0,
    Q5_0,
    Q4_1,
    Q5_1,
    Iq4Nl,
}

impl Search {
    fn bytes(self) -> usize {
        match self {
            Search::Q4_0 | Search::Iq4Nl => 18,
            Search::Q5_0 => 22,
            Search::Q4_1 => 20,
            Search::Q5_1 => 24,
        }
    }
}

/// Eight blocks per lane set, `K` sets: `x` and `w` hold `256 * K` values (padded),
/// `q` the bytes of the first `nreal` blocks.
#[inline(always)]
unsafe fn search_chunk<const K: usize>(
    x: &[f32],
    w: Option<&[f32]>,
    q: &mut [u8],
    nreal: usize,
    s: Search,
    sigma2: f32,
) {
    let xt = load_groups::<QK, K>(x, QK);
    let mut wt = [[zero(); K]; QK];
    match (s, w) {
        (Search::Iq4Nl, None) => {
            for i in 0..QK {
                for k in 0..K {
                    wt[i][k] = mul(xt[i][k], xt[i][k]);
                }
            }
        }
        (Search::Iq4Nl, Some(w)) => {
            // IQ4_NL's sigma2 is the block's own doubled mean square
            let qt = load_groups::<QK, K>(w, QK);
            let s2 = sum_sq(&xt);
            for k in 0..K {
                let sig = mul(s2[k], set(2.0f32 / QK as f32));
                for i in 0..QK {
                    wt[i][k] = mul(qt[i][k], sqrt(add(sig, mul(xt[i][k], xt[i][k]))));
                }
            }
        }
        (_, w) => {
            let qt = load_groups::<QK, K>(w.expect("the legacy searches are weighted"), QK);
            let sig = set(sigma2);
            for i in 0..QK {
                for k in 0..K {
                    wt[i][k] = mul(qt[i][k], sqrt(add(sig, mul(xt[i][k], xt[i][k]))));
                }
            }
        }
    }
    let bytes = s.bytes();
    match s {
        Search::Iq4Nl => {
            let d = iq4_search(&xt, &wt, crate::reference::iq4::NTRY);
            for k in 0..K {
                let dl = lanes(d[k]);
                for j in 0..8.min(nreal.saturating_sub(8 * k)) {
                    let b = 8 * k + j;
                    let qb = &mut q[bytes * b..bytes * (b + 1)];
                    store_f16(qb, 0, dl[j]);
                    let id = if dl[j] != 0.0 { 1.0 / dl[j] } else { 0.0 };
                    let v = iq4_indices(&x[QK * b..QK * (b + 1)], id);
                    storeh(qb, 2, v);
                }
            }
        }
        Search::Q4_0 | Search::Q5_0 => {
            let nmax = if s == Search::Q4_0 { 8 } else { 16 };
            let fit = sym_search(&xt, &wt, nmax);
            for k in 0..K {
                let (sc, li, z) = (lanes(fit.scale[k]), lanes(fit.lev_iscale[k]), lanes(fit.zero[k]));
                for j in 0..8.min(nreal.saturating_sub(8 * k)) {
                    let b = 8 * k + j;
                    let qb = &mut q[bytes * b..bytes * (b + 1)];
                    write_f16(qb, 0, sc[j]);
                    let mut l = [zeroi(); 4];
                    if z[j].to_bits() == 0 {
                        let is = set(li[j]);
                        for (c, lc) in l.iter_mut().enumerate() {
                            let t = clampi(nearest(mul(is, loadx(x, QK * b + 8 * c))), -nmax, nmax - 1);
                            *lc = addi(t, seti(nmax));
                        }
                    }
                    let bv = pack_u8(l[0], l[1], l[2], l[3]);
                    if nmax == 8 {
                        storeh(qb, 2, nibbles16(bv));
                    } else {
                        store_5bit(bv, &mut qb[2..]);
                    }
                }
            }
        }
        Search::Q4_1 | Search::Q5_1 => {
            let nmax = if s == Search::Q4_1 { 15 } else { 31 };
            let fit = asym_search(&xt, &wt, nmax, LEGACY_STEPS, false, true);
            for k in 0..K {
                let (sc, mn) = (lanes(fit.scale[k]), lanes(fit.min[k]));
                let (li, lm, z) = (lanes(fit.lev_iscale[k]), lanes(fit.lev_min[k]), lanes(fit.zero[k]));
                for j in 0..8.min(nreal.saturating_sub(8 * k)) {
                    let b = 8 * k + j;
                    let qb = &mut q[bytes * b..bytes * (b + 1)];
                    write_f16(qb, 0, sc[j]);
                    write_f16(qb, 2, -mn[j]);
                    let mut l = [zeroi(); 4];
                    if z[j].to_bits() == 0 {
                        let (is, m) = (set(li[j]), set(lm[j]));
                        for (c, lc) in l.iter_mut().enumerate() {
                            let t = nearest(mul(is, sub(loadx(x, QK * b + 8 * c), m)));
                            *lc = clampi(t, 0, nmax);
                        }
                    }
                    let bv = pack_u8(l[0], l[1], l[2], l[3]);
                    if nmax == 15 {
                        storeh(qb, 4, nibbles16(bv));
                    } else {
                        store_5bit(bv, &mut qb[4..]);
                    }
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn search_row(x: &[f32], w: Option<&[f32]>, q: &mut [u8], s: Search) {
    let bytes = s.bytes();
    let nb = (x.len() / QK).min(q.len() / bytes);
    let sigma2 = match (s, w) {
        (Search::Iq4Nl, _) | (_, None) => 0.0,
        // the whole row, as the reference (ops hands over whole blocks)
        _ => row_sigma2(x),
    };
    let mut b = 0;
    while b + 16 <= nb {
        let r = QK * b..QK * (b + 16);
        search_chunk::<2>(&x[r.clone()], w.map(|w| &w[r]), &mut q[bytes * b..bytes * (b + 16)], 16, s, sigma2);
        b += 16;
    }
    if b + 8 <= nb {
        let r = QK * b..QK * (b + 8);
        search_chunk::<1>(&x[r.clone()], w.map(|w| &w[r]), &mut q[bytes * b..bytes * (b + 8)], 8, s, sigma2);
        b += 8;
    }
    if b < nb {
        let n = nb - b;
        let mut xs = [0.0f32; 8 * QK];
        let mut ws = [0.0f32; 8 * QK];
        xs[..n * QK].copy_from_slice(&x[QK * b..QK * nb]);
        if let Some(w) = w {
            ws[..n * QK].copy_from_slice(&w[QK * b..QK * nb]);
        }
        search_chunk::<1>(&xs, w.map(|_| &ws[..]), &mut q[bytes * b..bytes * nb], n, s, sigma2);
    }
}

#[inline(always)]
pub unsafe fn quantize_q4_0(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => sym_ref(x, q, 18, 8),
        Some(_) => search_row(x, imat, q, Search::Q4_0),
    }
}

#[inline(always)]
pub unsafe fn quantize_q5_0(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => sym_ref(x, q, 22, 16),
        Some(_) => search_row(x, imat, q, Search::Q5_0),
    }
}

#[inline(always)]
pub unsafe fn quantize_q4_1(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => asym_ref(x, q, 20, 15),
        Some(_) => search_row(x, imat, q, Search::Q4_1),
    }
}

#[inline(always)]
pub unsafe fn quantize_q5_1(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    match imat {
        None => asym_ref(x, q, 24, 31),
        Some(_) => search_row(x, imat, q, Search::Q5_1),
    }
}

#[inline(always)]
pub unsafe fn quantize_iq4_nl(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    search_row(x, imat, q, Search::Iq4Nl)
}
