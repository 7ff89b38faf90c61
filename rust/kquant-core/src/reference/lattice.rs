//! Lattice look-up tables shared by the grid-based i-quants (IQ2_XXS, IQ2_XS, IQ2_S,
//! IQ1_S, IQ1_M): ggml's `iq2xs_init_impl`, built in milliseconds.
//!
//! A grid is a list of points with 8 coordinates, each a 2-bit level `l` (ggml stores the
//! value `2*l + 1`). A point is packed into a `u16` with coordinate `k` in bits `2k..2k+2`
//! (the packing of ggml's `kgrid_*` tables and of the `u` the quantizers compute). The
//! quantizers round 8 values to levels in `0..=2`, pack them, and ask:
//!
//! - is that point on the grid? Then its grid index is used directly;
//! - if not, which grid points are its candidates? ggml's answer is the *neighbour list*:
//!   every grid point whose squared distance is among the `nwant` smallest distinct
//!   distances from the point, ordered by (distance, grid index). The quantizer then picks
//!   the first candidate with the strictly smallest weighted error, so this order decides
//!   ties and must be ggml's exactly.
//!
//! ggml sorts the distances to all grid points for each of the 43692 packed indices
//! (about 1.7 s for the four grids). Here only the points the quantizers can ask for are
//! built (every coordinate in `0..=MAX_LEVEL`, 3^8 = 6561 points) and the distances are
//! bucketed instead of sorted, which gives the same lists in a few milliseconds. Points
//! with a coordinate of 3 that are not on the grid have an empty neighbour list.
//!
//! Use one [`Lattice`] per grid, built once, e.g. in a `std::sync::OnceLock`:
//!
//! ```ignore
//! static L: OnceLock<Lattice> = OnceLock::new();
//! let lat = L.get_or_init(|| Lattice::new(&KGRID, 2));
//! match lat.lookup(u) {
//!     Lookup::OnGrid(j) => ...,
//!     Lookup::Near(candidates) => ..., // grid indices, in ggml's order
//! }
//! ```

/// Highest level the quantizers ask about (`kMaxQ - 1` in ggml).
pub const MAX_LEVEL: u8 = 2;
/// ggml's map size: one past the largest packed point with all levels <= 2 (0xAAAA).
pub const KMAP_SIZE: usize = 43692;

/// Where a packed point lies relative to the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The point is grid entry `.0`.
    OnGrid(u16),
    /// The point is off the grid; these are its candidate grid indices in ggml's order.
    Near(&'a [u16]),
}

/// A grid with ggml's map from packed points to grid indices or neighbour lists.
pub struct Lattice {
    /// Levels (0..=3) of each grid point's 8 coordinates.
    levels: Box<[[u8; 8]]>,
    /// Per packed point: `>= 0` a grid index; `< 0` the list at `-(v + 1)` in `neighbours`
    /// (`[count, index...]`, ggml's encoding).
    kmap: Box<[i32]>,
    neighbours: Box<[u16]>,
}

/// Packs 8 levels (each 0..=3) into ggml's 16-bit point index.
#[inline(always)]
pub fn pack(levels: &[u8; 8]) -> u16 {
    let mut u = 0u16;
    for (k, &l) in levels.iter().enumerate() {
        u |= (l as u16 & 3) << (2 * k);
    }
    u
}

/// The 8 levels of a packed point.
#[inline(always)]
pub fn unpack(u: u16) -> [u8; 8] {
    let mut l = [0u8; 8];
    for (k, v) in l.iter_mut().enumerate() {
        *v = ((u >> (2 * k)) & 3) as u8;
    }
    l
}

impl Lattice {
    /// Builds the map and neighbour lists of `kgrid` (ggml's `kgrid_*` table: packed
    /// points, at most 65535 of them, no duplicates), keeping for each off-grid point the
    /// grid points at its `nwant` smallest distinct distances (ggml: 2 for IQ2_XXS and
    /// IQ2_XS, 1 for IQ2_S, 3 for IQ1_S and IQ1_M).
    pub fn new(kgrid: &[u16], nwant: usize) -> Lattice {
        assert!(nwant >= 1 && !kgrid.is_empty() && kgrid.len() < u16::MAX as usize);
        let levels: Box<[[u8; 8]]> = kgrid.iter().map(|&u| unpack(u)).collect();
        let mut kmap = vec![-1i32; KMAP_SIZE].into_boxed_slice();
        for (j, &u) in kgrid.iter().enumerate() {
            if (u as usize) < KMAP_SIZE {
                kmap[u as usize] = j as i32;
            }
        }
        // Squared level distance between two 4-coordinate halves (bytes): the distance
        // of two points is the sum over their low and high halves. ggml's distances are
        // 4x these (values 2l+1), which orders the same.
        let mut half = vec![0u8; 256 * 256];
        for a in 0..256usize {
            for b in 0..256usize {
                let mut s = 0u8;
                for k in 0..4 {
                    let d = ((a >> (2 * k)) & 3) as i32 - ((b >> (2 * k)) & 3) as i32;
                    s += (d * d) as u8;
                }
                half[a * 256 + b] = s;
            }
        }
        let glo: Vec<u8> = kgrid.iter().map(|&u| u as u8).collect();
        let ghi: Vec<u8> = kgrid.iter().map(|&u| (u >> 8) as u8).collect();

        // offset 0 holds an empty list for the points the quantizers never ask about
        let mut neighbours: Vec<u16> = vec![0];
        let mut dist = vec![0u8; kgrid.len()];
        const NBUCKET: usize = 8 * 9 + 1;
        for u in 0..KMAP_SIZE {
            if kmap[u] >= 0 {
                continue;
            }
            if unpack(u as u16).iter().any(|&l| l > MAX_LEVEL) {
                kmap[u] = -1;
                continue;
            }
            let rlo = &half[(u & 0xff) * 256..][..256];
            let rhi = &half[(u >> 8) * 256..][..256];
            let mut count = [0u32; NBUCKET];
            for ((d, &a), &b) in dist.iter_mut().zip(&glo).zip(&ghi) {
                let v = rlo[a as usize] + rhi[b as usize];
                *d = v;
                count[v as usize] += 1;
            }
            // the nwant smallest distinct distances present, then their members by index
            let mut limit = 0usize;
            let mut have = 0usize;
            for (v, &c) in count.iter().enumerate() {
                if c > 0 {
                    limit = v;
                    have += 1;
                    if have == nwant {
                        break;
                    }
                }
            }
            let start = neighbours.len();
            kmap[u] = -(start as i32 + 1);
            neighbours.push(0);
            for v in 0..=limit {
                if count[v] == 0 {
                    continue;
                }
                for (j, &d) in dist.iter().enumerate() {
                    if d as usize == v {
                        neighbours.push(j as u16);
                    }
                }
            }
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        Lattice { levels, kmap, neighbours: neighbours.into_boxed_slice() }
    }

    /// Number of grid points.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The levels of grid point `j`.
    #[inline(always)]
    pub fn levels(&self, j: usize) -> &[u8; 8] {
        &self.levels[j]
    }

    /// All grid points' levels, by grid index.
    pub fn all_levels(&self) -> &[[u8; 8]] {
        &self.levels
    }

    /// Grid index of packed point `u`, or its candidate list when off the grid.
    /// Points outside ggml's map (`u >= KMAP_SIZE`) and points with a level 3 that are not
    /// on the grid give an empty list.
    #[inline(always)]
    pub fn lookup(&self, u: u16) -> Lookup<'_> {
        let v = self.kmap.get(u as usize).copied().unwrap_or(-1);
        if v >= 0 {
            Lookup::OnGrid(v as u16)
        } else {
            let at = (-(v + 1)) as usize;
            let n = self.neighbours[at] as usize;
            Lookup::Near(&self.neighbours[at + 1..at + 1 + n])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's construction, literally: all distances, sorted by (distance, index).
    fn slow_list(kgrid: &[u16], nwant: usize, u: u16) -> Vec<u16> {
        let p = unpack(u);
        let mut d: Vec<(i32, usize)> = kgrid
            .iter()
            .enumerate()
            .map(|(j, &g)| {
                let q = unpack(g);
                let s = (0..8).map(|k| {
                    let e = 2 * q[k] as i32 - 2 * p[k] as i32;
                    e * e
                });
                (s.sum(), j)
            })
            .collect();
        d.sort();
        let mut out = vec![];
        let mut have = 1;
        let mut cur = d[0].0;
        for &(dd, j) in &d {
            if dd > cur {
                if have == nwant {
                    break;
                }
                cur = dd;
                have += 1;
            }
            out.push(j as u16);
        }
        out
    }

    #[test]
    fn lists_match_a_full_sort() {
        // a small irregular grid with ties at every distance
        let kgrid: Vec<u16> = (0..6561u32)
            .map(|i| {
                let mut l = [0u8; 8];
                let mut v = i;
                for x in l.iter_mut() {
                    *x = (v % 3) as u8;
                    v /= 3;
                }
                pack(&l)
            })
            .filter(|&u| u.wrapping_mul(40503) % 7 == 0)
            .collect();
        for nwant in 1..=3 {
            let lat = Lattice::new(&kgrid, nwant);
            for u in (0..KMAP_SIZE as u16).step_by(7) {
                let l = unpack(u);
                match lat.lookup(u) {
                    Lookup::OnGrid(j) => assert_eq!(kgrid[j as usize], u),
                    Lookup::Near(c) if l.iter().any(|&v| v > MAX_LEVEL) => assert!(c.is_empty()),
                    Lookup::Near(c) => {
                        assert!(!kgrid.contains(&u));
                        assert_eq!(c, &slow_list(&kgrid, nwant, u)[..], "u={u} nwant={nwant}");
                    }
                }
            }
        }
    }
}
