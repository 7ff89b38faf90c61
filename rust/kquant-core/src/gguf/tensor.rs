//! The storage type of a GGUF tensor: one of kquant's [`QuantType`]s or one of ggml's
//! plain integer / f64 types, which kquant can carry through a file but not quantize.

use crate::error::{Error, Result};
use crate::types::QuantType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    Quant(QuantType),
    I8,
    I16,
    I32,
    I64,
    F64,
}

impl TensorType {
    /// ggml's numeric id of the type.
    pub fn id(self) -> u32 {
        match self {
            TensorType::Quant(q) => q.id(),
            TensorType::I8 => 24,
            TensorType::I16 => 25,
            TensorType::I32 => 26,
            TensorType::I64 => 27,
            TensorType::F64 => 28,
        }
    }

    /// The type with ggml id `id`; the error names the id, and ggml's name for it when
    /// ggml knows the type but kquant does not support it.
    pub fn from_id(id: u32) -> Result<Self> {
        let plain = match id {
            24 => Some(TensorType::I8),
            25 => Some(TensorType::I16),
            26 => Some(TensorType::I32),
            27 => Some(TensorType::I64),
            28 => Some(TensorType::F64),
            _ => None,
        };
        if let Some(t) = plain {
            return Ok(t);
        }
        if let Ok(q) = QuantType::from_id(id) {
            return Ok(TensorType::Quant(q));
        }
        Err(Error::invalid(match ggml_name(id) {
            Some((name, true)) => format!("ggml type {id} ({name}) is not supported by kquant"),
            Some((name, false)) => {
                format!("ggml type {id} ({name}) was removed from ggml and is not supported")
            }
            None => format!("unknown ggml type id {id}"),
        }))
    }

    /// ggml's spelling of the type name.
    pub fn name(self) -> &'static str {
        match self {
            TensorType::Quant(q) => q.name(),
            TensorType::I8 => "I8",
            TensorType::I16 => "I16",
            TensorType::I32 => "I32",
            TensorType::I64 => "I64",
            TensorType::F64 => "F64",
        }
    }

    /// Values per block (1 for plain types).
    pub fn block_size(self) -> usize {
        match self {
            TensorType::Quant(q) => q.block_size(),
            _ => 1,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            TensorType::Quant(q) => q.type_size(),
            TensorType::I8 => 1,
            TensorType::I16 => 2,
            TensorType::I32 => 4,
            TensorType::I64 | TensorType::F64 => 8,
        }
    }

    /// The kquant type, or None for ggml's integer and f64 types.
    pub fn quant(self) -> Option<QuantType> {
        match self {
            TensorType::Quant(q) => Some(q),
            _ => None,
        }
    }
}

impl From<QuantType> for TensorType {
    fn from(q: QuantType) -> Self {
        TensorType::Quant(q)
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// ggml's name for a type id kquant does not handle, and whether ggml still has it.
fn ggml_name(id: u32) -> Option<(&'static str, bool)> {
    Some(match id {
        4 => ("Q4_2", false),
        5 => ("Q4_3", false),
        31 => ("Q4_0_4_4", false),
        32 => ("Q4_0_4_8", false),
        33 => ("Q4_0_8_8", false),
        36 => ("IQ4_NL_4_4", false),
        37 => ("IQ4_NL_4_8", false),
        38 => ("IQ4_NL_8_8", false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for q in QuantType::ALL {
            let t = TensorType::from(q);
            assert_eq!(TensorType::from_id(t.id()).unwrap(), t);
            assert_eq!(t.quant(), Some(q));
        }
        for t in [TensorType::I8, TensorType::I16, TensorType::I32, TensorType::I64, TensorType::F64] {
            assert_eq!(TensorType::from_id(t.id()).unwrap(), t);
            assert_eq!(t.block_size(), 1);
            assert_eq!(t.quant(), None);
        }
    }

    #[test]
    fn unknown_ids_are_named() {
        for id in 0..43 {
            assert!(TensorType::from_id(id).is_ok() || ggml_name(id).is_some(), "ggml type {id}");
        }
        let msg = TensorType::from_id(43).unwrap_err().to_string();
        assert!(msg.contains("unknown ggml type id 43"), "{msg}");
        let msg = TensorType::from_id(31).unwrap_err().to_string();
        assert!(msg.contains("removed"), "{msg}");
        let msg = TensorType::from_id(0xdead_beef).unwrap_err().to_string();
        assert!(msg.contains(&0xdead_beef_u32.to_string()), "{msg}");
    }
}
