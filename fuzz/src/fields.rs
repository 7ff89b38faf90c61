//! Where the counts, lengths, type ids, dimensions and offsets of a GGUF or legacy imatrix
//! file sit. The walker follows the layout for as long as the bytes allow and stops
//! quietly at the first thing that makes no sense: the mutator only needs positions, and a
//! half-broken input (the usual case mid-fuzzing) should still yield the fields before the
//! breakage.

/// What a field means, which decides the values worth writing into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Version,
    TensorCount,
    KvCount,
    KeyLen,
    ValueType,
    ElemType,
    ArrayLen,
    StrLen,
    Scalar,
    Bool,
    NameLen,
    NDims,
    Dim,
    TensorType,
    TensorOffset,
    LegacyCount,
    LegacyLen,
    LegacyNcall,
    LegacyNval,
    LegacyChunks,
}

#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub at: usize,
    pub width: usize,
    pub kind: Kind,
}

/// The walk runs once per mutation, so it is cut short on inputs that declare (or really
/// hold) many entries; fields past the cut are still reached by the generic mutations.
const MAX_FIELDS: usize = 4096;

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
    out: Vec<Field>,
}

impl Walker<'_> {
    fn field(&mut self, width: usize, kind: Kind) -> Option<u64> {
        if self.out.len() >= MAX_FIELDS || self.b.len() - self.pos < width {
            return None;
        }
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(&self.b[self.pos..self.pos + width]);
        self.out.push(Field { at: self.pos, width, kind });
        self.pos += width;
        Some(u64::from_le_bytes(v))
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        if n > self.b.len() - self.pos {
            return None;
        }
        self.pos += n;
        Some(())
    }
}

/// Fields of a GGUF file (empty unless it starts with the magic).
pub fn gguf(b: &[u8]) -> Vec<Field> {
    let mut w = Walker { b, pos: 0, out: Vec::new() };
    let _ = walk_gguf(&mut w);
    w.out
}

fn walk_gguf(w: &mut Walker<'_>) -> Option<()> {
    if !w.b.starts_with(b"GGUF") {
        return None;
    }
    w.pos = 4;
    w.field(4, Kind::Version)?;
    let n_tensors = w.field(8, Kind::TensorCount)?;
    let n_kv = w.field(8, Kind::KvCount)?;
    for _ in 0..n_kv {
        let len = w.field(8, Kind::KeyLen)?;
        w.skip(len)?;
        let ty = w.field(4, Kind::ValueType)?;
        gguf_value(w, ty)?;
    }
    for _ in 0..n_tensors {
        let len = w.field(8, Kind::NameLen)?;
        w.skip(len)?;
        let n_dims = w.field(4, Kind::NDims)?;
        if n_dims > 4 {
            return None;
        }
        for _ in 0..n_dims {
            w.field(8, Kind::Dim)?;
        }
        w.field(4, Kind::TensorType)?;
        w.field(8, Kind::TensorOffset)?;
    }
    Some(())
}

/// Size of a fixed-size GGUF value type.
fn fixed_size(ty: u64) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn gguf_value(w: &mut Walker<'_>, ty: u64) -> Option<()> {
    match ty {
        7 => w.field(1, Kind::Bool).map(drop),
        8 => {
            let len = w.field(8, Kind::StrLen)?;
            w.skip(len)
        }
        9 => {
            let elem = w.field(4, Kind::ElemType)?;
            let n = w.field(8, Kind::ArrayLen)?;
            if elem == 8 {
                for _ in 0..n {
                    let len = w.field(8, Kind::StrLen)?;
                    w.skip(len)?;
                }
                Some(())
            } else {
                w.skip(n.checked_mul(fixed_size(elem)?)?)
            }
        }
        _ => {
            let width = fixed_size(ty)?;
            w.field(width as usize, Kind::Scalar).map(drop)
        }
    }
}

/// Fields of a legacy `.dat` imatrix file (i32 counts and lengths throughout).
pub fn legacy(b: &[u8]) -> Vec<Field> {
    let mut w = Walker { b, pos: 0, out: Vec::new() };
    let _ = walk_legacy(&mut w);
    w.out
}

fn walk_legacy(w: &mut Walker<'_>) -> Option<()> {
    let i32_of = |v: u64| v as u32 as i32;
    let n = i32_of(w.field(4, Kind::LegacyCount)?);
    for _ in 0..n.max(0) {
        let len = i32_of(w.field(4, Kind::LegacyLen)?);
        w.skip(u64::try_from(len).ok()?)?;
        w.field(4, Kind::LegacyNcall)?;
        let nval = i32_of(w.field(4, Kind::LegacyNval)?);
        w.skip(u64::try_from(nval).ok()?.checked_mul(4)?)?;
    }
    if w.pos < w.b.len() {
        w.field(4, Kind::LegacyChunks)?;
        let len = i32_of(w.field(4, Kind::LegacyLen)?);
        w.skip(u64::try_from(len).ok()?)?;
    }
    Some(())
}
