//! Instruction-set specific kernels, one folder per architecture and one module per
//! instruction set inside it. Nothing here is called directly: `dispatch` asks each
//! module for the entries it accelerates, handing over a token that proves the CPU
//! has the features, and falls back to `reference` for the rest.
//!
//! Every kernel here must give exactly the reference's bytes (quantize) and bits
//! (dequantize); dots may differ only in the order of float additions.
//! `tests/simd_parity.rs` holds them to that.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;

#[allow(dead_code)]
pub(crate) mod iq2_soa;

#[doc(hidden)]
pub mod parity;

#[allow(dead_code)]
pub(crate) mod iq1_fast;
#[allow(dead_code)]
pub(crate) mod iq3_lanes;

/// Fixed-size view of a block, so that the loads inside the kernels are bounded by
/// the type. The length check folds away after `chunks_exact(N)`.
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn block<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.try_into().expect("chunks_exact yields whole blocks")
}

#[allow(dead_code)]
#[inline(always)]
pub(crate) fn block_mut<const N: usize>(b: &mut [u8]) -> &mut [u8; N] {
    b.try_into().expect("chunks_exact yields whole blocks")
}

#[allow(dead_code)]
#[inline(always)]
pub(crate) fn floats<const N: usize>(x: &[f32]) -> &[f32; N] {
    x.try_into().expect("chunks_exact yields whole blocks")
}

#[allow(dead_code)]
#[inline(always)]
pub(crate) fn floats_mut<const N: usize>(x: &mut [f32]) -> &mut [f32; N] {
    x.try_into().expect("chunks_exact yields whole blocks")
}

/// The 8 six-bit scales and 8 six-bit mins packed in the 12 `scales` bytes of a Q4_K
/// or Q5_K block (`get_scale_min_k4` for all j at once), as the bytes of two u64.
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn k4_scales_mins_packed(s: &[u8; 12]) -> (u64, u64) {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let a = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let b = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let c = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let sc_hi = (c & K2) | (((a >> 6) & K3) << 4);
    let m_hi = ((c >> 4) & K2) | (((b >> 6) & K3) << 4);
    ((a & K1) as u64 | (sc_hi as u64) << 32, (b & K1) as u64 | (m_hi as u64) << 32)
}

/// `k4_scales_mins_packed` as byte arrays.
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn k4_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (sc, m) = k4_scales_mins_packed(s);
    (sc.to_le_bytes(), m.to_le_bytes())
}

/// The 16 six-bit scales of a Q3_K block (not yet minus 32), as the bytes of a u128.
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn q3k_scales_packed(s: &[u8; 12]) -> u128 {
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let a = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let b = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let t = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let w0 = (a & K2) | ((t & K1) << 4);
    let w1 = (b & K2) | (((t >> 2) & K1) << 4);
    let w2 = ((a >> 4) & K2) | (((t >> 4) & K1) << 4);
    let w3 = ((b >> 4) & K2) | (((t >> 6) & K1) << 4);
    w0 as u128 | (w1 as u128) << 32 | (w2 as u128) << 64 | (w3 as u128) << 96
}

/// The 16 six-bit scales of a Q3_K block, already minus 32.
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    q3k_scales_packed(s).to_le_bytes().map(|b| b as i8 - 32)
}

/// The 8 six-bit scales of an IQ4_XS block, already minus 32.
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn iq4xs_scales(scales_h: u16, scales_l: &[u8]) -> [i8; 8] {
    let mut out = [0i8; 8];
    for (ib, o) in out.iter_mut().enumerate() {
        let ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) | ((((scales_h >> (2 * ib)) & 3) as u8) << 4);
        *o = ls as i8 - 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unpacking helpers against a literal transcription of ggml's bit recipes.
    #[test]
    fn scale_unpacking_matches_ggml_recipes() {
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let mut s = [0u8; 12];
            for b in s.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
            let (sc, m) = k4_scales_mins(&s);
            for j in 0..8 {
                let (d0, m0) = if j < 4 {
                    (s[j] & 63, s[j + 4] & 63)
                } else {
                    ((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
                };
                assert_eq!((sc[j], m[j]), (d0, m0));
            }
            let mut aux = [0u32; 4];
            for i in 0..3 {
                aux[i] = u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
            }
            let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
            aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
            let want: Vec<i8> = aux.iter().flat_map(|a| a.to_le_bytes()).map(|b| b as i8 - 32).collect();
            assert_eq!(q3k_scales(&s).to_vec(), want);
        }
    }
}
