//! A structure-aware mutator. libFuzzer's own mutations rarely turn a u64 length into
//! exactly 2^63 or a tensor offset into one that overlaps its neighbour, yet those are the
//! values that broke other GGUF parsers; so most mutations here pick a field the walker in
//! [`crate::fields`] located and write a boundary value into it, or cut, grow or shrink the
//! file right at a field. The rest are left to libFuzzer, which also splices inputs.

use crate::fields::{self, Field, Kind};

/// splitmix64: deterministic per libFuzzer seed, as the mutator contract requires.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// Values at the edges of every check a reader makes: zero, signed/unsigned and 32/64-bit
/// wrap points, ggml's 2^30 caps, the 63- and 127-byte name and 65535-byte key limits.
const BOUNDARY: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    0x3f,
    0x40,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x10_0000,
    0x100_0000,
    0x3fff_ffff,
    0x4000_0000,
    0x4000_0001,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    0x3fff_ffff_ffff_ffff,
    0x4000_0000_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x8000_0000_0000_0001,
    0xffff_ffff_ffff_fffe,
    0xffff_ffff_ffff_ffff,
];

fn read(data: &[u8], f: Field) -> u64 {
    let mut v = [0u8; 8];
    v[..f.width].copy_from_slice(&data[f.at..f.at + f.width]);
    u64::from_le_bytes(v)
}

fn write(data: &mut [u8], at: usize, width: usize, v: u64) {
    data[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A value for field `f` of an input of `size` bytes: often one only meaningful for its
/// kind, otherwise a general boundary or a small step away from the current value.
fn value_for(rng: &mut Rng, f: Field, cur: u64, size: usize) -> u64 {
    let remaining = (size - f.at - f.width) as u64;
    let specific = match f.kind {
        Kind::Version => Some(rng.pick(&[1, 2, 3, 4, 0x0200_0000, 0x0300_0000, 0x0001_0000])),
        // Ids just past the last valid one, and removed ggml tensor types (4, 5, 31-33).
        Kind::ValueType | Kind::ElemType => Some(rng.below(15) as u64),
        Kind::TensorType => Some(rng.below(45) as u64),
        Kind::NDims => Some(rng.below(11) as u64),
        Kind::KeyLen => Some(rng.pick(&[65534, 65535, 65536, 0, remaining, remaining + 1])),
        Kind::NameLen => Some(rng.pick(&[62, 63, 64, 126, 127, 128, 0, remaining, remaining + 1])),
        Kind::StrLen | Kind::ArrayLen => Some(rng.pick(&[remaining, remaining + 1, remaining / 8, remaining / 4])),
        Kind::Dim => Some(rng.pick(&[0, 1, 31, 32, 33, 255, 256, 257, 1 << 31, 1 << 32, 1 << 62, 1 << 63])),
        Kind::TensorOffset => Some(rng.pick(&[0, 1, 16, 31, 32, 64, 4096, remaining]).wrapping_add(cur & !31)),
        Kind::Bool => Some(rng.pick(&[0, 1, 2, 0x80, 0xff])),
        // Alignment values among the u32 scalars.
        Kind::Scalar => Some(rng.pick(&[0, 1, 3, 8, 16, 24, 48, 64, 1 << 24, 1 << 25, 1 << 31])),
        Kind::LegacyCount | Kind::LegacyNval => Some(rng.pick(&[remaining / 4, remaining / 16, remaining / 4 + 1])),
        Kind::LegacyLen => Some(rng.pick(&[remaining, remaining + 1])),
        Kind::LegacyNcall | Kind::LegacyChunks => None,
        Kind::TensorCount | Kind::KvCount => Some(rng.pick(&[remaining / 14, remaining / 32, remaining / 14 + 1])),
    };
    match rng.below(4) {
        0 if specific.is_some() => specific.unwrap(),
        0 | 1 => {
            let b = rng.pick(BOUNDARY);
            // For 32-bit fields also try values just below and at the i32 wrap.
            if rng.below(4) == 0 {
                b.wrapping_neg()
            } else {
                b
            }
        }
        2 => match rng.below(6) {
            0 => cur.wrapping_add(1),
            1 => cur.wrapping_sub(1),
            2 => cur.wrapping_mul(2),
            3 => cur / 2,
            4 => cur.swap_bytes() >> (64 - 8 * f.width as u32),
            _ => cur.wrapping_add(rng.below(64) as u64),
        },
        _ => specific.unwrap_or_else(|| rng.pick(BOUNDARY)),
    }
}

/// Mutates `data[..size]` in place and returns the new size (at most `max_size`;
/// `data.len()` is at least both). `fallback` is libFuzzer's default mutator.
pub fn mutate(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    fallback: fn(&mut [u8], usize, usize) -> usize,
) -> usize {
    let mut rng = Rng::new(u64::from(seed));
    if size < 8 || rng.below(4) == 0 {
        return fallback(data, size, max_size);
    }
    let input = &data[..size];
    let found = if input.starts_with(b"GGUF") { fields::gguf(input) } else { fields::legacy(input) };
    if found.is_empty() || rng.below(8) == 0 {
        return generic(&mut rng, data, size, max_size);
    }
    let f = rng.pick(&found);
    match rng.below(10) {
        0..=5 => {
            let cur = read(data, f);
            let v = value_for(&mut rng, f, cur, size);
            write(data, f.at, f.width, v);
            size
        }
        // Cut inside or right after a field: the reader must stop cleanly mid-header.
        6 => (f.at + rng.below(f.width + 1)).min(max_size),
        // Swap two fields of one width: offsets out of order, types moved to counts.
        7 => {
            let g = rng.pick(&found);
            if g.width == f.width {
                let (a, b) = (read(data, f), read(data, g));
                write(data, f.at, f.width, b);
                write(data, g.at, g.width, a);
            }
            size
        }
        // Delete bytes at a field: everything after it shifts and is misread.
        8 => {
            let k = 1 + rng.below(16.min(size - f.at));
            data.copy_within(f.at + k..size, f.at);
            size - k
        }
        // Insert bytes (zeros or 0xff) at a field.
        _ => {
            let room = max_size.min(data.len()).saturating_sub(size);
            if room == 0 {
                return size;
            }
            let k = 1 + rng.below(16.min(room));
            data.copy_within(f.at..size, f.at + k);
            let fill = if rng.below(2) == 0 { 0 } else { 0xff };
            data[f.at..f.at + k].fill(fill);
            size + k
        }
    }
}

/// A boundary value of 1, 2, 4 or 8 bytes at any offset, or a truncation anywhere.
fn generic(rng: &mut Rng, data: &mut [u8], size: usize, max_size: usize) -> usize {
    if rng.below(4) == 0 {
        return rng.below(size + 1).min(max_size);
    }
    let width = rng.pick(&[1usize, 2, 4, 8]);
    if size < width {
        return size;
    }
    let at = rng.below(size - width + 1);
    let v = rng.pick(BOUNDARY);
    write(data, at, width, v);
    size
}
