//! Thin PyO3 layer over kquant-core: argument checks, NumPy <-> slices, the GIL
//! released around every kernel, rows spread over a rayon pool.
//!
//! The Python package normalises inputs (dtype, contiguity, shape) before calling in,
//! so these functions take C-contiguous 2-D arrays and a ggml type id.

mod gguf;
mod into;
mod pool;

use kquant_core::ops::{self, Rows};
use kquant_core::{Error, QuantType};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

/// kquant errors as Python exceptions: ValueError for invalid input, OSError (the
/// errno's subclass where there is one) for I/O failures.
pub(crate) fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Invalid(m) => PyValueError::new_err(m),
        Error::Io { message, code } => os_error(code, message, None),
    }
}

/// OSError(errno, message[, filename]) built through OSError itself, which picks the
/// subclass (FileNotFoundError, PermissionError, ...) that `except` clauses match.
pub(crate) fn os_error(code: Option<i32>, message: String, filename: Option<&str>) -> PyErr {
    let Some(code) = code else {
        return PyOSError::new_err(message);
    };
    Python::attach(|py| {
        let ty = py.get_type::<PyOSError>();
        let made = match filename {
            Some(f) => ty.call1((code, message, f)),
            None => ty.call1((code, message)),
        };
        made.map_or_else(|e| e, PyErr::from_value)
    })
}

fn value_error(e: Error) -> PyErr {
    to_py_err(e)
}

fn qtype(id: u32) -> PyResult<QuantType> {
    QuantType::from_id(id).map_err(value_error)
}

fn contiguous<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>, what: &str) -> PyResult<&'a [T]> {
    // as_slice checks contiguity only; a slice over a misaligned pointer is undefined behaviour
    if (a.data() as usize) % std::mem::align_of::<T>() != 0 {
        return Err(PyValueError::new_err(format!("{what} must be aligned")));
    }
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

/// The output buffer; a ValueError where `vec!` would abort the process when it cannot be allocated.
fn output<T: Clone + Default>(rows: usize, per_row: usize) -> PyResult<Vec<T>> {
    pool::zeroed(rows.checked_mul(per_row)).ok_or_else(|| {
        let size = std::mem::size_of::<T>();
        PyValueError::new_err(format!("cannot allocate a result of {rows} x {per_row} x {size} bytes"))
    })
}

/// Rows of `x` as f32 into a new (rows, row_bytes) uint8 array.
#[pyfunction]
#[pyo3(signature = (x, qtype_id, imatrix=None))]
fn quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    qtype_id: u32,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let t = qtype(qtype_id)?;
    let [nrows, n] = [x.shape()[0], x.shape()[1]];
    let rows = Rows::new(t, n, nrows).map_err(value_error)?;
    let xs = contiguous(&x, "x")?;
    let imat = match &imatrix {
        Some(w) => Some(w.as_slice().map_err(|_| PyValueError::new_err("imatrix must be contiguous"))?),
        None => None,
    };
    if let Some(w) = imat {
        ops::check_imatrix(w, n).map_err(value_error)?;
    }
    let mut out = output::<u8>(nrows, rows.row_bytes)?;
    py.detach(|| pool::quantize(rows, xs, &mut out, imat)).map_err(value_error)?;
    PyArray1::from_vec(py, out).reshape([nrows, rows.row_bytes])
}

#[pyfunction]
fn dequantize<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype_id: u32,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let t = qtype(qtype_id)?;
    let [nrows, nb] = [q.shape()[0], q.shape()[1]];
    let rows = Rows::from_bytes(t, nb, nrows).map_err(value_error)?;
    let qs = contiguous(&q, "q")?;
    let mut out = output::<f32>(nrows, rows.n_per_row)?;
    py.detach(|| pool::dequantize(rows, qs, &mut out)).map_err(value_error)?;
    PyArray1::from_vec(py, out).reshape([nrows, rows.n_per_row])
}

#[pyfunction]
fn vec_dot<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    yq: PyReadonlyArray2<'py, u8>,
    qtype_id: u32,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let t = qtype(qtype_id)?;
    let [nrows, nb] = [q.shape()[0], q.shape()[1]];
    let rows = Rows::from_bytes(t, nb, nrows).map_err(value_error)?;
    let partner = t.vec_dot_type();
    let want = partner.row_size(rows.n_per_row).map_err(value_error)?;
    if yq.shape()[0] != nrows {
        return Err(PyValueError::new_err(format!(
            "q and yq must have the same leading shape, got ({nrows},) and ({},)",
            yq.shape()[0]
        )));
    }
    if yq.shape()[1] != want {
        return Err(PyValueError::new_err(format!(
            "yq rows must be {want} bytes ({}, the partner of {}, for {} values), got {}",
            partner.name(),
            t.name(),
            rows.n_per_row,
            yq.shape()[1]
        )));
    }
    let (qs, ys) = (contiguous(&q, "q")?, contiguous(&yq, "yq")?);
    let mut out = output::<f32>(nrows, 1)?;
    py.detach(|| pool::vec_dot(rows, qs, ys, &mut out)).map_err(value_error)?;
    Ok(PyArray1::from_vec(py, out))
}

/// `x` (m, n) floats against weights `w` (rows, row_bytes): returns (m, rows).
#[pyfunction]
fn matmul<'py>(
    py: Python<'py>,
    w: PyReadonlyArray2<'py, u8>,
    x: PyReadonlyArray2<'py, f32>,
    qtype_id: u32,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let t = qtype(qtype_id)?;
    let [nrows, nb] = [w.shape()[0], w.shape()[1]];
    let rows = Rows::from_bytes(t, nb, nrows).map_err(value_error)?;
    let [m, n] = [x.shape()[0], x.shape()[1]];
    if n != rows.n_per_row {
        return Err(PyValueError::new_err(format!(
            "x rows have {n} values but the {} weight rows hold {} values",
            t.name(),
            rows.n_per_row
        )));
    }
    let (ws, xs) = (contiguous(&w, "weights")?, contiguous(&x, "x")?);
    let mut out = output::<f32>(m, nrows)?;
    py.detach(|| pool::matmul(rows, ws, xs, m, &mut out)).map_err(value_error)?;
    PyArray1::from_vec(py, out).reshape([m, nrows])
}

/// (id, name, block_size, type_size, vec_dot_type id, implemented) for every type.
#[pyfunction]
fn type_table() -> Vec<(u32, &'static str, usize, usize, u32, bool, bool)> {
    QuantType::ALL
        .iter()
        .map(|t| {
            (
                t.id(),
                t.name(),
                t.block_size(),
                t.type_size(),
                t.vec_dot_type().id(),
                ops::is_implemented(*t),
                t.requires_imatrix(),
            )
        })
        .collect()
}

/// The kernel path in use ("avx2", "neon", "scalar"), chosen once from the CPU and
/// `KQUANT_ISA`; a ValueError when `KQUANT_ISA` asks for a path this CPU lacks.
#[pyfunction]
fn isa() -> PyResult<&'static str> {
    kquant_core::dispatch::active().map(|i| i.name()).map_err(value_error)
}

/// Every path this CPU can run, scalar first.
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    kquant_core::dispatch::available().into_iter().map(|i| i.name()).collect()
}

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    pool::set_threads(n).map_err(value_error)
}

#[pyfunction]
fn get_num_threads() -> usize {
    pool::threads()
}

#[pymodule]
fn _kquant(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(vec_dot, m)?)?;
    m.add_function(wrap_pyfunction!(matmul, m)?)?;
    m.add_function(wrap_pyfunction!(type_table, m)?)?;
    m.add_function(wrap_pyfunction!(isa, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(into::quantize_into, m)?)?;
    m.add_function(wrap_pyfunction!(into::dequantize_into, m)?)?;
    m.add_function(wrap_pyfunction!(into::dequantize_f16_into, m)?)?;
    m.add_function(wrap_pyfunction!(gguf::gguf_parse, m)?)?;
    m.add_function(wrap_pyfunction!(gguf::imatrix_parse, m)?)?;
    m.add_class::<gguf::GgufFileWriter>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
