//! A file written by gguf-py 0.19.0's GGUFWriter (llama.cpp's Python writer): the reader
//! must see exactly what gguf-py wrote, and the writer must reproduce it byte for byte.

use kquant_core::gguf::{Array, GgufFile, GgufWriter, TensorSpec, TensorType, Value};
use kquant_core::QuantType;

/// Written by: GGUFWriter(path, "llama"), the scalar and array values below via add_*,
/// add_tensor("w.f32", arange(6, f32).reshape(2, 3)),
/// add_tensor("w.q8", arange(34, u8).reshape(1, 34), raw_dtype=Q8_0),
/// add_tensor("w.i32", [7, -8, 9] as i32).
const FIXTURE: &[&str] = &[
    "474755460300000003000000000000001000000000000000140000000000000067656e6572616c2e6172636869746563",
    "747572650800000005000000000000006c6c616d610400000000000000742e753800000000c80400000000000000742e",
    "6938010000009c0500000000000000742e75313602000000e8fd0500000000000000742e69313603000000fdff050000",
    "0000000000742e7533320400000000286bee0500000000000000742e69333205000000006cca88050000000000000074",
    "2e663332060000000000c0bf0300000000000000742e6207000000010300000000000000742e73080000000a00000000",
    "00000068c3a96c6c6f20e29c930500000000000000742e7536340a000000ffffffffffffffff0500000000000000742e",
    "6936340b00000000000000000000800500000000000000742e6636340c0000000000000000000a400300000000000000",
    "612e730900000008000000030000000000000001000000000000006100000000000000000200000000000000c3bc0300",
    "000000000000612e690900000005000000030000000000000001000000feffffff030000000300000000000000612e62",
    "0900000007000000020000000000000001000500000000000000772e6633320200000003000000000000000200000000",
    "0000000000000000000000000000000400000000000000772e7138020000002000000000000000010000000000000008",
    "00000020000000000000000500000000000000772e6933320100000003000000000000001a0000006000000000000000",
    "000000000000803f0000004000004040000080400000a0400000000000000000000102030405060708090a0b0c0d0e0f",
    "101112131415161718191a1b1c1d1e1f2021000000000000000000000000000000000000000000000000000000000000",
    "07000000f8ffffff090000000000000000000000000000000000000000000000",
];

fn fixture() -> Vec<u8> {
    let hex: String = FIXTURE.concat();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn expected_metadata() -> Vec<(String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    vec![
        kv("general.architecture", "llama".into()),
        kv("t.u8", Value::U8(200)),
        kv("t.i8", Value::I8(-100)),
        kv("t.u16", Value::U16(65000)),
        kv("t.i16", Value::I16(-3)),
        kv("t.u32", Value::U32(4_000_000_000)),
        kv("t.i32", Value::I32(-2_000_000_000)),
        kv("t.f32", Value::F32(-1.5)),
        kv("t.b", Value::Bool(true)),
        kv("t.s", "héllo ✓".into()),
        kv("t.u64", Value::U64(u64::MAX)),
        kv("t.i64", Value::I64(i64::MIN)),
        kv("t.f64", Value::F64(3.25)),
        kv("a.s", Value::Array(Array::String(vec!["a".into(), "".into(), "ü".into()]))),
        kv("a.i", Value::Array(Array::I32(vec![1, -2, 3]))),
        kv("a.b", Value::Array(Array::Bool(vec![true, false]))),
    ]
}

fn expected_tensors() -> Vec<(TensorSpec, Vec<u8>)> {
    let f32_data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let i32_data: Vec<u8> = [7i32, -8, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    vec![
        (TensorSpec::new("w.f32", &[3, 2], QuantType::F32), f32_data),
        (TensorSpec::new("w.q8", &[32, 1], QuantType::Q8_0), (0..34).collect()),
        (TensorSpec::new("w.i32", &[3], TensorType::I32), i32_data),
    ]
}

#[test]
fn reads_a_gguf_py_file() {
    let bytes = fixture();
    assert_eq!(bytes.len(), 704);
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset, 576);
    assert_eq!(f.metadata, expected_metadata());
    let want = expected_tensors();
    assert_eq!(f.tensors.len(), want.len());
    for ((t, off), (spec, data)) in f.tensors.iter().zip([0u64, 32, 96]).zip(&want) {
        assert_eq!((&t.name, &t.dims, t.ty, t.offset), (&spec.name, &spec.dims, spec.ty, off));
        assert_eq!(f.tensor_data(&bytes, t).unwrap(), &data[..]);
    }
}

#[test]
fn writes_what_gguf_py_writes() {
    let want = expected_tensors();
    let specs: Vec<TensorSpec> = want.iter().map(|(s, _)| s.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), &expected_metadata(), &specs).unwrap();
    for (s, data) in &want {
        w.write_tensor(&s.name, data).unwrap();
    }
    assert_eq!(w.finish().unwrap(), fixture());
}
