//! Byte-for-byte comparisons of the AVX2 quantizers with the reference, over many
//! seeds of rows built to hit the searches' corner cases: whole blocks and single
//! sub-blocks that are zero, constant, one-signed, tiny, subnormal or huge, values on
//! exact ties, spikes, importance weights with zeros and extreme ranges.

// `!(v < m)` is the point: true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::lanes::IQ4_MIDS;
use crate::reference::{self, iq4};
use crate::types::QuantType;

type Simd = unsafe fn(&[f32], &mut [u8], Option<&[f32]>);

fn simd_quantizers() -> Vec<(QuantType, Simd)> {
    use QuantType::*;
    vec![
        (Q4K, super::quantize_q4_k as Simd),
        (Q5K, super::quantize_q5_k as Simd),
        (Q6K, super::quantize_q6_k as Simd),
        (Q3K, super::quantize_q3_k as Simd),
        (Q2K, super::quantize_q2_k as Simd),
        (IQ4XS, super::quantize_iq4_xs as Simd),
        (IQ4NL, super::quantize_iq4_nl as Simd),
        (Q4_0, super::quantize_q4_0 as Simd),
        (Q4_1, super::quantize_q4_1 as Simd),
        (Q5_0, super::quantize_q5_0 as Simd),
        (Q5_1, super::quantize_q5_1 as Simd),
    ]
}

fn have_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    /// 10^e for e uniform in [lo, hi].
    fn magnitude(&mut self, lo: f32, hi: f32) -> f32 {
        10f32.powf(lo + (hi - lo) * self.unit())
    }
}

/// One run of `n` values of a randomly chosen kind.
fn fill(rng: &mut Rng, out: &mut [f32], finite: bool) {
    let n = out.len();
    let kind = rng.below(if finite { 17 } else { 19 });
    let scale = match rng.below(4) {
        0 => 1.0,
        1 => rng.magnitude(-3.0, 3.0),
        2 => rng.magnitude(-45.0, -20.0),
        _ => rng.magnitude(5.0, 38.0),
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = match kind {
            0 => rng.normal() * scale,
            1 => 0.0,
            2 => -0.0,
            3 => scale,
            4 => -scale,
            5 => rng.normal().abs() * scale,
            6 => -rng.normal().abs() * scale,
            // halves and small integers: levels land exactly on rounding ties
            7 => (rng.below(64) as f32 - 32.0) * 0.5,
            8 => (rng.below(17) as f32 - 8.0) * scale,
            9 => {
                if rng.below(13) == 0 {
                    rng.normal() * scale
                } else {
                    0.0
                }
            }
            10 => (i as f32 - n as f32 / 2.0) * scale / n as f32,
            11 => {
                if i % 2 == 0 {
                    scale
                } else {
                    -scale
                }
            }
            12 => f32::from_bits(rng.next() as u32 & 0x807f_ffff),
            13 => loop {
                let f = f32::from_bits(rng.next() as u32);
                if f.is_finite() {
                    break f;
                }
            },
            14 => (rng.normal() * scale).clamp(-65504.0, 65504.0),
            15 => {
                let base = [0.0, 1.0, -1.0, 0.5][rng.below(4)];
                base + rng.below(3) as f32 * scale
            }
            16 => [1.0e-15, -1.0e-15, 0.9e-15, 1.1e-15][rng.below(4)] * (rng.below(3) as f32),
            17 => [f32::INFINITY, f32::NEG_INFINITY, 1.0][rng.below(3)],
            _ => [f32::NAN, 2.0, -1.0][rng.below(3)],
        };
    }
}

/// A row of `nb` blocks of `bs` values: each block of one kind, or sub-block pieces
/// of different kinds.
fn row(rng: &mut Rng, nb: usize, bs: usize, finite: bool) -> Vec<f32> {
    let mut x = vec![0.0f32; nb * bs];
    for b in x.chunks_exact_mut(bs) {
        if bs > 32 && rng.below(2) == 0 {
            let piece = [16, 32, 64][rng.below(3)];
            for p in b.chunks_mut(piece) {
                fill(rng, p, finite);
            }
        } else {
            fill(rng, b, finite);
        }
    }
    x
}

fn imatrix(rng: &mut Rng, n: usize) -> Vec<f32> {
    let kind = rng.below(6);
    (0..n)
        .map(|_| match kind {
            0 => rng.unit() * 2.0,
            1 => 1.0,
            2 => {
                if rng.below(4) == 0 {
                    0.0
                } else {
                    rng.unit() * 10.0
                }
            }
            3 => rng.magnitude(-30.0, 30.0),
            4 => 0.0,
            _ => rng.normal().abs() * rng.magnitude(-3.0, 3.0),
        })
        .collect()
}

fn compare(t: QuantType, f: Simd, x: &[f32], imat: Option<&[f32]>, what: &str) -> Result<(), String> {
    let r = reference::kernels(t).unwrap();
    let n = t.row_size(x.len()).unwrap();
    let mut a = vec![0xa5u8; n];
    let mut b = vec![0x5au8; n];
    (r.quantize)(x, &mut a, imat);
    // SAFETY: the callers checked the CPU features.
    unsafe { f(x, &mut b, imat) };
    match a.iter().zip(&b).position(|(p, q)| p != q) {
        None => Ok(()),
        Some(i) => {
            let bs = t.type_size();
            let blk = i / bs;
            let xb = &x[blk * t.block_size()..(blk + 1) * t.block_size()];
            Err(format!(
                "{} {what} imat={}: byte {i} (block {blk}, offset {}) simd {:#04x} ref {:#04x}; block values {:?}",
                t.name(),
                imat.is_some(),
                i % bs,
                b[i],
                a[i],
                &xb[..xb.len().min(64)]
            ))
        }
    }
}

fn run_random(seeds: u64, finite: bool) {
    if !have_avx2() {
        return;
    }
    let mut failures = Vec::new();
    for (t, f) in simd_quantizers() {
        let bs = t.block_size();
        for seed in 0..seeds {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed.wrapping_mul(0x1234_5678_9abc_def1) + t as u64));
            let nb = 1 + rng.below(if bs == 32 { 40 } else { 5 });
            let x = row(&mut rng, nb, bs, finite);
            let w = imatrix(&mut rng, x.len());
            for imat in [None, Some(&w[..])] {
                if let Err(e) = compare(t, f, &x, imat, &format!("seed {seed}")) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures[..failures.len().min(10)].join("\n"));
}

#[test]
fn random_rows_match_reference() {
    run_random(1500, true);
}

/// Many more seeds (about a minute in release).
#[test]
#[ignore]
fn random_rows_match_reference_long() {
    run_random(40_000, true);
}

/// Non-finite inputs have no meaningful quantization, but the bytes still follow the
/// reference. Only the canonical NaN is used: when two NaNs with different payloads
/// meet, which payload survives depends on the operand order the compiler picks
/// (Rust leaves it unspecified), and a payload can decide a level through
/// `nearest_int`'s bit trick, so NaNs with arbitrary payloads have no fixed answer.
#[test]
fn non_finite_rows_match_reference() {
    run_random(300, false);
}

#[test]
fn iq4_midpoints_match_best_index_sampled() {
    let mut rng = Rng(7);
    let check = |v: f32| {
        let want = iq4::best_index_int8(&iq4::KVALUES, v);
        let got = IQ4_MIDS.iter().filter(|&&m| !(v < m)).count();
        assert_eq!(got, want, "at {v:e} ({:#010x})", v.to_bits());
    };
    for &m in &IQ4_MIDS {
        let b = m.to_bits();
        for d in 0..64u32 {
            check(f32::from_bits(b.wrapping_add(d)));
            check(f32::from_bits(b.wrapping_sub(d)));
        }
    }
    for _ in 0..2_000_000 {
        check(f32::from_bits(rng.next() as u32));
        check((rng.unit() - 0.5) * 300.0);
    }
    for v in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::MAX, -f32::MAX] {
        check(v);
    }
}

/// Every one of the 2^32 float patterns (a few seconds in release).
#[test]
#[ignore]
fn iq4_midpoints_match_best_index_exhaustive() {
    for bits in 0..=u32::MAX {
        let v = f32::from_bits(bits);
        let want = iq4::best_index_int8(&iq4::KVALUES, v);
        let got = IQ4_MIDS.iter().filter(|&&m| !(v < m)).count();
        assert_eq!(got, want, "at {v:e} ({bits:#010x})");
    }
}

/// IQ1_S sub-blocks near its 1e-12 cut-off, where weights are as small as the values
/// and the split scores' products go subnormal (the thresholded scan must step aside).
#[test]
fn tiny_iq1_s_rows_match_reference() {
    if !have_avx2() {
        return;
    }
    let mut failures = Vec::new();
    for seed in 0..400u64 {
        let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let scale = rng.magnitude(-13.0, -9.0);
        let x: Vec<f32> = (0..256).map(|_| rng.normal() * scale).collect();
        let w: Vec<f32> = (0..256).map(|_| rng.unit() * 4.0 + 0.01).collect();
        if let Err(e) = compare(QuantType::IQ1S, super::quantize_iq1_s, &x, Some(&w), &format!("seed {seed}")) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures[..failures.len().min(3)].join("\n"));
}
