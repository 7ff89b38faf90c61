//! Validated row-oriented operations over many rows. Single threaded and
//! thread-free on purpose: callers split rows across threads, and the aarch64 checks
//! run under qemu where extra threads hang.

use crate::error::{Error, Result};
use crate::reference::{self, Kernels};
use crate::types::QuantType;

fn kernels(t: QuantType) -> Result<&'static Kernels> {
    crate::dispatch::kernels(t)
}

/// Geometry of a batch of rows, checked once.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub qtype: QuantType,
    pub n_per_row: usize,
    pub row_bytes: usize,
    pub nrows: usize,
}

impl Rows {
    /// Rows of `n_per_row` values; an error when it is not a whole number of blocks.
    pub fn new(qtype: QuantType, n_per_row: usize, nrows: usize) -> Result<Self> {
        let row_bytes = qtype.row_size(n_per_row)?;
        Ok(Rows { qtype, n_per_row, row_bytes, nrows })
    }

    /// Rows of `row_bytes` bytes; an error when it is not a whole number of blocks.
    pub fn from_bytes(qtype: QuantType, row_bytes: usize, nrows: usize) -> Result<Self> {
        let ts = qtype.type_size();
        if row_bytes % ts != 0 {
            return Err(Error::invalid(format!(
                "row of {row_bytes} bytes is not a multiple of the {} block size of {ts} bytes",
                qtype.name()
            )));
        }
        Ok(Rows { qtype, n_per_row: row_bytes / ts * qtype.block_size(), row_bytes, nrows })
    }

    fn check_len(&self, what: &str, got: usize, per_row: usize) -> Result<()> {
        let want = self.nrows.checked_mul(per_row).ok_or_else(|| Error::invalid("array too large"))?;
        if got != want {
            return Err(Error::invalid(format!(
                "{what} has {got} elements, expected {want} ({} rows x {per_row})",
                self.nrows
            )));
        }
        Ok(())
    }
}

/// NaN or Inf anywhere refuses the batch, naming the first bad row (`row_offset`
/// is added to the reported index so chunked callers report global rows).
pub fn check_finite(x: &[f32], n_per_row: usize, row_offset: usize) -> Result<()> {
    if n_per_row == 0 {
        return Ok(());
    }
    for (i, row) in x.chunks_exact(n_per_row).enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "row {} contains a non-finite value ({} at column {j})",
                i + row_offset,
                row[j]
            )));
        }
    }
    Ok(())
}

/// An importance matrix must have one finite, non-negative weight per column.
pub fn check_imatrix(imat: &[f32], n_per_row: usize) -> Result<()> {
    if imat.len() != n_per_row {
        return Err(Error::invalid(format!("imatrix has {} values, expected the row length {n_per_row}", imat.len())));
    }
    if let Some(j) = imat.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::invalid(format!("imatrix must be finite and >= 0; column {j} is {}", imat[j])));
    }
    Ok(())
}

/// Quantizes `rows.nrows` rows of `x` into `q`. Finite input is the caller's promise
/// here (see `check_finite`); non-finite values cannot crash but give unspecified bytes.
pub fn quantize(rows: Rows, x: &[f32], q: &mut [u8], imat: Option<&[f32]>) -> Result<()> {
    rows.check_len("input", x.len(), rows.n_per_row)?;
    rows.check_len("output", q.len(), rows.row_bytes)?;
    if let Some(w) = imat {
        check_imatrix(w, rows.n_per_row)?;
    } else if rows.qtype.requires_imatrix() {
        return Err(Error::invalid(format!(
            "{} needs an importance matrix (imatrix=...): ggml refuses to quantize it without one",
            rows.qtype.name()
        )));
    }
    if rows.nrows == 0 || rows.n_per_row == 0 {
        return Ok(());
    }
    let k = kernels(rows.qtype)?;
    for (xr, qr) in x.chunks_exact(rows.n_per_row).zip(q.chunks_exact_mut(rows.row_bytes)) {
        (k.quantize)(xr, qr, imat);
    }
    Ok(())
}

pub fn dequantize(rows: Rows, q: &[u8], y: &mut [f32]) -> Result<()> {
    rows.check_len("input", q.len(), rows.row_bytes)?;
    rows.check_len("output", y.len(), rows.n_per_row)?;
    if rows.nrows == 0 || rows.n_per_row == 0 {
        return Ok(());
    }
    let k = kernels(rows.qtype)?;
    for (qr, yr) in q.chunks_exact(rows.row_bytes).zip(y.chunks_exact_mut(rows.n_per_row)) {
        (k.dequantize)(qr, yr);
    }
    Ok(())
}

fn dot_fn(t: QuantType) -> Result<crate::reference::VecDotFn> {
    kernels(t)?.vec_dot.ok_or_else(|| {
        Error::invalid(format!("{} is an activation format and has no dot product of its own", t.name()))
    })
}

/// Row-wise dots: `out[i] = q[i] . yq[i]`, `yq` in `rows.qtype.vec_dot_type()`.
pub fn vec_dot(rows: Rows, q: &[u8], yq: &[u8], out: &mut [f32]) -> Result<()> {
    let partner = Rows::new(rows.qtype.vec_dot_type(), rows.n_per_row, rows.nrows)?;
    rows.check_len("q", q.len(), rows.row_bytes)?;
    partner.check_len("yq", yq.len(), partner.row_bytes)?;
    rows.check_len("output", out.len(), 1)?;
    if rows.nrows == 0 {
        return Ok(());
    }
    if rows.n_per_row == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let dot = dot_fn(rows.qtype)?;
    for ((qr, yr), o) in q.chunks_exact(rows.row_bytes).zip(yq.chunks_exact(partner.row_bytes)).zip(out.iter_mut()) {
        *o = dot(qr, yr);
    }
    Ok(())
}

/// `out[r] = w[r] . xq` for one activation row `xq` (already in the partner type)
/// over weight rows `w`.
pub fn matvec(rows: Rows, w: &[u8], xq: &[u8], out: &mut [f32]) -> Result<()> {
    rows.check_len("weights", w.len(), rows.row_bytes)?;
    rows.check_len("output", out.len(), 1)?;
    let partner = rows.qtype.vec_dot_type().row_size(rows.n_per_row)?;
    if xq.len() != partner {
        return Err(Error::invalid(format!("activation row has {} bytes, expected {partner}", xq.len())));
    }
    if rows.nrows == 0 {
        return Ok(());
    }
    if rows.n_per_row == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let dot = dot_fn(rows.qtype)?;
    for (wr, o) in w.chunks_exact(rows.row_bytes).zip(out.iter_mut()) {
        *o = dot(wr, xq);
    }
    Ok(())
}

/// Whether the reference kernels cover `t` yet.
pub fn is_implemented(t: QuantType) -> bool {
    reference::kernels(t).is_some()
}
