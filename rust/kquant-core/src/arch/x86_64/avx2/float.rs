//! F16, BF16 and F32 storage. F16 goes through F16C (exact widening, round-to-nearest-
//! even narrowing, as `common::f32_to_f16`); BF16 is integer work. Dots accumulate
//! exact f32 x f32 products in f64, like the reference.

use std::arch::x86_64::*;

use super::util::hsum_pd;
use crate::reference::common::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

#[inline(always)]
unsafe fn load_u16x8(b: &[u8], at: usize) -> __m128i {
    let c: &[u8; 16] = b[at..at + 16].try_into().unwrap();
    _mm_loadu_si128(c.as_ptr().cast())
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_f16(q: &[u8], y: &mut [f32]) {
    let n = y.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, yc) in y[..main].chunks_exact_mut(8).enumerate() {
        let v = _mm256_cvtph_ps(load_u16x8(q, 16 * i));
        _mm256_storeu_ps(yc.as_mut_ptr(), v);
    }
    for i in main..n {
        y[i] = f16_to_f32(u16::from_le_bytes([q[2 * i], q[2 * i + 1]]));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_f16(x: &[f32], q: &mut [u8]) {
    let n = x.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, xc) in x[..main].chunks_exact(8).enumerate() {
        let h = _mm256_cvtps_ph(_mm256_loadu_ps(xc.as_ptr()), _MM_FROUND_TO_NEAREST_INT);
        let out: &mut [u8; 16] = (&mut q[16 * i..16 * i + 16]).try_into().unwrap();
        _mm_storeu_si128(out.as_mut_ptr().cast(), h);
    }
    for i in main..n {
        q[2 * i..2 * i + 2].copy_from_slice(&f32_to_f16(x[i]).to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_bf16(q: &[u8], y: &mut [f32]) {
    let n = y.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, yc) in y[..main].chunks_exact_mut(8).enumerate() {
        let w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(load_u16x8(q, 16 * i)), 16);
        _mm256_storeu_ps(yc.as_mut_ptr(), _mm256_castsi256_ps(w));
    }
    for i in main..n {
        y[i] = bf16_to_f32(u16::from_le_bytes([q[2 * i], q[2 * i + 1]]));
    }
}

/// `common::f32_to_bf16` on 8 lanes: round to nearest even, NaN kept quiet with its sign.
#[inline(always)]
unsafe fn bf16x8(x: __m256) -> __m128i {
    let u = _mm256_castps_si256(x);
    let lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    let rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    let quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
    let mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f80_0000));
    let r = _mm256_blendv_epi8(rounded, quiet, nan);
    // Every lane is below 0x10000, so the unsigned saturating pack is a plain narrowing.
    let p = _mm256_packus_epi32(r, r);
    _mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0b00_00_10_00))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_bf16(x: &[f32], q: &mut [u8]) {
    let n = x.len().min(q.len() / 2);
    let main = n / 8 * 8;
    for (i, xc) in x[..main].chunks_exact(8).enumerate() {
        let h = bf16x8(_mm256_loadu_ps(xc.as_ptr()));
        let out: &mut [u8; 16] = (&mut q[16 * i..16 * i + 16]).try_into().unwrap();
        _mm_storeu_si128(out.as_mut_ptr().cast(), h);
    }
    for i in main..n {
        q[2 * i..2 * i + 2].copy_from_slice(&f32_to_bf16(x[i]).to_le_bytes());
    }
}

/// Sum of `a[i] * b[i]` over 8-lane f32 vectors produced by `load`, in f64.
#[inline(always)]
unsafe fn dot_f64(n: usize, load_a: impl Fn(usize) -> __m256, load_b: impl Fn(usize) -> __m256) -> f64 {
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut i = 0;
    while i + 16 <= n {
        for h in 0..2 {
            let a = load_a(i + 8 * h);
            let b = load_b(i + 8 * h);
            let (al, ah) = (_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
            let (bl, bh) = (_mm256_cvtps_pd(_mm256_castps256_ps128(b)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
            // Products of two f32 are exact in f64, so fusing changes nothing.
            acc[2 * h] = _mm256_fmadd_pd(al, bl, acc[2 * h]);
            acc[2 * h + 1] = _mm256_fmadd_pd(ah, bh, acc[2 * h + 1]);
        }
        i += 16;
    }
    let s = _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
    hsum_pd(s)
}

fn tail(a: &[u8], b: &[u8], width: usize, from: usize, n: usize, f: fn(&[u8]) -> f32) -> f64 {
    (from..n).map(|i| f(&a[width * i..]) as f64 * f(&b[width * i..]) as f64).sum()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len()) / 2;
    let main = n / 16 * 16;
    let s = dot_f64(main, |i| _mm256_cvtph_ps(load_u16x8(a, 2 * i)), |i| _mm256_cvtph_ps(load_u16x8(b, 2 * i)));
    (s + tail(a, b, 2, main, n, |x| f16_to_f32(u16::from_le_bytes([x[0], x[1]])))) as f32
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_bf16(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len()) / 2;
    let main = n / 16 * 16;
    let widen =
        |v: &[u8], i: usize| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_u16x8(v, 2 * i)), 16));
    let s = dot_f64(main, |i| widen(a, i), |i| widen(b, i));
    (s + tail(a, b, 2, main, n, |x| bf16_to_f32(u16::from_le_bytes([x[0], x[1]])))) as f32
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f32(a: &[u8], b: &[u8]) -> f32 {
    let n = a.len().min(b.len()) / 4;
    let main = n / 16 * 16;
    let load = |v: &[u8], i: usize| {
        let c: &[u8; 32] = v[4 * i..4 * i + 32].try_into().unwrap();
        _mm256_loadu_ps(c.as_ptr().cast())
    };
    let s = dot_f64(main, |i| load(a, i), |i| load(b, i));
    (s + tail(a, b, 4, main, n, |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))) as f32
}
