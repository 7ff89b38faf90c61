//! Parity of every ISA path with the reference kernels, on random and adversarial
//! inputs. `tests/simd_parity.rs` (a plain `fn main`, so it runs under qemu where
//! threads hang) and a unit test on x86-64 both call [`run`].
//!
//! The rules: quantize gives the same bytes, dequantize the same bits (any NaN equals
//! any NaN: a NaN's payload depends on operand order inside the multiply), and a dot
//! lies within 1e-6 of the reference relative to `sum |w_i * y_i|`.

use crate::dispatch::{self, Isa, Variant};
use crate::reference::{self, Kernels};
use crate::types::{QuantType, QK_K};

/// What a run checked and what failed.
#[derive(Default, Debug)]
pub struct Report {
    /// One line per (variant, format) saying what was compared.
    pub lines: Vec<String>,
    pub checks: usize,
    pub failures: Vec<String>,
}

/// xorshift64*: deterministic, no dependencies.
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
    fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Named float rows of length `n` that stress the quantizers.
fn inputs(n: usize, rng: &mut Rng) -> Vec<(&'static str, Vec<f32>)> {
    let mut v: Vec<(&'static str, Vec<f32>)> = Vec::new();
    v.push(("normal", (0..n).map(|_| rng.normal()).collect()));
    v.push(("uniform", (0..n).map(|_| rng.unit() * 2.0 - 1.0).collect()));
    v.push(("heavy_tail", (0..n).map(|_| rng.normal() / (rng.unit() + 0.01)).collect()));
    v.push(("zeros", vec![0.0; n]));
    v.push(("neg_zeros", vec![-0.0; n]));
    v.push(("const_0.5", vec![0.5; n]));
    v.push(("const_-3", vec![-3.0; n]));
    v.push(("ramp", (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.01).collect()));
    v.push(("huge_1e30", (0..n).map(|i| if i % 2 == 0 { 1e30 } else { -1e30 * rng.unit() }).collect()));
    v.push(("huge_3e38", (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * 3.0e38).collect()));
    v.push(("tiny_1e-30", (0..n).map(|_| rng.normal() * 1e-30).collect()));
    // Products of values and weights underflow here while the values themselves do not.
    v.push(("tiny_2^-40", (0..n).map(|_| rng.normal() * 9.094947e-13).collect()));
    // Scales here underflow to subnormals or their inverses overflow to inf.
    v.push(("subnormal_1e-38", (0..n).map(|_| rng.normal() * 1e-38).collect()));
    v.push(("subnormal_1e-44", (0..n).map(|i| if i % 3 == 0 { 1e-44 } else { -3e-45 }).collect()));
    v.push(("sparse_spikes", (0..n).map(|_| if rng.below(29) == 0 { rng.normal() * 1e4 } else { 0.0 }).collect()));
    // A common negative offset: formats with a minimum cancel most of it, so the
    // float terms of their dots are far larger than the result.
    v.push(("offset_-10", (0..n).map(|_| -10.0 - rng.unit()).collect()));
    v.push(("alternating", (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect()));
    // With the block extreme at -127 the scale is exactly 1, so the other values
    // land exactly on halves: ties away (Q8_0/Q8_1) and ties to even (Q8_K) differ here.
    v.push((
        "ties",
        (0..n).map(|i| if i % 32 == 0 { -127.0 } else { (rng.below(253) as f32 - 126.0) + 0.5 }).collect(),
    ));
    // Equal magnitudes of both signs: the first one decides the sign of the scale.
    v.push((
        "sign_tie",
        (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    -2.0
                } else if i % 5 == 2 {
                    2.0
                } else {
                    0.25
                }
            })
            .collect(),
    ));
    v.push((
        "random_bits",
        (0..n)
            .map(|_| loop {
                let f = f32::from_bits(rng.next() as u32);
                if f.is_finite() {
                    break f;
                }
            })
            .collect(),
    ));
    v
}

/// Offsets of the f16 scale fields inside a block, so random blocks can get tame scales.
fn f16_fields(t: QuantType) -> &'static [usize] {
    use QuantType::*;
    match t {
        Q4_0 | Q5_0 | Q8_0 | IQ4NL | IQ4XS | IQ3XXS | IQ3S | IQ1S => &[0],
        IQ2XXS | IQ2XS | IQ2S => &[0],
        Q1_0 | Q2_0 => &[0],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        Q4_1 | Q5_1 | Q8_1 | Q4K | Q5K => &[0, 2],
        Q2K => &[80, 82],
        Q3K => &[108],
        Q6K => &[208],
        _ => &[],
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    reference::common::f32_to_f16(v).to_le_bytes()
}

/// Random bytes with finite, moderate scales (and consistent sums for Q8_1 / Q8_K),
/// optionally with every int8 quant of a Q8 block forced to -128.
fn tame_block_bytes(t: QuantType, nblocks: usize, rng: &mut Rng, min_quants: bool) -> Vec<u8> {
    let ts = t.type_size();
    let mut b = rng.bytes(nblocks * ts);
    for blk in b.chunks_exact_mut(ts) {
        for &at in f16_fields(t) {
            let s = (0.001 + rng.unit() * 2.0) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
            blk[at..at + 2].copy_from_slice(&f16_bytes(s));
        }
        match t {
            QuantType::Q8_0 if min_quants => blk[2..].fill(0x80),
            QuantType::Q8_1 => {
                if min_quants {
                    blk[4..].fill(0x80);
                }
                let d = reference::common::read_f16(blk, 0);
                let sum: i32 = blk[4..].iter().map(|&q| q as i8 as i32).sum();
                blk[2..4].copy_from_slice(&f16_bytes(sum as f32 * d));
            }
            QuantType::Q8K => {
                let d = (0.001 + rng.unit()) * 0.01;
                blk[0..4].copy_from_slice(&d.to_le_bytes());
                if min_quants {
                    blk[4..4 + QK_K].fill(0x80);
                }
                for j in 0..QK_K / 16 {
                    let s: i32 = blk[4 + 16 * j..4 + 16 * j + 16].iter().map(|&q| q as i8 as i32).sum();
                    blk[4 + QK_K + 2 * j..4 + QK_K + 2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
                }
            }
            _ => {}
        }
    }
    b
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

struct Ctx<'a> {
    report: &'a mut Report,
    variant: Variant,
    t: QuantType,
    dots: usize,
    dots_identical: usize,
    /// Worst dot error relative to the summed terms, for formats with a minimum.
    worst_terms: f64,
}

impl Ctx<'_> {
    fn fail(&mut self, msg: String) {
        if self.report.failures.len() < 200 {
            self.report.failures.push(format!("{} {}: {msg}", self.variant.name(), self.t.name()));
        }
    }

    fn quantize(&mut self, simd: &Kernels, refk: &Kernels, what: &str, x: &[f32], imat: Option<&[f32]>) {
        let n = self.t.row_size(x.len()).unwrap();
        let mut a = vec![0xa5u8; n];
        let mut b = vec![0x5au8; n];
        (refk.quantize)(x, &mut a, imat);
        (simd.quantize)(x, &mut b, imat);
        self.report.checks += 1;
        if let Some(i) = a.iter().zip(&b).position(|(p, q)| p != q) {
            let bs = self.t.type_size();
            self.fail(format!(
                "quantize {what} (n={}): byte {i} (block {}, offset {}) is {:#04x}, reference {:#04x}",
                x.len(),
                i / bs,
                i % bs,
                b[i],
                a[i]
            ));
        }
    }

    fn dequantize(&mut self, simd: &Kernels, refk: &Kernels, what: &str, q: &[u8]) {
        let n = q.len() / self.t.type_size() * self.t.block_size();
        let mut a = vec![1.5f32; n];
        let mut b = vec![-2.5f32; n];
        (refk.dequantize)(q, &mut a);
        (simd.dequantize)(q, &mut b);
        self.report.checks += 1;
        if let Some(i) = a.iter().zip(&b).position(|(p, r)| !same_bits(*p, *r)) {
            self.fail(format!(
                "dequantize {what} (n={n}): value {i} is {:e} ({:#010x}), reference {:e} ({:#010x})",
                b[i],
                b[i].to_bits(),
                a[i],
                a[i].to_bits()
            ));
        }
    }

    /// Compares one dot; returns its error relative to `sum |w*y|`.
    fn dot(&mut self, simd: &Kernels, refk: &Kernels, partner: &Kernels, what: &str, x: &[u8], y: &[u8]) -> f64 {
        let (Some(sd), Some(rd)) = (simd.vec_dot, refk.vec_dot) else { return 0.0 };
        let n = x.len() / self.t.type_size() * self.t.block_size();
        let mut wx = vec![0.0f32; n];
        let mut wy = vec![0.0f32; n];
        (refk.dequantize)(x, &mut wx);
        (partner.dequantize)(y, &mut wy);
        let scale: f64 = wx.iter().zip(&wy).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let r = rd(x, y) as f64;
        let s = sd(x, y) as f64;
        if !scale.is_finite() || (scale > f32::MAX as f64 && !(r.is_finite() && s.is_finite())) {
            // Infinite scales (f16 overflow of huge inputs), or terms whose sum passes
            // f32::MAX: a partial sum overflows in one order of additions and not in
            // another, and inf - inf makes NaN, so both must merely not crash.
            return 0.0;
        }
        self.report.checks += 1;
        self.dots += 1;
        if r.to_bits() == s.to_bits() || (r.is_nan() && s.is_nan()) {
            // Identical, or both overflowed the f32 result the same way.
            self.dots_identical += 1;
            return 0.0;
        }
        // Formats with a minimum (w = d*q - m) sum terms much larger than w*y when the
        // two parts cancel, and any two orders of float additions then differ by more
        // than 1e-6 of sum |w*y|. Their bound is taken relative to the terms actually
        // summed: sum |y| (|d*q| + |m|).
        let terms = match min_fields(self.t) {
            Some((d_at, m_at)) => {
                let part = |zero_at: usize| {
                    let mut xz = x.to_vec();
                    for blk in xz.chunks_exact_mut(self.t.type_size()) {
                        blk[zero_at..zero_at + 2].fill(0);
                    }
                    let mut w = vec![0.0f32; n];
                    (refk.dequantize)(&xz, &mut w);
                    w
                };
                let (a, b) = (part(m_at), part(d_at));
                a.iter().zip(&b).zip(&wy).map(|((a, b), y)| (a.abs() as f64 + b.abs() as f64) * (*y as f64).abs()).sum()
            }
            None => scale,
        };
        let err = (r - s).abs();
        // A final f32 rounding of the result is allowed on top of the relative bound.
        let tol = 1e-6 * scale.max(terms) + r.abs() * f32::EPSILON as f64 + f32::MIN_POSITIVE as f64;
        let within = err <= tol; // false for NaN too
        if !within {
            self.fail(format!("vec_dot {what} (n={n}): {s:e}, reference {r:e}, |diff| {err:e} > {tol:e}"));
        }
        if terms > scale {
            self.worst_terms = self.worst_terms.max(err / terms);
        }
        if scale > 0.0 {
            err / scale
        } else {
            0.0
        }
    }
}

/// Offsets of the f16 scale and minimum of the formats whose weights are `d*q - m`.
fn min_fields(t: QuantType) -> Option<(usize, usize)> {
    use QuantType::*;
    match t {
        Q4_1 | Q5_1 | Q4K | Q5K => Some((0, 2)),
        Q2K => Some((80, 82)),
        _ => None,
    }
}

fn row_lengths(t: QuantType) -> Vec<usize> {
    let bs = t.block_size();
    if bs == 1 {
        vec![1, 7, 8, 15, 16, 17, 31, 33, 100, 256, 1000]
    } else if bs == 32 {
        [1, 2, 3, 4, 5, 8, 9, 32].iter().map(|k| k * bs).collect()
    } else {
        [1, 2, 3, 5].iter().map(|k| k * bs).collect()
    }
}

fn check_format(report: &mut Report, variant: Variant, t: QuantType, rng: &mut Rng) {
    let Some(refk) = reference::kernels(t) else {
        report.lines.push(format!("{:<14} {:<6} reference not available yet: skipped", variant.name(), t.name()));
        return;
    };
    let simd = match dispatch::kernels_for_variant(variant, t) {
        Ok(k) => k,
        Err(e) => {
            report.failures.push(format!("{} {}: {e}", variant.name(), t.name()));
            return;
        }
    };
    let (aq, adq, adot) = dispatch::accelerated(variant, t);
    let pt = t.vec_dot_type();
    let partner = reference::kernels(pt);
    let checks_before = report.checks;
    let mut worst = 0.0f64;
    let mut ctx = Ctx { report, variant, t, dots: 0, dots_identical: 0, worst_terms: 0.0 };
    for n in row_lengths(t) {
        let rows = inputs(n, rng);
        let imat: Vec<f32> = (0..n).map(|_| rng.unit() * 2.0).collect();
        // Mostly 1e-3 with a few large entries: importance spread over five decades.
        let sparse: Vec<f32> = (0..n).map(|_| if rng.below(5) == 0 { rng.unit() * 100.0 } else { 1e-3 }).collect();
        for (what, x) in &rows {
            let mut q = vec![0u8; t.row_size(n).unwrap()];
            (refk.quantize)(x, &mut q, None);
            if aq {
                ctx.quantize(&simd, refk, what, x, None);
                ctx.quantize(&simd, refk, what, x, Some(&imat));
                ctx.quantize(&simd, refk, what, x, Some(&sparse));
            }
            if adq {
                ctx.dequantize(&simd, refk, what, &q);
            }
            if let (true, Some(pk)) = (adot && refk.vec_dot.is_some(), partner) {
                // Partner rows from several inputs, quantized by the reference.
                for (ywhat, yx) in
                    rows.iter().filter(|(w, _)| matches!(*w, "normal" | "ramp" | "ties" | "huge_1e30" | "offset_-10"))
                {
                    let mut yq = vec![0u8; pt.row_size(n).unwrap()];
                    (pk.quantize)(yx, &mut yq, None);
                    let e = ctx.dot(&simd, refk, pk, &format!("{what} . {ywhat}"), &q, &yq);
                    worst = worst.max(e);
                }
            }
        }
        let nb = n / t.block_size();
        if adq {
            // Raw random bytes: scales of every bit pattern, NaN and inf included.
            for _ in 0..4 {
                let q = rng.bytes(nb * t.type_size());
                ctx.dequantize(&simd, refk, "random_bytes", &q);
            }
            let q = tame_block_bytes(t, nb, rng, true);
            ctx.dequantize(&simd, refk, "min_quants", &q);
        }
        if let (true, Some(pk)) = (adot && refk.vec_dot.is_some() && !t.is_float(), partner) {
            for round in 0..6 {
                let x = tame_block_bytes(t, nb, rng, round == 1);
                let y = tame_block_bytes(pt, n / pt.block_size(), rng, round >= 2);
                let e = ctx.dot(&simd, refk, pk, &format!("tame_random_bytes#{round}"), &x, &y);
                worst = worst.max(e);
            }
        }
    }
    if t.is_float() && t != QuantType::F32 {
        // Every 16-bit pattern once.
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        if adq {
            ctx.dequantize(&simd, refk, "all_16bit_patterns", &all);
        }
        if aq {
            let mut bits = Rng(0x1234_5678);
            let x: Vec<f32> = (0..4099).map(|_| f32::from_bits(bits.next() as u32)).collect();
            let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
            ctx.quantize(&simd, refk, "random_finite_bits", &finite, None);
            let mut specials: Vec<f32> = vec![
                f32::MAX,
                -f32::MAX,
                65504.0,
                65519.99,
                65520.0,
                -65520.0,
                5.96e-8,
                2.98e-8,
                2.99e-8,
                -2.98e-8,
                1e-45,
                f32::MIN_POSITIVE,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                -f32::NAN,
                f32::from_bits(0x7f80_0001),
                f32::from_bits(0xffc0_1234),
                f32::from_bits(0x3f80_8000),
                f32::from_bits(0x3f81_8000),
            ];
            specials.extend((0..12).map(|i| f32::from_bits(0x7f7f_ff00 + i * 0x11)));
            ctx.quantize(&simd, refk, "specials_nan_inf", &specials, None);
        }
    }
    let checked = ctx.report.checks - checks_before;
    let mark = |b: bool| if b { "simd" } else { "ref " };
    let dot = if refk.vec_dot.is_none() { "none" } else { mark(adot) };
    let tail = if adot && refk.vec_dot.is_some() {
        let mut t = format!(", dots bit-identical {}/{}, worst {worst:.1e} of sum|w*y|", ctx.dots_identical, ctx.dots);
        if ctx.worst_terms > 0.0 {
            t += &format!(" ({:.1e} of sum |y|(|d*q|+|m|))", ctx.worst_terms);
        }
        t
    } else {
        String::new()
    };
    report.lines.push(format!(
        "{:<14} {:<6} quantize {} dequantize {} vec_dot {}: {checked} checks{tail}",
        variant.name(),
        t.name(),
        mark(aq),
        mark(adq),
        dot
    ));
}

/// Checks every variant this CPU runs (except plain scalar, which is the reference)
/// against the reference, for every format whose reference exists.
pub fn run() -> Report {
    let mut report = Report::default();
    let variants: Vec<Variant> = dispatch::available_variants().into_iter().filter(|v| v.isa != Isa::Scalar).collect();
    if variants.is_empty() {
        report.lines.push("no SIMD path on this CPU: nothing to compare".to_string());
    }
    for variant in variants {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for t in QuantType::ALL {
            check_format(&mut report, variant, t, &mut rng);
        }
    }
    report
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn simd_matches_reference() {
        let r = super::run();
        for l in &r.lines {
            println!("{l}");
        }
        assert!(r.failures.is_empty(), "{} failures:\n{}", r.failures.len(), r.failures.join("\n"));
    }
}
