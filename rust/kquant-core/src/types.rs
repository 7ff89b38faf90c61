//! The GGML tensor types kquant knows, with ggml's numeric ids and block geometry.

use crate::error::{Error, Result};

/// Values per super-block of the k-quants and IQ4_XS.
pub const QK_K: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum QuantType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    IQ2XXS = 16,
    IQ2XS = 17,
    IQ3XXS = 18,
    IQ1S = 19,
    IQ4NL = 20,
    IQ3S = 21,
    IQ2S = 22,
    IQ4XS = 23,
    IQ1M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

impl QuantType {
    /// Every block and float type ggml defines, in id order.
    pub const ALL: [QuantType; 30] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q8_1,
        QuantType::Q2K,
        QuantType::Q3K,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::Q8K,
        QuantType::IQ2XXS,
        QuantType::IQ2XS,
        QuantType::IQ3XXS,
        QuantType::IQ1S,
        QuantType::IQ4NL,
        QuantType::IQ3S,
        QuantType::IQ2S,
        QuantType::IQ4XS,
        QuantType::IQ1M,
        QuantType::BF16,
        QuantType::TQ1_0,
        QuantType::TQ2_0,
        QuantType::MXFP4,
        QuantType::NVFP4,
        QuantType::Q1_0,
        QuantType::Q2_0,
    ];

    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.id() == id)
            .ok_or_else(|| Error::invalid(format!("unknown or unsupported ggml type id {id}")))
    }

    /// ggml's spelling of the type name ("Q4_K", "IQ4_NL", "BF16").
    pub fn name(self) -> &'static str {
        use QuantType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
        }
    }

    /// Parses a type name in any letter case.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL.iter().copied().find(|t| t.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
            Error::invalid(format!("unknown quantization type {name:?}; expected one of {}", names.join(", ")))
        })
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        use QuantType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4NL | MXFP4 => 32,
            NVFP4 | Q2_0 => 64,
            Q1_0 => 128,
            Q2K | Q3K | Q4K | Q5K | Q6K | Q8K | IQ4XS => QK_K,
            IQ2XXS | IQ2XS | IQ2S | IQ3XXS | IQ3S | IQ1S | IQ1M | TQ1_0 | TQ2_0 => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use QuantType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2K => 84,
            Q3K => 110,
            Q4K => 144,
            Q5K => 176,
            Q6K => 210,
            Q8K => 292,
            IQ4NL => 18,
            IQ4XS => 136,
            IQ2XXS => 66,
            IQ2XS => 74,
            IQ3XXS => 98,
            IQ1S => 50,
            IQ3S => 110,
            IQ2S => 82,
            IQ1M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
            NVFP4 => 36,
            Q1_0 => 18,
            Q2_0 => 18,
        }
    }

    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }

    /// The type ggml quantizes activations to before a dot product with this type.
    pub fn vec_dot_type(self) -> QuantType {
        use QuantType::*;
        match self {
            F32 => F32,
            F16 => F16,
            BF16 => BF16,
            Q4_0 | Q5_0 | Q8_0 | IQ4NL | MXFP4 | NVFP4 | Q1_0 | Q2_0 => Q8_0,
            Q4_1 | Q5_1 | Q8_1 => Q8_1,
            Q2K | Q3K | Q4K | Q5K | Q6K | Q8K | IQ4XS => Q8K,
            IQ2XXS | IQ2XS | IQ2S | IQ3XXS | IQ3S | IQ1S | IQ1M | TQ1_0 | TQ2_0 => Q8K,
        }
    }

    /// ggml refuses to quantize these without an importance matrix
    /// (`ggml_quantize_requires_imatrix`): their searches are meaningless unweighted.
    pub fn requires_imatrix(self) -> bool {
        matches!(self, QuantType::IQ2XXS | QuantType::IQ2XS | QuantType::IQ1S)
    }

    /// True for plain storage types (no blocks).
    pub fn is_float(self) -> bool {
        matches!(self, QuantType::F32 | QuantType::F16 | QuantType::BF16)
    }

    /// Bytes for one row of `n` values; an error when `n` is not a whole number of blocks.
    pub fn row_size(self, n: usize) -> Result<usize> {
        let bs = self.block_size();
        if n % bs != 0 {
            return Err(Error::invalid(format!(
                "row length {n} is not a multiple of the {} block size {bs}",
                self.name()
            )));
        }
        (n / bs).checked_mul(self.type_size()).ok_or_else(|| Error::invalid(format!("row length {n} is too large")))
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_any_case() {
        for t in QuantType::ALL {
            assert_eq!(QuantType::from_name(&t.name().to_lowercase()).unwrap(), t);
            assert_eq!(QuantType::from_id(t.id()).unwrap(), t);
        }
        assert!(QuantType::from_name("q4_k_m").is_err());
        assert!(QuantType::from_id(4).is_err());
        assert!(QuantType::from_id(43).is_err());
        let ids: Vec<u32> = QuantType::ALL.iter().map(|t| t.id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ALL is in id order");
    }

    #[test]
    fn row_sizes() {
        assert_eq!(QuantType::Q4K.row_size(4096).unwrap(), 2304);
        assert_eq!(QuantType::Q8K.row_size(256).unwrap(), 292);
        assert!(QuantType::Q4_0.row_size(33).is_err());
        assert!((QuantType::Q4K.bits_per_weight() - 4.5).abs() < 1e-12);
        // sizes from ggml-common.h's static_asserts
        assert!((QuantType::IQ2XXS.bits_per_weight() - 2.0625).abs() < 1e-12);
        assert!((QuantType::IQ1S.bits_per_weight() - 1.5625).abs() < 1e-12);
        assert!((QuantType::MXFP4.bits_per_weight() - 4.25).abs() < 1e-12);
        assert!((QuantType::Q1_0.bits_per_weight() - 1.125).abs() < 1e-12);
    }
}
