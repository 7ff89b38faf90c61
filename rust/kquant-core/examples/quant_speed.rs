//! Single-thread quantize throughput of the dispatched kernels against the reference,
//! without and with an importance matrix:
//! `cargo run --release -p kquant-core --example quant_speed [TYPE...]`.
//! Rows of 4096 normal-ish values (16 rows, 64 Ki values per pass); also checks that
//! both produce the same bytes.
//!
//! `QS_CHECK=SEEDS` instead compares the dispatched quantizers with the reference
//! byte for byte on SEEDS random rows per format (blocks and sub-blocks of zeros,
//! constants, ties, tiny and huge values...), on the main thread only, so that it
//! also runs under qemu-user for the aarch64 build.

use std::time::Instant;

use kquant_core::dispatch::{self, Variant};
use kquant_core::reference;
use kquant_core::QuantType;

fn best_secs(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut reps = 0;
    while reps < 3 || (start.elapsed().as_secs_f64() < 0.3 && reps < 200) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
    }
    best
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
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * self.unit()).cos()
    }
    fn magnitude(&mut self, lo: f32, hi: f32) -> f32 {
        10f32.powf(lo + (hi - lo) * self.unit())
    }
    /// A run of values of one random kind.
    fn fill(&mut self, out: &mut [f32]) {
        let n = out.len();
        let kind = self.below(15);
        let scale = match self.below(4) {
            0 => 1.0,
            1 => self.magnitude(-3.0, 3.0),
            2 => self.magnitude(-45.0, -20.0),
            _ => self.magnitude(5.0, 38.0),
        };
        for (i, o) in out.iter_mut().enumerate() {
            *o = match kind {
                0 => self.normal() * scale,
                1 => 0.0,
                2 => -0.0,
                3 => scale,
                4 => -scale,
                5 => self.normal().abs() * scale,
                6 => -self.normal().abs() * scale,
                7 => (self.below(64) as f32 - 32.0) * 0.5,
                8 => (self.below(17) as f32 - 8.0) * scale,
                9 => {
                    if self.below(13) == 0 {
                        self.normal() * scale
                    } else {
                        0.0
                    }
                }
                10 => (i as f32 - n as f32 / 2.0) * scale / n as f32,
                11 => f32::from_bits(self.next() as u32 & 0x807f_ffff),
                12 => loop {
                    let f = f32::from_bits(self.next() as u32);
                    if f.is_finite() {
                        break f;
                    }
                },
                13 => [1.0e-15, -1.0e-15, 0.9e-15, 1.1e-15][self.below(4)] * (self.below(3) as f32),
                _ => {
                    if i % 2 == 0 {
                        scale
                    } else {
                        -scale
                    }
                }
            };
        }
    }
}

fn check(seeds: u64) {
    let best = Variant::best(dispatch::detect());
    let mut failures = 0;
    for t in QuantType::ALL {
        if t.is_float() || matches!(t, QuantType::Q8_0 | QuantType::Q8_1 | QuantType::Q8K) {
            continue;
        }
        let (Some(r), Ok(k)) = (reference::kernels(t), dispatch::kernels_for_variant(best, t)) else { continue };
        let bs = t.block_size();
        let mut checks = 0;
        for seed in 0..seeds {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1234_5678_9abc_def1));
            let nb = 1 + rng.below(if bs == 32 { 40 } else { 5 });
            let mut x = vec![0.0f32; nb * bs];
            for b in x.chunks_exact_mut(bs) {
                let piece = if bs > 32 && rng.below(2) == 0 { [16, 32, 64][rng.below(3)] } else { bs };
                for p in b.chunks_mut(piece) {
                    rng.fill(p);
                }
            }
            let wk = rng.below(4);
            let w: Vec<f32> = (0..x.len())
                .map(|_| match wk {
                    0 => rng.unit() * 2.0,
                    1 => {
                        if rng.below(4) == 0 {
                            0.0
                        } else {
                            rng.unit() * 10.0
                        }
                    }
                    2 => rng.magnitude(-30.0, 30.0),
                    _ => 1.0,
                })
                .collect();
            for imat in [None, Some(&w[..])] {
                let n = t.row_size(x.len()).unwrap();
                let (mut a, mut b) = (vec![0xa5u8; n], vec![0x5au8; n]);
                (r.quantize)(&x, &mut a, imat);
                (k.quantize)(&x, &mut b, imat);
                checks += 1;
                if let Some(i) = a.iter().zip(&b).position(|(p, q)| p != q) {
                    failures += 1;
                    if failures <= 10 {
                        println!("{} seed {seed} imat {}: byte {i} differs", t.name(), imat.is_some());
                    }
                }
            }
        }
        println!("{:<7} {} rows compared with the reference on {}", t.name(), checks, best.name());
    }
    println!("{failures} rows differ");
    if failures > 0 {
        std::process::exit(1);
    }
}

fn main() {
    if let Some(seeds) = std::env::var("QS_CHECK").ok().and_then(|v| v.parse().ok()) {
        check(seeds);
        return;
    }
    let only: Vec<String> = std::env::args().skip(1).map(|s| s.to_uppercase()).collect();
    const N: usize = 4096;
    const ROWS: usize = 16;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut unit = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    // roughly normal (sum of uniforms), like model weights
    let x: Vec<f32> = (0..N * ROWS).map(|_| (unit() + unit() + unit() + unit() - 2.0) * 0.05).collect();
    let imat: Vec<f32> = (0..N).map(|_| 0.01 + unit() * unit() * 4.0).collect();
    let best = Variant::best(dispatch::detect());
    // QS_CYCLES=simd|ref: only run that side, QS_PASSES (200) passes over the rows,
    // to time with `perf stat -e task-clock` on a busy machine
    if let Ok(side) = std::env::var("QS_CYCLES") {
        let imat_on = std::env::var("QS_IMAT").is_ok();
        for t in QuantType::ALL {
            if !only.contains(&t.name().to_string()) {
                continue;
            }
            let k = if side == "ref" {
                reference::kernels(t).map(|r| r.quantize)
            } else {
                dispatch::kernels_for_variant(best, t).ok().map(|k| k.quantize)
            };
            let f = k.unwrap();
            let rb = t.row_size(N).unwrap();
            let mut q = vec![0u8; rb * ROWS];
            let passes: usize = std::env::var("QS_PASSES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
            for _ in 0..passes {
                for (xr, qr) in x.chunks_exact(N).zip(q.chunks_exact_mut(rb)) {
                    f(std::hint::black_box(xr), qr, imat_on.then_some(&imat[..]));
                }
            }
            std::hint::black_box(&q);
        }
        return;
    }
    println!("variant {}", best.name());
    println!("{:<7} {:<5} {:>12} {:>12} {:>8}", "type", "imat", "ref Mval/s", "simd Mval/s", "ratio");
    for t in QuantType::ALL {
        if t.is_float() || matches!(t, QuantType::Q8_0 | QuantType::Q8_1 | QuantType::Q8K) {
            continue;
        }
        if !only.is_empty() && !only.contains(&t.name().to_string()) {
            continue;
        }
        let Some(r) = reference::kernels(t) else { continue };
        let k = dispatch::kernels_for_variant(best, t).unwrap();
        let rb = t.row_size(N).unwrap();
        for with_imat in [false, true] {
            let w = with_imat.then_some(&imat[..]);
            let mut qa = vec![0u8; rb * ROWS];
            let mut qb = vec![0u8; rb * ROWS];
            let run = |f: reference::QuantizeFn, q: &mut [u8]| {
                best_secs(|| {
                    for (xr, qr) in x.chunks_exact(N).zip(q.chunks_exact_mut(rb)) {
                        f(std::hint::black_box(xr), qr, w);
                    }
                })
            };
            let tr = run(r.quantize, &mut qa);
            let ts = run(k.quantize, &mut qb);
            let same = if qa == qb { "" } else { "  BYTES DIFFER" };
            let mv = (N * ROWS) as f64 / 1e6;
            println!(
                "{:<7} {:<5} {:>12.2} {:>12.2} {:>7.2}x{same}",
                t.name(),
                if with_imat { "yes" } else { "no" },
                mv / tr,
                mv / ts,
                tr / ts
            );
        }
    }
}
