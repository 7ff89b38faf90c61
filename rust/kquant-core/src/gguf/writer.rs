//! Streaming GGUF writer: the header goes out first, then each tensor's bytes in the
//! declared order, so a model never has to be held in memory at once.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

use super::reader::TensorInfo;
use super::value::{put_string, put_u32, put_u64, Value};
use super::{align_up, alignment_of, check_key, check_tensor_name, tensor_nbytes, TensorType, MAGIC, VERSION};

/// A tensor to declare: its name, its shape in ggml order (`dims[0]` is the row length)
/// and its storage type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: TensorType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: &[u64], ty: impl Into<TensorType>) -> Self {
        TensorSpec { name: name.into(), dims: dims.to_vec(), ty: ty.into() }
    }
}

/// Writes one GGUF file to `out`.
///
/// [`GgufWriter::new`] validates the metadata and tensor declarations and writes the
/// whole header. The tensors then follow in declared order, either whole with
/// [`write_tensor`](GgufWriter::write_tensor) or in pieces with
/// [`write_tensor_chunk`](GgufWriter::write_tensor_chunk) and
/// [`end_tensor`](GgufWriter::end_tensor). [`finish`](GgufWriter::finish) checks that every
/// tensor was written. Wrap a file in a `BufWriter`: the writer issues one `write_all`
/// per call.
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<TensorInfo>,
    alignment: u32,
    data_offset: u64,
    /// Index of the tensor being written.
    next: usize,
    /// Bytes of the current tensor written so far.
    written: u64,
    /// Set after an I/O error, when the output is in an unknown state.
    broken: bool,
}

const ZEROS: [u8; 4096] = [0; 4096];

fn io_error(e: std::io::Error, what: &str) -> Error {
    Error::invalid(format!("writing GGUF {what} failed: {e}"))
}

impl<W: Write> GgufWriter<W> {
    /// Validates the declarations, computes every tensor's offset and writes the header,
    /// metadata, tensor infos and the padding up to the data section.
    ///
    /// The alignment is `general.alignment` when `metadata` sets it (a u32 power of two),
    /// 32 otherwise.
    pub fn new(mut out: W, metadata: &[(String, Value)], tensors: &[TensorSpec]) -> Result<Self> {
        let mut keys = HashSet::with_capacity(metadata.len());
        for (k, _) in metadata {
            check_key(k)?;
            if !keys.insert(k.as_str()) {
                return Err(Error::invalid(format!("duplicate metadata key {k:?}")));
            }
        }
        let alignment = alignment_of(metadata.iter().map(|(k, v)| (k.as_str(), v)))?;

        let mut names = HashSet::with_capacity(tensors.len());
        let mut infos = Vec::with_capacity(tensors.len());
        let mut offset: u64 = 0;
        for t in tensors {
            check_tensor_name(&t.name)?;
            if !names.insert(t.name.as_str()) {
                return Err(Error::invalid(format!("duplicate tensor name {:?}", t.name)));
            }
            let nbytes = tensor_nbytes(&t.name, &t.dims, t.ty)?;
            infos.push(TensorInfo { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty, offset, nbytes });
            offset = offset
                .checked_add(nbytes)
                .and_then(|e| align_up(e, alignment))
                .ok_or_else(|| Error::invalid("total tensor data is too large"))?;
        }

        let mut head = Vec::new();
        head.extend_from_slice(&MAGIC);
        put_u32(&mut head, VERSION);
        put_u64(&mut head, infos.len() as u64);
        put_u64(&mut head, metadata.len() as u64);
        for (k, v) in metadata {
            put_string(&mut head, k)?;
            v.encode(true, &mut head).map_err(|e| Error::invalid(format!("metadata {k:?}: {e}")))?;
        }
        for t in &infos {
            put_string(&mut head, &t.name)?;
            put_u32(&mut head, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut head, d);
            }
            put_u32(&mut head, t.ty.id());
            put_u64(&mut head, t.offset);
        }
        let data_offset = align_up(head.len() as u64, alignment).expect("header fits in memory");
        head.resize(data_offset as usize, 0);
        out.write_all(&head).map_err(|e| io_error(e, "header"))?;

        Ok(GgufWriter { out, tensors: infos, alignment, data_offset, next: 0, written: 0, broken: false })
    }

    /// Every declared tensor with its offset (relative to the data section) and size.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Absolute file offset of the data section (the header's length with padding).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The tensor whose bytes are expected next, None once all were written.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next)
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            Err(Error::invalid("GGUF writer is unusable after an earlier write error"))
        } else {
            Ok(())
        }
    }

    fn emit(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| {
            self.broken = true;
            io_error(e, what)
        })
    }

    /// Writes the whole of tensor `name`, which must be the next declared tensor, with
    /// exactly its declared size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.check_usable()?;
        let Some(t) = self.tensors.get(self.next) else {
            return Err(Error::invalid(format!("tensor {name:?} written after all declared tensors")));
        };
        if t.name != name {
            let declared = self.tensors.iter().any(|t| t.name == name);
            return Err(Error::invalid(if declared {
                format!("tensor {name:?} written out of order, expected {:?} next", t.name)
            } else {
                format!("tensor {name:?} was not declared, expected {:?} next", t.name)
            }));
        }
        if self.written != 0 {
            return Err(Error::invalid(format!("tensor {name:?} was already partly written in chunks")));
        }
        if data.len() as u64 != t.nbytes {
            return Err(Error::invalid(format!(
                "tensor {name:?} ({} {:?}) takes {} bytes, got {}",
                t.ty,
                t.dims,
                t.nbytes,
                data.len()
            )));
        }
        self.write_tensor_chunk(data)?;
        self.end_tensor()
    }

    /// Appends bytes to the current tensor ([`next_tensor`](Self::next_tensor)); more than
    /// its declared size is refused before anything is written.
    pub fn write_tensor_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        self.check_usable()?;
        let Some(t) = self.tensors.get(self.next) else {
            return Err(Error::invalid("tensor data written after all declared tensors"));
        };
        let total = self.written + chunk.len() as u64;
        if total > t.nbytes {
            return Err(Error::invalid(format!(
                "tensor {:?} takes {} bytes, {} already written, a chunk of {} is too many",
                t.name,
                t.nbytes,
                self.written,
                chunk.len()
            )));
        }
        self.emit(chunk, "tensor data")?;
        self.written = total;
        Ok(())
    }

    /// Completes the current tensor, which must have received exactly its declared size,
    /// and writes its padding.
    pub fn end_tensor(&mut self) -> Result<()> {
        self.check_usable()?;
        let Some(t) = self.tensors.get(self.next) else {
            return Err(Error::invalid("end_tensor called after all declared tensors"));
        };
        if self.written != t.nbytes {
            return Err(Error::invalid(format!(
                "tensor {:?} takes {} bytes, only {} were written",
                t.name, t.nbytes, self.written
            )));
        }
        let end = t.offset + t.nbytes;
        let pad = align_up(end, self.alignment).expect("offsets checked in new") - end;
        self.pad(pad)?;
        self.next += 1;
        self.written = 0;
        Ok(())
    }

    fn pad(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.emit(&ZEROS[..k], "padding")?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Checks that every declared tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.check_usable()?;
        if let Some(t) = self.tensors.get(self.next) {
            let missing = self.tensors.len() - self.next;
            return Err(Error::invalid(format!(
                "GGUF file unfinished: tensor {:?} and {} more were not written",
                t.name,
                missing - 1
            )));
        }
        self.out.flush().map_err(|e| io_error(e, "flush"))?;
        Ok(self.out)
    }
}

/// Writes `path` through a temporary file in the same directory that replaces `path`
/// only when `write` succeeds and the data reached the disk. On any error (or a panic in
/// `write`) the temporary file is removed and `path` is untouched.
pub fn write_atomic<T>(path: impl AsRef<Path>, write: impl FnOnce(&mut BufWriter<File>) -> Result<T>) -> Result<T> {
    let path = path.as_ref();
    let file_name =
        path.file_name().ok_or_else(|| Error::invalid(format!("{} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |e: std::io::Error, what: &str| Error::invalid(format!("{what} {}: {e}", path.display()));

    let (file, guard) = {
        let mut attempt = 0;
        loop {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(file_name);
            tmp_name.push(format!(".{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
            let tmp = dir.join(tmp_name);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => break (f, TempGuard(Some(tmp))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(io(e, "cannot create a temporary file next to")),
            }
        }
    };
    let mut w = BufWriter::new(file);
    let value = write(&mut w)?;
    let file = w.into_inner().map_err(|e| io(e.into_error(), "cannot write"))?;
    file.sync_all().map_err(|e| io(e, "cannot sync"))?;
    drop(file);
    let tmp = guard.0.as_ref().expect("guard is armed");
    fs::rename(tmp, path).map_err(|e| io(e, "cannot rename the temporary file to"))?;
    guard.disarm();
    // Persist the rename itself; not every platform can open a directory, so best effort.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// Removes the temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}
