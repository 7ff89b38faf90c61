//! The 32-value formats Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL: dequantize and their dots
//! with Q8_0 / Q8_1, and the Q8_0 x Q8_0 dot. Each block's float term is bit-identical
//! to the reference's (exact integer block sum, then the reference's float steps in its
//! order); only the order of adding the block terms differs.
//!
//! Dots multiply unsigned by signed bytes with `maddubs`. Where the weights are signed
//! the absolute value goes on the activation side (`|y| <= 128`) and the sign on the
//! weight side (|w| <= 127 for every weight format here), so no byte-pair sum reaches
//! i16 saturation and the integer sums are exact even for hand-made -128 activations,
//! which ggml's own AVX2 sign trick gets wrong.

use std::arch::x86_64::*;

use super::util::*;
use crate::arch::{block, floats_mut};

const QK: usize = 32;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// ggml's non-linear 4-bit levels (`kvalues_iq4nl`).
pub const IQ4NL_LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// 32 bits to 32 bytes, 0xff where the bit is set (bit i to byte i).
#[inline(always)]
pub unsafe fn bits_to_bytes32(bits: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000),
    );
    let others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1))
}

#[inline(always)]
unsafe fn q4_0_values(xb: &[u8; 18]) -> __m256i {
    _mm256_sub_epi8(nibbles32(load128(xb, 2)), _mm256_set1_epi8(8))
}

/// Q5_0 levels: a clear fifth bit sets the top nibble instead, which is `nibble - 16`
/// as a signed byte.
#[inline(always)]
unsafe fn q5_0_values(xb: &[u8; 22]) -> __m256i {
    let qh = u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]);
    let high = _mm256_andnot_si256(bits_to_bytes32(qh), _mm256_set1_epi8(0xf0u8 as i8));
    _mm256_or_si256(nibbles32(load128(xb, 6)), high)
}

/// Five-bit unsigned levels: nibbles at `qs`, fifth bits in the u32 at `qh`.
#[inline(always)]
unsafe fn q5_unsigned<const B: usize>(xb: &[u8; B], qh: usize, qs: usize) -> __m256i {
    let bits = u32::from_le_bytes([xb[qh], xb[qh + 1], xb[qh + 2], xb[qh + 3]]);
    let high = _mm256_and_si256(bits_to_bytes32(bits), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles32(load128(xb, qs)), high)
}

#[inline(always)]
unsafe fn q5_1_values(xb: &[u8; 24]) -> __m256i {
    q5_unsigned(xb, 4, 8)
}

#[inline(always)]
unsafe fn iq4_nl_values(xb: &[u8; 18]) -> __m256i {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_LEVELS.as_ptr().cast()));
    _mm256_shuffle_epi8(table, nibbles32(load128(xb, 2)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<18>(qb);
        scale_i8x32(q4_0_values(qb), f16x8_at(qb, 0), floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_1(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(20).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<20>(qb);
        let d = f16x8_at(qb, 0);
        let m = f16x8_at(qb, 2);
        scale_add_i8x32(nibbles32(load128(qb, 4)), d, m, floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q5_0(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(22).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<22>(qb);
        scale_i8x32(q5_0_values(qb), f16x8_at(qb, 0), floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q5_1(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(24).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<24>(qb);
        let d = f16x8_at(qb, 0);
        let m = f16x8_at(qb, 2);
        scale_add_i8x32(q5_1_values(qb), d, m, floats_mut::<QK>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_iq4_nl(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let qb = block::<18>(qb);
        scale_i8x32(iq4_nl_values(qb), f16x8_at(qb, 0), floats_mut::<QK>(yb), 0);
    }
}

/// Four blocks' partial sums to their four totals. With `I16` the inputs are the
/// sixteen i16 pair sums of `maddubs`, added as i16 until the last step: callers
/// promise that a block's sum of eight pair sums stays within i16 (so no weight
/// format with levels beyond +-31). Otherwise the inputs are eight i32 lanes.
#[inline(always)]
pub(super) unsafe fn hsum4<const I16: bool>(p0: __m256i, p1: __m256i, p2: __m256i, p3: __m256i) -> __m128i {
    let h = if I16 {
        let h = _mm256_hadd_epi16(_mm256_hadd_epi16(p0, p1), _mm256_hadd_epi16(p2, p3));
        _mm256_madd_epi16(h, _mm256_set1_epi16(1))
    } else {
        _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3))
    };
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
}

/// The f16 fields at `at` of four blocks, widened, in one vector.
#[inline(always)]
pub(super) unsafe fn f16x4<const B: usize>(b: &[&[u8; B]; 4], at: usize) -> __m128 {
    // Assembled in a general register: the integer units are idle here, while four
    // vector inserts would compete with the dot itself.
    let h = |k: usize| u16::from_le_bytes([b[k][at], b[k][at + 1]]) as u64;
    let packed = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
    _mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64))
}

/// The block loop shared by the 32-value dots. `sums` gives a block's exact integer
/// dot in 8 lanes; `term` turns four block totals into the four floats the reference
/// adds for those blocks, lane-wise with the reference's own order of float operations,
/// so every block's term is bit-identical to the reference's. Only the order in which
/// the terms are added differs: four running lanes, summed at the end. (Adding them one
/// by one, as the reference does, makes a latency chain that costs a quarter of the
/// speed.)
#[inline(always)]
pub(super) unsafe fn dot_blocks<const I16: bool, const B: usize, const Y: usize>(
    q: &[u8],
    yq: &[u8],
    sums: impl Fn(&[u8; B], &[u8; Y]) -> __m256i,
    term: impl Fn(__m128, &[&[u8; B]; 4], &[&[u8; Y]; 4]) -> __m128,
) -> f32 {
    let mut acc = _mm_setzero_ps();
    let mut xs = q.chunks_exact(4 * B);
    let mut ys = yq.chunks_exact(4 * Y);
    for (x4, y4) in xs.by_ref().zip(ys.by_ref()) {
        let xb: [&[u8; B]; 4] = std::array::from_fn(|k| block::<B>(&x4[k * B..(k + 1) * B]));
        let yb: [&[u8; Y]; 4] = std::array::from_fn(|k| block::<Y>(&y4[k * Y..(k + 1) * Y]));
        let t = hsum4::<I16>(sums(xb[0], yb[0]), sums(xb[1], yb[1]), sums(xb[2], yb[2]), sums(xb[3], yb[3]));
        acc = _mm_add_ps(acc, term(_mm_cvtepi32_ps(t), &xb, &yb));
    }
    // The last blocks: pad the group of four with copies of the first and keep only
    // the real lanes.
    let (xr, yr) = (xs.remainder(), ys.remainder());
    let left = (xr.len() / B).min(yr.len() / Y);
    if left > 0 {
        let xb: [&[u8; B]; 4] = std::array::from_fn(|k| block::<B>(&xr[k.min(left - 1) * B..][..B]));
        let yb: [&[u8; Y]; 4] = std::array::from_fn(|k| block::<Y>(&yr[k.min(left - 1) * Y..][..Y]));
        let t = hsum4::<I16>(sums(xb[0], yb[0]), sums(xb[1], yb[1]), sums(xb[2], yb[2]), sums(xb[3], yb[3]));
        let keep = _mm_castsi128_ps(_mm_cmpgt_epi32(_mm_set1_epi32(left as i32), _mm_setr_epi32(0, 1, 2, 3)));
        acc = _mm_add_ps(acc, _mm_and_ps(keep, term(_mm_cvtepi32_ps(t), &xb, &yb)));
    }
    let s = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_0(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<true, 18, Q8_0_BYTES>(
        q,
        yq,
        // (nibble - 8) . y as nibble . y - 8 . y: two exact unsigned-by-signed
        // products, one operation fewer than signing the offset levels.
        |xb, yb| {
            let y = load256(yb, 2);
            let p = _mm256_maddubs_epi16(nibbles32(load128(xb, 2)), y);
            _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8(8), y))
        },
        |s, xb, yb| _mm_mul_ps(_mm_mul_ps(s, f16x4(xb, 0)), f16x4(yb, 0)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_0(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<true, 22, Q8_0_BYTES>(
        q,
        yq,
        // As Q4_0: unsigned levels, the offset of 16 as a second product.
        |xb, yb| {
            let y = load256(yb, 2);
            let p = _mm256_maddubs_epi16(q5_unsigned(xb, 2, 6), y);
            _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8(16), y))
        },
        |s, xb, yb| _mm_mul_ps(_mm_mul_ps(f16x4(xb, 0), f16x4(yb, 0)), s),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_nl(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<false, 18, Q8_0_BYTES>(
        q,
        yq,
        |xb, yb| dot_i8_no_min(load256(yb, 2), iq4_nl_values(xb)),
        |s, xb, yb| _mm_mul_ps(_mm_mul_ps(f16x4(yb, 0), f16x4(xb, 0)), s),
    )
}

/// Q8_0 x Q8_0. The `maddubs` fast path is exact unless a byte of `y` is -128 (only
/// hand-made blocks have one); such blocks take the widening path.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q8_0(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<false, Q8_0_BYTES, Q8_0_BYTES>(
        q,
        yq,
        |xb, yb| {
            let (x, y) = (load256(xb, 2), load256(yb, 2));
            if has_min_i8(y) {
                dot_i8_wide(x, y)
            } else {
                dot_i8_no_min(x, y)
            }
        },
        |s, xb, yb| _mm_mul_ps(s, _mm_mul_ps(f16x4(xb, 0), f16x4(yb, 0))),
    )
}

/// Unsigned weights against Q8_1; the minimum enters through the activation block's
/// `s = d * sum(q)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_1(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<true, 20, Q8_1_BYTES>(
        q,
        yq,
        |xb, yb| _mm256_maddubs_epi16(nibbles32(load128(xb, 4)), load256(yb, 4)),
        |s, xb, yb| {
            let main = _mm_mul_ps(_mm_mul_ps(f16x4(xb, 0), f16x4(yb, 0)), s);
            _mm_add_ps(main, _mm_mul_ps(f16x4(xb, 2), f16x4(yb, 2)))
        },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_1(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<true, 24, Q8_1_BYTES>(
        q,
        yq,
        |xb, yb| _mm256_maddubs_epi16(q5_1_values(xb), load256(yb, 4)),
        |s, xb, yb| {
            let main = _mm_mul_ps(_mm_mul_ps(f16x4(xb, 0), f16x4(yb, 0)), s);
            _mm_add_ps(main, _mm_mul_ps(f16x4(xb, 2), f16x4(yb, 2)))
        },
    )
}
