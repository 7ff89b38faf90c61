//! Q5_K: Q4_K's header and sub-block scheme with 5-bit levels (176 bytes): `d`, `dmin`,
//! 12 bytes of packed scales/mins, 32 bytes of high bits, 128 bytes of low nibbles.
//! Value `64c + k` (k < 32) has its low nibble in the low half of nibble byte `32c + k`
//! and its fifth bit in bit `2c` of high-bit byte `k`; value `64c + k + 32` uses the
//! high half and bit `2c + 1`.

use super::q4_k::{self, DotAcc, QS as HEADER};
use super::q8_k;
use super::search::ScaleSteps;
use super::Kernels;
use crate::types::QK_K;

pub const BLOCK_BYTES: usize = 176;
/// Offsets of the high bits and the low nibbles.
pub const QH: usize = HEADER;
pub const QL: usize = QH + QK_K / 8;

const NMAX: i32 = 31;
/// The reference quantizer's scale candidates.
const REF_STEPS: ScaleSteps = ScaleSteps { rmin: -0.5, rdelta: 0.1, nstep: 15 };

pub static KERNELS: Kernels = Kernels { quantize, dequantize, vec_dot: Some(vec_dot) };

fn quantize(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    let mut l = [0u8; QK_K];
    for (i, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        match imat {
            None => q4_k::fit_block_ref(xb, qb, &mut l, NMAX, REF_STEPS),
            Some(w) => q4_k::fit_block_weighted(xb, &w[QK_K * i..QK_K * (i + 1)], qb, &mut l, NMAX, true),
        }
        pack_levels(&l, qb);
    }
}

fn pack_levels(l: &[u8; QK_K], qb: &mut [u8]) {
    let (qh, ql) = qb[QH..].split_at_mut(QL - QH);
    qh.fill(0);
    for c in 0..QK_K / 64 {
        let lo_bit = 1u8 << (2 * c);
        let hi_bit = 2u8 << (2 * c);
        for k in 0..32 {
            let mut l1 = l[64 * c + k];
            if l1 > 15 {
                l1 -= 16;
                qh[k] |= lo_bit;
            }
            let mut l2 = l[64 * c + k + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[k] |= hi_bit;
            }
            ql[32 * c + k] = l1 | (l2 << 4);
        }
    }
}

fn unpack_levels(qb: &[u8], l: &mut [u8; QK_K]) {
    let qh = &qb[QH..QL];
    let ql = &qb[QL..];
    for c in 0..QK_K / 64 {
        let lo_bit = 1u8 << (2 * c);
        let hi_bit = 2u8 << (2 * c);
        for k in 0..32 {
            let b = ql[32 * c + k];
            l[64 * c + k] = (b & 0x0f) + if qh[k] & lo_bit != 0 { 16 } else { 0 };
            l[64 * c + k + 32] = (b >> 4) + if qh[k] & hi_bit != 0 { 16 } else { 0 };
        }
    }
}

fn dequantize(q: &[u8], y: &mut [f32]) {
    let mut l = [0u8; QK_K];
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK_K)) {
        unpack_levels(qb, &mut l);
        q4_k::dequantize_levels(qb, &l, yb);
    }
}

fn vec_dot(q: &[u8], yq: &[u8]) -> f32 {
    let mut acc = DotAcc::new();
    let mut l = [0u8; QK_K];
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(yq.chunks_exact(q8_k::BLOCK_BYTES)) {
        unpack_levels(qb, &mut l);
        acc.add_block(&l, qb, yb);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(x: &[f32], imat: Option<&[f32]>) -> Vec<f32> {
        crate::reference::roundtrip(&KERNELS, QK_K, BLOCK_BYTES, x, imat).1
    }

    #[test]
    fn level_packing_roundtrips() {
        let l: [u8; QK_K] = std::array::from_fn(|i| (i * 7 % 32) as u8);
        let mut qb = [0u8; BLOCK_BYTES];
        pack_levels(&l, &mut qb);
        let mut back = [0u8; QK_K];
        unpack_levels(&qb, &mut back);
        assert_eq!(l, back);
    }

    #[test]
    fn adversarial_blocks() {
        let ramp: Vec<f32> = (0..QK_K).map(|i| i as f32 / 64.0 - 2.0).collect();
        let cases: Vec<(Vec<f32>, f32)> = vec![
            (vec![0.0; QK_K], 0.0),
            (vec![0.5; QK_K], 0.01),
            (vec![-3.0; QK_K], 0.01),
            (ramp.clone(), 0.08),
            // the f16 dmin (max min / 63) caps the usable magnitude near 4e6
            (ramp.iter().map(|v| v * 1e6).collect(), 0.08),
            // far below f16 range: the scales flush to zero, so only "no worse than zero" holds
            (ramp.iter().map(|v| v * 1e-30).collect(), 1.0),
            ((0..QK_K).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect(), 0.05),
        ];
        let imat: Vec<f32> = (0..QK_K).map(|i| 0.5 + (i % 7) as f32).collect();
        for (x, rel) in &cases {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for w in [None, Some(&imat[..])] {
                let y = roundtrip(x, w);
                assert!(y.iter().all(|v| v.is_finite()));
                let err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                if amax == 0.0 {
                    assert!(y.iter().all(|&v| v == 0.0));
                } else {
                    assert!(err <= rel * amax, "err {err} amax {amax}");
                }
            }
        }
    }

    #[test]
    fn huge_values_do_not_panic() {
        for sign in [1.0f32, -1.0] {
            let x: Vec<f32> = (0..QK_K).map(|i| sign * (1e30 + i as f32 * 1e28)).collect();
            roundtrip(&x, None);
            roundtrip(&x, Some(&vec![1.0f32; QK_K]));
        }
    }
}
