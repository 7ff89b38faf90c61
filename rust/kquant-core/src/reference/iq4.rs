//! Shared non-linear 4-bit machinery of IQ4_NL and IQ4_XS.
//!
//! Both formats store 4-bit indices into one fixed table of 16 signed levels, scaled per
//! sub-block of 32. IQ4_NL is a single sub-block with an f16 scale; IQ4_XS groups eight
//! sub-blocks under an f16 super-scale with a 6-bit signed multiplier each. Both come
//! from one weighted scale search (ggml's `quantize_row_iq4_nl_impl`), reproduced here
//! with its exact order of float operations.

use super::common::{f32_to_f16, nearest_int, GROUP_MAX_EPS};

/// ggml's `kvalues_iq4nl`: levels packed densely near zero and sparsely in the tails,
/// which fits bell-shaped weight distributions better than a uniform grid.
pub const KVALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Values per sub-block (one scale each).
pub const SUB_BLOCK: usize = 32;

/// Number of scale perturbations tried on each side of the starting scale; ggml's
/// quantizers (with or without an importance matrix) use 7.
pub const NTRY: i32 = 7;

/// Index of the level of `values` (ascending) nearest to `x`, by bisection. A tie
/// between two neighbours goes to the upper one; NaN lands on the last level, as in
/// ggml, because every comparison with it is false.
#[inline]
pub fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    let n = values.len();
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[n - 1] as f32 {
        return n - 1;
    }
    let (mut lo, mut hi) = (0usize, n - 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < values[mid] as f32 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - (values[hi - 1] as f32) < (values[hi] as f32) - x {
        hi - 1
    } else {
        hi
    }
}

/// Scales of one quantized super-block; the 4-bit indices go straight into `qs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scales {
    /// f16 bits of the super-block scale (IQ4_XS) or of the only scale (IQ4_NL).
    pub d: u16,
    /// High 2 bits of each 6-bit sub-block scale (IQ4_XS only; 0 otherwise).
    pub scales_h: u16,
    /// Low 4 bits of the sub-block scales, two per byte (IQ4_XS only; 0 otherwise).
    pub scales_l: [u8; 4],
}

/// ggml's `quantize_row_iq4_nl_impl` with block size 32 and the `kvalues_iq4nl` table.
///
/// `x` is one super-block: 32 values (IQ4_NL) or up to 256 (IQ4_XS, 8 sub-blocks).
/// `qw` are the importance weights for `x`, if any; without them each value is weighted
/// by its square. `qs` receives `x.len() / 2` bytes: byte `j` of sub-block `i` holds
/// value `j` in its low nibble and value `j + 16` in its high nibble.
///
/// `ntry > 0` is the search ggml's quantizers use. `ntry <= 0` is the search-free
/// variant behind `quantize_row_iq4_nl_ref`, which only keeps the first rounding pass.
pub fn quantize_impl(x: &[f32], qw: Option<&[f32]>, ntry: i32, qs: &mut [u8]) -> Scales {
    let values = &KVALUES;
    let n = x.len();
    let nsub = n / SUB_BLOCK;
    debug_assert!(n % SUB_BLOCK == 0 && (1..=8).contains(&nsub));
    debug_assert_eq!(qs.len(), n / 2);

    // Importance weights are tempered by the super-block's doubled mean square so that
    // small values keep some weight.
    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0f32 / n as f32;

    let mut idx = [0u8; 256];
    let mut scales = [0.0f32; 8];
    let mut weight = [0.0f32; SUB_BLOCK];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    let lowest = values[0] as f32;

    for ib in 0..nsub {
        let xb = &x[ib * SUB_BLOCK..(ib + 1) * SUB_BLOCK];
        let lb = &mut idx[ib * SUB_BLOCK..(ib + 1) * SUB_BLOCK];
        match qw {
            Some(qw) => {
                let qwb = &qw[ib * SUB_BLOCK..(ib + 1) * SUB_BLOCK];
                for j in 0..SUB_BLOCK {
                    weight[j] = qwb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..SUB_BLOCK {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            // With a search, the indices are rewritten below from a zero scale, which
            // selects this same level. Without one ggml would pack whatever the buffer
            // held; the level nearest zero is the meaningful choice.
            lb.fill(best_index_int8(values, 0.0) as u8);
            scales[ib] = 0.0;
            continue;
        }
        // The searching variant maps the extreme onto the table's most negative level.
        let mut d = if ntry > 0 { -max / lowest } else { max / lowest };
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..SUB_BLOCK {
            let l = best_index_int8(values, id * xb[j]);
            lb[j] = l as u8;
            let q = values[l] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..SUB_BLOCK {
                let q = values[best_index_int8(values, id * xb[j])] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }

    let mut out = Scales { d: 0, scales_h: 0, scales_l: [0; 4] };
    if nsub > 1 {
        // The sub-block scales become 6-bit signed multiples of d; the largest lands on
        // -32, mirroring the per-value convention. An all-zero super-block gives d = -0.
        let d = -max_scale / 32.0;
        out.d = f32_to_f16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nsub {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[ib * SUB_BLOCK..(ib + 1) * SUB_BLOCK];
            for (o, &v) in idx[ib * SUB_BLOCK..(ib + 1) * SUB_BLOCK].iter_mut().zip(xb) {
                *o = best_index_int8(values, idl * v) as u8;
            }
            let l = (l + 32) as u8;
            out.scales_l[ib / 2] |= (l & 0xf) << (4 * (ib % 2));
            out.scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
    } else {
        out.d = f32_to_f16(scales[0]);
        if ntry > 0 {
            // Re-round against the final scale (in f32, before its f16 rounding).
            let id = if scales[0] != 0.0 { 1.0 / scales[0] } else { 0.0 };
            for (o, &v) in idx[..n].iter_mut().zip(x) {
                *o = best_index_int8(values, id * v) as u8;
            }
        }
    }

    for i in 0..nsub {
        let l = &idx[i * SUB_BLOCK..(i + 1) * SUB_BLOCK];
        for j in 0..SUB_BLOCK / 2 {
            qs[16 * i + j] = l[j] | (l[j + 16] << 4);
        }
    }
    out
}

/// The level of the 4-bit index `i`.
#[inline(always)]
pub fn level(i: u8) -> i32 {
    KVALUES[(i & 0xf) as usize] as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_picks_nearest_level() {
        for (i, &v) in KVALUES.iter().enumerate() {
            assert_eq!(best_index_int8(&KVALUES, v as f32), i);
        }
        assert_eq!(best_index_int8(&KVALUES, -1e30), 0);
        assert_eq!(best_index_int8(&KVALUES, 1e30), 15);
        assert_eq!(best_index_int8(&KVALUES, 0.0), 8);
        // -10 and 1: midpoint -4.5 goes to the upper level
        assert_eq!(best_index_int8(&KVALUES, -4.5), 8);
        assert_eq!(best_index_int8(&KVALUES, -4.6), 7);
        assert_eq!(best_index_int8(&KVALUES, f32::NAN), 15);
        // exhaustive check against a linear scan (ties to the upper level)
        let mut v = -130.0f32;
        while v < 130.0 {
            let lin = (0..16)
                .min_by(|&a, &b| {
                    let da = (v - KVALUES[a] as f32).abs();
                    let db = (v - KVALUES[b] as f32).abs();
                    da.partial_cmp(&db).unwrap().then(b.cmp(&a))
                })
                .unwrap();
            assert_eq!(best_index_int8(&KVALUES, v), lin, "at {v}");
            v += 0.125;
        }
    }

    #[test]
    fn zero_super_block_is_zero_scale_and_middle_level() {
        let mut qs = [0u8; 128];
        let s = quantize_impl(&[0.0; 256], None, NTRY, &mut qs);
        assert_eq!(s.d, 0x8000, "ggml writes -0 for the super-scale");
        assert_eq!(s.scales_l, [0; 4]);
        assert_eq!(s.scales_h, 0xaaaa, "every 6-bit scale is 32, i.e. multiplier 0");
        assert!(qs.iter().all(|&b| b == 0x88));

        let mut qs = [0u8; 16];
        let s = quantize_impl(&[0.0; 32], None, NTRY, &mut qs);
        assert_eq!(s.d, 0);
        assert!(qs.iter().all(|&b| b == 0x88));
    }
}
