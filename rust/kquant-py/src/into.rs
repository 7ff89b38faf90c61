//! The `out=` variants: results written into a caller's C-contiguous array. The Python
//! layer checks shapes, dtypes, writeability and overlap first, so the errors here are
//! the last line of defence.

use kquant_core::ops::{self, Rows};
use numpy::{PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{contiguous, pool, qtype, to_py_err};

fn slice_mut<'a, T: numpy::Element>(a: &'a mut PyReadwriteArray2<'_, T>, what: &str) -> PyResult<&'a mut [T]> {
    if (a.data() as usize) % std::mem::align_of::<T>() != 0 {
        return Err(PyValueError::new_err(format!("{what} must be aligned")));
    }
    a.as_slice_mut().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

fn check_shape(what: &str, got: &[usize], want: [usize; 2]) -> PyResult<()> {
    if got != want {
        return Err(PyValueError::new_err(format!("{what} has shape {got:?}, expected {want:?}")));
    }
    Ok(())
}

/// Rows of `x` quantized into `out` (rows, row_bytes).
#[pyfunction]
#[pyo3(signature = (x, qtype_id, imatrix, out))]
pub fn quantize_into<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    qtype_id: u32,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
    mut out: PyReadwriteArray2<'py, u8>,
) -> PyResult<()> {
    let t = qtype(qtype_id)?;
    let [nrows, n] = [x.shape()[0], x.shape()[1]];
    let rows = Rows::new(t, n, nrows).map_err(to_py_err)?;
    check_shape("out", out.shape(), [nrows, rows.row_bytes])?;
    let xs = contiguous(&x, "x")?;
    let imat = match &imatrix {
        Some(w) => Some(w.as_slice().map_err(|_| PyValueError::new_err("imatrix must be contiguous"))?),
        None => None,
    };
    if let Some(w) = imat {
        ops::check_imatrix(w, n).map_err(to_py_err)?;
    }
    let qs = slice_mut(&mut out, "out")?;
    py.detach(|| pool::quantize(rows, xs, qs, imat)).map_err(to_py_err)
}

/// Rows of `q` dequantized into `out` (rows, n) float32.
#[pyfunction]
pub fn dequantize_into<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype_id: u32,
    mut out: PyReadwriteArray2<'py, f32>,
) -> PyResult<()> {
    let t = qtype(qtype_id)?;
    let [nrows, nb] = [q.shape()[0], q.shape()[1]];
    let rows = Rows::from_bytes(t, nb, nrows).map_err(to_py_err)?;
    check_shape("out", out.shape(), [nrows, rows.n_per_row])?;
    let qs = contiguous(&q, "q")?;
    let ys = slice_mut(&mut out, "out")?;
    py.detach(|| pool::dequantize(rows, qs, ys)).map_err(to_py_err)
}

/// Rows of `q` dequantized to half precision into `out`: the bytes of a (rows, n)
/// float16 array, seen as (rows, 2 n) uint8 so that no element type is needed here.
#[pyfunction]
pub fn dequantize_f16_into<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype_id: u32,
    mut out: PyReadwriteArray2<'py, u8>,
) -> PyResult<()> {
    let t = qtype(qtype_id)?;
    let [nrows, nb] = [q.shape()[0], q.shape()[1]];
    let rows = Rows::from_bytes(t, nb, nrows).map_err(to_py_err)?;
    let want = rows.n_per_row.checked_mul(2).ok_or_else(|| PyValueError::new_err("rows too long"))?;
    check_shape("out (as bytes)", out.shape(), [nrows, want])?;
    let qs = contiguous(&q, "q")?;
    let hs = slice_mut(&mut out, "out")?;
    py.detach(|| pool::dequantize_f16(rows, qs, hs)).map_err(to_py_err)
}
