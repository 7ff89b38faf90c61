//! The 256-value formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS: dequantize and their
//! dots with Q8_K.
//!
//! Dots keep every weight unsigned and small (offsets are subtracted as separate
//! `maddubs` of the offset with the activations), or put the sign on the weight side
//! (IQ4_XS), so the int8 products are exact for any Q8_K bytes, -128 included.
//! Dequantization rounds exactly as the reference: per-group scale products first,
//! then `scale * q` and `- min` as separate roundings (never fused).

use std::arch::x86_64::*;

use super::legacy::IQ4NL_LEVELS;
use super::util::*;
use crate::arch::{block, floats_mut, iq4xs_scales, k4_scales_mins, q3k_scales};
use crate::reference::q8_k::{BLOCK_BYTES as Q8K, BSUMS, QS};
use crate::types::QK_K;

const Q2K: usize = 84;
const Q3K: usize = 110;
const Q4K: usize = 144;
const Q5K: usize = 176;
const Q6K: usize = 210;
const IQ4XS: usize = 136;

/// Two i16 scales, `lo` for the first 16 values of a 32-value group, `hi` for the rest.
#[inline(always)]
unsafe fn scale_pair(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

/// 16 bytes as 16 floats `d * q - m`, no FMA.
#[inline(always)]
unsafe fn scale_sub_i8x16<const N: usize>(q: __m128i, d: __m256, m: __m256, y: &mut [f32; N], at: usize) {
    let f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    let f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    storeps(y, at, _mm256_sub_ps(_mm256_mul_ps(d, f0), m));
    storeps(y, at + 8, _mm256_sub_ps(_mm256_mul_ps(d, f1), m));
}

/// `sum_j bsums[j] * mins[j]` for 16 i16 bsums and 16 unsigned byte multipliers.
#[inline(always)]
unsafe fn bsums_dot(yb: &[u8; Q8K], mins: __m128i) -> i32 {
    let bs = load256(yb, BSUMS);
    hsum_epi32(_mm256_madd_epi16(bs, _mm256_cvtepu8_epi16(mins)))
}

// ---------------------------------------------------------------- Q4_K / Q5_K

#[inline(always)]
unsafe fn scales_12(b: &[u8], at: usize) -> [u8; 12] {
    b[at..at + 12].try_into().unwrap()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_k(q: &[u8], y: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    for (xb, yb) in q.chunks_exact(Q4K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q4K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        let min = f16_at(xb, 2);
        let (sc, m) = k4_scales_mins(&scales_12(xb, 4));
        for j in 0..4 {
            let bits = load256(xb, 16 + 32 * j);
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            let (d1, m1) = (d * sc[2 * j] as f32, min * m[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, min * m[2 * j + 1] as f32);
            scale_sub_i8x32(lo, _mm256_set1_ps(d1), _mm256_set1_ps(m1), yb, 64 * j);
            scale_sub_i8x32(hi, _mm256_set1_ps(d2), _mm256_set1_ps(m2), yb, 64 * j + 32);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q5_k(q: &[u8], y: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    for (xb, yb) in q.chunks_exact(Q5K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q5K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        let min = f16_at(xb, 2);
        let (sc, m) = k4_scales_mins(&scales_12(xb, 4));
        let qh = load256(xb, 16);
        for j in 0..4 {
            let bits = load256(xb, 48 + 32 * j);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), one), 4);
            let h1 =
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32 + 1)), one), 4);
            let lo = _mm256_or_si256(_mm256_and_si256(bits, m4), h0);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1);
            let (d1, m1) = (d * sc[2 * j] as f32, min * m[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, min * m[2 * j + 1] as f32);
            scale_sub_i8x32(lo, _mm256_set1_ps(d1), _mm256_set1_ps(m1), yb, 64 * j);
            scale_sub_i8x32(hi, _mm256_set1_ps(d2), _mm256_set1_ps(m2), yb, 64 * j + 32);
        }
    }
}

/// Shared Q4_K / Q5_K dot: `values(xb, j)` gives the two 32-byte halves (low, high
/// nibble groups) of the j-th 64-value group, unsigned.
#[inline(always)]
unsafe fn dot_k4<const B: usize>(q: &[u8], yq: &[u8], values: impl Fn(&[u8; B], usize) -> (__m256i, __m256i)) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = 0.0f32;
    for (xb, yb) in q.chunks_exact(B).zip(yq.chunks_exact(Q8K)) {
        let xb = block::<B>(xb);
        let yb = block::<Q8K>(yb);
        let yd = f32_at(yb, 0);
        let d = f16_at(xb, 0) * yd;
        let dmin = f16_at(xb, 2) * yd;
        let (sc, m) = k4_scales_mins(&scales_12(xb, 4));
        // Each min covers 32 values, i.e. two bsums.
        let mins = _mm_set_epi8(
            m[7] as i8, m[7] as i8, m[6] as i8, m[6] as i8, m[5] as i8, m[5] as i8, m[4] as i8, m[4] as i8,
            m[3] as i8, m[3] as i8, m[2] as i8, m[2] as i8, m[1] as i8, m[1] as i8, m[0] as i8, m[0] as i8,
        );
        let summ = bsums_dot(yb, mins);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let (lo, hi) = values(xb, j);
            let pl = _mm256_maddubs_epi16(lo, load256(yb, QS + 64 * j));
            let ph = _mm256_maddubs_epi16(hi, load256(yb, QS + 64 * j + 32));
            let pl = _mm256_madd_epi16(pl, _mm256_set1_epi16(sc[2 * j] as i16));
            let ph = _mm256_madd_epi16(ph, _mm256_set1_epi16(sc[2 * j + 1] as i16));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        acc_m -= dmin * summ as f32;
    }
    hsum_ps(acc) + acc_m
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k(q: &[u8], yq: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    dot_k4::<Q4K>(q, yq, |xb, j| {
        let bits = load256(xb, 16 + 32 * j);
        (_mm256_and_si256(bits, m4), _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k(q: &[u8], yq: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    dot_k4::<Q5K>(q, yq, |xb, j| {
        let qh = load256(xb, 16);
        let bits = load256(xb, 48 + 32 * j);
        let h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), one), 4);
        let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32 + 1)), one), 4);
        (
            _mm256_or_si256(_mm256_and_si256(bits, m4), h0),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1),
        )
    })
}

// ---------------------------------------------------------------- Q6_K

/// The four 32-byte groups of one 128-value half of a Q6_K block, unsigned 0..63.
#[inline(always)]
unsafe fn q6_values(xb: &[u8; Q6K], n: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let l0 = load256(xb, 64 * n);
    let l1 = load256(xb, 64 * n + 32);
    let h = load256(xb, 128 + 32 * n);
    let h0 = _mm256_slli_epi16(_mm256_and_si256(h, m2), 4);
    let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4);
    let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4);
    let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4);
    [
        _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
        _mm256_or_si256(_mm256_and_si256(l1, m4), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q6_k(q: &[u8], y: &mut [f32]) {
    let off = _mm256_set1_epi8(32);
    for (xb, yb) in q.chunks_exact(Q6K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q6K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 208);
        for n in 0..2 {
            let v = q6_values(xb, n);
            for (k, vk) in v.into_iter().enumerate() {
                let s = _mm256_sub_epi8(vk, off);
                let sa = xb[192 + 8 * n + 2 * k] as i8;
                let sb = xb[192 + 8 * n + 2 * k + 1] as i8;
                let at = 128 * n + 32 * k;
                scale_i8x16(_mm256_castsi256_si128(s), _mm256_set1_ps(d * sa as f32), yb, at);
                scale_i8x16(_mm256_extracti128_si256(s, 1), _mm256_set1_ps(d * sb as f32), yb, at + 16);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k(q: &[u8], yq: &[u8]) -> f32 {
    let off = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in q.chunks_exact(Q6K).zip(yq.chunks_exact(Q8K)) {
        let xb = block::<Q6K>(xb);
        let yb = block::<Q8K>(yb);
        let d = f16_at(xb, 208) * f32_at(yb, 0);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let v = q6_values(xb, n);
            for (k, vk) in v.into_iter().enumerate() {
                let y = load256(yb, QS + 128 * n + 32 * k);
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(vk, y), _mm256_maddubs_epi16(off, y));
                let s = scale_pair(xb[192 + 8 * n + 2 * k] as i8 as i16, xb[192 + 8 * n + 2 * k + 1] as i8 as i16);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------- Q2_K

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q2_k(q: &[u8], y: &mut [f32]) {
    let m3 = _mm256_set1_epi8(3);
    for (xb, yb) in q.chunks_exact(Q2K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q2K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 80);
        let min = f16_at(xb, 82);
        for n in 0..2 {
            let bits = load256(xb, 16 + 32 * n);
            for j in 0..4 {
                let v = _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * j as i32)), m3);
                for h in 0..2 {
                    let sc = xb[8 * n + 2 * j + h];
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    let half = if h == 0 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256(v, 1) };
                    scale_sub_i8x16(half, _mm256_set1_ps(dl), _mm256_set1_ps(ml), yb, 128 * n + 32 * j + 16 * h);
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q2_k(q: &[u8], yq: &[u8]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut sumf = 0.0f32;
    for (xb, yb) in q.chunks_exact(Q2K).zip(yq.chunks_exact(Q8K)) {
        let xb = block::<Q2K>(xb);
        let yb = block::<Q8K>(yb);
        let yd = f32_at(yb, 0);
        let dall = yd * f16_at(xb, 80);
        let dmin = yd * f16_at(xb, 82);
        let sc = load128(xb, 0);
        let summ = bsums_dot(yb, _mm_and_si128(_mm_srli_epi16(sc, 4), m4));
        // The low nibbles widened to i16: scale s sits at lane s.
        let scales = _mm256_cvtepu8_epi16(_mm_and_si128(sc, m4));
        let mut sc16 = [0i16; 16];
        _mm256_storeu_si256(sc16.as_mut_ptr().cast(), scales);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let bits = load256(xb, 16 + 32 * n);
            for j in 0..4 {
                let v = _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * j as i32)), m3);
                let p = _mm256_maddubs_epi16(v, load256(yb, QS + 128 * n + 32 * j));
                let s = scale_pair(sc16[8 * n + 2 * j], sc16[8 * n + 2 * j + 1]);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        // One float step per block, as the reference: bit-identical.
        sumf += dall * hsum_epi32(sumi) as f32 - dmin * summ as f32;
    }
    sumf
}

// ---------------------------------------------------------------- Q3_K

/// Low two bits of group (n, j) and the matching "subtract 4" bytes (4 where the
/// high-bit mask is clear).
#[inline(always)]
unsafe fn q3_parts(xb: &[u8; Q3K], n: usize, j: usize) -> (__m256i, __m256i) {
    let bits = load256(xb, 32 + 32 * n);
    let lo = _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * j as i32)), _mm256_set1_epi8(3));
    let bit = _mm256_set1_epi8((1u8 << (4 * n + j)) as i8);
    let clear = _mm256_cmpeq_epi8(_mm256_and_si256(load256(xb, 0), bit), _mm256_setzero_si256());
    (lo, _mm256_and_si256(clear, _mm256_set1_epi8(4)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q3_k(q: &[u8], y: &mut [f32]) {
    for (xb, yb) in q.chunks_exact(Q3K).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<Q3K>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 108);
        let sc = q3k_scales(&scales_12(xb, 96));
        for n in 0..2 {
            for j in 0..4 {
                let (lo, sub) = q3_parts(xb, n, j);
                let v = _mm256_sub_epi8(lo, sub);
                let at = 128 * n + 32 * j;
                let (da, db) = (d * sc[8 * n + 2 * j] as f32, d * sc[8 * n + 2 * j + 1] as f32);
                scale_i8x16(_mm256_castsi256_si128(v), _mm256_set1_ps(da), yb, at);
                scale_i8x16(_mm256_extracti128_si256(v, 1), _mm256_set1_ps(db), yb, at + 16);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q3_k(q: &[u8], yq: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in q.chunks_exact(Q3K).zip(yq.chunks_exact(Q8K)) {
        let xb = block::<Q3K>(xb);
        let yb = block::<Q8K>(yb);
        let d = f16_at(xb, 108) * f32_at(yb, 0);
        let sc = q3k_scales(&scales_12(xb, 96));
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            for j in 0..4 {
                let (lo, sub) = q3_parts(xb, n, j);
                let y = load256(yb, QS + 128 * n + 32 * j);
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, y), _mm256_maddubs_epi16(sub, y));
                let s = scale_pair(sc[8 * n + 2 * j] as i16, sc[8 * n + 2 * j + 1] as i16);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------- IQ4_XS

#[inline(always)]
unsafe fn iq4xs_block_scales(xb: &[u8; IQ4XS]) -> [i8; 8] {
    iq4xs_scales(u16::from_le_bytes([xb[2], xb[3]]), &xb[4..8])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq4_xs(q: &[u8], y: &mut [f32]) {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_LEVELS.as_ptr().cast()));
    for (xb, yb) in q.chunks_exact(IQ4XS).zip(y.chunks_exact_mut(QK_K)) {
        let xb = block::<IQ4XS>(xb);
        let yb = floats_mut::<QK_K>(yb);
        let d = f16_at(xb, 0);
        let ls = iq4xs_block_scales(xb);
        for ib in 0..8 {
            let v = _mm256_shuffle_epi8(table, nibbles32(load128(xb, 8 + 16 * ib)));
            scale_i8x32(v, _mm256_set1_ps(d * ls[ib] as f32), yb, 32 * ib);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_xs(q: &[u8], yq: &[u8]) -> f32 {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_LEVELS.as_ptr().cast()));
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in q.chunks_exact(IQ4XS).zip(yq.chunks_exact(Q8K)) {
        let xb = block::<IQ4XS>(xb);
        let yb = block::<Q8K>(yb);
        let d = f16_at(xb, 0) * f32_at(yb, 0);
        let ls = iq4xs_block_scales(xb);
        let mut sumi = _mm256_setzero_si256();
        for ib in 0..8 {
            let x = _mm256_shuffle_epi8(table, nibbles32(load128(xb, 8 + 16 * ib)));
            let y = load256(yb, QS + 32 * ib);
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(x, y));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_set1_epi16(ls[ib] as i16)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}
