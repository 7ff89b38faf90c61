//! Adversarial blocks through every format: the reference must not panic, must keep
//! zeros zero, and its dots must equal the f64 dot of the dequantized operands. Raw Q8
//! blocks holding -128 (which no quantizer writes, but files may) are read faithfully.

use kquant_core::ops::{self, Rows};
use kquant_core::QuantType;

const WEIGHT_TYPES: [QuantType; 18] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
    QuantType::Q2K,
    QuantType::Q3K,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
    QuantType::IQ4NL,
    QuantType::IQ4XS,
    QuantType::TQ1_0,
    QuantType::TQ2_0,
    QuantType::MXFP4,
    QuantType::NVFP4,
    QuantType::Q1_0,
    QuantType::Q2_0,
];

/// Deterministic xorshift values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn cases(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let ramp: Vec<f32> = (0..n).map(|i| i as f32 / n as f32 - 0.5).collect();
    let mut spikes = vec![0.0f32; n];
    for i in (0..n).step_by(37) {
        spikes[i] = if i % 2 == 0 { 1e4 } else { -1e4 };
    }
    vec![
        ("zeros", vec![0.0; n]),
        ("constant", vec![0.75; n]),
        ("negative constant", vec![-3.0; n]),
        ("ramp", ramp.clone()),
        ("reversed ramp", ramp.iter().rev().copied().collect()),
        ("noise", noise(1, n)),
        ("tiny", noise(2, n).iter().map(|v| v * 1e-30).collect()),
        ("subnormal", noise(3, n).iter().map(|v| v * 1e-40).collect()),
        ("f32 max", (0..n).map(|i| if i % 3 == 0 { f32::MAX } else { -f32::MAX }).collect()),
        ("spikes", spikes),
        ("alternating", (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect()),
    ]
}

fn dequant(t: QuantType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    ops::dequantize(Rows::new(t, n, 1).unwrap(), q, &mut y).unwrap();
    y
}

fn quant(t: QuantType, x: &[f32], imat: Option<&[f32]>) -> Vec<u8> {
    let rows = Rows::new(t, x.len(), 1).unwrap();
    let mut q = vec![0u8; rows.row_bytes];
    ops::quantize(rows, x, &mut q, imat).unwrap();
    q
}

#[test]
fn every_format_survives_adversarial_blocks() {
    let n = 512;
    let imat: Vec<f32> = noise(9, n).iter().map(|v| v.abs() * 4.0).collect();
    for t in WEIGHT_TYPES {
        for (name, x) in cases(n) {
            for w in [None, Some(imat.as_slice())] {
                let q = quant(t, &x, w);
                let y = dequant(t, &q, n);
                if name == "zeros" {
                    assert!(y.iter().all(|v| *v == 0.0), "{t} {name}: zeros must stay zeros");
                }
                // error bounded by the block's range where the scale fits an f16
                if matches!(name, "constant" | "negative constant" | "ramp" | "noise" | "alternating") {
                    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let worst = x.iter().zip(&y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(worst <= 0.75 * amax, "{t} {name} imatrix={}: error {worst} vs max {amax}", w.is_some());
                }
            }
        }
    }
}

#[test]
fn dots_equal_the_dot_of_dequantized_operands() {
    let n = 1024;
    for t in WEIGHT_TYPES {
        let p = t.vec_dot_type();
        for (name, x) in cases(n) {
            if matches!(name, "f32 max" | "subnormal") {
                continue; // scales overflow or vanish in f16; values are then inf/NaN or 0 on both sides
            }
            let y = noise(7, n);
            let (q, yq) = (quant(t, &x, None), quant(p, &y, None));
            let (xd, yd) = (dequant(t, &q, n), dequant(p, &yq, n));
            let exact: f64 = xd.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = xd.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
            let mut got = [0f32];
            ops::vec_dot(Rows::new(t, n, 1).unwrap(), &q, &yq, &mut got).unwrap();
            // Q4_1/Q5_1 fold the minimum through q8_1's f16 sum: allow that rounding
            let tol = if matches!(t, QuantType::Q4_1 | QuantType::Q5_1) { 2e-3 } else { 1e-5 };
            assert!(
                (got[0] as f64 - exact).abs() <= tol * scale.max(1e-30) + 1e-30,
                "{t} {name}: dot {} vs {exact} (scale {scale})",
                got[0]
            );
        }
    }
}

/// Q8_0 and Q8_K bytes of -128 never come out of ggml's quantizers, but a file may
/// hold them; they must read as -128 * d and dot as such.
#[test]
fn raw_minus_128_bytes_in_q8_blocks() {
    // Q8_0: d = 0.5 in f16 (0x3800), all values -128
    let mut q8_0 = vec![0x00u8, 0x38];
    q8_0.extend(std::iter::repeat(0x80u8).take(32));
    assert!(dequant(QuantType::Q8_0, &q8_0, 32).iter().all(|v| *v == -64.0));
    let mut dot = [0f32];
    ops::vec_dot(Rows::new(QuantType::Q8_0, 32, 1).unwrap(), &q8_0, &q8_0, &mut dot).unwrap();
    assert_eq!(dot[0], 32.0 * 64.0 * 64.0);

    // Q8_K: d = 0.25 (f32), all values -128, bsums consistent (16 * -128)
    let mut q8k = 0.25f32.to_le_bytes().to_vec();
    q8k.extend(std::iter::repeat(0x80u8).take(256));
    for _ in 0..16 {
        q8k.extend_from_slice(&(-2048i16).to_le_bytes());
    }
    assert!(dequant(QuantType::Q8K, &q8k, 256).iter().all(|v| *v == -32.0));
    for t in [QuantType::Q2K, QuantType::Q3K, QuantType::Q4K, QuantType::Q5K, QuantType::Q6K, QuantType::IQ4XS] {
        let w = quant(t, &noise(11, 256), None);
        let wd = dequant(t, &w, 256);
        let exact: f64 = wd.iter().map(|v| *v as f64 * -32.0).sum();
        let scale: f64 = wd.iter().map(|v| (*v as f64 * 32.0).abs()).sum();
        ops::vec_dot(Rows::new(t, 256, 1).unwrap(), &w, &q8k, &mut dot).unwrap();
        assert!((dot[0] as f64 - exact).abs() <= 1e-5 * scale, "{t}: {} vs {exact}", dot[0]);
    }
}

#[test]
fn quantizers_never_write_minus_128() {
    let n = 4096;
    for (name, x) in cases(n) {
        for t in [QuantType::Q8_0, QuantType::Q8K] {
            let q = quant(t, &x, None);
            let (bs, off, len) = if t == QuantType::Q8_0 { (34, 2, 32) } else { (292, 4, 256) };
            for b in q.chunks_exact(bs) {
                assert!(b[off..off + len].iter().all(|&v| v != 0x80), "{t} {name}: -128 written");
            }
        }
    }
}

/// Every byte pattern a file may hold in the new formats' blocks (codes no quantizer
/// writes, NaN/Inf/subnormal scales, E8M0 255, UE4M3 0x7f/0xff) dequantizes and dots
/// without a panic, and where the values are finite the dot (over one, two, three and
/// five blocks: NVFP4/Q2_0 span two Q8_0 blocks, Q1_0 four) is their f64 dot.
#[test]
fn random_blocks_of_the_newer_formats() {
    let types =
        [QuantType::TQ1_0, QuantType::TQ2_0, QuantType::MXFP4, QuantType::NVFP4, QuantType::Q1_0, QuantType::Q2_0];
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut byte = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 32) as u8
    };
    for t in types {
        let p = t.vec_dot_type();
        for nb in [1usize, 2, 3, 5] {
            let n = nb * t.block_size();
            for _ in 0..200 {
                let q: Vec<u8> = (0..nb * t.type_size()).map(|_| byte()).collect();
                let yq: Vec<u8> = (0..p.row_size(n).unwrap()).map(|_| byte()).collect();
                let y = dequant(t, &q, n);
                assert_eq!(y.len(), n);
                let mut dot = [0f32];
                ops::vec_dot(Rows::new(t, n, 1).unwrap(), &q, &yq, &mut dot).unwrap();
                let yd = dequant(p, &yq, n);
                let exact: f64 = y.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
                let scale: f64 = y.iter().zip(&yd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                if exact.is_finite() && scale.is_finite() && scale < 1e30 {
                    assert!(
                        (dot[0] as f64 - exact).abs() <= 1e-5 * scale + 1e-30,
                        "{t} x{nb}: dot {} vs {exact} (scale {scale})",
                        dot[0]
                    );
                }
            }
        }
    }
}
