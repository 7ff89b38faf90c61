//! Every SIMD path this CPU runs against the reference kernels (see
//! `kquant_core::arch::parity`), then against ggml's golden vectors when they are found
//! (`KQUANT_GOLDEN`, or ../shared/golden next to the checkout). A plain `fn main`
//! without threads: under qemu-user a second thread hangs, and libtest would start one
//! per test.

use std::path::PathBuf;

use kquant_core::dispatch::{self, Isa, Variant};
use kquant_core::QuantType;

fn main() {
    println!("simd_parity: best ISA here is {}; variants: {}", dispatch::detect(), {
        let v: Vec<String> = dispatch::available_variants().iter().map(|v| v.name()).collect();
        v.join(", ")
    });
    let report = kquant_core::arch::parity::run();
    for line in &report.lines {
        println!("{line}");
    }
    let mut failures = report.failures;
    let mut checks = report.checks;
    match golden_dir() {
        None => println!("simd_parity: golden vectors not found (set KQUANT_GOLDEN); golden checks skipped"),
        Some(dir) => {
            for v in dispatch::available_variants().into_iter().filter(|v| v.isa != Isa::Scalar) {
                let (c, f) = golden_checks(&dir, v);
                println!(
                    "{:<14} golden: {c} checks (dequantize, partner quantize, dots), {} failures",
                    v.name(),
                    f.len()
                );
                checks += c;
                failures.extend(f);
            }
        }
    }
    if failures.is_empty() {
        println!("simd_parity: {checks} checks, all identical / within tolerance");
    } else {
        for f in &failures {
            println!("MISMATCH {f}");
        }
        println!("simd_parity: {checks} checks, {} failures", failures.len());
        std::process::exit(1);
    }
}

fn golden_dir() -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("KQUANT_GOLDEN").map(PathBuf::from),
        Some(here.join("../../../shared/golden")),
        Some(here.join("../../../../shared/golden")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_dir())
}

type Npz = npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>;

fn read<T: npyz::Deserialize>(npz: &mut Npz, name: &str) -> Option<Vec<T>> {
    npz.by_name(name).ok().flatten()?.into_vec().ok()
}

/// The golden test's rules (tests/golden.rs) applied to one kernel variant directly:
/// dequantize bit-identical, the partner quantizer byte-identical, and each dot either
/// bit-identical to ggml's scalar dot or within 1e-5 of ggml's float64 dot relative to
/// sum |w*y|.
fn golden_checks(dir: &std::path::Path, v: Variant) -> (usize, Vec<String>) {
    let mut checks = 0;
    let mut fails = Vec::new();
    for t in QuantType::ALL {
        let Ok(k) = dispatch::kernels_for_variant(v, t) else { continue };
        let Ok(mut npz) = npyz::npz::NpzArchive::open(dir.join(format!("{}.npz", t.name()))) else { continue };
        let (Some(n), Some(q), Some(dq)) =
            (read::<i64>(&mut npz, "n"), read::<u8>(&mut npz, "q"), read::<f32>(&mut npz, "dq"))
        else {
            continue;
        };
        let n = n[0] as usize;
        let rows = dq.len() / n;
        let rb = t.row_size(n).unwrap();
        let tag = format!("{} {}", v.name(), t.name());
        for r in 0..rows {
            let mut out = vec![0f32; n];
            (k.dequantize)(&q[r * rb..(r + 1) * rb], &mut out);
            checks += 1;
            if let Some(i) = (0..n).find(|&i| out[i].to_bits() != dq[r * n + i].to_bits()) {
                fails.push(format!("{tag} golden dequantize row {r} col {i}: {} want {}", out[i], dq[r * n + i]));
            }
        }
        let (Some(y), Some(yq), Some(dot), Some(f64s)) = (
            read::<f32>(&mut npz, "y"),
            read::<u8>(&mut npz, "yq"),
            read::<f32>(&mut npz, "dot"),
            read::<f64>(&mut npz, "dot_f64"),
        ) else {
            continue;
        };
        let pt = t.vec_dot_type();
        let pk = dispatch::kernels_for_variant(v, pt).unwrap();
        let prb = pt.row_size(n).unwrap();
        let Some(vec_dot) = k.vec_dot else { continue };
        for r in 0..rows {
            let yrow = &yq[r * prb..(r + 1) * prb];
            let mut ours = vec![0u8; prb];
            (pk.quantize)(&y[r * n..(r + 1) * n], &mut ours, None);
            checks += 1;
            if let Some(i) = (0..prb).find(|&i| ours[i] != yrow[i]) {
                fails
                    .push(format!("{tag} golden partner {pt} quantize row {r} byte {i}: {} want {}", ours[i], yrow[i]));
            }
            let got = vec_dot(&q[r * rb..(r + 1) * rb], yrow);
            checks += 1;
            if got.to_bits() == dot[r].to_bits() {
                continue;
            }
            let mut wy = vec![0f32; n];
            (pk.dequantize)(yrow, &mut wy);
            let scale: f64 = (0..n).map(|j| (dq[r * n + j] as f64 * wy[j] as f64).abs()).sum();
            let want = f64s[r];
            let ok = if want.is_nan() { got.is_nan() } else { (got as f64 - want).abs() <= 1e-5 * scale };
            if !ok {
                fails.push(format!(
                    "{tag} golden dot row {r}: {got} want {want} (ggml scalar {}, scale {scale})",
                    dot[r]
                ));
            }
        }
    }
    (checks, fails)
}
