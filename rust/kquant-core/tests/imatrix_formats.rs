//! Both importance-matrix layouts, built here the way llama.cpp's `llama-imatrix` lays
//! them out, read back; then truncated, mutated and given absurd counts, which must all
//! end in an error and never a panic.

use kquant_core::gguf::{Array, GgufWriter, TensorSpec, TensorType, Value};
use kquant_core::imatrix::{Format, Imatrix, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE, KEY_DATASETS};
use kquant_core::QuantType;

const F32: TensorType = TensorType::Quant(QuantType::F32);

/// An extra tensor: name, ggml dims, type, bytes.
type Extra<'a> = (&'a str, Vec<u64>, TensorType, Vec<u8>);

/// A legacy entry: name, ncall, stored values.
type LegacyEntry<'a> = (&'a [u8], i32, Vec<f32>);

fn i32le(b: &mut Vec<u8>, v: i32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn legacy(entries: &[LegacyEntry<'_>], trailer: Option<(i32, &[u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    i32le(&mut b, entries.len() as i32);
    for (name, ncall, vals) in entries {
        i32le(&mut b, name.len() as i32);
        b.extend_from_slice(name);
        i32le(&mut b, *ncall);
        i32le(&mut b, vals.len() as i32);
        for v in vals {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some((chunks, dataset)) = trailer {
        i32le(&mut b, chunks);
        i32le(&mut b, dataset.len() as i32);
        b.extend_from_slice(dataset);
    }
    b
}

fn sample_legacy() -> (Vec<u8>, usize) {
    let entries: Vec<LegacyEntry<'_>> = vec![
        (b"blk.0.attn_q.weight", 10, vec![10.0, 20.0, 0.5, 7.0]),
        (b"blk.0.ffn_down_exps.weight", 3, (0..6).map(|i| i as f32 * 3.0).collect()),
    ];
    let without = legacy(&entries, None).len();
    (legacy(&entries, Some((42, b"calibration.txt"))), without)
}

/// A GGUF imatrix as `llama-imatrix` writes it: metadata, then per weight `in_sum2`
/// (`[n, n_mat]`, stored 1-D when n_mat is 1 because ggml drops trailing unit dimensions)
/// and `counts` (`[1, n_mat]`), optionally `in_sum`.
struct GgufEntry {
    name: &'static str,
    n: u64,
    sums: Vec<f32>,
    counts: Vec<f32>,
    in_sum: Option<Vec<f32>>,
}

fn dims(n: u64, n_mat: u64) -> Vec<u64> {
    if n_mat == 1 {
        vec![n]
    } else {
        vec![n, n_mat]
    }
}

fn gguf(metadata: Vec<(String, Value)>, entries: &[GgufEntry], extra: &[Extra<'_>]) -> Vec<u8> {
    let mut specs = Vec::new();
    let mut datas: Vec<Vec<u8>> = Vec::new();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for e in entries {
        let n_mat = e.counts.len() as u64;
        specs.push(TensorSpec::new(format!("{}.in_sum2", e.name), &dims(e.n, n_mat), F32));
        datas.push(le(&e.sums));
        let cdims = if n_mat == 1 { vec![1] } else { vec![1, n_mat] };
        specs.push(TensorSpec::new(format!("{}.counts", e.name), &cdims, F32));
        datas.push(le(&e.counts));
        if let Some(s) = &e.in_sum {
            specs.push(TensorSpec::new(format!("{}.in_sum", e.name), &dims(e.n, n_mat), F32));
            datas.push(le(s));
        }
    }
    for (name, d, ty, data) in extra {
        specs.push(TensorSpec::new(*name, d, *ty));
        datas.push(data.clone());
    }
    let mut w = GgufWriter::new(Vec::new(), &metadata, &specs).unwrap();
    for (s, d) in specs.iter().zip(&datas) {
        w.write_tensor(&s.name, d).unwrap();
    }
    w.finish().unwrap()
}

fn imatrix_metadata(datasets: &[&str], chunks: u32, chunk_size: u32) -> Vec<(String, Value)> {
    vec![
        ("general.type".into(), "imatrix".into()),
        (KEY_DATASETS.into(), Value::Array(Array::String(datasets.iter().map(|s| s.to_string()).collect()))),
        (KEY_CHUNK_COUNT.into(), Value::U32(chunks)),
        (KEY_CHUNK_SIZE.into(), Value::U32(chunk_size)),
    ]
}

fn sample_entries() -> Vec<GgufEntry> {
    vec![
        GgufEntry {
            name: "blk.0.attn_q.weight",
            n: 4,
            sums: vec![8.0, 4.0, 2.0, 1.0],
            counts: vec![4.0],
            in_sum: None,
        },
        GgufEntry {
            name: "blk.0.ffn_up_exps.weight",
            n: 2,
            sums: vec![6.0, 3.0, 5.0, 5.0, 9.0, 1.0],
            // The second expert never saw a token.
            counts: vec![3.0, 0.0, 2.0],
            in_sum: Some(vec![3.0, -3.0, 1.0, 1.0, 4.0, 2.0]),
        },
    ]
}

fn sample_gguf() -> Vec<u8> {
    gguf(imatrix_metadata(&["a.txt", "b.txt"], 100, 512), &sample_entries(), &[])
}

#[test]
fn legacy_round_trip() {
    let (b, _) = sample_legacy();
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.format, Format::Legacy);
    assert_eq!(m.entries.len(), 2);
    let e = &m.entries[0];
    assert_eq!(e.name, "blk.0.attn_q.weight");
    assert_eq!(e.values, vec![1.0, 2.0, 0.05, 0.7]);
    assert_eq!((e.n_per_row, e.n_mat), (4, 1));
    assert_eq!(e.counts, vec![10.0]);
    let e = &m.entries[1];
    assert_eq!(e.values, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(m.datasets, vec!["calibration.txt".to_string()]);
    assert_eq!(m.chunk_count, 42);
    assert_eq!(m.chunk_size, None);
    assert!(m.get("blk.0.ffn_down_exps.weight").is_some());
    assert!(m.get("nope").is_none());
}

#[test]
fn legacy_values_divide_like_cpp_float_by_int() {
    // 2^24 + 1 is not a float: C++ converts ncall to float before dividing.
    let ncall = (1 << 24) + 1;
    let b = legacy(&[(b"w", ncall, vec![3.0e7])], None);
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.entries[0].values[0], 3.0e7f32 / (ncall as f32));
}

#[test]
fn legacy_without_trailer_and_with_empty_dataset() {
    let b = legacy(&[(b"w", 1, vec![1.0])], None);
    let m = Imatrix::parse(&b).unwrap();
    assert!(m.datasets.is_empty());
    assert_eq!(m.chunk_count, 0);
    let b = legacy(&[(b"w", 1, vec![1.0])], Some((0, b"")));
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.datasets, vec![String::new()]);
}

#[test]
fn legacy_dataset_bytes_are_decoded_leniently() {
    let b = legacy(&[(b"w", 1, vec![1.0])], Some((3, b"caf\xe9.txt")));
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.datasets, vec!["caf\u{fffd}.txt".to_string()]);
}

#[test]
fn legacy_truncated_at_every_byte() {
    let (b, end_of_entries) = sample_legacy();
    for len in 0..b.len() {
        let r = Imatrix::parse(&b[..len]);
        if len == end_of_entries {
            assert!(r.is_ok(), "cut at the end of the entries: {r:?}");
        } else {
            let e = r.expect_err(&format!("prefix of {len} bytes accepted")).to_string();
            assert!(e.starts_with("invalid imatrix file"), "{e}");
        }
    }
}

fn legacy_err(b: &[u8]) -> String {
    Imatrix::parse(b).expect_err("accepted").to_string()
}

#[test]
fn legacy_counts_near_2_pow_31_and_32() {
    // The entry count itself.
    for n in [0i32, -1, i32::MIN, i32::MAX, 1 << 30] {
        let mut b = Vec::new();
        i32le(&mut b, n);
        b.extend_from_slice(&[0; 64]);
        let e = legacy_err(&b);
        assert!(e.contains("entry count"), "{n}: {e}");
    }
    // Name lengths, ncall, nval, the trailer's counts: each field of a one-entry file
    // replaced by values around 2^31 and 2^32 (as i32: MAX, MIN, -1, and 2^30 whose
    // byte count 2^32 overflows 32-bit arithmetic).
    let base = legacy(&[(b"w", 1, vec![1.0, 2.0])], Some((5, b"d")));
    // Offsets: n_entries 0, name len 4, name 8, ncall 9, nval 13, values 17..25,
    // chunk count 25, dataset len 29, dataset 33.
    for (field, at) in
        [("name length", 4), ("ncall", 9), ("value count", 13), ("chunk count", 25), ("dataset length", 29)]
    {
        for v in [i32::MAX, i32::MIN, -1, 1 << 30, (1 << 30) + 1, i32::MAX - 3] {
            let mut b = base.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            let r = Imatrix::parse(&b);
            // A huge non-negative ncall or chunk count is merely a large number.
            if v >= 0 && (field == "ncall" || field == "chunk count") {
                let m = r.unwrap_or_else(|e| panic!("{field}={v}: {e}"));
                if field == "chunk count" {
                    assert_eq!(m.chunk_count, v as u32);
                }
                continue;
            }
            let e = r.expect_err(&format!("{field}={v} accepted")).to_string();
            assert!(!e.is_empty());
        }
    }
}

#[test]
fn legacy_refuses_bad_names_and_duplicates() {
    assert!(legacy_err(&legacy(&[(b"", 1, vec![1.0])], None)).contains("empty"));
    assert!(legacy_err(&legacy(&[(b"a\0b", 1, vec![1.0])], None)).contains("NUL"));
    assert!(legacy_err(&legacy(&[(b"\xff", 1, vec![1.0])], None)).contains("UTF-8"));
    let e = legacy_err(&legacy(&[(b"a", 1, vec![1.0]), (b"a", 2, vec![2.0])], None));
    assert!(e.contains("duplicate"), "{e}");
    assert!(legacy_err(&legacy(&[(b"a", 1, vec![])], Some((1, b"dd")))).contains("value count"));
    let mut b = legacy(&[(b"a", 1, vec![1.0])], Some((1, b"d")));
    b.extend_from_slice(b"junk");
    assert!(legacy_err(&b).contains("unexpected bytes"));
    // A trailer with a chunk count but no dataset length.
    let mut b = legacy(&[(b"a", 1, vec![1.0])], None);
    i32le(&mut b, 3);
    assert!(legacy_err(&b).contains("truncated"));
}

#[test]
fn legacy_mutations_never_panic() {
    let (b, _) = sample_legacy();
    for i in 0..b.len() {
        for v in [0x00, 0xff, 0x80, 0x7f, 0x01] {
            let mut m = b.clone();
            m[i] = v;
            let _ = Imatrix::parse(&m);
        }
    }
}

#[test]
fn gguf_round_trip() {
    let b = sample_gguf();
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.format, Format::Gguf);
    assert_eq!(m.datasets, vec!["a.txt".to_string(), "b.txt".to_string()]);
    assert_eq!(m.chunk_count, 100);
    assert_eq!(m.chunk_size, Some(512));
    assert_eq!(m.entries.len(), 2);
    let e = &m.entries[0];
    assert_eq!(e.name, "blk.0.attn_q.weight");
    assert_eq!(e.values, vec![2.0, 1.0, 0.5, 0.25]);
    assert_eq!((e.n_per_row, e.n_mat), (4, 1));
    assert_eq!(e.counts, vec![4.0]);
    assert_eq!(e.activations, None);
    let e = &m.entries[1];
    assert_eq!((e.n_per_row, e.n_mat), (2, 3));
    // The unused expert gets ones, as llama-quantize gives it.
    assert_eq!(e.values, vec![2.0, 1.0, 1.0, 1.0, 4.5, 0.5]);
    assert_eq!(e.counts, vec![3.0, 0.0, 2.0]);
    assert_eq!(e.activations, Some(vec![1.0, -1.0, 0.0, 0.0, 2.0, 1.0]));
}

#[test]
fn gguf_ignores_other_tensors_and_accepts_2d_unit_rows() {
    // gguf-py writes a (1, n) NumPy array as ggml [n, 1], which ggml itself would store 1-D.
    let mut specs_extra: Vec<Extra<'_>> =
        vec![("w.in_sum2", vec![2, 1], F32, [4.0f32, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect())];
    specs_extra.push(("w.counts", vec![1, 1], F32, 2.0f32.to_le_bytes().to_vec()));
    specs_extra.push(("something.else", vec![4], TensorType::I8, vec![1, 2, 3, 4]));
    let b = gguf(imatrix_metadata(&[], 0, 1), &[], &specs_extra);
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.entries.len(), 1);
    assert_eq!(m.entries[0].values, vec![2.0, 3.0]);
    assert!(m.datasets.is_empty());
}

#[test]
fn gguf_nan_and_negative_counts_mean_no_data() {
    let e = GgufEntry {
        name: "w",
        n: 1,
        sums: vec![5.0, 5.0, 5.0, 5.0],
        counts: vec![f32::NAN, -1.0, 0.0, 2.5],
        in_sum: None,
    };
    let b = gguf(imatrix_metadata(&["d"], 1, 1), &[e], &[]);
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.entries[0].values, vec![1.0, 1.0, 1.0, 2.0]);
}

#[test]
fn gguf_large_counts_and_chunk_numbers() {
    let e = GgufEntry {
        name: "w",
        n: 2,
        sums: vec![4_294_967_296.0, 8_589_934_592.0],
        counts: vec![4_294_967_296.0],
        in_sum: None,
    };
    let b = gguf(imatrix_metadata(&["d"], u32::MAX, u32::MAX), &[e], &[]);
    let m = Imatrix::parse(&b).unwrap();
    assert_eq!(m.chunk_count, u32::MAX);
    assert_eq!(m.chunk_size, Some(u32::MAX));
    assert_eq!(m.entries[0].values, vec![1.0, 2.0]);
    assert_eq!(m.entries[0].counts, vec![4_294_967_296.0]);
}

fn gguf_err(b: &[u8]) -> String {
    Imatrix::parse(b).expect_err("accepted").to_string()
}

#[test]
fn gguf_metadata_is_required_and_typed() {
    let entries = sample_entries();
    for drop in [KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE] {
        let md: Vec<_> = imatrix_metadata(&["d"], 1, 1).into_iter().filter(|(k, _)| k != drop).collect();
        let e = gguf_err(&gguf(md, &entries, &[]));
        assert!(e.contains(drop) && e.contains("missing"), "{e}");
    }
    let retype = |key: &str, v: Value| {
        let md: Vec<_> = imatrix_metadata(&["d"], 1, 1)
            .into_iter()
            .map(|(k, old)| if k == key { (k, v.clone()) } else { (k, old) })
            .collect();
        gguf_err(&gguf(md, &entries, &[]))
    };
    assert!(retype(KEY_CHUNK_COUNT, Value::I32(1)).contains("u32"));
    assert!(retype(KEY_CHUNK_SIZE, Value::U64(1)).contains("u32"));
    assert!(retype(KEY_DATASETS, "d".into()).contains("array of strings"));
    assert!(retype(KEY_DATASETS, Value::Array(Array::U32(vec![1]))).contains("array of strings"));
}

#[test]
fn gguf_refuses_inconsistent_tensors() {
    let md = || imatrix_metadata(&["d"], 1, 1);
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let cases: Vec<(Vec<Extra<'_>>, &str)> = vec![
        (vec![], "no tensors"),
        (vec![("w.other", vec![1], F32, f32s(&[1.0]))], "none of the"),
        (vec![("w.in_sum2", vec![2], F32, f32s(&[1.0, 2.0]))], "\"w.counts\" is missing"),
        (vec![("w.counts", vec![1], F32, f32s(&[1.0]))], "\"w.in_sum2\" is missing"),
        (
            vec![("w.in_sum", vec![2], F32, f32s(&[1.0, 2.0])), ("w.counts", vec![1], F32, f32s(&[1.0]))],
            "\"w.in_sum2\" is missing",
        ),
        (vec![("w.in_sum2", vec![2, 2], F32, f32s(&[1.0; 4])), ("w.counts", vec![1], F32, f32s(&[1.0]))], "2 rows"),
        (
            vec![
                ("w.in_sum2", vec![2], TensorType::Quant(QuantType::F16), vec![0; 4]),
                ("w.counts", vec![1], F32, f32s(&[1.0])),
            ],
            "expected F32",
        ),
        (
            vec![
                ("w.in_sum2", vec![2], F32, f32s(&[1.0, 2.0])),
                ("w.counts", vec![1], TensorType::I32, vec![1, 0, 0, 0]),
            ],
            "expected F32",
        ),
        (
            vec![
                ("w.in_sum2", vec![2], F32, f32s(&[1.0, 2.0])),
                ("w.counts", vec![1], F32, f32s(&[1.0])),
                ("w.in_sum", vec![3], F32, f32s(&[1.0; 3])),
            ],
            "elements",
        ),
        (vec![("w.in_sum2", vec![0], F32, vec![]), ("w.counts", vec![1], F32, f32s(&[1.0]))], "empty"),
    ];
    for (extra, want) in cases {
        let e = gguf_err(&gguf(md(), &[], &extra));
        assert!(e.contains(want), "want {want:?} in {e}");
        assert!(e.starts_with("invalid imatrix file (GGUF format)"), "{e}");
    }
}

#[test]
fn gguf_truncated_at_every_byte() {
    let b = sample_gguf();
    // The writer pads after the last tensor; cutting only that padding leaves a valid file.
    let m = Imatrix::parse(&b).unwrap();
    let last = m.entries.len();
    assert_eq!(last, 2);
    let data_end = {
        let f = kquant_core::gguf::GgufFile::parse(&b).unwrap();
        let t = f.tensors.last().unwrap();
        f.tensor_range(t).unwrap().end as usize
    };
    for len in 0..b.len() {
        let r = Imatrix::parse(&b[..len]);
        if len >= data_end {
            assert!(r.is_ok(), "{len}: {r:?}");
        } else {
            let e = r.expect_err(&format!("prefix of {len} bytes accepted")).to_string();
            assert!(e.starts_with("invalid"), "{e}");
        }
    }
}

#[test]
fn gguf_mutations_never_panic() {
    let b = sample_gguf();
    for i in 0..b.len() {
        for v in [0x00, 0xff, 0x80, 0x7f] {
            let mut m = b.clone();
            m[i] = v;
            let _ = Imatrix::parse(&m);
        }
    }
}

#[test]
fn format_is_chosen_by_magic() {
    // A legacy file cannot start with "GGUF" (that would be 1.18 billion entries); a
    // truncated GGUF file is reported as GGUF, not misread as legacy.
    let e = gguf_err(b"GGUF\x03\x00\x00\x00");
    assert!(e.contains("GGUF"), "{e}");
    assert!(gguf_err(b"").contains("legacy"));
}
