//! aarch64 kernels. Advanced SIMD is part of the base architecture; the int8 dots
//! additionally have an SDOT flavour for CPUs with FEAT_DotProd.

pub(crate) mod neon;
