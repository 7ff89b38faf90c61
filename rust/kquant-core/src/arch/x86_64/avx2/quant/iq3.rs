//! IQ3_XXS / IQ3_S quantizer for AVX2: eight trial scales side by side, one per lane,
//! like `arch::iq3_lanes` (which NEON keeps), with its branchy parts turned into vector
//! work, since mispredicted branches, not arithmetic, were most of its time:
//!
//! - the 32 levels of a batch are rounded with `cvtps_epi32` (ties to even, as ggml's
//!   `nearest_int` for the values that can occur here; sub-blocks where the two could
//!   differ, NaN or magnitudes above the maximum, go to `iq3_lanes`);
//! - which lanes of a group landed off the grid is one gather of the key map;
//! - a group with an off-grid lane gets the weighted squared error of each of its four
//!   coordinates at each of the eight levels, with the reference's operations
//!   (`w * (s * q - x) * (s * q - x)`, `s * q` rounded first), all 32 at once; each
//!   distinct off-grid key is then searched once for all lanes, a candidate costing
//!   four loads and three adds in coordinate order (ggml's sum), over lists padded to
//!   a fixed chunk length with candidates that cannot win;
//! - the search hands back the winner's levels packed as a key, so searched and
//!   on-grid lanes share one unpacking.
//!
//! The choice between trials is then made in trial order on the stored sums, and the
//! re-rounding at the chosen scale (`finish`) uses the same search, so the bytes are
//! the reference's.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::arch::iq3_lanes;
use crate::reference::iq3::{self, Lattice, Prepared, Search, SubBlock, Variant};

/// Per grid: key map for gathers, and per off-grid key the (coordinate, level) terms
/// and the candidates of its neighbour search.
struct Tables {
    /// Grid index of each 12-bit key, or -1 off the grid.
    map: Vec<i32>,
    /// Per key: start in `cands` and count of chunks of `PAD` candidates.
    span: Vec<(u32, u32)>,
    /// The candidates of each key in the reference's order.
    cands: Vec<Cand>,
}

/// Candidate lists are padded to a multiple of this many entries: most lists then take
/// one pass of a fixed-length loop, whose exit is predicted, unlike a loop of the
/// list's own length.
const PAD: usize = 6;

/// One candidate of a key's neighbour search.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Cand {
    /// Byte offset of each coordinate's term in the search's term array.
    off: [u16; 4],
    /// Position in the list (bits 16..) and the candidate's levels as a key (bits 0..12).
    tag: i32,
}

impl Tables {
    fn build(lat: &Lattice) -> Tables {
        let mut t = Tables { map: vec![-1; 4096], span: vec![(0, 0); 4096], cands: Vec::new() };
        for u in 0..4096 {
            match lat.lookup(u) {
                Ok(g) => t.map[u] = g as i32,
                Err(cs) => {
                    assert!(!cs.is_empty() && cs.len() < 1 << 15);
                    t.span[u] = (t.cands.len() as u32, cs.len().div_ceil(PAD) as u32);
                    for (pos, &c) in cs.iter().enumerate() {
                        let l = lat.l[c as usize];
                        let mut cand = Cand { off: [0; 4], tag: (pos as i32) << 16 };
                        for i in 0..4 {
                            let term = 8 * i + l[i] as usize;
                            cand.off[i] = (32 * term) as u16;
                            cand.tag |= (l[i] as i32) << (3 * i);
                        }
                        t.cands.push(cand);
                    }
                    while (t.cands.len() - t.span[u].0 as usize) % PAD != 0 {
                        // scores +inf, so it never wins: lists come in whole chunks
                        t.cands.push(Cand { off: [32 * 32, 0, 0, 0], tag: 0x7fff_0000 });
                    }
                }
            }
        }
        t
    }
}

fn tables(v: Variant, lat: &Lattice) -> &'static Tables {
    static XXS: OnceLock<Tables> = OnceLock::new();
    static S: OnceLock<Tables> = OnceLock::new();
    match v {
        Variant::Xxs => XXS.get_or_init(|| Tables::build(lat)),
        Variant::S => S.get_or_init(|| Tables::build(lat)),
    }
}

/// Drop-in for `iq3::quantize_sub_block`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_sub_block(v: Variant, lat: &Lattice, xb: &[f32], weight: &[f32]) -> SubBlock {
    let Some(prep) = prepare(v, xb, weight) else {
        return iq3_lanes::quantize_sub_block(v, lat, xb, weight);
    };
    match prep {
        Err(signs) => SubBlock { grid: [0; 8], signs, scale: 0.0, written: false },
        Ok(p) => {
            let n = iq3::ntry(v);
            let top = (15.0 + n as f32 * 0.2f32) / p.max;
            // |x| <= max keeps every rounded value within [-10, 10], where the rounding
            // instruction and ggml's magic-number rounding agree.
            let mut tame = p.max.is_finite() && top.is_finite();
            let maxv = _mm256_set1_ps(p.max);
            let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
            for c in p.xval.chunks_exact(8) {
                // SAFETY: `c` holds 8 floats.
                let x = unsafe { _mm256_loadu_ps(c.as_ptr()) };
                tame &= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(_mm256_and_ps(x, abs), maxv)) == 0xff;
            }
            if !tame {
                return iq3_lanes::quantize_sub_block(v, lat, xb, weight);
            }
            let tb = tables(v, lat);
            // SAFETY: this function's AVX2 is the search's requirement.
            let s = unsafe { search(v, tb, &p, weight) };
            finish(v, lat, tb, &p, weight, s)
        }
    }
}

/// `iq3::prepare` with vector signs, square roots and maximum; None (use the
/// reference) when a value is NaN, where the order of ggml's maximum matters.
#[target_feature(enable = "avx2")]
fn prepare(v: Variant, xb: &[f32], weight: &[f32]) -> Option<Result<Prepared, [u8; 4]>> {
    let mut p = Prepared { xval: [0.0; 32], waux: [0.0; 32], max: 0.0, signs: [0; 4] };
    let zero = _mm256_setzero_ps();
    let sign = _mm256_set1_ps(-0.0);
    let mut maxv = _mm256_set1_ps(f32::NEG_INFINITY);
    assert!(xb.len() >= 32 && weight.len() >= 32);
    for k in 0..4 {
        // SAFETY: xb and weight hold 32 values (asserted), xval and waux 32 slots.
        let keep = unsafe {
            let x = _mm256_loadu_ps(xb.as_ptr().add(8 * k));
            if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x)) != 0 {
                return None;
            }
            _mm256_storeu_ps(
                p.waux.as_mut_ptr().add(8 * k),
                _mm256_sqrt_ps(_mm256_loadu_ps(weight.as_ptr().add(8 * k))),
            );
            // ggml keeps x when x >= 0 (so -0 too) and flips it otherwise
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, zero);
            _mm256_storeu_ps(p.xval.as_mut_ptr().add(8 * k), _mm256_blendv_ps(_mm256_xor_ps(x, sign), x, keep));
            keep
        };
        let mut s = !(_mm256_movemask_ps(keep) as u8);
        if v == Variant::Xxs && s.count_ones() % 2 == 1 {
            // an odd count cannot be stored: flip the least important value instead
            let mut imin = 0;
            let mut min = weight[8 * k] * xb[8 * k] * xb[8 * k];
            for i in 1..8 {
                let ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                if ax < min {
                    min = ax;
                    imin = i;
                }
            }
            p.xval[8 * k + imin] = -p.xval[8 * k + imin];
            s ^= 1 << imin;
        }
        p.signs[k] = if v == Variant::Xxs { s & 127 } else { s };
        // SAFETY: as above.
        maxv = _mm256_max_ps(maxv, unsafe { _mm256_loadu_ps(p.xval.as_ptr().add(8 * k)) });
    }
    // Without NaN the maximum is one value whatever the order, up to the sign of a
    // zero, and a zero maximum skips the sub-block either way.
    let mut m = [0.0f32; 8];
    // SAFETY: m holds 8 floats.
    unsafe { _mm256_storeu_ps(m.as_mut_ptr(), maxv) };
    let max = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    p.max = max;
    let skip = match v {
        Variant::Xxs => max < 1e-8,
        Variant::S => max == 0.0,
    };
    Some(if skip { Err(p.signs) } else { Ok(p) })
}

/// The terms of one group's searches, slot `8 * coordinate + level`, and +inf in the
/// last slot for the padding candidates.
#[repr(C, align(32))]
struct Terms([__m256; 33]);

impl Terms {
    #[target_feature(enable = "avx2")]
    fn new() -> Terms {
        let mut t = Terms([_mm256_setzero_ps(); 33]);
        t.0[32] = _mm256_set1_ps(f32::INFINITY);
        t
    }
}

/// The weighted squared error of each coordinate of a group at each level, at the
/// eight scales whose `(2l+1)` multiples are `tsq`: the reference's
/// `w * (s * q - x) * (s * q - x)` with `s * q` rounded first. All 32, without
/// branches: cheaper than a mispredicted loop over the few one key needs.
#[target_feature(enable = "avx2")]
#[inline]
fn all_terms(tsq: &[__m256; 8], xg: &[f32], wg: &[f32], terms: &mut Terms) {
    for i in 0..4 {
        let (x, w) = (_mm256_set1_ps(xg[i]), _mm256_set1_ps(wg[i]));
        for l in 0..8 {
            let d = _mm256_sub_ps(tsq[l], x);
            terms.0[8 * i + l] = _mm256_mul_ps(_mm256_mul_ps(w, d), d);
        }
    }
}

/// The neighbour search of off-grid key `kk` with its group's `terms`: per lane the
/// winner's levels packed as a key (and its list position in bits 16..).
#[target_feature(enable = "avx2")]
#[inline]
fn search_key(tb: &Tables, kk: usize, terms: &Terms) -> __m256i {
    let (c0, nchunk) = tb.span[kk];
    let cs = &tb.cands[c0 as usize..c0 as usize + PAD * nchunk as usize];
    // Two running minima, over the even and the odd positions, so that the
    // compare-and-blend chains overlap; on equal errors the earlier position wins
    // when they are merged, as in the reference's single pass. The odd chain starts
    // at position 0x7fff so that it loses every tie.
    let base = terms.0.as_ptr() as *const u8;
    let score = |c: &Cand| {
        // SAFETY: every offset is 32 * a slot of `terms` (at most 32).
        unsafe {
            let at = |o: u16| _mm256_load_ps(base.add(o as usize) as *const f32);
            _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(at(c.off[0]), at(c.off[1])), at(c.off[2])), at(c.off[3]))
        }
    };
    let step = |d2: __m256, tag: i32, bd: &mut __m256, bi: &mut __m256i| {
        let better = _mm256_cmp_ps::<_CMP_LT_OQ>(d2, *bd);
        // min_ps(a, b) is `a < b ? a : b`: the same choice
        *bd = _mm256_min_ps(d2, *bd);
        *bi = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(*bi),
            _mm256_castsi256_ps(_mm256_set1_epi32(tag)),
            better,
        ));
    };
    let (mut bd0, mut bd1) = (_mm256_set1_ps(f32::MAX), _mm256_set1_ps(f32::MAX));
    let (mut bi0, mut bi1) = (_mm256_set1_epi32(cs[0].tag), _mm256_set1_epi32(0x7fff_0000));
    for chunk in cs.chunks_exact(PAD) {
        for c in chunk.chunks_exact(2) {
            step(score(&c[0]), c[0].tag, &mut bd0, &mut bi0);
            step(score(&c[1]), c[1].tag, &mut bd1, &mut bi1);
        }
    }
    let odd_first = _mm256_or_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(bd1, bd0)),
        _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(bd1, bd0)), _mm256_cmpgt_epi32(bi0, bi1)),
    );
    _mm256_blendv_epi8(bi0, bi1, odd_first)
}

/// Most batches of eight trials (IQ3_XXS: 31 trials).
const NB: usize = 4;

#[target_feature(enable = "avx2")]
unsafe fn search(v: Variant, tb: &Tables, p: &Prepared, weight: &[f32]) -> Search {
    let xval = &p.xval;
    let waux = &p.waux;
    let n = iq3::ntry(v);
    let ntrials = (2 * n + 1) as usize;
    let mut wx = [0.0f32; 32];
    for i in 0..32 {
        wx[i] = weight[i] * xval[i];
    }
    // levels per batch and value, lane = trial; off-grid lanes per batch and group
    let mut laux = [[_mm256_setzero_si256(); 32]; NB];
    let mut offbits = [[0u8; 8]; NB];
    let mut sums = [[[0.0f32; 8]; 2]; NB];
    let mut valid = [0usize; NB];
    let mut nbatch = 0;
    let one = _mm256_set1_ps(1.0);
    let half = _mm256_set1_ps(0.5);
    let seven = _mm256_set1_epi32(7);
    let zero = _mm256_setzero_si256();
    let mut terms = Terms::new();
    let mut start = 0;
    while start < ntrials {
        let b = nbatch;
        let nv = (ntrials - start).min(8);
        valid[b] = nv;
        let mut id = [0.0f32; 8];
        let mut ts = [0.0f32; 8];
        for t in 0..8 {
            // lanes past the last trial repeat it and are ignored
            let is = -n + (start + t.min(nv - 1)) as i32;
            id[t] = (15.0 + is as f32 * 0.2f32) / p.max;
            ts[t] = 1.0 / id[t];
        }
        let idv = _mm256_loadu_ps(id.as_ptr());
        let tsv = _mm256_loadu_ps(ts.as_ptr());
        let mut tsq = [_mm256_setzero_ps(); 8];
        for l in 0..8 {
            tsq[l] = _mm256_mul_ps(tsv, _mm256_set1_ps((2 * l + 1) as f32));
        }
        let la = &mut laux[b];
        for i in 0..32 {
            let y = _mm256_mul_ps(half, _mm256_sub_ps(_mm256_mul_ps(idv, _mm256_set1_ps(xval[i])), one));
            la[i] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(y), zero), seven);
        }
        // every group's key and map look-up first, so the gathers overlap
        let mut gkey = [zero; 8];
        for k in 0..8 {
            let key = _mm256_or_si256(
                _mm256_or_si256(la[4 * k], _mm256_slli_epi32::<3>(la[4 * k + 1])),
                _mm256_or_si256(_mm256_slli_epi32::<6>(la[4 * k + 2]), _mm256_slli_epi32::<9>(la[4 * k + 3])),
            );
            gkey[k] = key;
            // keys are below 4096: levels were clamped to 0..=7
            let g = _mm256_i32gather_epi32::<4>(tb.map.as_ptr(), key);
            offbits[b][k] = _mm256_movemask_ps(_mm256_castsi256_ps(g)) as u8;
        }
        for k in 0..8 {
            let key = gkey[k];
            let mut off = offbits[b][k] as u32;
            if off == 0 {
                continue;
            }
            let mut keys = [0i32; 8];
            _mm256_storeu_si256(keys.as_mut_ptr() as *mut __m256i, key);
            let mut chosen = key;
            let xg = &xval[4 * k..4 * k + 4];
            let wg = &waux[4 * k..4 * k + 4];
            all_terms(&tsq, xg, wg, &mut terms);
            while off != 0 {
                let kk = keys[off.trailing_zeros() as usize] as usize & 4095;
                let same = _mm256_cmpeq_epi32(key, _mm256_set1_epi32(kk as i32));
                off &= !(_mm256_movemask_ps(_mm256_castsi256_ps(same)) as u32);
                chosen = _mm256_blendv_epi8(chosen, search_key(tb, kk, &terms), same);
            }
            let chosen = _mm256_and_si256(chosen, _mm256_set1_epi32(4095));
            la[4 * k] = _mm256_and_si256(chosen, seven);
            la[4 * k + 1] = _mm256_and_si256(_mm256_srli_epi32::<3>(chosen), seven);
            la[4 * k + 2] = _mm256_and_si256(_mm256_srli_epi32::<6>(chosen), seven);
            la[4 * k + 3] = _mm256_srli_epi32::<9>(chosen);
        }
        let mut sqx = _mm256_setzero_ps();
        let mut sq2 = _mm256_setzero_ps();
        // (2l + 1) as a float, looked up by level
        let odd = _mm256_setr_ps(1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0);
        for i in 0..32 {
            let q = _mm256_permutevar8x32_ps(odd, la[i]);
            sqx = _mm256_add_ps(sqx, _mm256_mul_ps(_mm256_set1_ps(wx[i]), q));
            sq2 = _mm256_add_ps(sq2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(weight[i]), q), q));
        }
        _mm256_storeu_ps(sums[b][0].as_mut_ptr(), sqx);
        _mm256_storeu_ps(sums[b][1].as_mut_ptr(), sq2);
        nbatch += 1;
        start += 8;
    }
    let mut out = Search { l: [0; 32], on_grid: [v == Variant::Xxs; 8], scale: p.max / 15.0 };
    let mut best = 0.0f32;
    let mut pick = None;
    for b in 0..nbatch {
        for t in 0..valid[b] {
            let (sumqx, sumq2) = (sums[b][0][t], sums[b][1][t]);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                out.scale = sumqx / sumq2;
                best = out.scale * sumqx;
                pick = Some((b, t));
            }
        }
    }
    if let Some((b, t)) = pick {
        for i in 0..32 {
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, laux[b][i]);
            out.l[i] = lanes[t] as i8;
        }
        for k in 0..8 {
            out.on_grid[k] = (offbits[b][k] >> t) & 1 == 0;
        }
    }
    out
}

/// `iq3::finish` with the neighbour searches run by `search_key` (every lane at the
/// final scale; lane 0 is read).
#[target_feature(enable = "avx2")]
fn finish(v: Variant, lat: &Lattice, tb: &Tables, p: &Prepared, weight: &[f32], s: Search) -> SubBlock {
    let mut terms = Terms::new();
    iq3::finish_with(v, lat, p, weight, s, |k, u, levels, scale| {
        if tb.map[u] >= 0 {
            return levels;
        }
        let sv = _mm256_set1_ps(scale);
        let tsq: [__m256; 8] = std::array::from_fn(|l| _mm256_mul_ps(sv, _mm256_set1_ps((2 * l + 1) as f32)));
        all_terms(&tsq, &p.xval[4 * k..4 * k + 4], &p.waux[4 * k..4 * k + 4], &mut terms);
        let key = _mm256_cvtsi256_si32(search_key(tb, u, &terms));
        std::array::from_fn(|i| ((key >> (3 * i)) & 7) as i8)
    })
}
