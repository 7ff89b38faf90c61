//! The IQ2 neighbour lists laid out for eight-lane searches (used by the SIMD IQ2
//! quantizers). ggml's `iq2_find_best_neighbour` sums a weighted squared error over 8
//! coordinates for every candidate of a list, in list order; the SIMD search runs 8
//! candidates side by side, one per lane, each lane summing its 8 coordinates in the
//! reference's order. For that the lists are stored in chunks of 8 candidates with
//! the candidates' levels coordinate-major (`levels[chunk][coordinate][lane]`), and a
//! list whose length is not a multiple of 8 is padded with copies of its first
//! candidate: a copy ties the first one and comes later, so it never wins.

use crate::reference::iq2;
use crate::reference::lattice::{Lattice, Lookup, KMAP_SIZE};
use std::sync::OnceLock;

pub(crate) struct Soa {
    /// Per packed point: start of its list in `codes` (a multiple of 8); unused for
    /// points on the grid.
    start: Box<[u32]>,
    /// Per packed point: list length, 0 for a point on the grid.
    count: Box<[u16]>,
    /// Candidate levels, 64 bytes per chunk of 8 candidates.
    levels: Box<[u8]>,
    /// Candidate points (packed levels), padded like `levels`.
    codes: Box<[u16]>,
}

/// A list of candidates in SoA form.
pub(crate) struct List<'a> {
    pub n: usize,
    /// `8 * ceil(n / 8)` candidates' levels, coordinate-major per chunk.
    pub levels: &'a [u8],
    pub codes: &'a [u16],
}

impl Soa {
    fn new(lat: &Lattice) -> Soa {
        let mut start = vec![0u32; KMAP_SIZE].into_boxed_slice();
        let mut count = vec![0u16; KMAP_SIZE].into_boxed_slice();
        let mut levels = Vec::new();
        let mut codes = Vec::new();
        for u in 0..KMAP_SIZE {
            let Lookup::Near(c) = lat.lookup(u as u16) else { continue };
            if c.is_empty() {
                continue;
            }
            start[u] = codes.len() as u32;
            count[u] = c.len() as u16;
            for chunk in 0..c.len().div_ceil(8) {
                let pick = |j: usize| c.get(8 * chunk + j).copied().unwrap_or(c[0]) as usize;
                for i in 0..8 {
                    for j in 0..8 {
                        // coordinates 4..8 index the upper half of `level_tables`
                        levels.push(lat.levels(pick(j))[i] + if i >= 4 { 4 } else { 0 });
                    }
                }
                for j in 0..8 {
                    codes.push(super::super::reference::lattice::pack(lat.levels(pick(j))));
                }
            }
        }
        Soa { start, count, levels: levels.into_boxed_slice(), codes: codes.into_boxed_slice() }
    }

    /// The candidates of packed point `u`, or None when it is on the grid (or a point
    /// the quantizers never produce).
    #[inline(always)]
    pub fn list(&self, u: u16) -> Option<List<'_>> {
        let n = *self.count.get(u as usize)? as usize;
        if n == 0 {
            return None;
        }
        let s = self.start[u as usize] as usize;
        let padded = n.div_ceil(8) * 8;
        Some(List { n, levels: &self.levels[8 * s..8 * (s + padded)], codes: &self.codes[s..s + padded] })
    }
}

static XXS: OnceLock<Soa> = OnceLock::new();
static XS: OnceLock<Soa> = OnceLock::new();
static S: OnceLock<Soa> = OnceLock::new();

pub(crate) fn soa_xxs() -> &'static Soa {
    XXS.get_or_init(|| Soa::new(iq2::lattice_xxs()))
}
pub(crate) fn soa_xs() -> &'static Soa {
    XS.get_or_init(|| Soa::new(iq2::lattice_xs()))
}
pub(crate) fn soa_s() -> &'static Soa {
    S.get_or_init(|| Soa::new(iq2::lattice_s()))
}

static IQ1: OnceLock<Soa> = OnceLock::new();

/// The IQ1_S / IQ1_M grid's lists.
#[allow(dead_code)] // not every ISA's quantizers use it
pub(crate) fn soa_iq1() -> &'static Soa {
    IQ1.get_or_init(|| Soa::new(crate::reference::iq1::lattice()))
}
