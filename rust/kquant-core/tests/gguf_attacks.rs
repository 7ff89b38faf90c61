//! Hostile GGUF files: every one must be refused with an error naming the problem, fast,
//! and without a panic.

use std::time::{Duration, Instant};

use kquant_core::gguf::{Array, GgufFile, GgufWriter, TensorSpec, Value, ALIGNMENT_KEY};
use kquant_core::QuantType;

/// Raw little-endian GGUF pieces, so files can say anything.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.sbytes(s.as_bytes())
    }
    /// A GGUF string with arbitrary (possibly non-UTF-8) bytes.
    fn sbytes(self, b: &[u8]) -> Self {
        self.u64(b.len() as u64).bytes(b)
    }
}

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;
const T_U64: u32 = 10;

fn kv_u32(key: &str, v: u32) -> Raw {
    Raw::default().str(key).u32(T_U32).u32(v)
}

fn tinfo(name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
    let mut r = Raw::default().str(name).u32(dims.len() as u32);
    for &d in dims {
        r = r.u64(d);
    }
    r.u32(ty).u64(offset)
}

/// A v3 file with the given entries, padded to `align` and followed by `data_len` zeros.
fn file(kvs: &[Raw], tis: &[Raw], align: usize, data_len: usize) -> Vec<u8> {
    let mut r = Raw::default().bytes(b"GGUF").u32(3).u64(tis.len() as u64).u64(kvs.len() as u64);
    for p in kvs.iter().chain(tis) {
        r = r.bytes(&p.0);
    }
    let mut v = r.0;
    v.resize(v.len().div_ceil(align) * align, 0);
    v.resize(v.len() + data_len, 0);
    v
}

/// Parses `bytes` expecting an error that mentions every one of `needles`, within a time
/// generous enough for a loaded machine but far below what a count-driven loop would take.
#[track_caller]
fn refused(bytes: &[u8], needles: &[&str]) {
    let t = Instant::now();
    let r = GgufFile::parse(bytes);
    let dt = t.elapsed();
    let msg = match r {
        Ok(f) => panic!("accepted a hostile file: {f:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not mention {n:?}");
    }
    assert!(dt < Duration::from_millis(500), "took {dt:?} to refuse: {msg}");
}

#[test]
fn sanity_the_builder_makes_valid_files() {
    let f = file(&[kv_u32("a", 1)], &[tinfo("t", &[8], 0, 0)], 32, 32);
    let g = GgufFile::parse(&f).unwrap();
    assert_eq!(g.metadata, vec![("a".to_string(), Value::U32(1))]);
    assert_eq!(g.tensors[0].nbytes, 32);
}

#[test]
fn counts_near_2_pow_64() {
    for (nt, nkv) in [(u64::MAX, 0), (0, u64::MAX), (u64::MAX, u64::MAX), (1 << 63, 0), (0, 1 << 63), (1 << 40, 1)] {
        let mut f = Raw::default().bytes(b"GGUF").u32(3).u64(nt).u64(nkv).0;
        f.extend_from_slice(&kv_u32("a", 1).0);
        f.resize(4096, 0);
        refused(&f, &["header claims"]);
    }
    // A count that a 4 KiB file could never hold, though it looks modest.
    let mut f = Raw::default().bytes(b"GGUF").u32(3).u64(0).u64(1000).0;
    f.resize(4096, 0);
    refused(&f, &["1000 metadata entries"]);
}

#[test]
fn string_lengths_that_wrap_or_overrun() {
    for len in [u64::MAX, u64::MAX - 7, 1 << 63, (1 << 30) + 1, 1 << 20] {
        let key = Raw::default().u64(len).bytes(b"abc").u32(T_U8).u8(0);
        refused(&file(&[key], &[], 1, 64), &["metadata entry 0", "metadata key"]);
        let val = Raw::default().str("k").u32(T_STR).u64(len).bytes(b"abc");
        refused(&file(&[val], &[], 1, 64), &["string value"]);
        let name = Raw::default().u64(len).bytes(b"t").u32(1).u64(32).u32(0).u64(0);
        refused(&file(&[], &[name], 32, 128), &["tensor name"]);
        let elem = Raw::default().str("k").u32(T_ARR).u32(T_STR).u64(2).str("ok").u64(len).bytes(b"x");
        refused(&file(&[elem], &[], 1, 64), &["string array element"]);
    }
    let long_key = "k".repeat(70000);
    refused(&file(&[kv_u32(&long_key, 1)], &[], 1, 0), &["65535"]);
    refused(&file(&[], &[tinfo(&"n".repeat(128), &[1], 0, 0)], 32, 32), &["tensor name", "127"]);
}

#[test]
fn huge_array_counts() {
    for (ty, n) in [(T_U8, u64::MAX), (T_U64, 1 << 61), (T_STR, 1 << 40), (T_BOOL, (1 << 30) + 1), (T_U32, 1000)] {
        let a = Raw::default().str("arr").u32(T_ARR).u32(ty).u64(n).bytes(&[0; 64]);
        refused(&file(&[a], &[], 1, 0), &["metadata entry 0", "array"]);
    }
}

#[test]
fn nested_arrays() {
    let a = Raw::default().str("arr").u32(T_ARR).u32(T_ARR).u64(1).u32(T_U8).u64(1).u8(0);
    refused(&file(&[a], &[], 1, 0), &["nested arrays"]);
}

#[test]
fn unknown_value_types() {
    for ty in [13u32, 100, u32::MAX] {
        let a = Raw::default().str("k").u32(ty).u64(0);
        refused(&file(&[a], &[], 1, 0), &["not a GGUF value type", &ty.to_string()]);
        let a = Raw::default().str("k").u32(T_ARR).u32(ty).u64(0);
        refused(&file(&[a], &[], 1, 0), &["array element type", &ty.to_string()]);
    }
}

#[test]
fn n_dims_out_of_range() {
    for n in [0u32, 9, 64, u32::MAX] {
        let t = Raw::default().str("t").u32(n).bytes(&[1; 64]);
        refused(&file(&[], &[t], 32, 64), &["\"t\"", &format!("{n} dimensions")]);
    }
}

#[test]
fn dimension_products_that_overflow() {
    let cases: [(&[u64], u32, &str); 7] = [
        (&[1 << 32, 1 << 32], 0, "too many elements"),
        (&[1 << 62, 2], 0, "too many elements"),
        (&[2, 2, 1 << 61], 24, "too many elements"),
        (&[1 << 63, 1], 24, "larger than 2^63"),
        (&[u64::MAX], 24, "larger than 2^63"),
        (&[1 << 61, 2], 28, "too large in bytes"), // 2^62 f64 values are 2^65 bytes
        (&[1 << 40, 1 << 20], 0, "past the end"),  // representable, but not in this file
    ];
    for (dims, ty, needle) in cases {
        refused(&file(&[], &[tinfo("t", dims, ty, 0)], 32, 64), &["\"t\"", needle]);
    }
    // A zero dimension makes an empty tensor (ggml allows it), but its other dimensions
    // must still multiply below 2^63, or its row count and NumPy shape overflow.
    let f = file(&[], &[tinfo("t", &[1 << 20, 0, 1 << 20], 0, 0)], 32, 0);
    assert_eq!(GgufFile::parse(&f).unwrap().tensors[0].nbytes, 0);
    refused(&file(&[], &[tinfo("t", &[1 << 40, 0, 1 << 40], 0, 0)], 32, 0), &["\"t\"", "too many elements"]);
}

#[test]
fn row_not_a_whole_number_of_blocks() {
    refused(&file(&[], &[tinfo("t", &[33, 2], 2, 0)], 32, 64), &["\"t\"", "Q4_0", "block size 32"]);
    refused(&file(&[], &[tinfo("t", &[128], 12, 0)], 32, 256), &["Q4_K", "block size 256"]);
}

#[test]
fn unknown_tensor_types() {
    for (id, needle) in [(31u32, "Q4_0_4_4"), (4, "removed"), (43, "unknown ggml type id 43"), (u32::MAX, "4294967295")]
    {
        refused(&file(&[], &[tinfo("t", &[256], id, 0)], 32, 1024), &["\"t\"", needle]);
    }
}

#[test]
fn offsets_outside_the_file() {
    for off in [1u64 << 40, u64::MAX - 31, 32] {
        refused(&file(&[], &[tinfo("t", &[8], 0, off)], 32, 32), &["\"t\""]);
    }
    // In-bounds start but the data runs past the end.
    refused(&file(&[], &[tinfo("t", &[16], 0, 0)], 32, 63), &["\"t\"", "past the end"]);
    // The padding before the data section itself is missing.
    let mut f = file(&[], &[tinfo("t", &[0], 0, 0)], 32, 0);
    let full = f.len();
    f.truncate(full - 1);
    refused(&f, &["data section"]);
}

#[test]
fn overlapping_misaligned_and_gapped_offsets() {
    let two = |o1: u64, data: usize| file(&[], &[tinfo("a", &[8], 0, 0), tinfo("b", &[8], 0, o1)], 32, data);
    assert!(GgufFile::parse(&two(32, 64)).is_ok());
    refused(&two(0, 64), &["\"b\"", "overlaps", "\"a\""]);
    refused(&two(16, 64), &["\"b\"", "not a multiple of the alignment 32"]);
    refused(&two(64, 128), &["\"b\"", "expected 32"]);
    refused(&file(&[], &[tinfo("a", &[8], 0, 4)], 32, 64), &["\"a\"", "alignment"]);
    // Tensors listed out of data order overlap their predecessor's data.
    let f = file(&[], &[tinfo("a", &[8], 0, 32), tinfo("b", &[8], 0, 0)], 32, 64);
    refused(&f, &["\"a\"", "expected 0"]);
}

#[test]
fn bad_alignments() {
    for a in [0u32, 3, 48, 1 << 31, u32::MAX] {
        refused(&file(&[kv_u32(ALIGNMENT_KEY, a)], &[], 1, 0), &[ALIGNMENT_KEY, &a.to_string()]);
    }
    let wrong_type = Raw::default().str(ALIGNMENT_KEY).u32(T_U64).u64(32);
    refused(&file(&[wrong_type], &[], 1, 0), &[ALIGNMENT_KEY, "u32", "u64"]);
    // A valid custom alignment is honoured for the data section and offsets.
    let f = file(&[kv_u32(ALIGNMENT_KEY, 64)], &[tinfo("a", &[8], 0, 0), tinfo("b", &[8], 0, 64)], 64, 128);
    let g = GgufFile::parse(&f).unwrap();
    assert_eq!((g.alignment, g.data_offset % 64), (64, 0));
}

#[test]
fn bools_other_than_0_or_1() {
    for b in [2u8, 0x80, 0xFF] {
        let scalar = Raw::default().str("k").u32(T_BOOL).u8(b);
        refused(&file(&[scalar], &[], 1, 0), &["bool", &b.to_string()]);
        let arr = Raw::default().str("k").u32(T_ARR).u32(T_BOOL).u64(3).bytes(&[0, 1, b]);
        refused(&file(&[arr], &[], 1, 0), &["bool array element 2", &b.to_string()]);
    }
}

#[test]
fn invalid_utf8() {
    for bad in [&b"\xff"[..], b"a\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82"] {
        let key = Raw::default().sbytes(bad).u32(T_U8).u8(0);
        refused(&file(&[key], &[], 1, 0), &["metadata key", "UTF-8"]);
        let val = Raw::default().str("k").u32(T_STR).sbytes(bad);
        refused(&file(&[val], &[], 1, 0), &["string value", "UTF-8"]);
        let arr = Raw::default().str("k").u32(T_ARR).u32(T_STR).u64(2).str("fine").sbytes(bad);
        refused(&file(&[arr], &[], 1, 0), &["string array element", "UTF-8"]);
        let t = Raw::default().sbytes(bad).u32(1).u64(8).u32(0).u64(0);
        refused(&file(&[], &[t], 32, 32), &["tensor name", "UTF-8"]);
    }
}

#[test]
fn duplicate_keys_and_tensor_names() {
    refused(&file(&[kv_u32("a", 1), kv_u32("b", 1), kv_u32("a", 2)], &[], 1, 0), &["duplicate metadata key \"a\""]);
    let f = file(&[], &[tinfo("w", &[8], 0, 0), tinfo("w", &[8], 0, 32)], 32, 64);
    refused(&f, &["duplicate tensor name \"w\""]);
}

#[test]
fn empty_or_nul_keys_and_names() {
    refused(&file(&[kv_u32("", 1)], &[], 1, 0), &["empty"]);
    refused(&file(&[kv_u32("a\0b", 1)], &[], 1, 0), &["NUL"]);
    refused(&file(&[], &[tinfo("a\0b", &[8], 0, 0)], 32, 32), &["NUL"]);
    // An empty tensor name is legal in ggml.
    assert!(GgufFile::parse(&file(&[], &[tinfo("", &[8], 0, 0)], 32, 32)).is_ok());
}

#[test]
fn magic_versions_and_big_endian() {
    refused(b"", &["magic"]);
    refused(b"GGU", &["magic"]);
    refused(b"GGML\x03\0\0\0", &["bad magic"]);
    let hdr = |v: u32| Raw::default().bytes(b"GGUF").u32(v).u64(0).u64(0).0;
    refused(&hdr(1), &["version 1"]);
    refused(&hdr(0), &["version 0"]);
    refused(&hdr(4), &["version 4"]);
    refused(&hdr(0x1234_5678), &["version 305419896"]);
    assert!(GgufFile::parse(&hdr(2)).is_ok());
    assert!(GgufFile::parse(&hdr(3)).is_ok());

    // A complete big-endian v3 file, as gguf-py writes it with endianess=BIG.
    let mut be = b"GGUF".to_vec();
    be.extend_from_slice(&3u32.to_be_bytes());
    be.extend_from_slice(&0u64.to_be_bytes());
    be.extend_from_slice(&1u64.to_be_bytes());
    be.extend_from_slice(&1u64.to_be_bytes());
    be.push(b'k');
    be.extend_from_slice(&T_U32.to_be_bytes());
    be.extend_from_slice(&7u32.to_be_bytes());
    refused(&be, &["big-endian", "not supported"]);
    for v in [2u32, 3] {
        refused(&hdr(v.swap_bytes()), &["big-endian", &format!("version {v}")]);
    }
}

/// A small valid file with every kind of section.
fn small_valid() -> Vec<u8> {
    let m = vec![
        ("general.name".to_string(), Value::from("tiny")),
        ("n".to_string(), Value::U32(3)),
        ("flags".to_string(), Value::Array(Array::Bool(vec![true, false]))),
        ("toks".to_string(), Value::Array(Array::String(vec!["a".into(), "bc".into()]))),
        ("f".to_string(), Value::F64(0.25)),
    ];
    let specs = vec![TensorSpec::new("w", &[32, 1], QuantType::Q8_0), TensorSpec::new("b", &[3], QuantType::F32)];
    let mut w = GgufWriter::new(Vec::new(), &m, &specs).unwrap();
    w.write_tensor("w", &[7; 34]).unwrap();
    w.write_tensor("b", &[9; 12]).unwrap();
    w.finish().unwrap()
}

#[test]
fn truncation_at_every_byte() {
    let f = small_valid();
    let g = GgufFile::parse(&f).unwrap();
    let last = g.tensors.last().unwrap();
    // The final padding is not needed; every shorter prefix must fail.
    let needed = (g.data_offset + last.offset + last.nbytes) as usize;
    assert!(needed < f.len());
    let t = Instant::now();
    for n in 0..f.len() {
        let r = GgufFile::parse(&f[..n]);
        if n < needed {
            let e = r.expect_err(&format!("prefix of {n} bytes accepted")).to_string();
            assert!(["truncated", "claims", "needs", "magic"].iter().any(|w| e.contains(w)), "prefix {n}: {e}");
        } else {
            assert_eq!(r.unwrap(), g);
        }
    }
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn tensor_data_with_the_wrong_bytes_is_an_error() {
    let f = small_valid();
    let g = GgufFile::parse(&f).unwrap();
    let t = &g.tensors[1];
    assert_eq!(g.tensor_data(&f, t).unwrap(), &[9; 12][..]);
    assert!(g.tensor_data(&f[..100], t).unwrap_err().to_string().contains("pass the bytes"));
    let mut forged = t.clone();
    forged.offset = u64::MAX;
    assert!(g.tensor_data(&f, &forged).is_err());
}

/// Random byte edits of a valid file: never a panic, and whatever is accepted is
/// self-consistent (its tensor data can be sliced).
#[test]
fn mutations_never_panic() {
    let base = small_valid();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials = [0u8, 1, 2, 0x7F, 0x80, 0xFF, 8, 9, 32, 64];
    let t = Instant::now();
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut f = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % f.len() as u64) as usize;
            f[i] = if next() % 2 == 0 { specials[(next() % 10) as usize] } else { next() as u8 };
        }
        if next() % 8 == 0 {
            f.truncate((next() % f.len() as u64) as usize);
        }
        if let Ok(g) = GgufFile::parse(&f) {
            accepted += 1;
            for ti in &g.tensors {
                assert_eq!(g.tensor_data(&f, ti).unwrap().len() as u64, ti.nbytes);
            }
        }
    }
    assert!(accepted > 0);
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0 and Q2_0 tensors: odd block sizes (17, 54 bytes;
/// 64- and 128-value blocks), partial blocks, block counts whose byte size overflows,
/// data one byte short; what is accepted dequantizes whatever its bytes.
#[test]
fn newer_formats_sizes_shapes_and_block_counts() {
    use kquant_core::ops::{self, Rows};
    use kquant_core::QuantType;
    for t in [QuantType::TQ1_0, QuantType::TQ2_0, QuantType::MXFP4, QuantType::NVFP4, QuantType::Q1_0, QuantType::Q2_0]
    {
        let (id, bs, ts) = (t.id(), t.block_size() as u64, t.type_size());
        let name = t.name();
        // a partial block, and a row of one and a half blocks
        refused(&file(&[], &[tinfo("t", &[bs / 2], id, 0)], 32, 256), &["\"t\"", name, "block size"]);
        refused(&file(&[], &[tinfo("t", &[bs * 3 / 2, 2], id, 0)], 32, 1024), &["\"t\"", name, "block size"]);
        // huge block counts: element counts past 2^63, byte sizes far past the file (these
        // blocks hold fewer bytes than values, so bytes cannot overflow before elements do)
        refused(&file(&[], &[tinfo("t", &[bs << 50, 1 << 20], id, 0)], 32, 64), &["\"t\"", "too many elements"]);
        refused(&file(&[], &[tinfo("t", &[bs << 50], id, 0)], 32, 64), &["\"t\"", "past the end"]);
        refused(&file(&[], &[tinfo("t", &[bs, 1 << 40], id, 0)], 32, 64), &["\"t\"", "past the end"]);
        // odd shapes: 3 blocks per row, 5 x 1 x 7 rows; exact data accepted, one byte short refused
        let dims = [bs * 3, 5, 1, 7];
        let nbytes = 3 * ts * 35;
        let mut ok = file(&[], &[tinfo("t", &dims, id, 0)], 32, nbytes);
        refused(&ok[..ok.len() - 1], &["\"t\"", "past the end"]);
        let len = ok.len();
        for (i, b) in ok[len - nbytes..].iter_mut().enumerate() {
            *b = (i * 151 % 256) as u8; // every byte value, scales included
        }
        let g = GgufFile::parse(&ok).unwrap();
        let ti = &g.tensors[0];
        assert_eq!((ti.nbytes, ti.n_rows()), (nbytes as u64, 35));
        let data = g.tensor_data(&ok, ti).unwrap();
        let mut out = vec![0f32; (bs * 3 * 35) as usize];
        ops::dequantize(Rows::new(t, (bs * 3) as usize, 35).unwrap(), data, &mut out).unwrap();
        // a second tensor after an odd-sized one lands on the next aligned offset
        let two = file(&[], &[tinfo("a", &[bs], id, 0), tinfo("b", &[bs], id, (ts as u64).div_ceil(32) * 32)], 32, 256);
        let g = GgufFile::parse(&two).unwrap();
        assert_eq!(g.tensors[1].nbytes, ts as u64);
        let bad = file(&[], &[tinfo("a", &[bs], id, 0), tinfo("b", &[bs], id, ts as u64)], 32, 128);
        if ts % 32 != 0 {
            refused(&bad, &["\"b\""]);
        }
    }
}
