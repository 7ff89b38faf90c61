//! MXFP4 and NVFP4: dequantize and their dots with Q8_0. The E2M1 levels (doubled, as
//! ggml keeps them) come from one byte shuffle; every float is `level * scale`, the
//! reference's single rounding.

use std::arch::x86_64::*;

use super::legacy::{dot_blocks, f16x4};
use super::util::*;
use crate::arch::{block, floats_mut};
use crate::reference::mxfp4::{e8m0_half, KVALUES};

const MX_BYTES: usize = 17;
const NV_BYTES: usize = 36;
const Q8_0_BYTES: usize = 34;

#[inline(always)]
unsafe fn table() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES.as_ptr().cast()))
}

/// 32 MXFP4 levels of a block (value j from the low nibble of byte j, j+16 the high).
#[inline(always)]
unsafe fn mx_levels(xb: &[u8; MX_BYTES]) -> __m256i {
    _mm256_shuffle_epi8(table(), nibbles32(load128(xb, 1)))
}

/// ggml's `ggml_ue4m3_to_fp32` (halved) without branches on the exponent: a 4-bit
/// significand times a power of two, exact. 0 and 0x7f read as zero; the top bit is
/// ignored, as in ggml.
#[inline(always)]
const fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let (e, m) = (((x >> 3) & 15) as u32, (x & 7) as u32);
    // exp 0: man * 2^-10; else (8 + man) * 2^(exp - 11)
    let (sig, pow) = if e == 0 { (m, 117u32) } else { (8 + m, 116 + e) };
    sig as f32 * f32::from_bits(pow << 23)
}

const fn ue4m3_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ue4m3_half(i as u8);
        i += 1;
    }
    t
}
/// Every UE4M3 scale byte, halved, for gathers.
static UE4M3_HALF: [f32; 256] = ue4m3_table();

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_mxfp4(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(MX_BYTES).zip(y.chunks_exact_mut(32)) {
        let qb = block::<MX_BYTES>(qb);
        scale_i8x32(mx_levels(qb), _mm256_set1_ps(e8m0_half(qb[0])), floats_mut::<32>(yb), 0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_mxfp4(q: &[u8], yq: &[u8]) -> f32 {
    dot_blocks::<false, MX_BYTES, Q8_0_BYTES>(
        q,
        yq,
        // |level| <= 12: the signs go on the activations' side, exact for any y
        |xb, yb| dot_i8_no_min(load256(yb, 2), mx_levels(xb)),
        |s, xb, yb| {
            let e = _mm_setr_ps(e8m0_half(xb[0][0]), e8m0_half(xb[1][0]), e8m0_half(xb[2][0]), e8m0_half(xb[3][0]));
            _mm_mul_ps(_mm_mul_ps(f16x4(yb, 0), e), s)
        },
    )
}

/// The levels of NVFP4 groups 2k and 2k+1 (bytes 4 + 16k .. 4 + 16k + 16), in value
/// order: each group's eight low nibbles, then its eight high nibbles.
#[inline(always)]
unsafe fn nv_levels(xb: &[u8; NV_BYTES], k: usize) -> __m256i {
    let v = load128(xb, 4 + 16 * k);
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    let g = _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
    _mm256_shuffle_epi8(table(), g)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_nvfp4(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(NV_BYTES).zip(y.chunks_exact_mut(64)) {
        let qb = block::<NV_BYTES>(qb);
        let yb = floats_mut::<64>(yb);
        for k in 0..2 {
            let v = nv_levels(qb, k);
            scale_i8x16(_mm256_castsi256_si128(v), _mm256_set1_ps(ue4m3_half(qb[2 * k])), yb, 32 * k);
            scale_i8x16(_mm256_extracti128_si256(v, 1), _mm256_set1_ps(ue4m3_half(qb[2 * k + 1])), yb, 32 * k + 16);
        }
    }
}

/// NVFP4 x Q8_0: a block is four groups of 16 over two Q8_0 blocks. Each group's term
/// `dy * d * sumi` is the reference's, bit for bit; the terms are added in four lanes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_nvfp4(q: &[u8], yq: &[u8]) -> f32 {
    let mut acc = _mm_setzero_ps();
    for (xb, y2) in q.chunks_exact(NV_BYTES).zip(yq.chunks_exact(2 * Q8_0_BYTES)) {
        let xb = block::<NV_BYTES>(xb);
        let y0 = block::<Q8_0_BYTES>(&y2[..Q8_0_BYTES]);
        let y1 = block::<Q8_0_BYTES>(&y2[Q8_0_BYTES..]);
        // lanes 0..4: group 2k, lanes 4..8: group 2k+1
        let a = dot_i8_no_min(load256(y0, 2), nv_levels(xb, 0));
        let b = dot_i8_no_min(load256(y1, 2), nv_levels(xb, 1));
        let h = _mm256_hadd_epi32(a, b); // [g0 g0 g2 g2 | g1 g1 g3 g3] partial
        let h = _mm256_hadd_epi32(h, h); // [g0 g2 g0 g2 | g1 g3 g1 g3]
        let s = _mm_unpacklo_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        let (h0, h1) = (u16::from_le_bytes([y0[0], y0[1]]) as u64, u16::from_le_bytes([y1[0], y1[1]]) as u64);
        let dy = _mm_cvtph_ps(_mm_cvtsi64_si128((h0 | h0 << 16 | h1 << 32 | h1 << 48) as i64));
        let idx = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(i32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]])));
        let d = _mm_i32gather_ps::<4>(UE4M3_HALF.as_ptr(), idx);
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_mul_ps(dy, d), _mm_cvtepi32_ps(s)));
    }
    let s = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ue4m3_matches_the_reference() {
        for x in 0..=255u8 {
            assert_eq!(super::ue4m3_half(x).to_bits(), crate::reference::nvfp4::ue4m3_half(x).to_bits(), "{x:#x}");
        }
    }
}

/// `quantize_row_mxfp4_ref`. With d a power of two and |x| < 16 d, `best_index_mxfp4`'s
/// float errors against the two neighbouring levels are exact (Sterbenz), so its first
/// least error is the level below or above the midpoint, ties going to the smaller
/// magnitude: the magnitude code counts the midpoints |x| exceeds, negatives add 8
/// (zero keeps code 0). Blocks whose exponent leaves that range (a tiny maximum wraps
/// ggml's byte conversion) take the reference path.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_mxfp4(x: &[f32], q: &mut [u8]) {
    use super::bits::pack_bytes32;
    use crate::arch::{block_mut, floats};
    use crate::reference::mxfp4::{best_index, exponent};
    const MID: [f32; 7] = [0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0];
    let sign = _mm256_set1_ps(-0.0);
    for (xb, qb) in x.chunks_exact(32).zip(q.chunks_exact_mut(MX_BYTES)) {
        let (xb, qb) = (floats::<32>(xb), block_mut::<MX_BYTES>(qb));
        let mut m = _mm256_setzero_ps();
        for k in 0..4 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, loadps(xb, 8 * k)));
        }
        let amax = hmax_ps(m);
        let e = exponent(amax);
        let d = e8m0_half(e);
        qb[0] = e;
        // e = floor(log2 amax) + 125 (or one more where log2f rounds up): in range
        // for amax well above 2^-120; near f32::MAX the top levels 8d, 12d overflow to
        // inf, which ggml's errors then skip
        if !(1e-36..=1e37).contains(&amax) {
            for j in 0..16 {
                qb[1 + j] = best_index(xb[j], d) | (best_index(xb[j + 16], d) << 4);
            }
            continue;
        }
        let t: [__m256; 7] = std::array::from_fn(|i| _mm256_set1_ps(MID[i] * d));
        let code = |k: usize| {
            let v = loadps(xb, 8 * k);
            let a = _mm256_andnot_ps(sign, v);
            let mut c = _mm256_setzero_si256();
            for ti in &t {
                c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(a, *ti)));
            }
            let neg = _mm256_and_si256(
                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps())),
                _mm256_cmpgt_epi32(c, _mm256_setzero_si256()),
            );
            _mm256_or_si256(c, _mm256_and_si256(neg, _mm256_set1_epi32(8)))
        };
        let c = pack_bytes32(code(0), code(1), code(2), code(3));
        let lo = _mm256_castsi256_si128(c);
        let hi = _mm256_extracti128_si256(c, 1);
        _mm_storeu_si128(qb.as_mut_ptr().add(1).cast(), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
    }
}

#[cfg(test)]
mod quantize_tests {
    /// Blocks whose maximum sits where the top levels overflow, or near the subnormal
    /// range, give the reference's bytes.
    #[test]
    fn mxfp4_extreme_maxima() {
        let Some(_) = crate::arch::x86_64::avx2::Avx2::detect() else { return };
        for amax in [3.0e38f32, 2.99e38, 1.7e38, 1e37, 1.1e37, 1e-36, 9e-37, 1e-39, 1e-44] {
            let x: Vec<f32> = (0..64).map(|i| amax * ((i as f32 - 31.5) / 31.5)).collect();
            let mut a = vec![0u8; 34];
            let mut b = vec![0u8; 34];
            // SAFETY: AVX2 was detected above.
            unsafe { super::quantize_mxfp4(&x, &mut a) };
            (crate::reference::mxfp4::KERNELS.quantize)(&x, &mut b, None);
            assert_eq!(a, b, "amax {amax}");
        }
    }
}
