//! The D4-lattice machinery shared by IQ3_XXS and IQ3_S.
//!
//! Both formats code a group of 4 magnitudes as one point of a fixed grid: 256 points
//! (IQ3_XXS) or 512 (IQ3_S), each a 4-tuple of 3-bit levels `l` (value `2l + 1` when
//! quantizing). Signs go separately. The grids are given below in ggml's compact form
//! (three bits per coordinate); every table the kernels use is derived from them, the
//! dequantize grids at compile time and the quantizer's lattice (which non-grid points
//! map to which candidate grid points) once, lazily, in a few milliseconds.

use std::sync::OnceLock;

use super::common::{f32_to_f16, nearest_int};

/// ggml's `kgrid_256`: the IQ3_XXS grid, coordinate `i` in bits `3i..3i+3`.
#[rustfmt::skip]
pub(crate) const CODES_256: [u16; 256] = [
    0, 2, 4, 9, 11, 15, 16, 18, 25, 34, 59, 61, 65, 67, 72, 74,
    81, 85, 88, 90, 97, 108, 120, 128, 130, 132, 137, 144, 146, 153, 155, 159,
    169, 175, 189, 193, 199, 200, 202, 213, 248, 267, 287, 292, 303, 315, 317, 321,
    327, 346, 362, 413, 436, 456, 460, 462, 483, 497, 513, 515, 520, 522, 529, 531,
    536, 538, 540, 551, 552, 576, 578, 585, 592, 594, 641, 643, 648, 650, 657, 664,
    698, 704, 706, 720, 729, 742, 758, 769, 773, 808, 848, 852, 870, 889, 901, 978,
    992, 1024, 1026, 1033, 1035, 1040, 1042, 1046, 1049, 1058, 1089, 1091, 1093, 1096, 1098, 1105,
    1112, 1139, 1143, 1144, 1152, 1154, 1161, 1167, 1168, 1170, 1183, 1184, 1197, 1217, 1224, 1228,
    1272, 1276, 1309, 1323, 1347, 1367, 1377, 1404, 1473, 1475, 1486, 1509, 1537, 1544, 1546, 1553,
    1555, 1576, 1589, 1594, 1600, 1602, 1616, 1625, 1636, 1638, 1665, 1667, 1672, 1685, 1706, 1722,
    1737, 1755, 1816, 1831, 1850, 1856, 1862, 1874, 1901, 1932, 1950, 1971, 2011, 2032, 2052, 2063,
    2077, 2079, 2091, 2095, 2172, 2192, 2207, 2208, 2224, 2230, 2247, 2277, 2308, 2345, 2356, 2389,
    2403, 2424, 2501, 2504, 2506, 2520, 2570, 2593, 2616, 2624, 2630, 2646, 2669, 2700, 2714, 2746,
    2754, 2795, 2824, 2835, 2839, 2874, 2882, 2905, 2984, 3028, 3042, 3092, 3108, 3110, 3124, 3153,
    3185, 3215, 3252, 3288, 3294, 3364, 3397, 3434, 3483, 3523, 3537, 3587, 3589, 3591, 3592, 3610,
    3626, 3670, 3680, 3722, 3749, 3754, 3776, 3789, 3803, 3824, 3857, 3873, 3904, 3906, 3924, 3992,
];
/// ggml's `kgrid_512`: the IQ3_S grid.
#[rustfmt::skip]
pub(crate) const CODES_512: [u16; 512] = [
    0, 1, 2, 5, 7, 8, 9, 10, 12, 14, 16, 17, 21, 27, 32, 34,
    37, 39, 41, 43, 48, 50, 57, 60, 63, 64, 65, 66, 68, 72, 73, 77,
    80, 83, 87, 89, 93, 100, 113, 117, 122, 128, 129, 133, 135, 136, 139, 142,
    145, 149, 152, 156, 162, 165, 167, 169, 171, 184, 187, 195, 201, 205, 208, 210,
    217, 219, 222, 228, 232, 234, 247, 249, 253, 256, 267, 271, 273, 276, 282, 288,
    291, 297, 312, 322, 324, 336, 338, 342, 347, 353, 357, 359, 374, 379, 390, 393,
    395, 409, 426, 441, 448, 450, 452, 464, 466, 470, 475, 488, 492, 512, 513, 514,
    516, 520, 521, 523, 525, 527, 528, 530, 537, 540, 542, 556, 558, 561, 570, 576,
    577, 579, 582, 584, 588, 593, 600, 603, 609, 616, 618, 632, 638, 640, 650, 653,
    655, 656, 660, 666, 672, 675, 685, 688, 698, 705, 708, 711, 712, 715, 721, 727,
    728, 732, 737, 754, 760, 771, 773, 778, 780, 793, 795, 802, 806, 808, 812, 833,
    840, 843, 849, 856, 858, 873, 912, 916, 919, 932, 934, 961, 963, 968, 970, 977,
    989, 993, 1010, 1016, 1024, 1025, 1027, 1029, 1031, 1032, 1034, 1036, 1038, 1041, 1043, 1047,
    1048, 1050, 1057, 1059, 1061, 1064, 1066, 1079, 1080, 1083, 1085, 1088, 1090, 1096, 1099, 1103,
    1106, 1109, 1113, 1116, 1122, 1129, 1153, 1156, 1159, 1169, 1171, 1176, 1183, 1185, 1195, 1199,
    1209, 1212, 1216, 1218, 1221, 1225, 1234, 1236, 1241, 1243, 1250, 1256, 1270, 1281, 1287, 1296,
    1299, 1306, 1309, 1313, 1338, 1341, 1348, 1353, 1362, 1375, 1376, 1387, 1400, 1408, 1410, 1415,
    1425, 1453, 1457, 1477, 1481, 1494, 1496, 1507, 1512, 1538, 1545, 1547, 1549, 1551, 1554, 1561,
    1563, 1565, 1570, 1572, 1575, 1577, 1587, 1593, 1601, 1603, 1605, 1612, 1617, 1619, 1632, 1648,
    1658, 1662, 1664, 1674, 1680, 1690, 1692, 1704, 1729, 1736, 1740, 1745, 1747, 1751, 1752, 1761,
    1763, 1767, 1773, 1787, 1795, 1801, 1806, 1810, 1817, 1834, 1840, 1844, 1857, 1864, 1866, 1877,
    1882, 1892, 1902, 1915, 1934, 1953, 1985, 1987, 2000, 2002, 2013, 2048, 2052, 2058, 2064, 2068,
    2071, 2074, 2081, 2088, 2104, 2114, 2119, 2121, 2123, 2130, 2136, 2141, 2147, 2153, 2157, 2177,
    2179, 2184, 2189, 2193, 2203, 2208, 2223, 2226, 2232, 2244, 2249, 2251, 2256, 2258, 2265, 2269,
    2304, 2306, 2324, 2335, 2336, 2361, 2373, 2375, 2385, 2418, 2443, 2460, 2480, 2504, 2509, 2520,
    2531, 2537, 2562, 2568, 2572, 2578, 2592, 2596, 2599, 2602, 2614, 2620, 2625, 2627, 2629, 2634,
    2641, 2650, 2682, 2688, 2697, 2707, 2712, 2718, 2731, 2754, 2759, 2760, 2775, 2788, 2793, 2805,
    2811, 2817, 2820, 2832, 2842, 2854, 2890, 2902, 2921, 2923, 2978, 3010, 3012, 3026, 3081, 3083,
    3085, 3097, 3099, 3120, 3136, 3152, 3159, 3188, 3210, 3228, 3234, 3245, 3250, 3256, 3264, 3276,
    3281, 3296, 3349, 3363, 3378, 3392, 3395, 3420, 3440, 3461, 3488, 3529, 3531, 3584, 3588, 3591,
    3600, 3602, 3614, 3616, 3628, 3634, 3650, 3657, 3668, 3683, 3685, 3713, 3716, 3720, 3726, 3729,
    3736, 3753, 3778, 3802, 3805, 3819, 3841, 3845, 3851, 3856, 3880, 3922, 3938, 3970, 3993, 4032,
];

/// Level of each 3-bit coordinate in ggml's dequantize table `iq3xxs_grid`: `4 (2l + 1)`
/// except the top one, which ggml stretches from 60 to 62.
const XXS_LEVELS: [u8; 8] = [4, 12, 20, 28, 36, 44, 52, 62];

const fn build_grid<const N: usize>(codes: &[u16; N], levels: &[u8; 8]) -> [u32; N] {
    let mut g = [0u32; N];
    let mut k = 0;
    while k < N {
        let mut i = 0;
        while i < 4 {
            g[k] |= (levels[((codes[k] >> (3 * i)) & 7) as usize] as u32) << (8 * i);
            i += 1;
        }
        k += 1;
    }
    g
}

/// ggml's `iq3xxs_grid`: four unsigned byte magnitudes per entry.
pub static XXS_GRID: [u32; 256] = build_grid(&CODES_256, &XXS_LEVELS);
/// ggml's `iq3s_grid`: magnitudes `2l + 1`.
pub static S_GRID: [u32; 512] = build_grid(&CODES_512, &[1, 3, 5, 7, 9, 11, 13, 15]);

/// ggml's `ksigns_iq2xs`: 7 stored sign bits plus an eighth that makes the count even.
pub static KSIGNS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = (i as u8) | ((((i as u32).count_ones() & 1) as u8) << 7);
        i += 1;
    }
    t
};

/// The quantizer's view of one grid: for every 4-tuple of levels (12-bit key) either
/// its grid index or the candidates ggml's search tries instead.
pub struct Lattice {
    /// `map[u] >= 0`: grid index of key `u`; otherwise `-(offset + 1)` into `neighbours`.
    map: Vec<i32>,
    /// At each offset: a count, then that many grid indices, nearest first (ties by index).
    neighbours: Vec<u16>,
    /// Per grid index: the values `2l + 1` of its coordinates, as floats.
    pub q: Vec<[f32; 4]>,
    /// Per grid index: the levels `l`.
    pub l: Vec<[i8; 4]>,
}

impl Lattice {
    /// ggml's `iq3xs_init_impl`. Candidates of an off-grid key are every grid point
    /// whose squared distance is among the `nwant` smallest distinct distances.
    fn build(codes: &[u16], nwant: usize) -> Lattice {
        let n = codes.len();
        let mut map = vec![-1i32; 4096];
        let l: Vec<[i8; 4]> = codes.iter().map(|&c| std::array::from_fn(|i| ((c >> (3 * i)) & 7) as i8)).collect();
        let q: Vec<[f32; 4]> = l.iter().map(|p| p.map(|v| (2 * v + 1) as f32)).collect();
        for (k, &c) in codes.iter().enumerate() {
            map[c as usize] = k as i32;
        }
        let mut neighbours = Vec::with_capacity(4096 * 12);
        let mut d2 = vec![0u16; n];
        for u in 0..4096usize {
            if map[u] >= 0 {
                continue;
            }
            // Distances between odd values 2l+1 are twice those between levels; the
            // factor 4 on squared distances keeps the order.
            let pos: [i32; 4] = std::array::from_fn(|i| ((u >> (3 * i)) & 7) as i32);
            for (d, p) in d2.iter_mut().zip(&l) {
                *d = (0..4).map(|i| (p[i] as i32 - pos[i]).pow(2)).sum::<i32>() as u16;
            }
            map[u] = -(neighbours.len() as i32 + 1);
            let start = neighbours.len();
            neighbours.push(0);
            let mut below = 0u16;
            let mut first = true;
            for _ in 0..nwant {
                // the next distinct distance above the ones taken
                let Some(next) = d2.iter().copied().filter(|&d| first || d > below).min() else { break };
                first = false;
                below = next;
                neighbours.extend((0..n as u16).filter(|&j| d2[j as usize] == next));
            }
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        Lattice { map, neighbours, q, l }
    }

    /// Grid index of key `u`, or Err(candidates) when `u` is off the grid.
    #[inline(always)]
    pub fn lookup(&self, u: usize) -> Result<usize, &[u16]> {
        let m = self.map[u];
        if m >= 0 {
            Ok(m as usize)
        } else {
            let at = (-m - 1) as usize;
            let cnt = self.neighbours[at] as usize;
            Err(&self.neighbours[at + 1..at + 1 + cnt])
        }
    }

    /// ggml's `iq3_find_best_neighbour`: the candidate with the least weighted squared
    /// error at `scale` (first one on ties).
    #[inline]
    pub fn best_neighbour(&self, cands: &[u16], xval: &[f32], w: &[f32], scale: f32) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = cands[0] as usize;
        for &c in cands {
            let pg = &self.q[c as usize];
            let mut d2 = 0.0f32;
            for i in 0..4 {
                let diff = scale * pg[i] - xval[i];
                d2 += w[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = c as usize;
            }
        }
        best
    }
}

/// The lattice of IQ3_XXS (`nwant` 2) and of IQ3_S (`nwant` 3), built on first use.
pub fn lattice(grid_size: usize) -> &'static Lattice {
    static XXS: OnceLock<Lattice> = OnceLock::new();
    static S: OnceLock<Lattice> = OnceLock::new();
    if grid_size == 256 {
        XXS.get_or_init(|| Lattice::build(&CODES_256, 2))
    } else {
        S.get_or_init(|| Lattice::build(&CODES_512, 3))
    }
}

/// What differs between ggml's two quantizers of this family.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `quantize_row_iq3_xxs_impl`: 7 stored sign bits per 8 (even parity enforced),
    /// scale trials -15..=15.
    Xxs,
    /// `quantize_row_iq3_s_impl`: 8 sign bits, trials -9..=9, 9-bit grid indices.
    S,
}

/// One sub-block of 32 quantized: grid indices of its 8 groups, the sign bytes (7 or 8
/// bits each) and the scale (0 for a skipped sub-block).
pub struct SubBlock {
    pub grid: [u16; 8],
    pub signs: [u8; 4],
    pub scale: f32,
    /// False when ggml leaves the sub-block untouched (all magnitudes too small).
    pub written: bool,
}

/// The weights of each value of a super-block: importance times a floor set by the
/// super-block's spread, or the square without an importance matrix.
pub fn weights(xbl: &[f32], qw: Option<&[f32]>, weight: &mut [f32; 256]) {
    let mut sumx2 = 0.0f32;
    for &v in xbl {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / 256.0;
    match qw {
        Some(qw) => {
            for i in 0..256 {
                weight[i] = qw[i] * (sigma2 + xbl[i] * xbl[i]).sqrt();
            }
        }
        None => {
            for i in 0..256 {
                weight[i] = xbl[i] * xbl[i];
            }
        }
    }
}

/// A sub-block's inputs to the scale search: magnitudes (with IQ3_XXS's parity flip
/// applied), neighbour-search weights and the largest magnitude.
pub struct Prepared {
    pub xval: [f32; 32],
    pub waux: [f32; 32],
    pub max: f32,
    pub signs: [u8; 4],
}

/// Trials each side of the starting scale.
pub fn ntry(v: Variant) -> i32 {
    if v == Variant::Xxs {
        15
    } else {
        9
    }
}

/// The part of ggml's sub-block loop before the scale search; None (with the sign
/// bytes) when ggml skips the sub-block.
pub fn prepare(v: Variant, xb: &[f32], weight: &[f32]) -> Result<Prepared, [u8; 4]> {
    let mut p = Prepared { xval: [0.0; 32], waux: [0.0; 32], max: 0.0, signs: [0; 4] };
    for i in 0..32 {
        p.waux[i] = weight[i].sqrt();
    }
    for k in 0..4 {
        let mut s = 0u8;
        let mut nflip = 0;
        for i in 0..8 {
            let x = xb[8 * k + i];
            if x >= 0.0 {
                p.xval[8 * k + i] = x;
            } else {
                p.xval[8 * k + i] = -x;
                nflip += 1;
                s |= 1 << i;
            }
        }
        if v == Variant::Xxs && nflip % 2 == 1 {
            // an odd count cannot be stored: flip the least important value instead
            let mut imin = 0;
            let mut min = weight[8 * k] * xb[8 * k] * xb[8 * k];
            for i in 1..8 {
                let ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                if ax < min {
                    min = ax;
                    imin = i;
                }
            }
            p.xval[8 * k + imin] = -p.xval[8 * k + imin];
            s ^= 1 << imin;
        }
        p.signs[k] = if v == Variant::Xxs { s & 127 } else { s };
    }
    let mut max = p.xval[0];
    for &x in &p.xval[1..] {
        max = if max > x { max } else { x };
    }
    p.max = max;
    let skip = match v {
        Variant::Xxs => max < 1e-8,
        Variant::S => max == 0.0,
    };
    if skip {
        Err(p.signs)
    } else {
        Ok(p)
    }
}

/// Levels of the 4 values of group `k` at inverse scale `id`, and their key.
#[inline(always)]
pub fn round_group(xval: &[f32], k: usize, id: f32, l: &mut [i8]) -> usize {
    let mut u = 0usize;
    for i in 0..4 {
        let li = nearest_int(0.5 * (id * xval[4 * k + i] - 1.0)).clamp(0, 7);
        l[i] = li as i8;
        u |= (li as usize) << (3 * i);
    }
    u
}

/// Outcome of the scale search: levels, which groups were on the grid, and the scale.
pub struct Search {
    pub l: [i8; 32],
    pub on_grid: [bool; 8],
    pub scale: f32,
}

/// ggml's trial loop over `ntry` scale perturbations, one trial at a time.
pub fn search(v: Variant, lat: &Lattice, p: &Prepared, weight: &[f32]) -> Search {
    let xval = &p.xval;
    let mut out = Search { l: [0; 32], on_grid: [v == Variant::Xxs; 8], scale: p.max / 15.0 };
    let mut laux = [0i8; 32];
    let mut on_grid_aux = [false; 8];
    let mut best = 0.0f32;
    let n = ntry(v);
    for is in -n..=n {
        let id = (15.0 + is as f32 * 0.2f32) / p.max;
        let this_scale = 1.0 / id;
        for k in 0..8 {
            let u = round_group(xval, k, id, &mut laux[4 * k..4 * k + 4]);
            on_grid_aux[k] = true;
            if let Err(cands) = lat.lookup(u) {
                on_grid_aux[k] = false;
                let g = lat.best_neighbour(cands, &xval[4 * k..4 * k + 4], &p.waux[4 * k..4 * k + 4], this_scale);
                laux[4 * k..4 * k + 4].copy_from_slice(&lat.l[g]);
            }
        }
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for i in 0..32 {
            let w = weight[i];
            let q = (2 * laux[i] as i32 + 1) as f32;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            out.scale = sumqx / sumq2;
            best = out.scale * sumqx;
            out.l = laux;
            out.on_grid = on_grid_aux;
        }
    }
    out
}

/// One sub-block of ggml's scale search (the body of the `ib` loop), with `weight` the
/// sub-block's weights from [`weights`].
pub fn quantize_sub_block(v: Variant, lat: &Lattice, xb: &[f32], weight: &[f32]) -> SubBlock {
    match prepare(v, xb, weight) {
        Err(signs) => SubBlock { grid: [0; 8], signs, scale: 0.0, written: false },
        Ok(p) => {
            let s = search(v, lat, &p, weight);
            finish(v, lat, &p, weight, s)
        }
    }
}

/// After the search: re-round the off-grid groups at the best scale, refit it, pack.
pub fn finish(v: Variant, lat: &Lattice, p: &Prepared, weight: &[f32], s: Search) -> SubBlock {
    finish_with(v, lat, p, weight, s, |k, u, _levels, scale| match lat.lookup(u) {
        Ok(g) => lat.l[g],
        Err(c) => {
            let g = lat.best_neighbour(c, &p.xval[4 * k..4 * k + 4], &p.waux[4 * k..4 * k + 4], scale);
            lat.l[g]
        }
    })
}

/// [`finish`] with the grid step of a re-rounded group given: `snap(k, u, levels, scale)`
/// returns the levels of group `k` (rounded to `levels`, packed key `u`) on the grid.
#[inline(always)]
pub fn finish_with(
    v: Variant,
    lat: &Lattice,
    p: &Prepared,
    weight: &[f32],
    s: Search,
    mut snap: impl FnMut(usize, usize, [i8; 4], f32) -> [i8; 4],
) -> SubBlock {
    let xval = &p.xval;
    let Search { mut l, on_grid, mut scale } = s;
    let mut out = SubBlock { grid: [0; 8], signs: p.signs, scale: 0.0, written: false };
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..8 {
            // IQ3_S re-rounds every group, IQ3_XXS only the off-grid ones
            if v == Variant::Xxs && on_grid[k] {
                continue;
            }
            let mut tmp = [0i8; 4];
            let u = round_group(xval, k, id, &mut tmp);
            l[4 * k..4 * k + 4].copy_from_slice(&snap(k, u, tmp, scale));
        }
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for i in 0..32 {
            let w = weight[i];
            let q = (2 * l[i] as i32 + 1) as f32;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        // ggml's guard for a negative best scale: positive scale, inverted signs
        scale = -scale;
        for s in out.signs.iter_mut() {
            *s = if v == Variant::Xxs { !*s & 127 } else { !*s };
        }
    }
    for k in 0..8 {
        let mut u = 0usize;
        for i in 0..4 {
            u |= (l[4 * k + i] as usize) << (3 * i);
        }
        // every level tuple chosen above is a grid point by construction
        out.grid[k] = lat.lookup(u).expect("lattice point off the grid") as u16;
    }
    out.scale = scale;
    out.written = true;
    out
}

/// The f16 super-block scale and the inverse used to round sub-block scales, or None
/// when every sub-block scale is zero.
pub fn super_scale(scales: &[f32; 8], fudge: f32) -> Option<(u16, f32)> {
    let mut max_scale = 0.0f32;
    for &s in scales {
        max_scale = if max_scale > s { max_scale } else { s };
    }
    if max_scale == 0.0 {
        return None;
    }
    let d = max_scale / 31.0;
    Some((f32_to_f16(d * fudge), 1.0 / d))
}

/// The 4-bit code of a sub-block scale.
#[inline]
pub fn scale_code(id: f32, scale: f32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattices_build_fast_and_match_ggml_counts() {
        let t = std::time::Instant::now();
        let a = lattice(256);
        let b = lattice(512);
        assert!(t.elapsed().as_millis() < 50, "lattice set-up took {:?}", t.elapsed());
        for (lat, n) in [(a, 256usize), (b, 512)] {
            let on = (0..4096).filter(|&u| lat.lookup(u).is_ok()).count();
            assert_eq!(on, n);
            for u in 0..4096 {
                if let Err(c) = lat.lookup(u) {
                    assert!(!c.is_empty());
                }
            }
        }
    }

    #[test]
    fn ksigns_have_even_parity() {
        assert!(KSIGNS.iter().all(|s| s.count_ones() % 2 == 0));
        assert_eq!(XXS_GRID[0], 0x04040404);
        assert_eq!(XXS_GRID[5], 0x04040c3e);
        assert_eq!(S_GRID[1], 0x01010103);
    }
}
