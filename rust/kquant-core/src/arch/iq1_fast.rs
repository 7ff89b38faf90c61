//! Faster, byte-identical IQ1_S / IQ1_M sub-block searches.
//!
//! IQ1_M: ggml scores each of the 153 splits of a sorted sub-block of 16 into the levels
//! -1, 0, 1 by summing 16 weighted terms per shift code, in sorted order. Every term is
//! one of three values per position (its level), so the terms are computed once, and the
//! sums of splits that share a start reuse the common prefix: a prefix of sequential
//! float additions is the same number whichever split it belongs to. Only the tail after
//! the second boundary is added per split, in ggml's order.
//!
//! Plain Rust over fixed-size arrays (the four shift codes' two sums are eight lanes);
//! AVX2 and NEON wrappers compile it for their instruction sets.

use crate::reference::iq1;
use crate::reference::iq1::{X_M, X_P};
use crate::reference::iq1_m::{self, SubBlock};

/// Drop-in for `iq1_m::quantize_sub_block`.
#[inline(always)]
pub(crate) fn iq1_m_sub_block(xb: &[f32], weight: &[f32; 16]) -> SubBlock {
    let skipped = SubBlock { index: [0; 2], scale: 0.0, shift: 0, written: false };
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        max = if max > v.abs() { max } else { v.abs() };
    }
    if max < 1e-7 {
        return skipped;
    }
    let idx: [usize; 16] = iq1::sorted_order(xb);
    // term[j][b]: lanes 0..4 the sumqx terms of shift codes 0..3, lanes 4..8 the sumq2
    // terms, for sorted position j at level b
    let mut term = [[[0.0f32; 8]; 3]; 16];
    for (j, &i) in idx.iter().enumerate() {
        let w = weight[i];
        for b in 0..3 {
            let (p, m) = (X_P[b], X_M[b]);
            let lv = if i < 8 { [p, p, m, m] } else { [p, m, p, m] };
            for k in 0..4 {
                term[j][b][k] = w * lv[k] * xb[i];
                term[j][b][4 + k] = w * lv[k] * lv[k];
            }
        }
    }
    let mut best_score = -f32::MAX;
    let mut scale = max;
    let (mut besti1, mut besti2, mut best_k) = (0usize, 0usize, -1i32);
    let mut low = [0.0f32; 8];
    for i1 in 0..=16 {
        let mut pre = low;
        for i2 in i1..=16 {
            let mut s = pre;
            for t in term[i2..].iter() {
                for l in 0..8 {
                    s[l] += t[2][l];
                }
            }
            for k in 0..4 {
                if s[4 + k] > 0.0 && s[k] * s[k] > best_score * s[4 + k] {
                    scale = s[k] / s[4 + k];
                    best_score = scale * s[k];
                    besti1 = i1;
                    besti2 = i2;
                    best_k = k as i32;
                }
            }
            if i2 < 16 {
                for l in 0..8 {
                    pre[l] += term[i2][1][l];
                }
            }
        }
        if i1 < 16 {
            for l in 0..8 {
                low[l] += term[i1][0][l];
            }
        }
    }
    if best_k < 0 {
        return skipped;
    }
    iq1_m::finish_sub_block(xb, weight, &idx, besti1, besti2, best_k as u8, scale)
}
