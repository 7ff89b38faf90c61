//! Spreading rows over threads. Each row is computed by exactly one thread with the
//! same kernel, so results do not depend on the thread count.

use std::sync::{Arc, Mutex, OnceLock};

use kquant_core::ops::{self, Rows};
use kquant_core::{Error, Result};
use rayon::prelude::*;
use rayon::ThreadPool;

/// More threads than this is a mistake (a pool of 65535, rayon's own cap, takes
/// minutes to start) rather than a tuning choice.
pub const MAX_THREADS: usize = 1024;

/// Below this many values per task, thread hand-off costs more than it saves.
const MIN_VALUES_PER_TASK: usize = 1 << 15;

struct Pool {
    threads: usize,
    pool: Option<Arc<ThreadPool>>,
}

fn state() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("KQUANT_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .map(|n| n.min(MAX_THREADS))
            .unwrap_or_else(default_threads);
        Mutex::new(Pool { threads, pool: None })
    })
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("the number of threads must be at least 1"));
    }
    if n > MAX_THREADS {
        return Err(Error::invalid(format!("the number of threads must be at most {MAX_THREADS}, got {n}")));
    }
    let mut s = state().lock().unwrap_or_else(|e| e.into_inner());
    if s.threads != n {
        s.threads = n;
        s.pool = None;
    }
    Ok(())
}

pub fn threads() -> usize {
    state().lock().unwrap_or_else(|e| e.into_inner()).threads
}

/// The pool for the current thread setting, or None when running on one thread.
fn pool() -> Result<Option<Arc<ThreadPool>>> {
    let mut s = state().lock().unwrap_or_else(|e| e.into_inner());
    if s.threads <= 1 {
        return Ok(None);
    }
    if s.pool.is_none() {
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(s.threads)
            .thread_name(|i| format!("kquant-{i}"))
            .build()
            .map_err(|e| Error::invalid(format!("cannot start {} threads: {e}", s.threads)))?;
        s.pool = Some(Arc::new(p));
    }
    Ok(s.pool.clone())
}

/// Rows per task so that each task has enough work and every thread gets several tasks.
fn rows_per_task(nrows: usize, values_per_row: usize, threads: usize) -> usize {
    let by_size = MIN_VALUES_PER_TASK.div_ceil(values_per_row.max(1));
    let by_balance = nrows.div_ceil(threads * 4).max(1);
    by_size.max(by_balance).max(1)
}

/// Runs `f(first_row, row_count)` over consecutive row ranges, in parallel when
/// worthwhile. `f` receives disjoint output chunks through the closure's own splitting.
fn run<F>(nrows: usize, values_per_row: usize, f: F) -> Result<()>
where
    F: Fn(usize, usize) -> Result<()> + Sync,
{
    let pool = pool()?;
    let threads = pool.as_ref().map_or(1, |p| p.current_num_threads());
    let per = rows_per_task(nrows, values_per_row, threads);
    match pool {
        Some(p) if nrows > per => {
            let starts: Vec<usize> = (0..nrows).step_by(per).collect();
            let results: Vec<Result<()>> = p.install(|| starts.par_iter().map(|&s| f(s, per.min(nrows - s))).collect());
            results.into_iter().collect()
        }
        _ => f(0, nrows),
    }
}

/// A raw pointer that may cross threads: every task writes a disjoint row range.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: tasks only ever form slices over disjoint row ranges of the buffer.
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as above; the pointer itself is never written through concurrently twice.
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// # Safety
    /// `start..start+len` must lie inside the buffer and not overlap any other live slice.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

pub fn quantize(rows: Rows, x: &[f32], q: &mut [u8], imat: Option<&[f32]>) -> Result<()> {
    let (n, rb) = (rows.n_per_row, rows.row_bytes);
    if x.len() != rows.nrows * n || q.len() != rows.nrows * rb {
        return Err(Error::invalid("internal: buffer sizes do not match the row geometry"));
    }
    let out = SharedMut(q.as_mut_ptr());
    run(rows.nrows, n, |first, count| {
        let xs = &x[first * n..(first + count) * n];
        ops::check_finite(xs, n, first)?;
        // SAFETY: row ranges handed out by `run` are disjoint and inside `q`.
        let qs = unsafe { out.slice(first * rb, count * rb) };
        ops::quantize(Rows { nrows: count, ..rows }, xs, qs, imat)
    })
}

pub fn dequantize(rows: Rows, q: &[u8], y: &mut [f32]) -> Result<()> {
    let (n, rb) = (rows.n_per_row, rows.row_bytes);
    if y.len() != rows.nrows * n || q.len() != rows.nrows * rb {
        return Err(Error::invalid("internal: buffer sizes do not match the row geometry"));
    }
    let out = SharedMut(y.as_mut_ptr());
    run(rows.nrows, n, |first, count| {
        // SAFETY: row ranges handed out by `run` are disjoint and inside `y`.
        let ys = unsafe { out.slice(first * n, count * n) };
        ops::dequantize(Rows { nrows: count, ..rows }, &q[first * rb..(first + count) * rb], ys)
    })
}

pub fn vec_dot(rows: Rows, q: &[u8], yq: &[u8], dots: &mut [f32]) -> Result<()> {
    let (n, rb) = (rows.n_per_row, rows.row_bytes);
    let pb = rows.qtype.vec_dot_type().row_size(n)?;
    if dots.len() != rows.nrows || q.len() != rows.nrows * rb || yq.len() != rows.nrows * pb {
        return Err(Error::invalid("internal: buffer sizes do not match the row geometry"));
    }
    let out = SharedMut(dots.as_mut_ptr());
    run(rows.nrows, n, |first, count| {
        // SAFETY: row ranges handed out by `run` are disjoint and inside `dots`.
        let o = unsafe { out.slice(first, count) };
        let r = Rows { nrows: count, ..rows };
        ops::vec_dot(r, &q[first * rb..(first + count) * rb], &yq[first * pb..(first + count) * pb], o)
    })
}

/// `out[i, r] = w[r] . quantize_partner(x[i])`, for `m` activation rows.
pub fn matmul(rows: Rows, w: &[u8], x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
    let n = rows.n_per_row;
    let partner = Rows::new(rows.qtype.vec_dot_type(), n, m)?;
    let mut xq = zeroed(m.checked_mul(partner.row_bytes))
        .ok_or_else(|| Error::invalid("the activations are too large to quantize"))?;
    quantize(partner, x, &mut xq, None)?;
    let rb = rows.row_bytes;
    for (i, o) in out.chunks_exact_mut(rows.nrows.max(1)).enumerate().take(m) {
        let xr = &xq[i * partner.row_bytes..(i + 1) * partner.row_bytes];
        let dst = SharedMut(o.as_mut_ptr());
        run(rows.nrows, n, |first, count| {
            // SAFETY: row ranges handed out by `run` are disjoint and inside this output row.
            let o = unsafe { dst.slice(first, count) };
            ops::matvec(Rows { nrows: count, ..rows }, &w[first * rb..(first + count) * rb], xr, o)
        })?;
    }
    Ok(())
}

/// A zeroed buffer, or None when `len` overflowed or cannot be allocated, where `vec!` would abort.
pub fn zeroed<T: Clone + Default>(len: Option<usize>) -> Option<Vec<T>> {
    let len = len?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, T::default());
    Some(v)
}

/// Values converted per step when dequantizing to half precision: the float32 scratch
/// stays this small (or one row, if longer) whatever the size of the array.
const HALF_CHUNK_VALUES: usize = 1 << 14;

/// Dequantizes rows of `q` into IEEE half precision (`h`: 2 little-endian bytes per value),
/// rounding ggml's float32 values to nearest even. Each task converts through a small
/// float32 scratch of its own, never a whole-array intermediate.
pub fn dequantize_f16(rows: Rows, q: &[u8], h: &mut [u8]) -> Result<()> {
    let (n, rb) = (rows.n_per_row, rows.row_bytes);
    if h.len() != rows.nrows * n * 2 || q.len() != rows.nrows * rb {
        return Err(Error::invalid("internal: buffer sizes do not match the row geometry"));
    }
    if rows.nrows == 0 || n == 0 {
        return Ok(());
    }
    let half = Rows::new(kquant_core::QuantType::F16, n, 1)?;
    let step = (HALF_CHUNK_VALUES / n).max(1);
    let out = SharedMut(h.as_mut_ptr());
    run(rows.nrows, n, |first, count| {
        let mut scratch: Vec<f32> = zeroed(Some(step.min(count) * n))
            .ok_or_else(|| Error::invalid("cannot allocate a row of float32 scratch"))?;
        let mut r = 0;
        while r < count {
            let k = step.min(count - r);
            let at = first + r;
            let ys = &mut scratch[..k * n];
            ops::dequantize(Rows { nrows: k, ..rows }, &q[at * rb..(at + k) * rb], ys)?;
            // SAFETY: row ranges handed out by `run` are disjoint and inside `h`; the
            // sub-range [at, at + k) lies inside this task's range.
            let hs = unsafe { out.slice(at * n * 2, k * n * 2) };
            // F16 "quantization" is ggml's fp32 -> fp16 conversion: round to nearest even,
            // NaN kept; ops::quantize neither checks nor rejects non-finite values.
            ops::quantize(Rows { nrows: k, ..half }, ys, hs, None)?;
            r += k;
        }
        Ok(())
    })
}
