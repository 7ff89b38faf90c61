//! Importance matrices as llama.cpp's `llama-imatrix` writes them, read the way
//! `llama-quantize` reads them.
//!
//! Two formats exist:
//!
//! - the legacy `.dat` file: `i32` entry count, then per entry an `i32` name length, the
//!   name, `i32` ncall, `i32` nval and nval `f32`s, optionally followed by an `i32` chunk
//!   count and an `i32`-length-prefixed dataset name. The stored values are averages
//!   multiplied by ncall; the importance is `value / ncall` (kept as is when ncall is 0).
//! - the GGUF file: for each weight `<name>.in_sum2` (F32, `[n, n_mat]` in ggml order) and
//!   `<name>.counts` (F32, `n_mat` values), optionally `<name>.in_sum`; metadata
//!   `imatrix.datasets` (string array), `imatrix.chunk_count` and `imatrix.chunk_size`
//!   (u32). Row j of the importance is `in_sum2[j] / counts[j]`, or all ones when that
//!   count is not positive (an expert the calibration data never reached).
//!
//! Both parsers take the whole file as bytes and trust nothing in it: every count and
//! length is checked against the bytes left before anything is allocated, so a hostile
//! file ends in an [`Error`], never a panic or a huge allocation. They are stricter than
//! llama.cpp where llama.cpp would read garbage or silently drop data: negative counts,
//! duplicate or empty names, NUL bytes or invalid UTF-8 in names, partial trailers and
//! trailing bytes, in_sum2/counts pairs with mismatched sizes or non-F32 types.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::gguf::{Array, GgufFile, TensorInfo, TensorType, Value, MAGIC};
use crate::QuantType;

/// Metadata keys of the GGUF format.
pub const KEY_DATASETS: &str = "imatrix.datasets";
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

const SUFFIX_SUM2: &str = ".in_sum2";
const SUFFIX_COUNTS: &str = ".counts";
const SUFFIX_SUM: &str = ".in_sum";

/// Which of llama.cpp's two layouts a file used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The binary `.dat` layout.
    Legacy,
    /// The GGUF layout.
    Gguf,
}

/// The importance of one weight tensor's columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The weight's tensor name, e.g. `blk.0.ffn_down.weight`.
    pub name: String,
    /// `n_mat` rows of `n_per_row` values, what llama-quantize hands the quantizer.
    pub values: Vec<f32>,
    /// Values per row: the weight's row length (for the legacy format, all values, since
    /// that format does not record how they split over experts).
    pub n_per_row: usize,
    /// Number of matrices (experts); 1 for dense weights and for every legacy entry.
    pub n_mat: usize,
    /// How many activations each row was accumulated over: the `counts` tensor, or the
    /// legacy ncall as the single element.
    pub counts: Vec<f64>,
    /// Mean activation per column (`in_sum / count`, 0 where the count is not positive),
    /// when the GGUF file has `<name>.in_sum`.
    pub activations: Option<Vec<f32>>,
}

/// A parsed importance-matrix file.
#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    pub format: Format,
    /// Entries in file order (for GGUF, the order of the `.in_sum2` tensors).
    pub entries: Vec<Entry>,
    /// Dataset names: `imatrix.datasets`, or the legacy trailer's single name.
    pub datasets: Vec<String>,
    /// Chunks the matrix was computed over (`imatrix.chunk_count`, or the legacy trailer's
    /// count; 0 when a legacy file has no trailer).
    pub chunk_count: u32,
    /// Tokens per chunk; only the GGUF format records it.
    pub chunk_size: Option<u32>,
}

impl Imatrix {
    /// Parses either format: GGUF when `bytes` starts with the GGUF magic, legacy
    /// otherwise (a legacy file would need over a billion entries to start that way).
    pub fn parse(bytes: &[u8]) -> Result<Imatrix> {
        if bytes.starts_with(&MAGIC) {
            Self::parse_gguf(bytes)
        } else {
            Self::parse_legacy(bytes)
        }
    }

    /// Parses the legacy `.dat` format.
    pub fn parse_legacy(bytes: &[u8]) -> Result<Imatrix> {
        legacy(bytes).map_err(|e| Error::invalid(format!("invalid imatrix file (legacy format): {e}")))
    }

    /// Parses the GGUF format.
    pub fn parse_gguf(bytes: &[u8]) -> Result<Imatrix> {
        let file = GgufFile::parse(bytes)?;
        gguf(&file, bytes).map_err(|e| Error::invalid(format!("invalid imatrix file (GGUF format): {e}")))
    }

    /// The entry for weight `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::invalid(format!(
                "truncated: {what} needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An `i32` that must be at least `min`; the error quotes the offset it was read at.
    fn count(&mut self, what: &str, min: i32) -> Result<usize> {
        let at = self.pos;
        let v = self.i32(what)?;
        if v < min {
            return Err(Error::invalid(format!("{what} at offset {at} is {v}, expected at least {min}")));
        }
        // Non-negative i32 always fits a usize on the platforms Rust supports for this crate.
        Ok(v as usize)
    }

    /// A length-prefixed byte string whose length is checked against what is left.
    fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.count(&format!("{what} length"), 0)?;
        if len > self.remaining() {
            return Err(Error::invalid(format!(
                "truncated: {what} at offset {at} claims {len} bytes, only {} left",
                self.remaining()
            )));
        }
        self.take(len, what)
    }
}

/// Smallest legacy entry: name length, ncall, nval and one value. (Empty names are
/// refused later, with a clearer message than a size bound would give.)
const MIN_LEGACY_ENTRY: u64 = 4 + 4 + 4 + 4;
const MAX_RESERVE: usize = 1 << 12;

fn entry_name(raw: &[u8], at: usize) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::invalid(format!("entry name at offset {at} is empty")));
    }
    // llama.cpp builds the name with a C string constructor, so a NUL would cut it short
    // and could alias another entry.
    if let Some(i) = raw.iter().position(|&b| b == 0) {
        return Err(Error::invalid(format!("entry name at offset {at} contains a NUL byte at offset {}", at + i)));
    }
    String::from_utf8(raw.to_vec()).map_err(|e| {
        Error::invalid(format!(
            "entry name at offset {at} is not valid UTF-8 (bad byte at offset {})",
            at + e.utf8_error().valid_up_to()
        ))
    })
}

fn legacy(bytes: &[u8]) -> Result<Imatrix> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let n_entries = r.count("entry count", 1)?;
    let need = n_entries as u64 * MIN_LEGACY_ENTRY;
    if need > r.remaining() as u64 {
        return Err(Error::invalid(format!(
            "entry count {n_entries} needs at least {need} bytes, only {} left",
            r.remaining()
        )));
    }
    // An entry struct is larger than its smallest encoding, so the reservation is capped.
    let mut entries: Vec<Entry> = Vec::with_capacity(n_entries.min(MAX_RESERVE));
    let mut seen = HashSet::with_capacity(n_entries.min(MAX_RESERVE));
    for i in 0..n_entries {
        let ctx = |e: Error| Error::invalid(format!("entry {i}: {e}"));
        let at = r.pos + 4;
        let name = r.bytes("entry name").and_then(|raw| entry_name(raw, at)).map_err(ctx)?;
        let ctx = |e: Error| Error::invalid(format!("entry {i} ({name:?}): {e}"));
        let ncall = r.count("ncall", 0).map_err(ctx)?;
        let at = r.pos;
        let nval = r.count("value count", 1).map_err(ctx)?;
        // nval < 2^31, so the byte count cannot overflow a u64 (nor a usize once it is
        // known to be within the buffer).
        let nbytes = nval as u64 * 4;
        if nbytes > r.remaining() as u64 {
            return Err(ctx(Error::invalid(format!(
                "truncated: {nval} values (counted at offset {at}) need {nbytes} bytes, only {} left",
                r.remaining()
            ))));
        }
        let raw = r.take(nbytes as usize, "values").map_err(ctx)?;
        // llama.cpp divides the float by the int, which C++ converts to float first.
        let div = ncall as f32;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .map(|v| if ncall > 0 { v / div } else { v })
            .collect();
        if !seen.insert(name.clone()) {
            return Err(Error::invalid(format!("entry {i}: duplicate entry name {name:?}")));
        }
        entries.push(Entry { name, values, n_per_row: nval, n_mat: 1, counts: vec![ncall as f64], activations: None });
    }

    // Files from before llama.cpp recorded the dataset simply end here.
    let (mut chunk_count, mut datasets) = (0u32, Vec::new());
    if r.remaining() > 0 {
        let ctx = |e: Error| Error::invalid(format!("trailer after the {n_entries} entries: {e}"));
        chunk_count = r.count("chunk count", 0).map_err(ctx)? as u32;
        let dataset = r.bytes("dataset name").map_err(ctx)?;
        // The dataset is a path as the OS spelled it, informative only: a stray byte should
        // not make the whole matrix unusable.
        datasets.push(String::from_utf8_lossy(dataset).into_owned());
        if r.remaining() > 0 {
            return Err(Error::invalid(format!(
                "{} unexpected bytes after the dataset name at offset {}",
                r.remaining(),
                r.pos
            )));
        }
    }
    Ok(Imatrix { format: Format::Legacy, entries, datasets, chunk_count, chunk_size: None })
}

fn require_u32(file: &GgufFile, key: &str) -> Result<u32> {
    match file.get(key) {
        Some(Value::U32(v)) => Ok(*v),
        Some(v) => {
            Err(Error::invalid(format!("metadata {key:?} must be of type u32 but is {}", v.value_type().name())))
        }
        None => Err(Error::invalid(format!("metadata {key:?} is missing (is this an imatrix file?)"))),
    }
}

fn f32_tensor<'a>(file: &GgufFile, bytes: &'a [u8], t: &TensorInfo) -> Result<impl Iterator<Item = f32> + 'a> {
    if t.ty != TensorType::Quant(QuantType::F32) {
        return Err(Error::invalid(format!("tensor {:?} has type {}, expected F32", t.name, t.ty)));
    }
    let data = file.tensor_data(bytes, t)?;
    Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
}

fn n_elements_usize(t: &TensorInfo) -> Result<usize> {
    usize::try_from(t.n_elements())
        .map_err(|_| Error::invalid(format!("tensor {:?} has too many elements for this platform", t.name)))
}

#[derive(Default)]
struct Parts<'f> {
    sum2: Option<&'f TensorInfo>,
    counts: Option<&'f TensorInfo>,
    sum: Option<&'f TensorInfo>,
}

fn gguf(file: &GgufFile, bytes: &[u8]) -> Result<Imatrix> {
    let datasets = match file.get(KEY_DATASETS) {
        Some(Value::Array(Array::String(v))) => v.clone(),
        Some(Value::Array(a)) => {
            return Err(Error::invalid(format!(
                "metadata {KEY_DATASETS:?} must be an array of strings, not of {}",
                a.elem_type().name()
            )))
        }
        Some(v) => {
            return Err(Error::invalid(format!(
                "metadata {KEY_DATASETS:?} must be an array of strings, not {}",
                v.value_type().name()
            )))
        }
        None => return Err(Error::invalid(format!("metadata {KEY_DATASETS:?} is missing (is this an imatrix file?)"))),
    };
    let chunk_count = require_u32(file, KEY_CHUNK_COUNT)?;
    let chunk_size = require_u32(file, KEY_CHUNK_SIZE)?;
    if file.tensors.is_empty() {
        return Err(Error::invalid("the file holds no tensors"));
    }

    // Group the tensors by weight name, keeping the order in which weights first appear.
    let mut order: Vec<&str> = Vec::new();
    let mut parts: HashMap<&str, Parts<'_>> = HashMap::new();
    for t in &file.tensors {
        let (base, kind) = if let Some(b) = t.name.strip_suffix(SUFFIX_SUM2) {
            (b, 0)
        } else if let Some(b) = t.name.strip_suffix(SUFFIX_COUNTS) {
            (b, 1)
        } else if let Some(b) = t.name.strip_suffix(SUFFIX_SUM) {
            (b, 2)
        } else {
            // llama.cpp ignores other tensors too.
            continue;
        };
        let p = parts.entry(base).or_insert_with(|| {
            order.push(base);
            Parts::default()
        });
        // Tensor names are unique, so each slot is filled at most once.
        match kind {
            0 => p.sum2 = Some(t),
            1 => p.counts = Some(t),
            _ => p.sum = Some(t),
        }
    }
    if order.is_empty() {
        return Err(Error::invalid(format!(
            "none of the {} tensors is named <weight>{SUFFIX_SUM2} or <weight>{SUFFIX_COUNTS}",
            file.tensors.len()
        )));
    }

    let mut entries = Vec::with_capacity(order.len());
    for name in order {
        let p = &parts[name];
        let (Some(sum2), Some(counts)) = (p.sum2, p.counts) else {
            let missing = if p.sum2.is_none() { SUFFIX_SUM2 } else { SUFFIX_COUNTS };
            return Err(Error::invalid(format!("tensor {:?} is missing", format!("{name}{missing}"))));
        };
        entries.push(gguf_entry(file, bytes, name, sum2, counts, p.sum)?);
    }
    Ok(Imatrix { format: Format::Gguf, entries, datasets, chunk_count, chunk_size: Some(chunk_size) })
}

fn gguf_entry(
    file: &GgufFile,
    bytes: &[u8],
    name: &str,
    sum2: &TensorInfo,
    counts: &TensorInfo,
    sum: Option<&TensorInfo>,
) -> Result<Entry> {
    let total = n_elements_usize(sum2)?;
    if total == 0 {
        return Err(Error::invalid(format!("tensor {:?} is empty", sum2.name)));
    }
    // The reader guarantees 1 to 4 dimensions whose product is the element count.
    let n_per_row = sum2.dims[0] as usize;
    let n_mat = total / n_per_row;
    if n_elements_usize(counts)? != n_mat {
        return Err(Error::invalid(format!(
            "tensor {:?} holds {} counts but {:?} (shape {:?}) has {n_mat} rows",
            counts.name,
            counts.n_elements(),
            sum2.name,
            sum2.dims
        )));
    }
    let counts: Vec<f64> = f32_tensor(file, bytes, counts)?.map(f64::from).collect();
    let mut values: Vec<f32> = f32_tensor(file, bytes, sum2)?.collect();
    for (row, &c) in values.chunks_exact_mut(n_per_row).zip(&counts) {
        let c = c as f32;
        // Tested this way round so that a NaN count also means "no data", as llama.cpp's
        // `count > 0.0f` does.
        if c > 0.0 {
            row.iter_mut().for_each(|v| *v /= c);
        } else {
            row.fill(1.0);
        }
    }
    let activations = match sum {
        None => None,
        Some(t) => {
            if t.n_elements() != sum2.n_elements() {
                return Err(Error::invalid(format!(
                    "tensor {:?} has {} elements but {:?} has {}",
                    t.name,
                    t.n_elements(),
                    sum2.name,
                    sum2.n_elements()
                )));
            }
            let mut a: Vec<f32> = f32_tensor(file, bytes, t)?.collect();
            for (row, &c) in a.chunks_exact_mut(n_per_row).zip(&counts) {
                let c = c as f32;
                if c > 0.0 {
                    row.iter_mut().for_each(|v| *v /= c);
                } else {
                    row.fill(0.0);
                }
            }
            Some(a)
        }
    };
    Ok(Entry { name: name.to_string(), values, n_per_row, n_mat, counts, activations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_bytes(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Some((chunks, ds)) = trailer {
            b.extend_from_slice(&chunks.to_le_bytes());
            b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
            b.extend_from_slice(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_divides_by_ncall() {
        let b = legacy_bytes(&[("a", 4, &[8.0, 2.0]), ("b", 0, &[3.0])], Some((7, "wiki.txt")));
        let m = Imatrix::parse(&b).unwrap();
        assert_eq!(m.format, Format::Legacy);
        assert_eq!(m.entries[0].values, vec![2.0, 0.5]);
        assert_eq!(m.entries[1].values, vec![3.0]);
        assert_eq!(m.entries[0].counts, vec![4.0]);
        assert_eq!(m.chunk_count, 7);
        assert_eq!(m.datasets, vec!["wiki.txt".to_string()]);
        assert_eq!(m.chunk_size, None);
    }

    #[test]
    fn legacy_rejects_what_llama_cpp_would_misread() {
        let bad = [
            legacy_bytes(&[("", 1, &[1.0])], None),
            legacy_bytes(&[("a\0b", 1, &[1.0])], None),
            legacy_bytes(&[("a", 1, &[1.0]), ("a", 1, &[1.0])], None),
            legacy_bytes(&[("a", -1, &[1.0])], None),
            legacy_bytes(&[("a", 1, &[])], None),
            legacy_bytes(&[("a", 1, &[1.0])], Some((-1, "x"))),
        ];
        for b in bad {
            assert!(Imatrix::parse(&b).is_err());
        }
        let mut b = legacy_bytes(&[("a", 1, &[1.0])], Some((1, "x")));
        b.push(0);
        let e = Imatrix::parse(&b).unwrap_err().to_string();
        assert!(e.contains("1 unexpected bytes"), "{e}");
    }

    #[test]
    fn gguf_suffixes_do_not_collide() {
        assert!("w.in_sum2".strip_suffix(SUFFIX_SUM).is_none());
        assert_eq!("w.in_sum".strip_suffix(SUFFIX_SUM), Some("w"));
    }
}
