//! Writer -> reader round trips, writer misuse, and write_atomic.

use std::io::{self, Write};

use kquant_core::gguf::{
    write_atomic, Array, GgufFile, GgufWriter, TensorInfo, TensorSpec, TensorType, Value, ALIGNMENT_KEY,
};
use kquant_core::QuantType;

fn all_values() -> Vec<(String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    vec![
        kv("general.architecture", "llama".into()),
        kv("t.u8", Value::U8(200)),
        kv("t.i8", Value::I8(-100)),
        kv("t.u16", Value::U16(65000)),
        kv("t.i16", Value::I16(-32000)),
        kv("t.u32", Value::U32(4_000_000_000)),
        kv("t.i32", Value::I32(-2_000_000_000)),
        kv("t.f32", Value::F32(-1.5e-30)),
        kv("t.bool.t", Value::Bool(true)),
        kv("t.bool.f", Value::Bool(false)),
        kv("t.str.empty", "".into()),
        kv("t.str.unicode", "héllo ✓ 𝄞".into()),
        kv("t.u64", Value::U64(u64::MAX)),
        kv("t.i64", Value::I64(i64::MIN)),
        kv("t.f64", Value::F64(std::f64::consts::PI)),
        kv("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        kv("a.i8", Value::Array(Array::I8(vec![-128, 127]))),
        kv("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        kv("a.i16", Value::Array(Array::I16(vec![-1, 2]))),
        kv("a.u32", Value::Array(Array::U32(vec![7, 8, 9]))),
        kv("a.i32", Value::Array(Array::I32(vec![-7]))),
        kv("a.f32", Value::Array(Array::F32(vec![0.5, -0.0, f32::INFINITY]))),
        kv("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        kv("a.str", Value::Array(Array::String(vec!["a".into(), "".into(), "ü".into()]))),
        kv("a.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        kv("a.i64", Value::Array(Array::I64(vec![i64::MIN, i64::MAX]))),
        kv("a.f64", Value::Array(Array::F64(vec![1e300, -1e-300]))),
        kv("a.empty", Value::Array(Array::F32(vec![]))),
    ]
}

fn specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("token_embd.weight", &[256, 3], QuantType::Q4K),
        TensorSpec::new("norm.weight", &[5], QuantType::F32),
        TensorSpec::new("blk.0.attn_q.weight", &[64, 2, 1, 2], QuantType::Q8_0),
        TensorSpec::new("ids", &[3], TensorType::I32),
        TensorSpec::new("empty", &[32, 0], QuantType::Q4_0),
        TensorSpec::new("half", &[7, 1, 1], QuantType::BF16),
        TensorSpec::new("f64", &[2], TensorType::F64),
    ]
}

/// Deterministic filler bytes, different for every tensor.
fn fill(seed: usize, n: u64) -> Vec<u8> {
    (0..n).map(|i| (i as usize * 31 + seed * 7 + 1) as u8).collect()
}

fn write_file(metadata: &[(String, Value)], specs: &[TensorSpec]) -> (Vec<u8>, Vec<TensorInfo>, u64) {
    let mut w = GgufWriter::new(Vec::new(), metadata, specs).unwrap();
    let infos = w.tensors().to_vec();
    let data_offset = w.data_offset();
    for (i, t) in infos.iter().enumerate() {
        w.write_tensor(&t.name, &fill(i, t.nbytes)).unwrap();
    }
    (w.finish().unwrap(), infos, data_offset)
}

fn check_round_trip(metadata: Vec<(String, Value)>, specs: &[TensorSpec], alignment: u32) {
    let (bytes, infos, data_offset) = write_file(&metadata, specs);
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, alignment);
    assert_eq!(f.metadata, metadata);
    assert_eq!(f.tensors, infos);
    assert_eq!(f.data_offset, data_offset);
    assert_eq!(f.data_offset % u64::from(alignment), 0);
    let mut expected_offset = 0;
    for (i, (t, s)) in f.tensors.iter().zip(specs).enumerate() {
        assert_eq!(t.name, s.name);
        assert_eq!(t.dims, s.dims);
        assert_eq!(t.ty, s.ty);
        assert_eq!(t.offset, expected_offset);
        let want = t.n_elements() / t.ty.block_size() as u64 * t.ty.type_size() as u64;
        assert_eq!(t.nbytes, want);
        assert_eq!(f.tensor_data(&bytes, t).unwrap(), &fill(i, t.nbytes)[..]);
        expected_offset = (t.offset + t.nbytes).div_ceil(alignment.into()) * u64::from(alignment);
        assert_eq!(f.tensor(&t.name), Some(t));
    }
    // ggml pads after the last tensor as well.
    assert_eq!(bytes.len() as u64, f.data_offset + expected_offset);
    for (k, v) in &metadata {
        assert_eq!(f.get(k), Some(v));
    }
    assert_eq!(f.get("missing"), None);
}

#[test]
fn round_trip_every_value_type_and_tensor_type() {
    check_round_trip(all_values(), &specs(), 32);
}

#[test]
fn round_trip_comfyui_long_names_and_5d_tensors() {
    // ComfyUI-GGUF diffusion files: names past ggml's 63 bytes and 5-D Conv3d weights.
    let long = format!("{}.weight", "x".repeat(120));
    let specs = vec![
        TensorSpec::new(long.as_str(), &[256, 2], QuantType::Q4K),
        TensorSpec::new("patch_embedding.weight", &[2, 2, 1, 16, 8], QuantType::F32),
        TensorSpec::new("eight", &[32, 1, 1, 1, 1, 1, 1, 2], QuantType::Q8_0),
    ];
    check_round_trip(vec![("general.architecture".to_string(), Value::from("wan"))], &specs, 32);
}

#[test]
fn round_trip_custom_alignments() {
    for a in [1u32, 8, 64, 4096] {
        let mut m = all_values();
        m.insert(3, (ALIGNMENT_KEY.to_string(), Value::U32(a)));
        check_round_trip(m, &specs(), a);
    }
}

#[test]
fn round_trip_every_quant_type() {
    let specs: Vec<TensorSpec> =
        QuantType::ALL.iter().map(|&q| TensorSpec::new(format!("t.{}", q.name()), &[512, 3], q)).collect();
    check_round_trip(vec![], &specs, 32);
}

#[test]
fn round_trip_without_tensors_or_metadata() {
    let mut w = GgufWriter::new(Vec::new(), &[], &[]).unwrap();
    assert!(w.next_tensor().is_none());
    assert!(w.write_tensor("x", &[]).is_err());
    let bytes = w.finish().unwrap();
    assert_eq!(bytes.len(), 32);
    let f = GgufFile::parse(&bytes).unwrap();
    assert!(f.metadata.is_empty() && f.tensors.is_empty());

    let m = vec![("k".to_string(), Value::from(vec![1u32, 2]))];
    let bytes = GgufWriter::new(Vec::new(), &m, &[]).unwrap().finish().unwrap();
    assert_eq!(GgufFile::parse(&bytes).unwrap().metadata, m);
}

#[test]
fn header_bytes_are_exactly_ggmls_layout() {
    let m = vec![("a".to_string(), Value::U8(7))];
    let mut w = GgufWriter::new(Vec::new(), &m, &[TensorSpec::new("t", &[2], QuantType::F32)]).unwrap();
    w.write_tensor("t", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let bytes = w.finish().unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(b"GGUF");
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'a');
    want.extend_from_slice(&0u32.to_le_bytes());
    want.push(7);
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b't');
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(&2u64.to_le_bytes());
    want.extend_from_slice(&0u32.to_le_bytes());
    want.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(want.len(), 71);
    want.resize(96, 0);
    want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    want.resize(128, 0);
    assert_eq!(bytes, want);
}

#[test]
fn chunked_writes_produce_the_same_bytes() {
    let specs = specs();
    let (whole, infos, _) = write_file(&all_values(), &specs);
    let mut w = GgufWriter::new(Vec::new(), &all_values(), &specs).unwrap();
    for (i, t) in infos.iter().enumerate() {
        assert_eq!(w.next_tensor(), Some(t));
        let data = fill(i, t.nbytes);
        for chunk in data.chunks(7) {
            w.write_tensor_chunk(chunk).unwrap();
        }
        w.write_tensor_chunk(&[]).unwrap();
        w.end_tensor().unwrap();
    }
    assert_eq!(w.finish().unwrap(), whole);
}

fn err<T: std::fmt::Debug>(r: kquant_core::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn writer_refuses_bad_declarations() {
    let new = |m: &[(String, Value)], t: &[TensorSpec]| GgufWriter::new(Vec::new(), m, t).map(|_| ());
    let kv = |k: &str, v: Value| vec![(k.to_string(), v)];
    let t = |name: &str, dims: &[u64], ty: QuantType| TensorSpec::new(name, dims, ty);

    let dup = vec![("a".to_string(), Value::U8(1)), ("a".to_string(), Value::U8(2))];
    assert!(err(new(&dup, &[])).contains("duplicate metadata key"));
    assert!(err(new(&kv("", Value::U8(1)), &[])).contains("empty"));
    assert!(err(new(&kv("a\0b", Value::U8(1)), &[])).contains("NUL"));
    assert!(err(new(&kv("k".repeat(65536).as_str(), Value::U8(1)), &[])).contains("65535"));
    for bad in [0u32, 3, 48, 1 << 31] {
        assert!(err(new(&kv(ALIGNMENT_KEY, Value::U32(bad)), &[])).contains(ALIGNMENT_KEY));
    }
    assert!(err(new(&kv(ALIGNMENT_KEY, Value::U64(32)), &[])).contains("u32"));

    let f32 = QuantType::F32;
    assert!(err(new(&[], &[t("x", &[1], f32), t("x", &[2], f32)])).contains("duplicate tensor name"));
    assert!(err(new(&[], &[t(&"n".repeat(128), &[1], f32)])).contains("127"));
    assert!(new(&[], &[t(&"n".repeat(127), &[1], f32)]).is_ok());
    assert!(err(new(&[], &[t("x", &[], f32)])).contains("dimensions"));
    assert!(err(new(&[], &[t("x", &[1; 9], f32)])).contains("dimensions"));
    assert!(err(new(&[], &[t("x", &[33], QuantType::Q4_0)])).contains("block size"));
    assert!(err(new(&[], &[t("x", &[1 << 32, 1 << 32], f32)])).contains("too many elements"));
    assert!(err(new(&[], &[t("x", &[1 << 62, 1], f32)])).contains("too large"));
    // Each tensor alone fits, the sum of their padded sizes does not.
    let big = |name: &str| TensorSpec::new(name, &[1 << 60], TensorType::F64);
    assert!(new(&[], &[big("a")]).is_ok());
    let e = err(new(&[], &[big("a"), big("b")]));
    assert!(e.contains("too large"), "{e}");
}

#[test]
fn writer_refuses_misuse_and_stays_usable() {
    let specs = vec![
        TensorSpec::new("a", &[4], QuantType::F32),
        TensorSpec::new("b", &[32], QuantType::Q8_0),
        TensorSpec::new("c", &[2], QuantType::F16),
    ];
    let mut w = GgufWriter::new(Vec::new(), &[], &specs).unwrap();
    assert!(err(w.write_tensor("b", &[0; 34])).contains("out of order"));
    assert!(err(w.write_tensor("zz", &[0; 16])).contains("not declared"));
    assert!(err(w.write_tensor("a", &[0; 15])).contains("16 bytes"));
    assert!(err(w.write_tensor("a", &[0; 17])).contains("16 bytes"));
    w.write_tensor("a", &[1; 16]).unwrap();
    w.write_tensor_chunk(&[2; 30]).unwrap();
    assert!(err(w.write_tensor_chunk(&[2; 5])).contains("too many"));
    assert!(err(w.end_tensor()).contains("only 30"));
    assert!(err(w.write_tensor("b", &[2; 34])).contains("partly written"));
    w.write_tensor_chunk(&[2; 4]).unwrap();
    w.end_tensor().unwrap();
    let unfinished = GgufWriter::new(Vec::new(), &[], &specs).unwrap();
    assert!(err(unfinished.finish()).contains("\"a\" and 2 more"));
    w.write_tensor("c", &[3; 4]).unwrap();
    assert!(w.write_tensor_chunk(&[0]).is_err());
    assert!(w.end_tensor().is_err());
    let bytes = w.finish().unwrap();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.tensor_data(&bytes, &f.tensors[1]).unwrap(), &[2; 34][..]);
}

/// Accepts `budget` bytes, then fails every write.
#[derive(Debug)]
struct Failing {
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn io_errors_are_reported_and_poison_the_writer() {
    let specs = vec![TensorSpec::new("a", &[64], QuantType::F32)];
    let e = err(GgufWriter::new(Failing { budget: 10 }, &all_values(), &specs).map(|_| ()));
    assert!(e.contains("disk full"), "{e}");
    let mut w = GgufWriter::new(Failing { budget: 64 + 100 + 50 }, &[], &specs).unwrap();
    w.write_tensor_chunk(&[0; 100]).unwrap();
    assert!(err(w.write_tensor_chunk(&[0; 156])).contains("disk full"));
    assert!(err(w.write_tensor_chunk(&[])).contains("unusable"));
    assert!(err(w.finish()).contains("unusable"));
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kquant-gguf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn write_atomic_replaces_only_on_success() {
    let d = scratch_dir("atomic");
    let path = d.join("model.gguf");
    let specs = vec![TensorSpec::new("a", &[4], QuantType::F32)];

    let n = write_atomic(&path, |out| {
        let mut w = GgufWriter::new(out, &all_values(), &specs)?;
        w.write_tensor("a", &[9; 16])?;
        w.finish()?;
        Ok(42)
    })
    .unwrap();
    assert_eq!(n, 42);
    assert_eq!(entries(&d), vec!["model.gguf"]);
    let good = std::fs::read(&path).unwrap();
    let f = GgufFile::parse(&good).unwrap();
    assert_eq!(f.tensor_data(&good, &f.tensors[0]).unwrap(), &[9; 16][..]);

    // A failure part way leaves the old file and no temporary behind.
    let e = write_atomic(&path, |out| {
        let mut w = GgufWriter::new(out, &[], &specs)?;
        w.write_tensor("a", &[1; 8])?;
        w.finish()?;
        Ok(())
    });
    assert!(e.is_err());
    assert_eq!(entries(&d), vec!["model.gguf"]);
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // So does a panic.
    let r = std::panic::catch_unwind(|| {
        let _ = write_atomic(&path, |out| -> kquant_core::Result<()> {
            out.write_all(b"partial").unwrap();
            panic!("writer crashed");
        });
    });
    assert!(r.is_err());
    assert_eq!(entries(&d), vec!["model.gguf"]);
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // A missing directory is an error, not a panic.
    assert!(write_atomic(d.join("no/such/dir/x.gguf"), |_| Ok(())).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn model_sized_header_parses_quickly() {
    // A 150k-token vocabulary and 3000 tensors, like a mid-sized LLM.
    let toks: Vec<String> = (0..150_000).map(|i| format!("tok{i}")).collect();
    let scores: Vec<f32> = (0..150_000).map(|i| i as f32).collect();
    let m = vec![
        ("tokenizer.ggml.tokens".to_string(), Value::from(toks.clone())),
        ("tokenizer.ggml.scores".to_string(), Value::from(scores)),
    ];
    let specs: Vec<TensorSpec> =
        (0..3000).map(|i| TensorSpec::new(format!("blk.{i}.ffn_down.weight"), &[32, 1], QuantType::Q8_0)).collect();
    let mut w = GgufWriter::new(Vec::new(), &m, &specs).unwrap();
    for s in &specs {
        w.write_tensor(&s.name, &[1; 34]).unwrap();
    }
    let bytes = w.finish().unwrap();
    let t = std::time::Instant::now();
    let f = GgufFile::parse(&bytes).unwrap();
    let dt = t.elapsed();
    assert_eq!(f.tensors.len(), 3000);
    assert_eq!(f.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(Array::len), Some(150_000));
    assert!(dt < std::time::Duration::from_secs(2), "{dt:?}");
}
