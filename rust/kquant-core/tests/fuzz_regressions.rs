//! The fuzz corpus under the normal test harness: every seed and every input the fuzzers
//! ever crashed on (`tests/fuzz_corpus/`) goes through the GGUF and both imatrix readers
//! with exactly the fuzz targets' assertions, so a fixed crash stays fixed without
//! libFuzzer or a nightly-only flag. A deterministic sweep then writes boundary values
//! (0, 2^31, 2^32 - 1, 2^63, 2^64 - 1, ...) over every header offset of every seed.
//!
//! `scripts/fuzz.sh` copies new crashes to `fuzz_corpus/regressions/`; each needs a line
//! in the `regressions!` list below (a test checks that none is forgotten).
//! `KQUANT_WRITE_SEEDS=1 cargo test -p kquant-core --test fuzz_regressions write_seeds
//! -- --ignored` rewrites the seeds made by kquant's writer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

// The fuzz targets' assertions, shared so that a replay here fails exactly where the
// fuzzer failed.
#[path = "../../../fuzz/src/check.rs"]
#[allow(dead_code)]
mod check;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")
}

/// Files under `dir`, recursively and sorted; READMEs are documentation, not inputs.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with("README") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A fuzz target's checks.
type Target = fn(&[u8]);

/// The fuzz targets by name.
const TARGETS: &[(&str, Target)] =
    &[("gguf", check::gguf), ("imatrix_legacy", check::imatrix_legacy), ("imatrix_gguf", check::imatrix_gguf)];

/// Runs every target's checks on `data`; the panic message of the first that fails.
fn run_all(data: &[u8]) -> Option<String> {
    for &(name, f) in TARGETS {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(data))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            return Some(format!("{name} target: {msg}"));
        }
    }
    None
}

#[track_caller]
fn replay(path: &Path) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Some(msg) = run_all(&data) {
        panic!("{}: {msg}", path.display());
    }
}

#[test]
fn seeds_parse_cleanly() {
    let mut n = 0;
    for dir in ["gguf", "imatrix_legacy", "imatrix_gguf"] {
        let seeds = files(&corpus().join(dir));
        assert!(!seeds.is_empty(), "no seeds in fuzz_corpus/{dir}");
        for p in seeds {
            replay(&p);
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} seeds");
}

/// Seeds must be accepted by the reader they were made for, or the fuzzer starts from
/// nothing but error paths.
#[test]
fn seeds_are_valid() {
    use kquant_core::gguf::GgufFile;
    use kquant_core::imatrix::Imatrix;
    for p in files(&corpus().join("gguf")) {
        GgufFile::parse(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    for p in files(&corpus().join("imatrix_legacy")) {
        Imatrix::parse_legacy(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    for p in files(&corpus().join("imatrix_gguf")) {
        Imatrix::parse_gguf(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// Every seed with each boundary value written as a u32 and as a u64 at every offset of
/// its first 1 KiB (the headers; tensor data is opaque to the readers), plus every
/// truncation of that prefix.
#[test]
fn boundary_sweep_over_seeds() {
    const VALUES: [u64; 12] = [
        0,
        1,
        0x3f,
        0x4000_0001,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        0xffff_ffff_ffff_fffe,
        0xffff_ffff_ffff_ffff,
    ];
    let mut failures = Vec::new();
    let mut runs = 0usize;
    for dir in ["gguf", "imatrix_legacy", "imatrix_gguf"] {
        for p in files(&corpus().join(dir)) {
            let seed = std::fs::read(&p).unwrap();
            let end = seed.len().min(1024);
            let mut buf = seed.clone();
            for at in 0..end {
                for width in [4usize, 8] {
                    if at + width > seed.len() {
                        continue;
                    }
                    for v in VALUES {
                        buf[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                        runs += 1;
                        if let Some(msg) = run_all(&buf) {
                            failures.push(format!(
                                "{} with {v:#x} as u{} at offset {at}: {msg}",
                                p.display(),
                                width * 8
                            ));
                        }
                    }
                    buf[at..at + width].copy_from_slice(&seed[at..at + width]);
                }
            }
            for cut in 0..end {
                runs += 1;
                if let Some(msg) = run_all(&seed[..cut]) {
                    failures.push(format!("{} cut to {cut} bytes: {msg}", p.display()));
                }
            }
        }
    }
    assert!(runs > 10_000, "only {runs} runs");
    assert!(
        failures.is_empty(),
        "{} of {runs} mutated seeds failed, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

/// One test per input a fuzzer crashed on, named after what it found.
macro_rules! regressions {
    ($($name:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $name() {
                replay(&corpus().join("regressions").join($file));
            }
        )*
        const LISTED: &[&str] = &[$($file),*];
    };
}

regressions! {
    // Found by the gguf target within its first minute, fixed in da45498: the reader let an
    // empty tensor (one zero dimension) skip the element limit whatever its other
    // dimensions, so here the rows numbered 2^62 * 32, which `TensorInfo::n_rows()`
    // cannot return (a panic with overflow checks, a wrapped count without).
    empty_tensor_row_count_overflow => "gguf-empty-tensor-row-count-overflow.gguf",
    // Same cause: `n_elements()` multiplies in order, so [2^63 - 1, 2^62, 0, 33] overflowed
    // before reaching the zero (a panic with overflow checks only).
    empty_tensor_element_count_overflow => "gguf-empty-tensor-element-count-overflow.gguf",
    // Same cause reached from a file alone: `Imatrix::parse_gguf` called `n_elements()` on
    // an empty `w.in_sum2` of shape [2^40, 2^40, 0] and panicked with overflow checks.
    imatrix_empty_in_sum2_element_count_overflow => "imatrix-gguf-empty-in-sum2-element-count-overflow.gguf",
    // Fixed in the harness, not the reader: an empty tensor whose rows are too long for
    // `ops::Rows` is fine (the kernels refuse the geometry with an error, and there is
    // nothing to dequantize); the gguf target once demanded that every accepted quantized
    // tensor be dequantizable.
    empty_tensor_with_huge_row_length => "gguf-empty-tensor-huge-row-length.gguf",
}

#[test]
fn every_regression_file_has_a_test() {
    for p in files(&corpus().join("regressions")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            LISTED.contains(&name.as_str()),
            "fuzz_corpus/regressions/{name} has no test: add `some_name => \"{name}\",` to regressions! in {}",
            file!()
        );
    }
}

mod seeds {
    use kquant_core::gguf::{Array, GgufWriter, TensorSpec, TensorType, Value, ALIGNMENT_KEY};
    use kquant_core::imatrix::{KEY_CHUNK_COUNT, KEY_CHUNK_SIZE, KEY_DATASETS};
    use kquant_core::QuantType;

    type Tensor = (String, Vec<u64>, TensorType, Vec<u8>);

    fn gguf(metadata: Vec<(&str, Value)>, tensors: Vec<Tensor>) -> Vec<u8> {
        let metadata: Vec<(String, Value)> = metadata.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let specs: Vec<TensorSpec> = tensors.iter().map(|(n, d, t, _)| TensorSpec::new(n.clone(), d, *t)).collect();
        let mut w = GgufWriter::new(Vec::new(), &metadata, &specs).unwrap();
        for (n, _, _, data) in &tensors {
            w.write_tensor(n, data).unwrap();
        }
        w.finish().unwrap()
    }

    /// Deterministic filler that is neither all zeros nor all the same byte.
    fn bytes(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(salt)).collect()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn tensor(name: &str, dims: &[u64], ty: impl Into<TensorType>, salt: u8) -> Tensor {
        let ty = ty.into();
        let n: u64 = dims.iter().product();
        let nbytes = n as usize / ty.block_size() * ty.type_size();
        (name.to_string(), dims.to_vec(), ty, bytes(nbytes, salt))
    }

    fn legacy(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            b.extend_from_slice(&f32s(vals));
        }
        if let Some((chunks, ds)) = trailer {
            b.extend_from_slice(&chunks.to_le_bytes());
            b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
            b.extend_from_slice(ds.as_bytes());
        }
        b
    }

    fn imatrix_meta(chunks: u32) -> Vec<(&'static str, Value)> {
        vec![
            (KEY_DATASETS, Value::Array(Array::String(vec!["wiki.train.raw".into()]))),
            (KEY_CHUNK_COUNT, Value::U32(chunks)),
            (KEY_CHUNK_SIZE, Value::U32(512)),
        ]
    }

    pub fn all() -> Vec<(&'static str, Vec<u8>)> {
        use QuantType::*;
        let mut out = Vec::new();

        out.push(("gguf/empty.gguf", gguf(vec![], vec![])));
        out.push((
            "gguf/metadata.gguf",
            gguf(
                vec![
                    ("general.architecture", "llama".into()),
                    ("u8", Value::U8(0xfe)),
                    ("i8", Value::I8(-2)),
                    ("u16", Value::U16(0xfffe)),
                    ("i16", Value::I16(-2)),
                    ("u32", Value::U32(7)),
                    ("i32", Value::I32(-7)),
                    ("f32", Value::F32(0.5)),
                    ("bool", Value::Bool(true)),
                    ("u64", Value::U64(1 << 40)),
                    ("i64", Value::I64(-1)),
                    ("f64", Value::F64(-0.25)),
                    ("a.u8", vec![1u8, 2].into()),
                    ("a.i8", vec![-1i8].into()),
                    ("a.u16", vec![1u16, 2].into()),
                    ("a.i16", vec![-1i16].into()),
                    ("a.u32", vec![1u32, 2, 3].into()),
                    ("a.i32", vec![-1i32, 1].into()),
                    ("a.f32", vec![1.5f32].into()),
                    ("a.bool", vec![true, false].into()),
                    ("a.str", Value::Array(Array::String(vec!["a".into(), "".into(), "\u{e9}".into()]))),
                    ("a.u64", vec![u64::MAX].into()),
                    ("a.i64", vec![i64::MIN].into()),
                    ("a.f64", vec![2.0f64].into()),
                    ("a.empty", Value::Array(Array::U32(vec![]))),
                ],
                vec![],
            ),
        ));
        out.push((
            "gguf/model.gguf",
            gguf(
                vec![("general.architecture", "llama".into()), (ALIGNMENT_KEY, Value::U32(64))],
                vec![
                    tensor("token_embd.weight", &[32, 4], Q8_0, 1),
                    tensor("blk.0.attn_norm.weight", &[32], F32, 2),
                    tensor("blk.0.ffn_down.weight", &[256, 1, 1, 1], Q4K, 3),
                    tensor("blk.0.ffn_up.weight", &[32, 2, 3], F16, 4),
                    tensor("empty", &[0, 3], Q4_0, 5),
                    tensor("output.weight", &[256, 2], Q6K, 6),
                ],
            ),
        ));
        let mut all: Vec<TensorType> = QuantType::ALL.iter().map(|&q| q.into()).collect();
        all.extend([TensorType::I8, TensorType::I16, TensorType::I32, TensorType::I64, TensorType::F64]);
        let tensors =
            all.iter().enumerate().map(|(i, &t)| tensor(t.name(), &[t.block_size() as u64], t, i as u8)).collect();
        out.push(("gguf/all_types.gguf", gguf(vec![], tensors)));
        // the newer formats with several blocks per row and odd shapes (17- and 54-byte
        // blocks leave the next tensor's offset to the alignment padding)
        out.push((
            "gguf/newer_types.gguf",
            gguf(
                vec![("general.architecture", "bitnet".into()), (ALIGNMENT_KEY, Value::U32(32))],
                vec![
                    tensor("tq1", &[768, 3], TQ1_0, 11),
                    tensor("mx", &[96, 1, 5], MXFP4, 12),
                    tensor("tq2", &[512, 1, 1, 3], TQ2_0, 13),
                    tensor("nv", &[192, 7], NVFP4, 14),
                    tensor("q1", &[384, 2, 3], Q1_0, 15),
                    tensor("q2", &[64, 5], Q2_0, 16),
                    tensor("mx.one", &[32], MXFP4, 17),
                ],
            ),
        ));
        let mut v2 = gguf(
            vec![(ALIGNMENT_KEY, Value::U32(1)), ("s", "x".into())],
            vec![
                tensor("a", &[3], TensorType::I8, 7),
                tensor("b", &[5], TensorType::I16, 8),
                tensor("c", &[1], F32, 9),
            ],
        );
        v2[4..8].copy_from_slice(&2u32.to_le_bytes());
        out.push(("gguf/align1_v2.gguf", v2));

        out.push(("imatrix_legacy/one.dat", legacy(&[("blk.0.attn_q.weight", 4, &[8.0, 2.0, 0.5, 1.0])], None)));
        out.push((
            "imatrix_legacy/trailer.dat",
            legacy(
                &[
                    ("blk.0.attn_q.weight", 10, &[10.0, 20.0, 0.5, 7.0]),
                    ("blk.0.ffn_down_exps.weight", 3, &[0.0, 3.0, 6.0, 9.0, 12.0, 15.0]),
                    ("output.weight", 0, &[1.0]),
                ],
                Some((42, "calibration.txt")),
            ),
        ));

        let f32t = |name: &str, dims: &[u64], v: &[f32]| (name.to_string(), dims.to_vec(), F32.into(), f32s(v));
        out.push((
            "imatrix_gguf/dense.gguf",
            gguf(
                imatrix_meta(10),
                vec![
                    f32t("blk.0.attn_q.weight.in_sum2", &[4], &[10.0, 20.0, 0.5, 7.0]),
                    f32t("blk.0.attn_q.weight.counts", &[1], &[10.0]),
                    f32t("blk.0.attn_q.weight.in_sum", &[4], &[1.0, -2.0, 0.5, 3.0]),
                    f32t("output.weight.in_sum2", &[2], &[4.0, 8.0]),
                    f32t("output.weight.counts", &[1], &[2.0]),
                ],
            ),
        ));
        out.push((
            "imatrix_gguf/moe.gguf",
            gguf(
                imatrix_meta(3),
                vec![
                    f32t("blk.0.ffn_down_exps.weight.in_sum2", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                    f32t("blk.0.ffn_down_exps.weight.counts", &[1, 3], &[2.0, 0.0, 4.0]),
                    f32t("unrelated", &[1], &[0.0]),
                ],
            ),
        ));
        out
    }
}

#[test]
#[ignore = "rewrites the committed seeds; run with KQUANT_WRITE_SEEDS=1"]
fn write_seeds() {
    assert!(std::env::var_os("KQUANT_WRITE_SEEDS").is_some(), "set KQUANT_WRITE_SEEDS=1 to rewrite the seeds");
    for (name, bytes) in seeds::all() {
        std::fs::write(corpus().join(name), bytes).unwrap();
    }
}

/// The committed seeds made by kquant's writer are what it writes today: a writer change
/// that leaves them stale shows up here (rerun `write_seeds`).
#[test]
fn seeds_match_the_writer() {
    for (name, bytes) in seeds::all() {
        let p = corpus().join(name);
        let on_disk = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run write_seeds)", p.display()));
        assert!(on_disk == bytes, "{name} differs from what the writer produces now: run write_seeds");
    }
}
