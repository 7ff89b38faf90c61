//! GGUF v2/v3 files: a hardened reader over `&[u8]` and a streaming writer.
//!
//! The reader trusts nothing in the file. Every count, length and offset is checked against
//! the bytes that remain before anything is allocated, so a hostile file costs time and
//! memory proportional to its own size and ends in an [`Error`] and never a
//! panic. Wherever ggml's `gguf_init_from_file` checks something (unique keys and names,
//! `general.alignment` a u32 power of two, tensor data back to back in declared order,
//! rows of whole blocks, element counts below 2^63) the reader is exactly as strict. Two
//! limits are wider than ggml's, because ComfyUI-GGUF's diffusion-model files need them and
//! gguf-py reads them: tensor names up to 127 bytes (ggml: 63) and up to [`MAX_DIMS`]
//! dimensions (ggml: 4; Wan and HunyuanVideo store 5-D Conv3d weights). A file within ggml's
//! own limits that the reader accepts loads in llama.cpp. It also refuses what ggml
//! lets through: invalid UTF-8, bools other than 0/1, NUL bytes in keys and names, keys
//! over 65535 bytes, tensor data past the end of the file, alignments above
//! [`MAX_ALIGNMENT`], and tensors with 0 dimensions (which ggml's writer never produces).
//! Tensor types are limited to [`TensorType`]: kquant's [`QuantType`](crate::QuantType)s
//! plus ggml's plain I8/I16/I32/I64/F64.
//!
//! The writer produces what ggml's `gguf_write_to_file` and gguf-py produce: version 3,
//! the metadata and tensor infos in the order given, zero padding to the alignment after
//! the tensor infos and after every tensor.
//!
//! Only little-endian files are supported; big-endian ones are recognised and refused.

mod reader;
mod tensor;
mod value;
mod writer;

pub use reader::{GgufFile, TensorInfo};
pub use tensor::TensorType;
pub use value::{Array, Value, ValueType};
pub use writer::{write_atomic, GgufWriter, TensorSpec};

use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version the writer produces.
pub const VERSION: u32 = 3;
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// The metadata key that overrides the alignment (must be a `u32`).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Largest alignment accepted. ggml sets no limit, but nothing needs more than a huge
/// page and a larger value only inflates padding.
pub const MAX_ALIGNMENT: u32 = 1 << 24;
/// ggml tensors have at most four dimensions, but GGUF itself sets no limit and diffusion
/// checkpoints for ComfyUI-GGUF carry 5-D Conv3d weights; eight leaves room without letting a
/// hostile count matter.
pub const MAX_DIMS: usize = 8;
/// ComfyUI-GGUF's limit (its patched ggml has a 128-byte name buffer including the NUL);
/// stock ggml allows 63.
pub const MAX_TENSOR_NAME_LEN: usize = 127;
/// The spec's limit on key length.
pub const MAX_KEY_LEN: usize = 65535;
/// ggml's limit on any string (1 GiB).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// ggml's limit on the element count of an array.
pub const MAX_ARRAY_LEN: u64 = 1 << 30;

/// `n` rounded up to a multiple of `align` (a power of two); None on overflow.
pub(crate) fn align_up(n: u64, align: u32) -> Option<u64> {
    let mask = u64::from(align) - 1;
    n.checked_add(mask).map(|v| v & !mask)
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("metadata key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(format!("metadata key is {} bytes long, the limit is {MAX_KEY_LEN}", key.len())));
    }
    if key.contains('\0') {
        return Err(Error::invalid(format!("metadata key {key:?} contains a NUL byte")));
    }
    Ok(())
}

pub(crate) fn check_tensor_name(name: &str) -> Result<()> {
    if name.len() > MAX_TENSOR_NAME_LEN {
        return Err(Error::invalid(format!(
            "tensor name {name:?} is {} bytes long, the limit is {MAX_TENSOR_NAME_LEN}",
            name.len()
        )));
    }
    // ggml stores names as C strings: a NUL would silently truncate (and could alias) them.
    if name.contains('\0') {
        return Err(Error::invalid(format!("tensor name {name:?} contains a NUL byte")));
    }
    Ok(())
}

/// The alignment a metadata list asks for, validated.
pub(crate) fn alignment_of<'a>(mut metadata: impl Iterator<Item = (&'a str, &'a Value)>) -> Result<u32> {
    match metadata.find(|(k, _)| *k == ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) => {
            let a = *a;
            if a == 0 || !a.is_power_of_two() {
                Err(Error::invalid(format!("{ALIGNMENT_KEY} is {a}, which is not a power of two")))
            } else if a > MAX_ALIGNMENT {
                Err(Error::invalid(format!("{ALIGNMENT_KEY} is {a}, larger than the limit {MAX_ALIGNMENT}")))
            } else {
                Ok(a)
            }
        }
        Some((_, v)) => {
            Err(Error::invalid(format!("{ALIGNMENT_KEY} must be of type u32 but is {}", v.value_type().name())))
        }
    }
}

/// Checks a tensor's shape against its type and returns its size in bytes.
///
/// Mirrors ggml's rules: 1 to [`MAX_DIMS`] dimensions (ggml: 4), each below 2^63 (ggml stores them as int64,
/// zero is allowed and makes an empty tensor), an element count below 2^63 (for an empty
/// tensor: the product of its non-zero dimensions), and a first dimension that is a
/// whole number of blocks.
pub(crate) fn tensor_nbytes(name: &str, dims: &[u64], ty: TensorType) -> Result<u64> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(Error::invalid(format!("tensor {name:?} has {} dimensions, expected 1 to {MAX_DIMS}", dims.len())));
    }
    let max = i64::MAX as u64;
    if let Some(i) = dims.iter().position(|&d| d > max) {
        return Err(Error::invalid(format!("tensor {name:?} dimension {i} is {}, larger than 2^63 - 1", dims[i])));
    }
    // ggml lets an empty tensor (a zero dimension) skip the element-count limit, but then
    // products of its other dimensions (its row count, its NumPy shape) overflow; so the
    // non-zero dimensions must multiply to less than 2^63 here too.
    let mut nonzero: u64 = 1;
    for &d in dims.iter().filter(|&&d| d != 0) {
        nonzero = match nonzero.checked_mul(d) {
            Some(v) if v < max => v,
            _ => {
                return Err(Error::invalid(format!(
                    "tensor {name:?} with shape {dims:?} has too many elements (2^63 - 1 or more)"
                )))
            }
        };
    }
    let n = if dims.contains(&0) { 0 } else { nonzero };
    let bs = ty.block_size() as u64;
    if dims[0] % bs != 0 {
        return Err(Error::invalid(format!(
            "tensor {name:?} of type {} has rows of {} elements, not a multiple of the block size {bs}",
            ty.name(),
            dims[0]
        )));
    }
    (n / bs)
        .checked_mul(ty.type_size() as u64)
        .filter(|&b| usize::try_from(b).is_ok())
        .ok_or_else(|| Error::invalid(format!("tensor {name:?} with shape {dims:?} is too large in bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuantType;

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
        assert_eq!(align_up(u64::MAX, 1), Some(u64::MAX));
    }

    #[test]
    fn nbytes_rules() {
        let q4k = TensorType::Quant(QuantType::Q4K);
        assert_eq!(tensor_nbytes("t", &[256, 2], q4k).unwrap(), 288);
        assert_eq!(tensor_nbytes("t", &[256, 0], q4k).unwrap(), 0);
        assert!(tensor_nbytes("t", &[255], q4k).is_err());
        assert!(tensor_nbytes("t", &[], q4k).is_err());
        assert_eq!(tensor_nbytes("t", &[256, 1, 1, 1, 2], q4k).unwrap(), 288);
        assert!(tensor_nbytes("t", &[256; 9], q4k).is_err());
        assert!(tensor_nbytes("t", &[1 << 63], TensorType::I8).is_err());
        assert!(tensor_nbytes("t", &[1 << 32, 1 << 31], TensorType::I8).is_err());
        assert!(tensor_nbytes("t", &[1 << 32, 1 << 30], TensorType::F64).is_err());
    }

    #[test]
    fn alignment_rules() {
        let kv = |v: Value| vec![(ALIGNMENT_KEY.to_string(), v)];
        let get = |m: &Vec<(String, Value)>| alignment_of(m.iter().map(|(k, v)| (k.as_str(), v)));
        assert_eq!(get(&vec![]).unwrap(), 32);
        assert_eq!(get(&kv(Value::U32(64))).unwrap(), 64);
        assert_eq!(get(&kv(Value::U32(1))).unwrap(), 1);
        assert!(get(&kv(Value::U32(0))).is_err());
        assert!(get(&kv(Value::U32(48))).is_err());
        assert!(get(&kv(Value::U32(1 << 31))).is_err());
        assert!(get(&kv(Value::U64(32))).is_err());
    }
}
