//! Parsing a whole GGUF file held in memory (typically an mmap).

use std::collections::HashSet;

use crate::error::{Error, Result};

use super::value::{Array, Value, ValueType};
use super::{
    align_up, alignment_of, check_key, check_tensor_name, tensor_nbytes, TensorType, MAGIC, MAX_ARRAY_LEN, MAX_DIMS,
    MAX_KEY_LEN, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};

/// Smallest possible encoding of a metadata entry: key length, a one-byte key, a type
/// and a u8 value. Used to refuse absurd counts before looping over them.
const MIN_KV_BYTES: u128 = 8 + 1 + 4 + 1;
/// Smallest possible tensor info: empty name, n_dims, one dimension, type, offset.
const MIN_TENSOR_INFO_BYTES: u128 = 8 + 4 + 8 + 4 + 8;
/// Counts are only bounded by the file size, and our structs are larger than their
/// encodings, so up-front reservations are capped and vectors grow with what is parsed.
const MAX_RESERVE: usize = 1 << 16;

/// Where one tensor lives and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Shape in ggml order: `dims[0]` (`ne[0]`) is the row length, the fastest-varying axis.
    pub dims: Vec<u64>,
    pub ty: TensorType,
    /// Start of the data, relative to [`GgufFile::data_offset`].
    pub offset: u64,
    /// Size of the data in bytes (without padding).
    pub nbytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // Checked at parse time to stay below 2^63.
        self.dims.iter().product()
    }

    /// Number of rows (all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }
}

/// The parsed header of a GGUF file. Tensor data stays in the caller's bytes; see
/// [`GgufFile::tensor_data`].
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    /// 2 or 3 (they share one layout).
    pub version: u32,
    /// Metadata in file order; keys are unique.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order; names are unique and the data of each follows the previous
    /// one, padded to `alignment`.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32 when absent.
    pub alignment: u32,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

impl GgufFile {
    /// Parses and validates everything but the tensor bytes themselves, which are only
    /// checked to lie inside `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        parse(bytes).map_err(|e| Error::invalid(format!("invalid GGUF file: {e}")))
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Absolute file range of a tensor's data.
    pub fn tensor_range(&self, info: &TensorInfo) -> Result<std::ops::Range<u64>> {
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.nbytes));
        match (start, end) {
            (Some(s), Some(e)) => Ok(s..e),
            _ => Err(Error::invalid(format!("tensor {:?} has an offset past the end of any file", info.name))),
        }
    }

    /// The data of `info` inside `bytes`, which must be the bytes this file was parsed
    /// from (an error, not a panic, if they are too short).
    pub fn tensor_data<'a>(&self, bytes: &'a [u8], info: &TensorInfo) -> Result<&'a [u8]> {
        let r = self.tensor_range(info)?;
        let (Ok(s), Ok(e)) = (usize::try_from(r.start), usize::try_from(r.end)) else {
            return Err(Error::invalid(format!("tensor {:?} lies beyond the addressable range", info.name)));
        };
        bytes.get(s..e).ok_or_else(|| {
            Error::invalid(format!(
                "tensor {:?} occupies bytes {s}..{e} but only {} bytes were given; pass the bytes the file was parsed from",
                info.name,
                bytes.len()
            ))
        })
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let rem = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= rem => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(Error::invalid(format!(
                "truncated: {what} needs {n} bytes at offset {}, only {rem} left",
                self.pos
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn bool(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::invalid(format!("{what} at offset {at} is {b}, a bool must be 0 or 1"))),
        }
    }

    fn string(&mut self, what: &str, cap: u64) -> Result<String> {
        let len = self.u64(what)?;
        if len > cap {
            return Err(Error::invalid(format!(
                "{what} at offset {} claims {len} bytes, more than the limit of {cap}",
                self.pos - 8
            )));
        }
        if len > self.remaining() as u64 {
            return Err(Error::invalid(format!(
                "{what} at offset {} claims {len} bytes, only {} left",
                self.pos - 8,
                self.remaining()
            )));
        }
        let at = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|e| {
            Error::invalid(format!(
                "{what} at offset {at} is not valid UTF-8 (bad byte at offset {})",
                at + e.utf8_error().valid_up_to()
            ))
        })
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32(what)?;
        ValueType::from_id(id)
            .ok_or_else(|| Error::invalid(format!("{what} at offset {at} is {id}, not a GGUF value type")))
    }

    fn value(&mut self, ty: ValueType) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8("u8 value")?),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array("i8 value")?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            ValueType::Bool => Value::Bool(self.bool("bool value")?),
            ValueType::String => Value::String(self.string("string value", MAX_STRING_LEN)?),
            ValueType::U64 => Value::U64(self.u64("u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            ValueType::Array => Value::Array(self.array_value()?),
        })
    }

    fn array_value(&mut self) -> Result<Array> {
        let elem = self.value_type("array element type")?;
        if elem == ValueType::Array {
            return Err(Error::invalid("nested arrays are not supported"));
        }
        let n = self.u64("array length")?;
        if n > MAX_ARRAY_LEN {
            return Err(Error::invalid(format!("array of {n} elements exceeds the limit of {MAX_ARRAY_LEN}")));
        }
        // A string costs at least its 8-byte length.
        let min = elem.fixed_size().unwrap_or(8) as u64;
        if n * min > self.remaining() as u64 {
            return Err(Error::invalid(format!(
                "array of {n} {} elements needs at least {} bytes, only {} left",
                elem.name(),
                n * min,
                self.remaining()
            )));
        }
        let n = n as usize;
        fn each<T, const N: usize>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            raw.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact yields N bytes"))).collect()
        }
        let mut raw = |size: u64| self.take(n as u64 * size, "array data");
        Ok(match elem {
            ValueType::U8 => Array::U8(raw(1)?.to_vec()),
            ValueType::I8 => Array::I8(each(raw(1)?, i8::from_le_bytes)),
            ValueType::U16 => Array::U16(each(raw(2)?, u16::from_le_bytes)),
            ValueType::I16 => Array::I16(each(raw(2)?, i16::from_le_bytes)),
            ValueType::U32 => Array::U32(each(raw(4)?, u32::from_le_bytes)),
            ValueType::I32 => Array::I32(each(raw(4)?, i32::from_le_bytes)),
            ValueType::F32 => Array::F32(each(raw(4)?, f32::from_le_bytes)),
            ValueType::U64 => Array::U64(each(raw(8)?, u64::from_le_bytes)),
            ValueType::I64 => Array::I64(each(raw(8)?, i64::from_le_bytes)),
            ValueType::F64 => Array::F64(each(raw(8)?, f64::from_le_bytes)),
            ValueType::Bool => {
                let at = self.pos;
                let bytes = self.take(n as u64, "array data")?;
                if let Some(i) = bytes.iter().position(|&b| b > 1) {
                    return Err(Error::invalid(format!(
                        "bool array element {i} at offset {} is {}, a bool must be 0 or 1",
                        at + i,
                        bytes[i]
                    )));
                }
                Array::Bool(bytes.iter().map(|&b| b == 1).collect())
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    v.push(self.string("string array element", MAX_STRING_LEN)?);
                }
                Array::String(v)
            }
            ValueType::Array => unreachable!("refused above"),
        })
    }
}

fn with_context(e: Error, ctx: impl FnOnce() -> String) -> Error {
    Error::invalid(format!("{}: {e}", ctx()))
}

fn check_version(v: u32) -> Result<()> {
    match v {
        2 | 3 => Ok(()),
        // A big-endian writer stores the version byte-swapped; small versions then read as
        // huge numbers with the low 16 bits clear.
        _ if v != 0 && v & 0xFFFF == 0 => Err(Error::invalid(format!(
            "version field reads {v:#010x}: this is a big-endian GGUF file (version {}), big-endian files are not supported",
            v.swap_bytes()
        ))),
        1 => Err(Error::invalid("GGUF version 1 is not supported (only versions 2 and 3)")),
        _ => Err(Error::invalid(format!("unsupported GGUF version {v} (only versions 2 and 3 are supported)"))),
    }
}

fn parse(bytes: &[u8]) -> Result<GgufFile> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let magic = c.array::<4>("magic")?;
    if magic != MAGIC {
        return Err(Error::invalid(format!("bad magic {:?}, expected \"GGUF\"", String::from_utf8_lossy(&magic))));
    }
    let version = c.u32("version")?;
    check_version(version)?;
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    let need = u128::from(n_kv) * MIN_KV_BYTES + u128::from(n_tensors) * MIN_TENSOR_INFO_BYTES;
    if need > c.remaining() as u128 {
        return Err(Error::invalid(format!(
            "header claims {n_tensors} tensors and {n_kv} metadata entries, which need at least {need} bytes, only {} left",
            c.remaining()
        )));
    }

    // Both counts are now bounded by the file size.
    let mut metadata = Vec::with_capacity((n_kv as usize).min(MAX_RESERVE));
    for i in 0..n_kv {
        let key = c
            .string("metadata key", MAX_KEY_LEN as u64)
            .and_then(|k| check_key(&k).map(|()| k))
            .map_err(|e| with_context(e, || format!("metadata entry {i}")))?;
        let value = c
            .value_type("value type")
            .and_then(|t| c.value(t))
            .map_err(|e| with_context(e, || format!("metadata entry {i} ({key:?})")))?;
        metadata.push((key, value));
    }
    let mut seen = HashSet::with_capacity(metadata.len());
    for (i, (k, _)) in metadata.iter().enumerate() {
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid(format!("duplicate metadata key {k:?} (entry {i})")));
        }
    }
    drop(seen);
    let alignment = alignment_of(metadata.iter().map(|(k, v)| (k.as_str(), v)))?;

    let mut tensors = Vec::with_capacity((n_tensors as usize).min(MAX_RESERVE));
    for i in 0..n_tensors {
        tensors.push(tensor_info(&mut c, i)?);
    }
    let mut seen = HashSet::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if !seen.insert(t.name.as_str()) {
            return Err(Error::invalid(format!("duplicate tensor name {:?} (tensor {i})", t.name)));
        }
    }
    drop(seen);

    // ggml pads to the data section only when there are tensors.
    let end_of_infos = c.pos as u64;
    let file_len = bytes.len() as u64;
    let data_offset = if tensors.is_empty() {
        end_of_infos
    } else {
        match align_up(end_of_infos, alignment) {
            Some(d) if d <= file_len => d,
            _ => {
                return Err(Error::invalid(format!(
                    "truncated: the data section should start at the next multiple of {alignment} after offset \
                     {end_of_infos}, but the file has {file_len} bytes"
                )))
            }
        }
    };

    let mut expected: u64 = 0;
    for (i, t) in tensors.iter().enumerate() {
        if t.offset % u64::from(alignment) != 0 {
            return Err(Error::invalid(format!(
                "tensor {:?} has offset {}, not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        if t.offset < expected {
            return Err(Error::invalid(format!(
                "tensor {:?} at offset {} overlaps the data of tensor {:?}, which ends at {expected} with padding",
                t.name,
                t.offset,
                tensors[i - 1].name
            )));
        }
        if t.offset > expected {
            return Err(Error::invalid(format!(
                "tensor {:?} has offset {}, expected {expected}: ggml requires tensor data to follow the previous \
                 tensor with only alignment padding",
                t.name, t.offset
            )));
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.nbytes));
        match end {
            Some(e) if e <= file_len => {}
            _ => {
                return Err(Error::invalid(format!(
                    "tensor {:?} needs {} bytes at file offset {}, past the end of the {file_len}-byte file",
                    t.name,
                    t.nbytes,
                    data_offset as u128 + t.offset as u128
                )))
            }
        }
        // Inside the file, so neither sum can overflow.
        expected = align_up(t.offset + t.nbytes, alignment).expect("offset inside the file");
    }

    Ok(GgufFile { version, metadata, tensors, alignment, data_offset })
}

fn tensor_info(c: &mut Cursor<'_>, i: u64) -> Result<TensorInfo> {
    let name = c
        .string("tensor name", MAX_TENSOR_NAME_LEN as u64)
        .and_then(|n| check_tensor_name(&n).map(|()| n))
        .map_err(|e| with_context(e, || format!("tensor info {i}")))?;
    let ctx = |e| with_context(e, || format!("tensor info {i} ({name:?})"));
    let n_dims = c.u32("dimension count").map_err(ctx)?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(ctx(Error::invalid(format!("{n_dims} dimensions, expected 1 to {MAX_DIMS}"))));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64("dimension").map_err(ctx)?);
    }
    let ty = c.u32("tensor type").and_then(TensorType::from_id).map_err(ctx)?;
    let nbytes = tensor_nbytes(&name, &dims, ty).map_err(|e| with_context(e, || format!("tensor info {i}")))?;
    let offset = c.u64("tensor offset").map_err(ctx)?;
    Ok(TensorInfo { name, dims, ty, offset, nbytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(check_version(2).is_ok());
        assert!(check_version(3).is_ok());
        let e = check_version(0x0300_0000).unwrap_err().to_string();
        assert!(e.contains("big-endian"), "{e}");
        let e = check_version(0x0200_0000).unwrap_err().to_string();
        assert!(e.contains("big-endian"), "{e}");
        assert!(check_version(1).unwrap_err().to_string().contains("version 1"));
        assert!(check_version(0).is_err());
        assert!(check_version(4).unwrap_err().to_string().contains("unsupported GGUF version 4"));
    }

    #[test]
    fn cursor_never_reads_past_the_end() {
        let buf = [1u8, 0, 0, 0, 0, 0, 0];
        let mut c = Cursor { buf: &buf, pos: 0 };
        assert!(c.u64("x").is_err());
        assert_eq!(c.pos, 0);
        assert_eq!(c.u32("x").unwrap(), 1);
        assert!(c.take(u64::MAX, "x").is_err());
        assert!(c.string("s", MAX_STRING_LEN).is_err());
    }
}
