//! Q2_K to Q6_K and IQ4_XS: the per-group searches run with the groups of one or two
//! super-blocks in lanes; the small per-super-block steps (scales of the scales,
//! packing of the header) are the reference's scalar code; re-rounding against the
//! stored scales and the bit packing are vectorized per value.

use super::lanes::*;
use super::v8::*;
use crate::reference::common::{make_qx_quants, nearest_int, read_f16, write_f16, RmseWeight, GROUP_MAX_EPS};
use crate::reference::q4_k::{pack_scales_mins, scale_min, WEIGHTED_STEPS};
use crate::reference::search::{make_qp_quants, ScaleSteps};
use crate::types::QK_K;

/// Calls `$f::<2>` on pairs of super-blocks (two independent sets of lanes overlap
/// their dependency chains) and `$f::<1>` on a last odd one.
macro_rules! by_pairs {
    ($x:expr, $q:expr, $imat:expr, $bytes:expr, $f:ident $(, $extra:expr)*) => {{
        let (x, q, imat): (&[f32], &mut [u8], Option<&[f32]>) = ($x, $q, $imat);
        let nb = (x.len() / QK_K).min(q.len() / $bytes);
        let mut i = 0;
        while i + 2 <= nb {
            let r = QK_K * i..QK_K * (i + 2);
            $f::<2>(&x[r.clone()], imat.map(|w| &w[r]), &mut q[$bytes * i..$bytes * (i + 2)] $(, $extra)*);
            i += 2;
        }
        if i < nb {
            let r = QK_K * i..QK_K * (i + 1);
            $f::<1>(&x[r.clone()], imat.map(|w| &w[r]), &mut q[$bytes * i..$bytes * (i + 1)] $(, $extra)*);
        }
    }};
}

/// `clamp(nearest_int(v), lo, hi)`.
#[inline(always)]
unsafe fn round_clamp(v: V, lo: i32, hi: i32) -> I {
    clampi(nearest(v), lo, hi)
}

/// Sequential `sum v*v` over each of the `K` super-blocks of `x`, in value order.
#[inline(always)]
fn block_sum_sq<const K: usize>(x: &[f32]) -> [f32; K] {
    let mut s = [0.0f32; K];
    for i in 0..QK_K {
        for k in 0..K {
            let v = x[QK_K * k + i];
            s[k] += v * v;
        }
    }
    s
}

/// Lane `j` of a mask is set.
#[inline(always)]
fn lane_set(mask: &[f32; 8], j: usize) -> bool {
    mask[j].to_bits() != 0
}

// ---------------------------------------------------------------------------------
// Q4_K and Q5_K

const K4_BYTES: usize = 144;
const K5_BYTES: usize = 176;
const K4_REF_STEPS: ScaleSteps = ScaleSteps { rmin: -1.0, rdelta: 0.1, nstep: 20 };
const K5_REF_STEPS: ScaleSteps = ScaleSteps { rmin: -0.5, rdelta: 0.1, nstep: 15 };

/// `fit_block_ref`'s header from the sub-block fits.
fn k45_header_ref(scales: &[f32; 8], mins: &[f32; 8], qb: &mut [u8]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    qb[4..16].copy_from_slice(&pack_scales_mins(&ls, &lm));
    write_f16(qb, 0, max_scale / 63.0);
    write_f16(qb, 2, max_min / 63.0);
}

/// `fit_block_weighted`'s header from the sub-block fits.
fn k45_header_weighted(scales: &[f32; 8], mins: &[f32; 8], sw: &[f32; 8], qb: &mut [u8], clamp_levels: bool) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, sw);
    let m_block = make_qp_quants(63, mins, &mut lm, sw);
    if clamp_levels {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    qb[4..16].copy_from_slice(&pack_scales_mins(&ls, &lm));
    write_f16(qb, 0, d_block);
    write_f16(qb, 2, m_block);
}

/// Levels of the eight 32-value sub-blocks of one Q4_K/Q5_K super-block, one byte
/// each, re-rounded against the stored scales (the reference's `requantize`); a
/// sub-block whose stored scale is zero keeps its search levels.
#[inline(always)]
unsafe fn k45_levels(xb: &[f32], qb: &[u8], nmax: i32, fit: (&[f32; 8], &[f32; 8], &[f32; 8])) -> [B; 8] {
    let (lev_iscale, lev_min, zero_lanes) = fit;
    let d_all = read_f16(qb, 0);
    let m_all = read_f16(qb, 2);
    let mut out = [zerob(); 8];
    for (j, o) in out.iter_mut().enumerate() {
        let (sc, m) = scale_min(&qb[4..16], j);
        let d = d_all * sc as f32;
        let xs = &xb[32 * j..32 * j + 32];
        let mut v = [zeroi(); 4];
        if d == 0.0 {
            if !lane_set(zero_lanes, j) {
                let (is, mn) = (set(lev_iscale[j]), set(lev_min[j]));
                for (c, vc) in v.iter_mut().enumerate() {
                    *vc = round_clamp(mul(is, sub(loadx(xs, 8 * c), mn)), 0, nmax);
                }
            }
        } else {
            let (dv, dm) = (set(d), set(m_all * m as f32));
            for (c, vc) in v.iter_mut().enumerate() {
                *vc = round_clamp(div(add(loadx(xs, 8 * c), dm), dv), 0, nmax);
            }
        }
        *o = pack_u8(v[0], v[1], v[2], v[3]);
    }
    out
}

#[inline(always)]
unsafe fn k4_pack(l: &[B; 8], qb: &mut [u8]) {
    for c in 0..4 {
        let b = orb(l[2 * c], shlb::<4>(l[2 * c + 1]));
        storeb(qb, 16 + 32 * c, b);
    }
}

#[inline(always)]
unsafe fn k5_pack(l: &[B; 8], qb: &mut [u8]) {
    let low = splatb(0x0f);
    let mut qh = zerob();
    for (s, &ls) in l.iter().enumerate() {
        let hi = gtb(ls, splatb(15));
        qh = orb(qh, andb(hi, splatb(1u8 << s)));
    }
    storeb(qb, 16, qh);
    for c in 0..4 {
        let a = andb(l[2 * c], low);
        let b = andb(l[2 * c + 1], low);
        let v = orb(a, shlb::<4>(b));
        storeb(qb, 48 + 32 * c, v);
    }
}

#[inline(always)]
unsafe fn k45_blocks<const K: usize>(x: &[f32], qw: Option<&[f32]>, q: &mut [u8], bytes: usize, q5: bool) {
    let (nmax, ref_steps) = if q5 { (31, K5_REF_STEPS) } else { (15, K4_REF_STEPS) };
    let xt = load_groups::<32, K>(x, 32);
    let mut w = [[zero(); K]; 32];
    let mut sw = [zero(); K];
    let fit = match qw {
        None => {
            let s2 = sum_sq(&xt);
            for k in 0..K {
                let av = sqrt(div(s2[k], set(32.0)));
                for wi in w.iter_mut().zip(&xt) {
                    wi.0[k] = add(av, abs(wi.1[k]));
                }
            }
            asym_search(&xt, &w, nmax, ref_steps, false, false)
        }
        Some(qw) => {
            let qt = load_groups::<32, K>(qw, 32);
            let s2 = block_sum_sq::<K>(x);
            for k in 0..K {
                let sigma2 = set(2.0 * s2[k] / QK_K as f32);
                for i in 0..32 {
                    w[i][k] = mul(qt[i][k], sqrt(add(sigma2, mul(xt[i][k], xt[i][k]))));
                }
            }
            sw = sum(&w);
            asym_search(&xt, &w, nmax, WEIGHTED_STEPS, false, true)
        }
    };
    for k in 0..K {
        let qb = &mut q[bytes * k..bytes * (k + 1)];
        let xb = &x[QK_K * k..QK_K * (k + 1)];
        let (scales, mins) = (lanes(fit.scale[k]), lanes(fit.min[k]));
        match qw {
            None => k45_header_ref(&scales, &mins, qb),
            Some(_) => k45_header_weighted(&scales, &mins, &lanes(sw[k]), qb, q5),
        }
        let l = k45_levels(xb, qb, nmax, (&lanes(fit.lev_iscale[k]), &lanes(fit.lev_min[k]), &lanes(fit.zero[k])));
        if q5 {
            k5_pack(&l, qb);
        } else {
            k4_pack(&l, qb);
        }
    }
}

#[inline(always)]
unsafe fn k4_blocks<const K: usize>(x: &[f32], qw: Option<&[f32]>, q: &mut [u8]) {
    k45_blocks::<K>(x, qw, q, K4_BYTES, false)
}

#[inline(always)]
unsafe fn k5_blocks<const K: usize>(x: &[f32], qw: Option<&[f32]>, q: &mut [u8]) {
    k45_blocks::<K>(x, qw, q, K5_BYTES, true)
}

#[inline(always)]
pub unsafe fn quantize_q4_k(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    by_pairs!(x, q, imat, K4_BYTES, k4_blocks)
}

#[inline(always)]
pub unsafe fn quantize_q5_k(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    by_pairs!(x, q, imat, K5_BYTES, k5_blocks)
}

// ---------------------------------------------------------------------------------
// Q6_K

const K6_BYTES: usize = 210;
const K6_SCALES: usize = 192;
const K6_D: usize = 208;

/// Bits 4-5 of each byte.
#[inline(always)]
unsafe fn hb(a: B) -> B {
    andb(shrb::<4>(a), splatb(0x03))
}

/// Packs the 256 levels (0..=63, 32 per vector in value order) of a Q6_K block.
#[inline(always)]
unsafe fn k6_pack(l: &[B; 8], qb: &mut [u8]) {
    let low = splatb(0x0f);
    for h in 0..2 {
        let v = [l[4 * h], l[4 * h + 1], l[4 * h + 2], l[4 * h + 3]];
        let ql0 = orb(andb(v[0], low), shlb::<4>(andb(v[2], low)));
        let ql1 = orb(andb(v[1], low), shlb::<4>(andb(v[3], low)));
        let qh = orb(orb(hb(v[0]), shlb::<2>(hb(v[1]))), orb(shlb::<4>(hb(v[2])), shlb::<6>(hb(v[3]))));
        storeb(qb, 64 * h, ql0);
        storeb(qb, 64 * h + 32, ql1);
        storeb(qb, 128 + 32 * h, qh);
    }
}

#[inline(always)]
pub unsafe fn quantize_q6_k(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    for (k, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(K6_BYTES)).enumerate() {
        let xt = load_groups::<16, 2>(xb, 16);
        let w = match imat {
            Some(qw) => load_groups::<16, 2>(&qw[QK_K * k..QK_K * (k + 1)], 16),
            None => {
                let mut w = [[zero(); 2]; 16];
                for (wi, xi) in w.iter_mut().zip(&xt) {
                    for s in 0..2 {
                        wi[s] = mul(xi[s], xi[s]);
                    }
                }
                w
            }
        };
        let fit = sym_search(&xt, &w, 32);
        let scales: [f32; 16] = to_groups(&fit.scale);
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for &s in &scales {
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            qb.fill(0);
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        write_f16(qb, K6_D, 1.0 / iscale);
        for (ib, &s) in scales.iter().enumerate() {
            qb[K6_SCALES + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
        }
        let lev_iscale: [f32; 16] = to_groups(&fit.lev_iscale);
        let zero_lanes: [f32; 16] = to_groups(&fit.zero);
        let d_all = read_f16(qb, K6_D);
        let mut l = [zerob(); 8];
        for (c, lc) in l.iter_mut().enumerate() {
            let mut v = [zeroi(); 4];
            for g in 0..2 {
                let j = 2 * c + g;
                let d = d_all * (qb[K6_SCALES + j] as i8) as f32;
                let xs = &xb[16 * j..16 * j + 16];
                for h in 0..2 {
                    v[2 * g + h] = if d != 0.0 {
                        addi(round_clamp(div(loadx(xs, 8 * h), set(d)), -32, 31), seti(32))
                    } else if zero_lanes[j].to_bits() != 0 {
                        zeroi()
                    } else {
                        let li = round_clamp(mul(set(lev_iscale[j]), loadx(xs, 8 * h)), -32, 31);
                        addi(li, seti(32))
                    };
                }
            }
            *lc = pack_u8(v[0], v[1], v[2], v[3]);
        }
        k6_pack(&l, qb);
    }
}

/// Packs four vectors of 2-bit values (each 32 levels in value order) into one: level
/// `i` of vector `p` goes to bits `2p..2p+2` of byte `i`.
#[inline(always)]
unsafe fn pack_2bit(v: [B; 4]) -> B {
    orb(orb(v[0], shlb::<2>(v[1])), orb(shlb::<4>(v[2]), shlb::<6>(v[3])))
}

// ---------------------------------------------------------------------------------
// Q3_K

const K3_BYTES: usize = 110;
const K3_QS: usize = 32;
const K3_SCALES: usize = 96;
const K3_D: usize = 108;

/// The 16 six-bit scale codes (already offset by 32) into the 12 scale bytes.
fn k3_pack_scales(qb: &mut [u8], codes: &[u8; 16]) {
    let s = &mut qb[K3_SCALES..K3_SCALES + 12];
    s.fill(0);
    for (j, &c) in codes.iter().enumerate() {
        if j < 8 {
            s[j] = c & 0x0f;
        } else {
            s[j - 8] |= (c & 0x0f) << 4;
        }
        s[8 + j % 4] |= (c >> 4) << (2 * (j / 4));
    }
}

/// The reference's `finish_block`: re-rounds against the stored scales (groups with
/// a zero scale keep `search(j, half)`, their levels 0..=7 as i32) and packs.
#[inline(always)]
unsafe fn k3_finish(xb: &[f32], qb: &mut [u8], search: impl Fn(usize, usize) -> I) {
    let d_all = read_f16(qb, K3_D);
    let sc = crate::arch::q3k_scales(qb[K3_SCALES..K3_SCALES + 12].try_into().unwrap());
    let mut l = [zerob(); 8];
    for (c, lc) in l.iter_mut().enumerate() {
        let mut v = [zeroi(); 4];
        for g in 0..2 {
            let j = 2 * c + g;
            let d = d_all * sc[j] as f32;
            for h in 0..2 {
                v[2 * g + h] = if d == 0.0 {
                    search(j, h)
                } else {
                    let q = round_clamp(div(loadx(xb, 16 * j + 8 * h), set(d)), -4, 3);
                    addi(q, seti(4))
                };
            }
        }
        *lc = pack_u8(v[0], v[1], v[2], v[3]);
    }
    let mut hm = zerob();
    let mut low = [zerob(); 8];
    for c in 0..8 {
        let hi = gtb(l[c], splatb(3));
        hm = orb(hm, andb(hi, splatb(1u8 << c)));
        low[c] = andb(l[c], splatb(3));
    }
    storeb(qb, 0, hm);
    for h in 0..2 {
        let v = pack_2bit([low[4 * h], low[4 * h + 1], low[4 * h + 2], low[4 * h + 3]]);
        storeb(qb, K3_QS + 32 * h, v);
    }
}

/// 8 values of group `j` (lane `j % 8` of vector `j / 8`) of transposed float
/// levels, starting at value `8h`.
#[inline(always)]
unsafe fn gather_lane<const K: usize>(t: &[[V; K]; 16], j: usize, h: usize) -> I {
    let mut a = [0i32; 8];
    for (e, o) in a.iter_mut().enumerate() {
        *o = lanes(t[8 * h + e][j / 8])[j % 8] as i32;
    }
    from_i32s(a)
}

/// `quantize_block_ref` of Q3_K for `NB` consecutive super-blocks (`K = 2 * NB`).
#[inline(always)]
unsafe fn k3_ref_blocks<const NB: usize, const K: usize>(x: &[f32], q: &mut [u8]) {
    debug_assert_eq!(K, 2 * NB);
    let xt = load_groups::<16, K>(x, 16);
    let (scale_v, levels) = q3_search(&xt, 4);
    for b in 0..NB {
        let xb = &x[QK_K * b..QK_K * (b + 1)];
        let qb = &mut q[K3_BYTES * b..K3_BYTES * (b + 1)];
        let scales: [f32; 16] = to_groups(&[scale_v[2 * b], scale_v[2 * b + 1]]);
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for &s in &scales {
            if s.abs() > amax {
                amax = s.abs();
                max_scale = s;
            }
        }
        if max_scale != 0.0 {
            let iscale = -32.0f32 / max_scale;
            let mut codes = [0u8; 16];
            for (c, &s) in codes.iter_mut().zip(&scales) {
                *c = ((nearest_int(iscale * s) as i8 as i32).clamp(-32, 31) + 32) as u8;
            }
            k3_pack_scales(qb, &codes);
            write_f16(qb, K3_D, 1.0 / iscale);
        } else {
            qb[K3_SCALES..K3_SCALES + 12].fill(0);
            write_f16(qb, K3_D, 0.0);
        }
        k3_finish(xb, qb, |j, h| gather_lane(&levels, 16 * b + j, h));
    }
}

#[inline(always)]
pub unsafe fn quantize_q3_k(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    if imat.is_none() {
        // (more super-blocks side by side measured no faster: the passes are bound
        // by throughput once two vectors interleave)
        for (xb, qb) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(K3_BYTES)) {
            k3_ref_blocks::<1, 2>(xb, qb);
        }
        return;
    }
    for (k, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(K3_BYTES)).enumerate() {
        let xt = load_groups::<16, 2>(xb, 16);
        match imat {
            None => unreachable!(),
            Some(w) => {
                let qw = load_groups::<16, 2>(&w[QK_K * k..QK_K * (k + 1)], 16);
                let sigma2 = set(2.0 * block_sum_sq::<1>(xb)[0] / QK_K as f32);
                let mut wt = [[zero(); 2]; 16];
                for i in 0..16 {
                    for s in 0..2 {
                        wt[i][s] = mul(qw[i][s], sqrt(add(sigma2, mul(xt[i][s], xt[i][s]))));
                    }
                }
                let sw: [f32; 16] = to_groups(&sum(&wt));
                let fit = sym_search(&xt, &wt, 4);
                let scales: [f32; 16] = to_groups(&fit.scale);
                let mut ls = [0i8; 16];
                let d_block = make_qx_quants(32, &scales, &mut ls, RmseWeight::Square, Some(&sw));
                let codes: [u8; 16] = std::array::from_fn(|j| ls[j] as u8);
                k3_pack_scales(qb, &codes);
                write_f16(qb, K3_D, d_block);
                let lev_iscale: [f32; 16] = to_groups(&fit.lev_iscale);
                let zero_lanes: [f32; 16] = to_groups(&fit.zero);
                k3_finish(xb, qb, |j, h| {
                    if zero_lanes[j].to_bits() != 0 {
                        zeroi()
                    } else {
                        let q = round_clamp(mul(set(lev_iscale[j]), loadx(xb, 16 * j + 8 * h)), -4, 3);
                        addi(q, seti(4))
                    }
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Q2_K

const K2_BYTES: usize = 84;
const K2_QS: usize = 16;
const K2_D: usize = 80;
const K2_DMIN: usize = 82;
const K2_REF_STEPS: ScaleSteps = ScaleSteps { rmin: -0.5, rdelta: 0.1, nstep: 15 };

#[inline(always)]
pub unsafe fn quantize_q2_k(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    for (k, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(K2_BYTES)).enumerate() {
        let xt = load_groups::<16, 2>(xb, 16);
        let mut wt = [[zero(); 2]; 16];
        match imat {
            None => {
                for i in 0..16 {
                    for s in 0..2 {
                        wt[i][s] = abs(xt[i][s]);
                    }
                }
                let fit = asym_search(&xt, &wt, 3, K2_REF_STEPS, true, false);
                let scales: [f32; 16] = to_groups(&fit.scale);
                let mins: [f32; 16] = to_groups(&fit.min);
                let mut max_scale = 0.0f32;
                let mut max_min = 0.0f32;
                for j in 0..16 {
                    if scales[j] > max_scale {
                        max_scale = scales[j];
                    }
                    if mins[j] > max_min {
                        max_min = mins[j];
                    }
                }
                if max_scale > 0.0 {
                    let iscale = 15.0 / max_scale;
                    for j in 0..16 {
                        qb[j] = nearest_int(iscale * scales[j]) as u8;
                    }
                    write_f16(qb, K2_D, max_scale / 15.0);
                } else {
                    qb[..16].fill(0);
                    write_f16(qb, K2_D, 0.0);
                }
                if max_min > 0.0 {
                    let iscale = 15.0 / max_min;
                    for j in 0..16 {
                        qb[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                    }
                    write_f16(qb, K2_DMIN, max_min / 15.0);
                } else {
                    write_f16(qb, K2_DMIN, 0.0);
                }
                k2_finish(xb, qb, &fit);
            }
            Some(w) => {
                let qw = load_groups::<16, 2>(&w[QK_K * k..QK_K * (k + 1)], 16);
                let sigma2 = set(block_sum_sq::<1>(xb)[0] / QK_K as f32);
                for i in 0..16 {
                    for s in 0..2 {
                        wt[i][s] = mul(qw[i][s], sqrt(add(sigma2, mul(xt[i][s], xt[i][s]))));
                    }
                }
                let sw: [f32; 16] = to_groups(&sum(&wt));
                let fit = asym_search(&xt, &wt, 3, WEIGHTED_STEPS, false, true);
                let scales: [f32; 16] = to_groups(&fit.scale);
                let mins: [f32; 16] = to_groups(&fit.min);
                let mut ls = [0u8; 16];
                let mut lm = [0u8; 16];
                let dm = make_qp_quants(15, &scales, &mut ls, &sw);
                let mm = make_qp_quants(15, &mins, &mut lm, &sw);
                write_f16(qb, K2_D, dm);
                write_f16(qb, K2_DMIN, mm);
                for j in 0..16 {
                    qb[j] = ls[j] | (lm[j] << 4);
                }
                k2_finish(xb, qb, &fit);
            }
        }
    }
}

/// The reference's `requantize` and packing of Q2_K.
#[inline(always)]
unsafe fn k2_finish(xb: &[f32], qb: &mut [u8], fit: &AsymFit<2>) {
    let d_all = read_f16(qb, K2_D);
    let m_all = read_f16(qb, K2_DMIN);
    let lev_iscale: [f32; 16] = to_groups(&fit.lev_iscale);
    let lev_min: [f32; 16] = to_groups(&fit.lev_min);
    let zero_lanes: [f32; 16] = to_groups(&fit.zero);
    let mut l = [zerob(); 8];
    for (c, lc) in l.iter_mut().enumerate() {
        let mut v = [zeroi(); 4];
        for g in 0..2 {
            let j = 2 * c + g;
            let sc = qb[j];
            let d = d_all * (sc & 0x0f) as f32;
            for h in 0..2 {
                let xv = loadx(xb, 16 * j + 8 * h);
                v[2 * g + h] = if d != 0.0 {
                    let m = set(m_all * (sc >> 4) as f32);
                    round_clamp(div(add(xv, m), set(d)), 0, 3)
                } else if zero_lanes[j].to_bits() != 0 {
                    zeroi()
                } else {
                    round_clamp(mul(set(lev_iscale[j]), sub(xv, set(lev_min[j]))), 0, 3)
                };
            }
        }
        *lc = pack_u8(v[0], v[1], v[2], v[3]);
    }
    for h in 0..2 {
        let v = pack_2bit([l[4 * h], l[4 * h + 1], l[4 * h + 2], l[4 * h + 3]]);
        storeb(qb, K2_QS + 32 * h, v);
    }
}

// ---------------------------------------------------------------------------------
// IQ4_XS

const XS_BYTES: usize = 136;

/// 32 indices (i32, four vectors in value order) to the 16 bytes of an IQ4 sub-block:
/// byte `j` holds index `j` low and index `j + 16` high.
#[inline(always)]
unsafe fn iq4_pack16(v: [I; 4]) -> H {
    nibbles16(pack_u8(v[0], v[1], v[2], v[3]))
}

/// The 16 bytes of indices of 32 values `xs` scaled by `id`.
#[inline(always)]
pub(super) unsafe fn iq4_indices(xs: &[f32], id: f32) -> H {
    let idv = set(id);
    let mut v = [zeroi(); 4];
    for (c, vc) in v.iter_mut().enumerate() {
        *vc = iq4_index(mul(idv, loadx(xs, 8 * c)));
    }
    iq4_pack16(v)
}

#[inline(always)]
unsafe fn xs_blocks<const K: usize>(x: &[f32], qw: Option<&[f32]>, q: &mut [u8]) {
    let xt = load_groups::<32, K>(x, 32);
    let mut w = [[zero(); K]; 32];
    match qw {
        None => {
            for i in 0..32 {
                for k in 0..K {
                    w[i][k] = mul(xt[i][k], xt[i][k]);
                }
            }
        }
        Some(qw) => {
            let qt = load_groups::<32, K>(qw, 32);
            let s2 = block_sum_sq::<K>(x);
            for k in 0..K {
                let sigma2 = set(s2[k] * (2.0f32 / QK_K as f32));
                for i in 0..32 {
                    w[i][k] = mul(qt[i][k], sqrt(add(sigma2, mul(xt[i][k], xt[i][k]))));
                }
            }
        }
    }
    let dv = iq4_search(&xt, &w, crate::reference::iq4::NTRY);
    for k in 0..K {
        let qb = &mut q[XS_BYTES * k..XS_BYTES * (k + 1)];
        let xb = &x[QK_K * k..QK_K * (k + 1)];
        let scales = lanes(dv[k]);
        let mut max_scale = 0.0f32;
        let mut amax_scale = 0.0f32;
        for &s in &scales {
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = s;
            }
        }
        let d = -max_scale / 32.0;
        qb[..2].copy_from_slice(&crate::reference::common::f32_to_f16(d).to_le_bytes());
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; 4];
        for ib in 0..8 {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let v = iq4_indices(&xb[32 * ib..32 * ib + 32], idl);
            storeh(qb, 8 + 16 * ib, v);
            let l = (l + 32) as u8;
            scales_l[ib / 2] |= (l & 0xf) << (4 * (ib % 2));
            scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
        qb[2..4].copy_from_slice(&scales_h.to_le_bytes());
        qb[4..8].copy_from_slice(&scales_l);
    }
}

#[inline(always)]
pub unsafe fn quantize_iq4_xs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    by_pairs!(x, q, imat, XS_BYTES, xs_blocks)
}
