//! Rough per-kernel timing of every available ISA path against the reference:
//! `cargo run --release -p kquant-core --example simd_timing [TYPE...]`.
//! Dequantize runs on one 4096-value row (in L1), vec_dot over 64 rows (in L2).
//! Single thread; the real benchmark is benches/bench_kernels.py.

use std::time::Instant;

use kquant_core::dispatch::{self, Variant};
use kquant_core::reference;
use kquant_core::QuantType;

fn best_secs(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut reps = 0;
    while reps < 5 || (start.elapsed().as_secs_f64() < 0.5 && reps < 20000) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
    }
    best
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).map(|s| s.to_uppercase()).collect();
    const N: usize = 4096;
    const ROWS: usize = 64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let x: Vec<f32> = (0..N * ROWS).map(|_| rnd()).collect();
    let act: Vec<f32> = (0..N).map(|_| rnd()).collect();
    let variants = dispatch::available_variants();
    println!("{:<7} {:<16} {:>12} {:>12} {:>12}", "type", "variant", "dequant G/s", "vec_dot G/s", "quant G/s");
    for t in QuantType::ALL {
        if !only.is_empty() && !only.contains(&t.name().to_string()) {
            continue;
        }
        let Some(r) = reference::kernels(t) else { continue };
        let rb = t.row_size(N).unwrap();
        let mut q = vec![0u8; rb * ROWS];
        for (xr, qr) in x.chunks_exact(N).zip(q.chunks_exact_mut(rb)) {
            (r.quantize)(xr, qr, None);
        }
        let pt = t.vec_dot_type();
        let pk = reference::kernels(pt).unwrap();
        let mut yq = vec![0u8; pt.row_size(N).unwrap()];
        (pk.quantize)(&act, &mut yq, None);
        for &v in &variants {
            let k = dispatch::kernels_for_variant(v, t).unwrap();
            let mut y = vec![0f32; N];
            let dq = best_secs(|| {
                for _ in 0..16 {
                    (k.dequantize)(std::hint::black_box(&q[..rb]), &mut y);
                }
            }) / 16.0;
            let dot = k.vec_dot.map(|d| {
                best_secs(|| {
                    let mut s = 0.0f32;
                    for qr in q.chunks_exact(rb) {
                        s += d(std::hint::black_box(qr), &yq);
                    }
                    std::hint::black_box(s);
                }) / ROWS as f64
            });
            let (aq, _, _) = dispatch::accelerated(v, t);
            let quant = (aq
                || v.isa == dispatch::Isa::Scalar
                    && matches!(
                        t,
                        QuantType::Q8_0 | QuantType::Q8_1 | QuantType::Q8K | QuantType::F16 | QuantType::BF16
                    ))
            .then(|| {
                let mut out = vec![0u8; rb];
                best_secs(|| (k.quantize)(std::hint::black_box(&x[..N]), &mut out, None))
            });
            let g = |s: f64| format!("{:.2}", N as f64 / s / 1e9);
            println!(
                "{:<7} {:<16} {:>12} {:>12} {:>12}",
                t.name(),
                Variant::name(v),
                g(dq),
                dot.map(g).unwrap_or_default(),
                quant.map(g).unwrap_or_default()
            );
        }
    }
}
