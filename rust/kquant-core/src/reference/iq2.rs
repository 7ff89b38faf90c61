//! What IQ2_XXS, IQ2_XS and IQ2_S share: 8 values at a time are one point of a grid of
//! 2-bit levels (values 8, 25, 43 for levels 0, 1, 2) plus 8 sign bits, the grid index
//! and signs packed differently per format; the scale of a 16- or 32-value group is
//! `d * (0.5 + s) * 0.25` for a 4-bit `s`. Quantizers search the scale over a few
//! candidates, rounding each 8-value point to the grid through `lattice`.

use super::common::{f32_to_f16, nearest_int};
use super::iq2_tables::{KGRID_IQ2S, KGRID_IQ2XS, KGRID_IQ2XXS};
use super::lattice::{Lattice, Lookup};
use std::sync::OnceLock;

/// Dequantization value of each level.
pub const LEVEL_VALUES: [u8; 3] = [8, 25, 43];

/// 8 grid values (one byte each, coordinate 0 lowest) of every packed grid point:
/// ggml-common.h's `iq2xxs_grid`, `iq2xs_grid`, `iq2s_grid`.
const fn expand<const N: usize>(kgrid: &[u16; N]) -> [u64; N] {
    let mut out = [0u64; N];
    let mut j = 0;
    while j < N {
        let mut v = 0u64;
        let mut k = 0;
        while k < 8 {
            let l = ((kgrid[j] >> (2 * k)) & 3) as usize;
            v |= (LEVEL_VALUES[l] as u64) << (8 * k);
            k += 1;
        }
        out[j] = v;
        j += 1;
    }
    out
}

pub static GRID_XXS: [u64; 256] = expand(&KGRID_IQ2XXS);
pub static GRID_XS: [u64; 512] = expand(&KGRID_IQ2XS);
pub static GRID_S: [u64; 1024] = expand(&KGRID_IQ2S);

/// ggml's `ksigns_iq2xs`: 7 stored sign bits plus an eighth that makes the count even.
pub static KSIGNS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = i as u8 | (((i as u32).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    t
};

/// The grid bytes of a point.
#[inline(always)]
pub fn grid_bytes(grid: &[u64], j: usize) -> [u8; 8] {
    grid[j].to_le_bytes()
}

/// 8 signed grid values: bit `k` of `signs` negates coordinate `k`.
#[inline(always)]
pub fn signed_point(grid: &[u64], j: usize, signs: u8) -> [i32; 8] {
    let g = grid_bytes(grid, j);
    let mut out = [0i32; 8];
    for k in 0..8 {
        out[k] = if signs & (1 << k) != 0 { -(g[k] as i32) } else { g[k] as i32 };
    }
    out
}

static LAT_XXS: OnceLock<Lattice> = OnceLock::new();
static LAT_XS: OnceLock<Lattice> = OnceLock::new();
static LAT_S: OnceLock<Lattice> = OnceLock::new();

/// The quantizer tables of each grid, built on first use (a few milliseconds); ggml keeps
/// 2 nearest distances for IQ2_XXS and IQ2_XS, 1 for IQ2_S.
pub fn lattice_xxs() -> &'static Lattice {
    LAT_XXS.get_or_init(|| Lattice::new(&KGRID_IQ2XXS, 2))
}
pub fn lattice_xs() -> &'static Lattice {
    LAT_XS.get_or_init(|| Lattice::new(&KGRID_IQ2XS, 2))
}
pub fn lattice_s() -> &'static Lattice {
    LAT_S.get_or_init(|| Lattice::new(&KGRID_IQ2S, 1))
}

/// Levels are 0..=2 (`kMaxQ - 1`).
pub const KMAXQ: i32 = 3;

/// ggml's `iq2_find_best_neighbour`: the candidate with the smallest weighted error
/// (the first on ties), its levels written to `l`. ggml aborts when no candidate has a
/// finite error (only possible for overflowing inputs); here the first candidate is taken.
#[inline]
pub fn best_neighbour(lat: &Lattice, cands: &[u16], xval: &[f32], w: &[f32], scale: f32, l: &mut [u8]) -> u16 {
    let mut best_d2 = f32::MAX;
    let mut best = cands.first().copied().unwrap_or(0);
    for &j in cands {
        let pg = lat.levels(j as usize);
        let mut d2 = 0.0f32;
        for i in 0..8 {
            let q = (2 * pg[i] + 1) as f32;
            let diff = scale * q - xval[i];
            d2 += w[i] * diff * diff;
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = j;
        }
    }
    l[..8].copy_from_slice(lat.levels(best as usize));
    best
}

/// Rounds 8 values at inverse scale `id` to levels, then to the grid: returns whether the
/// rounded point was on the grid; `l` gets the final levels.
#[inline]
pub fn round_point(lat: &Lattice, xval: &[f32], waux: &[f32], id: f32, scale: f32, l: &mut [u8]) -> bool {
    let mut u = 0u16;
    for i in 0..8 {
        let v = nearest_int(0.5 * (id * xval[i] - 1.0)).clamp(0, KMAXQ - 1);
        l[i] = v as u8;
        u |= (v as u16) << (2 * i);
    }
    match lat.lookup(u) {
        Lookup::OnGrid(_) => true,
        Lookup::Near(c) => {
            best_neighbour(lat, c, xval, waux, scale, l);
            false
        }
    }
}

/// `round_point` without its lattice argument (the reference's, or a SIMD one giving the
/// same levels and result): `(xval, waux, id, scale, l)`.
pub type RoundPoint<'a> = &'a dyn Fn(&[f32], &[f32], f32, f32, &mut [u8]) -> bool;

/// Grid index of 8 levels known to be on the grid; a point off it (only reachable with
/// non-finite intermediate values, where ggml aborts) maps to its first candidate.
#[inline]
pub fn grid_index(lat: &Lattice, l: &[u8]) -> u16 {
    let mut u = 0u16;
    for i in 0..8 {
        u |= ((l[i] & 3) as u16) << (2 * i);
    }
    match lat.lookup(u) {
        Lookup::OnGrid(j) => j,
        Lookup::Near(c) => c.first().copied().unwrap_or(0),
    }
}

/// `sum w*x*q` and `sum w*q*q` for levels `l` (`q = 2l + 1`), in ggml's order.
#[inline]
pub fn fit_sums(xval: &[f32], weight: &[f32], l: &[u8]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..xval.len() {
        let w = weight[i];
        let q = (2 * l[i] + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Splits 8 values into magnitudes and a sign byte; with `even`, the cheapest value
/// (smallest `w*x*x`, the first on ties) keeps the wrong sign so that the count of
/// negated values is even (IQ2_XXS/IQ2_XS store 7 sign bits and derive the eighth).
#[inline]
pub fn split_signs(xb: &[f32], weight: &[f32], xval: &mut [f32], even: bool) -> u8 {
    let mut s = 0u8;
    let mut nflip = 0;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if even && nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = weight[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = weight[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s
}

/// Candidate inverse scales of IQ2_XS and IQ2_S for a group with largest value `max`:
/// `(5 + is/10) / max` for `is` in -9..=9.
pub const NCAND16: usize = 19;
#[inline(always)]
pub fn cand_id16(c: usize, max: f32) -> f32 {
    ((2 * KMAXQ - 1) as f32 + (c as i32 - 9) as f32 * 0.1) / max
}

/// The winning candidate of a scale search: its scale, levels and which points were on
/// the grid before the neighbour search.
pub struct Best16 {
    pub scale: f32,
    pub l: [u8; 16],
    pub on_grid: [bool; 2],
}

/// The candidate loop of ggml's IQ2_XS/IQ2_S search, one candidate at a time.
pub fn candidates16(lat: &Lattice, xval: &[f32; 16], weight: &[f32; 16], waux: &[f32; 16], max: f32) -> Best16 {
    let mut laux = [0u8; 16];
    let mut best = 0.0f32;
    let mut out = Best16 { scale: max / (2 * KMAXQ - 1) as f32, l: [0; 16], on_grid: [true; 2] };
    for c in 0..NCAND16 {
        let id = cand_id16(c, max);
        let this_scale = 1.0 / id;
        let mut on_aux = [true; 2];
        for k in 0..2 {
            on_aux[k] = round_point(lat, &xval[8 * k..], &waux[8 * k..], id, this_scale, &mut laux[8 * k..]);
        }
        let (sumqx, sumq2) = fit_sums(xval, weight, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            out.scale = sumqx / sumq2;
            best = out.scale * sumqx;
            out.l = laux;
            out.on_grid = on_aux;
        }
    }
    out
}

/// After the candidates: the points that were off the grid are rounded again at the
/// winning scale and the scale is refitted. Returns the scale; `b.l` holds the levels.
pub fn refine16(xval: &[f32; 16], weight: &[f32; 16], waux: &[f32; 16], b: &mut Best16, round: RoundPoint) -> f32 {
    let mut scale = b.scale;
    if (!b.on_grid[0] || !b.on_grid[1]) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if b.on_grid[k] {
                continue;
            }
            round(&xval[8 * k..], &waux[8 * k..], id, scale, &mut b.l[8 * k..]);
        }
        let (sumqx, sumq2) = fit_sums(xval, weight, &b.l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// A search over the 16 values of one group (`xval >= 0` except for a flipped value,
/// `max` its largest value), giving the scale and the levels.
pub type Search16<'a> = &'a dyn Fn(&[f32; 16], &[f32; 16], &[f32; 16], f32) -> Best16;

/// The 4-bit group scale code for `scale` under super-block inverse scale `id`.
#[inline]
pub fn scale_code(id: f32, scale: f32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u8
}

/// The f16 bits of a super-block scale.
#[inline]
pub fn f16_bits(v: f32) -> [u8; 2] {
    f32_to_f16(v).to_le_bytes()
}

/// `sum(x^2) / 256` of a super-block, summed in order.
#[inline]
pub fn sumx2(xbl: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in xbl {
        s += v * v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_have_even_parity_and_grids_use_three_levels() {
        for (i, &s) in KSIGNS.iter().enumerate() {
            assert_eq!(s & 127, i as u8);
            assert_eq!(s.count_ones() % 2, 0);
        }
        assert_eq!(GRID_XXS[0], 0x0808080808080808);
        assert_eq!(GRID_XXS[1], 0x080808080808082b);
        assert_eq!(GRID_XS[511], 0x2b2b2b2b2b2b2b2b);
        for g in GRID_XXS.iter().chain(&GRID_XS).chain(&GRID_S) {
            assert!(g.to_le_bytes().iter().all(|b| LEVEL_VALUES.contains(b)));
        }
    }

    #[test]
    fn lattices_build_and_every_reachable_point_has_candidates() {
        for (lat, n) in [(lattice_xxs(), 256), (lattice_xs(), 512), (lattice_s(), 1024)] {
            assert_eq!(lat.len(), n);
            for i in 0..6561u32 {
                let mut l = [0u8; 8];
                let mut v = i;
                for x in l.iter_mut() {
                    *x = (v % 3) as u8;
                    v /= 3;
                }
                match lat.lookup(super::super::lattice::pack(&l)) {
                    Lookup::OnGrid(j) => assert_eq!(lat.levels(j as usize), &l),
                    Lookup::Near(c) => assert!(!c.is_empty()),
                }
            }
        }
    }
}
