//! x86-64 kernels. AVX2 (with FMA and F16C, as on every AVX2 CPU since Haswell) is the
//! one level we target: it is where ggml's own x86 kernels draw the line too.

pub(crate) mod avx2;
