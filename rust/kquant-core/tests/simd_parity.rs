//! Every SIMD path this CPU runs against the reference kernels (see
//! `kquant_core::arch::parity`). A plain `fn main` without threads: under qemu-user
//! a second thread hangs, and libtest would start one per test.

fn main() {
    let isa = kquant_core::dispatch::detect();
    println!("simd_parity: best ISA here is {isa}; variants: {}", {
        let v: Vec<String> = kquant_core::dispatch::available_variants().iter().map(|v| v.name()).collect();
        v.join(", ")
    });
    let report = kquant_core::arch::parity::run();
    for line in &report.lines {
        println!("{line}");
    }
    if report.failures.is_empty() {
        println!("simd_parity: {} checks, all identical / within tolerance", report.checks);
    } else {
        for f in &report.failures {
            println!("MISMATCH {f}");
        }
        println!("simd_parity: {} checks, {} failures", report.checks, report.failures.len());
        std::process::exit(1);
    }
}
