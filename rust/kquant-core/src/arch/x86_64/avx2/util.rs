//! Small AVX2 building blocks shared by the kernels. All are `#[inline(always)]` and
//! only called from functions compiled with `avx2,fma,f16c`.

use std::arch::x86_64::*;

/// The f16 at `b[at..at + 2]`, exact (F16C), in all 8 lanes.
/// Broadcasting the 16 bits before converting keeps every lane in use; converting a
/// lone value lets LLVM insert the 16 bits into a stale register, which makes each
/// block's conversion wait for the previous block's last use of that register.
#[inline(always)]
pub unsafe fn f16x8_at<const N: usize>(b: &[u8; N], at: usize) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([b[at], b[at + 1]])))
}

/// The f16 at `b[at..at + 2]` to f32, exact. Written as assembly because LLVM turns
/// the intrinsic version into a 16-bit insert into whatever register is free (often
/// a loop's float accumulator), chaining every conversion to the previous iteration;
/// `vmovd` writes the whole register.
#[inline(always)]
pub unsafe fn f16_at<const N: usize>(b: &[u8; N], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]) as u32;
    let out: __m128;
    std::arch::asm!(
        "vmovd {v}, {w:e}",
        "vcvtph2ps {v}, {v}",
        w = in(reg) bits,
        v = out(xmm_reg) out,
        options(pure, nomem, nostack, preserves_flags)
    );
    _mm_cvtss_f32(out)
}

#[inline(always)]
pub unsafe fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// 16 bytes starting at `b[at]`; the caller's fixed-size block bounds `at + 16`.
#[inline(always)]
pub unsafe fn load128<const N: usize>(b: &[u8; N], at: usize) -> __m128i {
    debug_assert!(at + 16 <= N);
    _mm_loadu_si128(b.as_ptr().add(at).cast())
}

#[inline(always)]
pub unsafe fn load256<const N: usize>(b: &[u8; N], at: usize) -> __m256i {
    debug_assert!(at + 32 <= N);
    _mm256_loadu_si256(b.as_ptr().add(at).cast())
}

#[inline(always)]
pub unsafe fn loadps<const N: usize>(x: &[f32; N], at: usize) -> __m256 {
    debug_assert!(at + 8 <= N);
    _mm256_loadu_ps(x.as_ptr().add(at))
}

#[inline(always)]
pub unsafe fn storeps<const N: usize>(y: &mut [f32; N], at: usize, v: __m256) {
    debug_assert!(at + 8 <= N);
    _mm256_storeu_ps(y.as_mut_ptr().add(at), v)
}

#[inline(always)]
pub unsafe fn store256<const N: usize>(b: &mut [u8; N], at: usize, v: __m256i) {
    debug_assert!(at + 32 <= N);
    _mm256_storeu_si256(b.as_mut_ptr().add(at).cast(), v)
}

#[inline(always)]
pub unsafe fn hsum_pd(v: __m256d) -> f64 {
    let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    let s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    _mm_cvtsd_f64(s)
}

#[inline(always)]
pub unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// 16 packed nibbles to 32 bytes: low nibbles in bytes 0..16, high in 16..32 (the
/// order of every 32-value legacy block).
#[inline(always)]
pub unsafe fn nibbles32(q: __m128i) -> __m256i {
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Sum of i16 pairs to i32.
#[inline(always)]
pub unsafe fn sum_pairs(v: __m256i) -> __m256i {
    _mm256_madd_epi16(v, _mm256_set1_epi16(1))
}

/// Exact dot of signed bytes `x` (any value) with `y`, where `y` holds no -128, in
/// 8 i32 lanes. With |sign(y)| <= 127 and |x| <= 128 the byte-pair sums stay below
/// i16 saturation, so `maddubs` is exact.
#[inline(always)]
pub unsafe fn dot_i8_no_min(x: __m256i, y: __m256i) -> __m256i {
    sum_pairs(_mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(y, x)))
}

/// The i16 pair sums of `x . y` for signed `x` (any value) and `y` without -128,
/// exact by the same argument as `dot_i8_no_min`.
#[inline(always)]
pub unsafe fn maddubs_signed(x: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(y, x))
}

/// Exact dot of any two signed byte vectors (widening to i16 first).
#[inline(always)]
pub unsafe fn dot_i8_wide(x: __m256i, y: __m256i) -> __m256i {
    let xl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x));
    let xh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1));
    let yl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(y));
    let yh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(y, 1));
    _mm256_add_epi32(_mm256_madd_epi16(xl, yl), _mm256_madd_epi16(xh, yh))
}

/// True when some byte of `v` is -128.
#[inline(always)]
pub unsafe fn has_min_i8(v: __m256i) -> bool {
    _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(i8::MIN))) != 0
}

/// Writes 32 bytes as 32 floats `q * d` (signed bytes, the product rounded once).
#[inline(always)]
pub unsafe fn scale_i8x32<const N: usize>(q: __m256i, d: __m256, y: &mut [f32; N], at: usize) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256(q, 1);
    storeps(y, at, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
    storeps(y, at + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
    storeps(y, at + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
    storeps(y, at + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
}

/// 16 signed bytes as 16 floats `d * q`.
#[inline(always)]
pub unsafe fn scale_i8x16<const N: usize>(q: __m128i, d: __m256, y: &mut [f32; N], at: usize) {
    storeps(y, at, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
    storeps(y, at + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), d));
}

/// 32 bytes as 32 floats `d * q - m`: two roundings, in ggml's order, no FMA.
#[inline(always)]
pub unsafe fn scale_sub_i8x32<const N: usize>(q: __m256i, d: __m256, m: __m256, y: &mut [f32; N], at: usize) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256(q, 1);
    let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
    for (k, p) in parts.into_iter().enumerate() {
        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p));
        storeps(y, at + 8 * k, _mm256_sub_ps(_mm256_mul_ps(d, f), m));
    }
}

/// 32 bytes as 32 floats `q * d + m` (Q4_1/Q5_1 order), no FMA.
#[inline(always)]
pub unsafe fn scale_add_i8x32<const N: usize>(q: __m256i, d: __m256, m: __m256, y: &mut [f32; N], at: usize) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256(q, 1);
    let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
    for (k, p) in parts.into_iter().enumerate() {
        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p));
        storeps(y, at + 8 * k, _mm256_add_ps(_mm256_mul_ps(f, d), m));
    }
}
