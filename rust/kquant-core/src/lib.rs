//! kquant-core: the GGML / llama.cpp block quantization formats in pure Rust.
//!
//! `reference` holds the portable scalar kernels that define correctness: their bytes
//! and floats match ggml's reference functions exactly. `ops` is the validated,
//! row-oriented entry point the bindings call.

pub mod arch;
pub mod dispatch;
pub mod error;
pub mod gguf;
pub mod imatrix;
pub mod ops;
pub mod reference;
pub mod types;

pub use error::{Error, Result};
pub use types::{QuantType, QK_K};
