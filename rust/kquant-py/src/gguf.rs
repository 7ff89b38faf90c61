//! GGUF and importance-matrix bindings.
//!
//! The Python side memory-maps files and hands the mapping over as a uint8 array, so
//! parsing reads the page cache directly and runs with the GIL released. The writer
//! streams to a temporary file that the Python side renames once it is complete.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kquant_core::gguf::{Array, GgufFile, GgufWriter, TensorSpec, TensorType, Value, ValueType};
use kquant_core::imatrix::{Format, Imatrix};
use kquant_core::Error;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::IntoPyObjectExt;

use crate::{os_error, to_py_err};

fn bytes_of<'a>(buf: &'a PyReadonlyArray1<'_, u8>) -> PyResult<&'a [u8]> {
    buf.as_slice().map_err(|_| PyValueError::new_err("the file buffer must be a contiguous uint8 array"))
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("arr[{}]", a.elem_type().name()),
        _ => v.value_type().name().to_string(),
    }
}

fn array_to_py<'py>(py: Python<'py>, a: &Array) -> PyResult<Bound<'py, PyList>> {
    match a {
        Array::U8(v) => PyList::new(py, v),
        Array::I8(v) => PyList::new(py, v),
        Array::U16(v) => PyList::new(py, v),
        Array::I16(v) => PyList::new(py, v),
        Array::U32(v) => PyList::new(py, v),
        Array::I32(v) => PyList::new(py, v),
        // Widening is exact, so writing the Python float back as f32 restores the bits.
        Array::F32(v) => PyList::new(py, v.iter().map(|&x| f64::from(x))),
        Array::Bool(v) => PyList::new(py, v),
        Array::String(v) => PyList::new(py, v),
        Array::U64(v) => PyList::new(py, v),
        Array::I64(v) => PyList::new(py, v),
        Array::F64(v) => PyList::new(py, v),
    }
}

fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    match v {
        Value::U8(x) => x.into_bound_py_any(py),
        Value::I8(x) => x.into_bound_py_any(py),
        Value::U16(x) => x.into_bound_py_any(py),
        Value::I16(x) => x.into_bound_py_any(py),
        Value::U32(x) => x.into_bound_py_any(py),
        Value::I32(x) => x.into_bound_py_any(py),
        Value::F32(x) => f64::from(*x).into_bound_py_any(py),
        Value::Bool(x) => x.into_bound_py_any(py),
        Value::String(x) => x.into_bound_py_any(py),
        Value::Array(a) => Ok(array_to_py(py, a)?.into_any()),
        Value::U64(x) => x.into_bound_py_any(py),
        Value::I64(x) => x.into_bound_py_any(py),
        Value::F64(x) => x.into_bound_py_any(py),
    }
}

/// (name, ggml dims, ggml type id, absolute offset, nbytes)
type TensorRow = (String, Vec<u64>, u32, u64, u64);
/// (version, alignment, data offset, [(key, type, value)], tensors)
type ParsedGguf<'py> = (u32, u32, u64, Bound<'py, PyList>, Vec<TensorRow>);

/// Parses a whole GGUF file.
#[pyfunction]
pub fn gguf_parse<'py>(py: Python<'py>, buf: PyReadonlyArray1<'py, u8>) -> PyResult<ParsedGguf<'py>> {
    let bytes = bytes_of(&buf)?;
    let file = py.detach(|| GgufFile::parse(bytes)).map_err(to_py_err)?;
    let metadata = PyList::empty(py);
    for (k, v) in &file.metadata {
        metadata.append((k, type_name(v), value_to_py(py, v)?))?;
    }
    // The reader checked that every tensor lies inside the file, so the sum cannot overflow.
    let tensors = file
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone(), t.ty.id(), file.data_offset + t.offset, t.nbytes))
        .collect();
    Ok((file.version, file.alignment, file.data_offset, metadata, tensors))
}

/// (name, values, n_mat, n_per_row, counts, activations)
type ImatrixRow<'py> = (String, Bound<'py, PyArray1<f32>>, usize, usize, Vec<f64>, Option<Bound<'py, PyArray1<f32>>>);
/// (format, entries, datasets, chunk count, chunk size)
type ParsedImatrix<'py> = (&'static str, Vec<ImatrixRow<'py>>, Vec<String>, u32, Option<u32>);

/// Parses either importance-matrix format.
#[pyfunction]
pub fn imatrix_parse<'py>(py: Python<'py>, buf: PyReadonlyArray1<'py, u8>) -> PyResult<ParsedImatrix<'py>> {
    let bytes = bytes_of(&buf)?;
    let m = py.detach(|| Imatrix::parse(bytes)).map_err(to_py_err)?;
    let format = match m.format {
        Format::Legacy => "dat",
        Format::Gguf => "gguf",
    };
    let entries = m
        .entries
        .into_iter()
        .map(|e| {
            let act = e.activations.map(|a| PyArray1::from_vec(py, a));
            (e.name, PyArray1::from_vec(py, e.values), e.n_mat, e.n_per_row, e.counts, act)
        })
        .collect();
    Ok((format, entries, m.datasets, m.chunk_count, m.chunk_size))
}

/// Python ints, floats, bools and strs (already range-checked by the Python side) as a
/// GGUF value of type `ty`.
fn value_from_py(ty: ValueType, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    Ok(match ty {
        ValueType::U8 => Value::U8(v.extract()?),
        ValueType::I8 => Value::I8(v.extract()?),
        ValueType::U16 => Value::U16(v.extract()?),
        ValueType::I16 => Value::I16(v.extract()?),
        ValueType::U32 => Value::U32(v.extract()?),
        ValueType::I32 => Value::I32(v.extract()?),
        ValueType::F32 => Value::F32(v.extract::<f64>()? as f32),
        ValueType::Bool => Value::Bool(v.extract()?),
        ValueType::String => Value::String(v.extract()?),
        ValueType::U64 => Value::U64(v.extract()?),
        ValueType::I64 => Value::I64(v.extract()?),
        ValueType::F64 => Value::F64(v.extract()?),
        ValueType::Array => return Err(PyTypeError::new_err("GGUF arrays cannot contain arrays")),
    })
}

fn array_from_py(elem: ValueType, v: &Bound<'_, PyAny>) -> PyResult<Array> {
    Ok(match elem {
        ValueType::U8 => Array::U8(v.extract()?),
        ValueType::I8 => Array::I8(v.extract()?),
        ValueType::U16 => Array::U16(v.extract()?),
        ValueType::I16 => Array::I16(v.extract()?),
        ValueType::U32 => Array::U32(v.extract()?),
        ValueType::I32 => Array::I32(v.extract()?),
        ValueType::F32 => Array::F32(v.extract::<Vec<f64>>()?.into_iter().map(|x| x as f32).collect()),
        ValueType::Bool => Array::Bool(v.extract()?),
        ValueType::String => Array::String(v.extract()?),
        ValueType::U64 => Array::U64(v.extract()?),
        ValueType::I64 => Array::I64(v.extract()?),
        ValueType::F64 => Array::F64(v.extract()?),
        ValueType::Array => return Err(PyTypeError::new_err("GGUF arrays cannot contain arrays")),
    })
}

fn value_type(id: u32) -> PyResult<ValueType> {
    ValueType::from_id(id).ok_or_else(|| PyValueError::new_err(format!("unknown GGUF value type id {id}")))
}

/// The file behind the GGUF writer. `GgufWriter` reports I/O failures as plain errors, so
/// the first one is also kept here, to reach Python as the OSError it is.
struct Sink {
    out: BufWriter<File>,
    label: Arc<str>,
    failed: Arc<Mutex<Option<Error>>>,
}

impl Sink {
    fn note(label: &str, failed: &Mutex<Option<Error>>, e: &io::Error) {
        if let Ok(mut slot) = failed.lock() {
            slot.get_or_insert_with(|| Error::io(format!("cannot write {label}"), e));
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (label, failed) = (&self.label, &self.failed);
        self.out.write(buf).inspect_err(|e| Self::note(label, failed, e))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (label, failed) = (&self.label, &self.failed);
        self.out.write_all(buf).inspect_err(|e| Self::note(label, failed, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        let (label, failed) = (&self.label, &self.failed);
        self.out.flush().inspect_err(|e| Self::note(label, failed, e))
    }
}

enum State {
    /// Collecting metadata and tensor declarations; nothing written yet.
    Declaring(Sink),
    /// The header is out; tensors follow in declared order.
    Writing(GgufWriter<Sink>),
    /// Finished, aborted, or broken by an error.
    Closed,
}

/// Streams one GGUF file: declarations first, then the header on the first tensor (or at
/// `finish`), then each tensor's bytes. Creates `path`, which must not exist.
#[pyclass(module = "kquant._kquant")]
pub struct GgufFileWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
    state: State,
    label: Arc<str>,
    failed: Arc<Mutex<Option<Error>>>,
    /// The finished, synced file, kept open so that an unnamed (O_TMPFILE) file can
    /// still be linked into the directory through /proc/self/fd.
    finished: Option<File>,
}

/// Large enough that per-call overhead vanishes, small enough not to matter beside a tensor.
const BUFFER_BYTES: usize = 1 << 20;

impl GgufFileWriter {
    /// `e`, unless an I/O failure caused it, in which case that failure.
    fn error(&self, e: Error) -> PyErr {
        let io = self.failed.lock().ok().and_then(|mut slot| slot.take());
        to_py_err(io.unwrap_or(e))
    }

    fn check_declaring(&self) -> PyResult<()> {
        match self.state {
            State::Declaring(_) => Ok(()),
            State::Writing(_) => Err(PyValueError::new_err(
                "the header was already written: add all metadata and tensor infos before the first tensor",
            )),
            State::Closed => Err(closed()),
        }
    }

    fn begin(&mut self, py: Python<'_>) -> PyResult<()> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Declaring(sink) => {
                let (metadata, tensors) = (&self.metadata, &self.tensors);
                match py.detach(|| GgufWriter::new(sink, metadata, tensors)) {
                    Ok(w) => {
                        self.state = State::Writing(w);
                        Ok(())
                    }
                    Err(e) => Err(self.error(e)),
                }
            }
            s @ State::Writing(_) => {
                self.state = s;
                Ok(())
            }
            State::Closed => Err(closed()),
        }
    }
}

fn closed() -> PyErr {
    PyValueError::new_err("the GGUF writer is closed")
}

#[pymethods]
impl GgufFileWriter {
    /// `label` names the file in I/O error messages (the target rather than the temporary).
    /// With `fd` the writer takes ownership of that open file (an unnamed O_TMPFILE file
    /// that vanishes if the process dies) and `path` is not opened.
    #[new]
    #[pyo3(signature = (path, label, fd=None))]
    fn new(path: PathBuf, label: String, fd: Option<i32>) -> PyResult<Self> {
        let file = match fd {
            #[cfg(unix)]
            Some(fd) => {
                use std::os::fd::FromRawFd;
                if fd < 0 {
                    return Err(PyValueError::new_err("invalid file descriptor"));
                }
                // SAFETY: the Python side opened `fd` for this writer alone and hands its
                // ownership over; nothing else closes or uses it afterwards.
                unsafe { File::from_raw_fd(fd) }
            }
            #[cfg(not(unix))]
            Some(_) => return Err(PyValueError::new_err("file descriptors are only accepted on Unix")),
            None => OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
                let p = path.to_string_lossy();
                os_error(e.raw_os_error(), format!("cannot create {p}: {e}"), Some(&p))
            })?,
        };
        let label: Arc<str> = label.into();
        let failed = Arc::new(Mutex::new(None));
        let sink =
            Sink { out: BufWriter::with_capacity(BUFFER_BYTES, file), label: label.clone(), failed: failed.clone() };
        Ok(GgufFileWriter {
            metadata: Vec::new(),
            tensors: Vec::new(),
            state: State::Declaring(sink),
            label,
            failed,
            finished: None,
        })
    }

    /// Adds a metadata entry; `elem_type_id` is the element type when `type_id` is the array type.
    #[pyo3(signature = (key, type_id, value, elem_type_id=None))]
    fn add_metadata(
        &mut self,
        key: String,
        type_id: u32,
        value: &Bound<'_, PyAny>,
        elem_type_id: Option<u32>,
    ) -> PyResult<()> {
        self.check_declaring()?;
        let ty = value_type(type_id)?;
        let v = match (ty, elem_type_id) {
            (ValueType::Array, Some(elem)) => Value::Array(array_from_py(value_type(elem)?, value)?),
            (ValueType::Array, None) => return Err(PyValueError::new_err("an array needs an element type")),
            (_, None) => value_from_py(ty, value)?,
            (_, Some(_)) => return Err(PyValueError::new_err("only arrays have an element type")),
        };
        self.metadata.push((key, v));
        Ok(())
    }

    /// Declares a tensor: its name, its shape in ggml order and its ggml type id.
    fn add_tensor(&mut self, name: String, dims: Vec<u64>, type_id: u32) -> PyResult<()> {
        self.check_declaring()?;
        let ty = TensorType::from_id(type_id).map_err(to_py_err)?;
        self.tensors.push(TensorSpec { name, dims, ty });
        Ok(())
    }

    /// Writes the header now if it has not been written yet.
    fn write_header(&mut self, py: Python<'_>) -> PyResult<()> {
        self.begin(py)
    }

    /// Writes the next tensor's bytes (the header first, on the first call).
    fn write_tensor(&mut self, py: Python<'_>, name: &str, data: PyReadonlyArray1<'_, u8>) -> PyResult<()> {
        let bytes = data.as_slice().map_err(|_| PyValueError::new_err("tensor data must be contiguous"))?;
        self.begin(py)?;
        let State::Writing(w) = &mut self.state else {
            return Err(closed());
        };
        match py.detach(|| w.write_tensor(name, bytes)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Checks that every tensor was written, flushes and syncs the file to disk.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        self.begin(py)?;
        let State::Writing(w) = std::mem::replace(&mut self.state, State::Closed) else {
            return Err(closed());
        };
        let label = self.label.clone();
        let done = py.detach(move || -> kquant_core::Result<File> {
            let sink = w.finish()?;
            let file = sink.out.into_inner().map_err(|e| Error::io(format!("cannot write {label}"), e.error()))?;
            file.sync_all().map_err(|e| Error::io(format!("cannot sync {label} to disk"), &e))?;
            Ok(file)
        });
        self.finished = Some(done.map_err(|e| self.error(e))?);
        Ok(())
    }

    /// Closes the finished file (after the Python side has linked or renamed it).
    fn release(&mut self) {
        self.finished = None;
    }

    /// Closes the file without finishing it (the Python side removes a named one).
    fn abort(&mut self) {
        self.state = State::Closed;
        self.finished = None;
    }
}
