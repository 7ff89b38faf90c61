//! What each fuzz target asserts. A parser may refuse any input; what it may not do is
//! panic, overflow, allocate far beyond the input's size, or accept something it cannot
//! then serve: every accepted file must hand out every tensor's bytes, survive a rewrite
//! by kquant's own writer unchanged, and (for imatrix files) hold consistently sized
//! entries.

use std::collections::HashSet;
use std::hint::black_box;

use kquant_core::gguf::{Array, GgufFile, GgufWriter, TensorSpec, Value, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME_LEN};
use kquant_core::imatrix::{Format, Imatrix};
use kquant_core::ops::{self, Rows};

/// Reads every element, so a value that only pretends to hold its data is found.
fn touch_value(v: &Value) -> u64 {
    let _ = (v.as_str(), v.as_bool(), v.as_u64(), v.as_i64(), v.as_f64());
    let h = match v {
        Value::String(s) => s.bytes().map(u64::from).sum(),
        Value::Array(a) => {
            black_box((a.len(), a.is_empty()));
            let _ = a.elem_type().name();
            match a {
                Array::U8(x) => x.iter().map(|&e| e as u64).sum(),
                Array::I8(x) => x.iter().map(|&e| e as u64).fold(0, u64::wrapping_add),
                Array::U16(x) => x.iter().map(|&e| e as u64).sum(),
                Array::I16(x) => x.iter().map(|&e| e as u64).fold(0, u64::wrapping_add),
                Array::U32(x) => x.iter().map(|&e| e as u64).fold(0, u64::wrapping_add),
                Array::I32(x) => x.iter().map(|&e| e as u64).fold(0, u64::wrapping_add),
                Array::F32(x) => x.iter().map(|&e| e.to_bits() as u64).fold(0, u64::wrapping_add),
                Array::Bool(x) => x.iter().filter(|&&e| e).count() as u64,
                Array::String(x) => x.iter().map(|s| s.len() as u64).sum(),
                Array::U64(x) => x.iter().copied().fold(0, u64::wrapping_add),
                Array::I64(x) => x.iter().map(|&e| e as u64).fold(0, u64::wrapping_add),
                Array::F64(x) => x.iter().map(|&e| e.to_bits()).fold(0, u64::wrapping_add),
            }
        }
        _ => 0,
    };
    let _ = v.value_type().name();
    black_box(h)
}

/// Every invariant the reader documents, on a file it accepted.
pub fn check_gguf(file: &GgufFile, data: &[u8]) {
    assert!(file.version == 2 || file.version == 3, "version {}", file.version);
    assert!(file.alignment.is_power_of_two() && file.alignment <= MAX_ALIGNMENT, "alignment {}", file.alignment);
    assert!(file.data_offset <= data.len() as u64, "data offset {} past the end", file.data_offset);
    if !file.tensors.is_empty() {
        assert_eq!(file.data_offset % u64::from(file.alignment), 0, "unaligned data section");
    }

    let mut keys = HashSet::new();
    for (k, v) in &file.metadata {
        assert!(!k.is_empty() && !k.contains('\0'), "bad key {k:?}");
        assert!(keys.insert(k.as_str()), "duplicate key {k:?}");
        assert!(std::ptr::eq(file.get(k).expect("get finds every key"), v));
        touch_value(v);
    }

    let mut names = HashSet::new();
    let mut end = 0u64;
    for t in &file.tensors {
        assert!(names.insert(t.name.as_str()), "duplicate tensor {:?}", t.name);
        assert!(t.name.len() <= MAX_TENSOR_NAME_LEN && !t.name.contains('\0'), "bad name {:?}", t.name);
        assert!(!t.dims.is_empty() && t.dims.len() <= MAX_DIMS, "dims {:?}", t.dims);
        assert!(std::ptr::eq(file.tensor(&t.name).expect("tensor finds every name"), t));
        assert!(t.offset >= end, "tensor {:?} overlaps the previous one", t.name);
        // The true counts (a zero dimension makes them zero whatever the others are); an
        // accepted tensor must have both representable, or n_rows() cannot be right.
        let product = |ds: &[u64]| {
            if ds.contains(&0) {
                Some(0)
            } else {
                ds.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
            }
        };
        let (Some(elements), Some(rows)) = (product(&t.dims), product(&t.dims[1..])) else {
            panic!("tensor {:?} with dims {:?} was accepted but its row count overflows u64", t.name, t.dims)
        };
        assert_eq!(t.n_elements(), elements, "n_elements of {:?} {:?}", t.name, t.dims);
        assert_eq!(t.n_rows(), rows, "n_rows of {:?} {:?}", t.name, t.dims);
        let (bs, ts) = (t.ty.block_size() as u64, t.ty.type_size() as u64);
        assert_eq!(t.dims[0] % bs, 0, "partial block in {:?}", t.name);
        assert_eq!(t.nbytes, elements / bs * ts, "nbytes of {:?}", t.name);

        let range = file.tensor_range(t).expect("accepted tensor has a range");
        let bytes = file.tensor_data(data, t).expect("accepted tensor lies inside the file");
        assert_eq!(bytes.len() as u64, t.nbytes);
        assert_eq!(range.end - range.start, t.nbytes);
        assert!(range.end <= data.len() as u64);
        black_box(bytes.iter().fold(0u8, |a, &b| a ^ b));
        end = t.offset + t.nbytes;

        // Dequantize what the kernels cover: a hostile file's scales (NaN, Inf, subnormal
        // f16s, any bit pattern in the packed nibbles) must not panic the kernels either.
        // (An empty tensor may declare rows too long for the kernels' geometry; they
        // refuse it with an error, and there is nothing to dequantize anyway.)
        if let Some(q) = t.ty.quant().filter(|&q| elements > 0 && ops::is_implemented(q)) {
            let geometry = Rows::new(q, t.dims[0] as usize, rows as usize).expect("accepted tensor has valid rows");
            let mut out = vec![0f32; elements as usize];
            ops::dequantize(geometry, bytes, &mut out).expect("accepted tensor dequantizes");
            black_box(out.iter().map(|v| v.to_bits()).fold(0u32, u32::wrapping_add));
        }
    }
}

/// Writing an accepted file with kquant's writer and reading it back must give the same
/// file (as version 3): the writer must not refuse what the reader accepts, nor the other
/// way round.
pub fn roundtrip(file: &GgufFile, data: &[u8]) {
    let specs: Vec<TensorSpec> = file.tensors.iter().map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ty)).collect();
    let mut w = GgufWriter::new(Vec::new(), &file.metadata, &specs).expect("writer accepts what the reader accepted");
    assert_eq!(w.tensors(), &file.tensors[..], "writer lays the tensors out differently");
    assert_eq!(w.alignment(), file.alignment);
    if !file.tensors.is_empty() {
        assert_eq!(w.data_offset(), file.data_offset, "writer puts the data section elsewhere");
    }
    for t in &file.tensors {
        w.write_tensor(&t.name, file.tensor_data(data, t).unwrap()).expect("writer takes the tensor's bytes");
    }
    let out = w.finish().expect("writer finishes");
    let again = GgufFile::parse(&out).unwrap_or_else(|e| panic!("reader refuses what the writer wrote: {e}"));
    assert_eq!(again.version, 3);
    assert_eq!(again.tensors, file.tensors);
    assert_eq!(again.alignment, file.alignment);
    assert_eq!(debug(&again.metadata), debug(&file.metadata));
    for (a, b) in again.tensors.iter().zip(&file.tensors) {
        assert_eq!(again.tensor_data(&out, a).unwrap(), file.tensor_data(data, b).unwrap());
    }
}

/// The `gguf` target.
pub fn gguf(data: &[u8]) {
    if let Ok(file) = GgufFile::parse(data) {
        check_gguf(&file, data);
        roundtrip(&file, data);
    }
}

fn check_imatrix(m: &Imatrix, format: Format) {
    assert_eq!(m.format, format);
    assert!(!m.entries.is_empty(), "accepted an imatrix without entries");
    let mut names = HashSet::new();
    for e in &m.entries {
        assert!(!e.name.is_empty() && !e.name.contains('\0'), "bad entry name {:?}", e.name);
        assert!(names.insert(e.name.as_str()), "duplicate entry {:?}", e.name);
        assert!(std::ptr::eq(m.get(&e.name).expect("get finds every entry"), e));
        assert!(e.n_per_row > 0 && e.n_mat > 0, "{:?}: {} x {}", e.name, e.n_per_row, e.n_mat);
        assert_eq!(Some(e.values.len()), e.n_per_row.checked_mul(e.n_mat), "{:?} values", e.name);
        assert_eq!(e.counts.len(), e.n_mat, "{:?} counts", e.name);
        if let Some(a) = &e.activations {
            assert_eq!(a.len(), e.values.len(), "{:?} activations", e.name);
            black_box(a.iter().map(|v| v.to_bits()).fold(0u32, u32::wrapping_add));
        }
        black_box(e.values.iter().map(|v| v.to_bits()).fold(0u32, u32::wrapping_add));
        black_box(e.counts.iter().map(|v| v.to_bits()).fold(0u64, u64::wrapping_add));
        if format == Format::Legacy {
            assert_eq!(e.n_mat, 1);
            assert!(e.activations.is_none());
        }
    }
    match format {
        Format::Legacy => assert!(m.chunk_size.is_none() && m.datasets.len() <= 1),
        Format::Gguf => assert!(m.chunk_size.is_some()),
    }
    black_box(m.datasets.iter().map(String::len).sum::<usize>());
}

/// Debug output, because NaN values never compare equal to themselves.
fn debug<T: std::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

/// The `imatrix_legacy` target; also checks that the format sniffing of
/// [`Imatrix::parse`] routes non-GGUF bytes to the legacy parser.
pub fn imatrix_legacy(data: &[u8]) {
    let r = Imatrix::parse_legacy(data);
    if let Ok(m) = &r {
        check_imatrix(m, Format::Legacy);
    }
    if !data.starts_with(b"GGUF") {
        assert_eq!(debug(&Imatrix::parse(data)), debug(&r), "parse and parse_legacy disagree");
    }
}

/// The `imatrix_gguf` target.
pub fn imatrix_gguf(data: &[u8]) {
    let r = Imatrix::parse_gguf(data);
    if let Ok(m) = &r {
        check_imatrix(m, Format::Gguf);
        let file = GgufFile::parse(data).expect("an accepted imatrix is an accepted GGUF file");
        check_gguf(&file, data);
    }
    if data.starts_with(b"GGUF") {
        let both = Imatrix::parse(data);
        assert_eq!(both.is_ok(), r.is_ok(), "parse and parse_gguf disagree");
    }
}
