//! Single-thread quantize throughput of the dispatched kernels against the reference,
//! without and with an importance matrix:
//! `cargo run --release -p kquant-core --example quant_speed [TYPE...]`.
//! Rows of 4096 normal-ish values (16 rows, 64 Ki values per pass); also checks that
//! both produce the same bytes.

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

fn main() {
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
