"""NumPy-in, NumPy-out quantization functions."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from . import _kquant
from ._types import GEOMETRY, QTypeLike, QuantType, row_size, vec_dot_type

__all__ = ["quantize", "dequantize", "vec_dot", "matmul", "set_num_threads", "get_num_threads", "isa", "available_isas"]


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the 64-bit user address space
        return 1 << 47


_MEMORY_BYTES = _memory_bytes()
_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
# From this many output values (4 MiB of float32) on, results are allocated with np.empty
# and filled by the worker threads: the extension's own buffers are zero-filled by one
# thread first, which for a large array costs more than the kernel (page faults included,
# 2.4x slower for gemma-3-270m's 168 M-value token embedding). Small calls keep the
# cheaper path.
_LARGE_VALUES = 1 << 20
_PARTNER = {t: vec_dot_type(t) for t in QuantType}  # native byte order: '>f4' must not take the fast path


def _check_size(nbytes: int, what: str) -> None:
    """Refuse before allocating: a broadcast or strided view can describe terabytes
    in a few bytes, and the copy or the result would end in MemoryError or an abort."""
    if nbytes > _MEMORY_BYTES:
        raise ValueError(f"{what} would take {nbytes} bytes, more than this machine's {_MEMORY_BYTES} bytes of memory")


def _floats(x: Any, what: str) -> np.ndarray:
    """A C-contiguous, aligned native float32 array with the same values and shape as `x`."""
    if type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous and x.flags.aligned:
        return x  # the common case, checked cheaply
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(f"{what} must hold floating-point values, got dtype {a.dtype}")
    f = a.flags
    if not (a.dtype == np.float32 and f.c_contiguous and f.aligned):
        _check_size(a.size * 4, f"{what} as contiguous float32")
    # np.require rather than ascontiguousarray: it keeps 0-d arrays 0-d and copies
    # unaligned buffers, which the kernels may not read as &[f32].
    with np.errstate(over="ignore"):
        return np.require(a, np.float32, ["C", "A"])


def _bytes(q: Any, what: str) -> np.ndarray:
    if type(q) is np.ndarray and q.dtype == np.uint8 and q.ndim and q.flags.c_contiguous:
        return q  # the common case, checked cheaply
    a = np.asarray(q)
    if a.dtype != np.uint8:
        raise TypeError(f"{what} must be a uint8 array of quantized blocks, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{what} must have at least one dimension (..., row_bytes)")
    if not a.flags.c_contiguous:
        _check_size(a.size, f"{what} as a contiguous array")
    return np.ascontiguousarray(a)


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def quantize(
    x: npt.ArrayLike,
    qtype: QTypeLike,
    *,
    imatrix: Optional[npt.ArrayLike] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Quantize rows of `x` (shape (..., n)) to `qtype`, byte-exact with ggml.

    n must be a multiple of the type's block size. Returns uint8 of shape
    (..., row_bytes). With `imatrix` (n non-negative importance weights) ggml's
    weighted search is used; Q8_0 ignores it, as ggml does. NaN or Inf raises
    ValueError naming the row (rows counted after flattening the leading axes).
    With `out` (a writeable C-contiguous uint8 array of that shape) the bytes are
    written there and `out` is returned.
    """
    t = QuantType.parse(qtype)
    a = _floats(x, "x")
    if a.ndim == 0:
        raise ValueError("x must have at least one dimension (..., n)")
    n = a.shape[-1]
    bs, ts = GEOMETRY[t]
    rb = n // bs * ts if n % bs == 0 else row_size(t, n)  # row_size raises the clear error
    _check_size(math.prod(a.shape[:-1]) * rb, "the quantized result")
    w = None
    if imatrix is not None:
        w = _floats(imatrix, "imatrix")
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"imatrix must have shape ({n},) to match the row length, got {w.shape}")
    if out is not None:
        dst = _out_array(out, a.shape[:-1] + (rb,), _U8, "out")
        _check_no_overlap(dst, a, w)
        _kquant.quantize_into(a if a.ndim == 2 else _rows(a), t.value, w, _rows(dst))
        return out
    if math.prod(a.shape[:-1]) * rb >= _LARGE_VALUES * 4:
        res = np.empty(a.shape[:-1] + (rb,), _U8)  # see _LARGE_VALUES
        _kquant.quantize_into(a if a.ndim == 2 else _rows(a), t.value, w, _rows(res))
        return res
    res = _kquant.quantize(a if a.ndim == 2 else _rows(a), t.value, w)
    return res if a.ndim == 2 else res.reshape(a.shape[:-1] + (rb,))


def dequantize(
    q: npt.ArrayLike,
    qtype: QTypeLike,
    *,
    out: Optional[np.ndarray] = None,
    dtype: Optional[npt.DTypeLike] = None,
) -> np.ndarray:
    """Dequantize uint8 rows (..., row_bytes) of `qtype` to float32 (..., n), bit-exact with ggml.

    ``dtype=np.float16`` gives half precision: ggml's float32 values rounded to the
    nearest half (ties to even), converted in small chunks, without a float32 copy of
    the whole result. With `out` (a writeable C-contiguous float32 or float16 array of
    shape (..., n)) the values are written there and `out` is returned; the dtype
    defaults to out's.
    """
    t = QuantType.parse(qtype)
    a = _bytes(q, "q")
    bs, ts = GEOMETRY[t]
    lead, rb = a.shape[:-1], a.shape[-1]
    if rb % ts:
        raise ValueError(f"rows of {rb} bytes are not a whole number of {t.name} blocks ({ts} bytes each)")
    n = rb // ts * bs
    nrows = math.prod(lead)
    want = _result_dtype(dtype, out)
    if out is None and want is _F32 and nrows * n < _LARGE_VALUES:
        _check_size(nrows * n * 4, "the dequantized result")
        res = _kquant.dequantize(a if a.ndim == 2 else a.reshape(nrows, rb), t.value)
        return res if a.ndim == 2 else res.reshape(lead + (n,))
    if out is None:
        _check_size(nrows * n * want.itemsize, "the dequantized result")
        dst = np.empty(lead + (n,), want)
    else:
        dst = _out_array(out, lead + (n,), want, "out")
        _check_no_overlap(dst, a)
    q2 = a.reshape(nrows, rb)
    if want is _F32:
        _kquant.dequantize_into(q2, t.value, dst.reshape(nrows, n))
    else:
        _kquant.dequantize_f16_into(q2, t.value, dst.reshape(nrows, n).view(_U8))
    return dst if out is None else out


_F16 = np.dtype(np.float16)


def _result_dtype(dtype: Any, out: Optional[np.ndarray]) -> np.dtype:
    """float32 or float16 (native order), from `dtype` or else from `out`."""
    if dtype is None:
        if out is None:
            return _F32
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array, not {type(out).__name__}")
        dtype = out.dtype
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float16, not {dtype!r}") from None
    if d == _F32:
        return _F32
    if d == _F16:
        return _F16
    raise TypeError(f"dtype must be float32 or float16 (native byte order), got {d}")


def _out_array(out: Any, shape: tuple, dtype: np.dtype, what: str) -> np.ndarray:
    """`out` checked to be a writeable, aligned, C-contiguous array of exactly `shape` and `dtype`."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, not {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{what} must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {out.shape}")
    f = out.flags
    if not f.writeable:
        raise ValueError(f"{what} is read-only")
    if not (f.c_contiguous and f.aligned):
        raise ValueError(f"{what} must be C-contiguous and aligned")
    return out


def _check_no_overlap(out: np.ndarray, *inputs: Optional[np.ndarray]) -> None:
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError("out must not share memory with the input")


def vec_dot(q: npt.ArrayLike, yq: npt.ArrayLike, qtype: QTypeLike) -> np.ndarray:
    """Row-wise dot products of `q` (qtype rows) with `yq` (rows of `vec_dot_type(qtype)`).

    Both have the same leading shape; returns float32 of that shape.
    """
    t = QuantType.parse(qtype)
    if (
        type(q) is np.ndarray
        and type(yq) is np.ndarray
        and q.ndim == 2
        and yq.ndim == 2
        and q.dtype == _U8
        and yq.dtype == _U8
        and q.flags.c_contiguous
        and yq.flags.c_contiguous
    ):
        # the common 2-D case: the extension checks row counts, block sizes and the
        # partner's row length itself, with the same messages
        return _kquant.vec_dot(q, yq, t.value)
    a = _bytes(q, "q")
    b = _bytes(yq, "yq")
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"q and yq must have the same leading shape, got {a.shape[:-1]} and {b.shape[:-1]}")
    rb = a.shape[-1]
    bs, ts = GEOMETRY[t]
    if rb % ts:
        raise ValueError(f"rows of {rb} bytes are not a whole number of {t.name} blocks ({ts} bytes each)")
    n = rb // ts * bs
    p = _PARTNER[t]
    pbs, pts = GEOMETRY[p]
    if n % pbs or b.shape[-1] != n // pbs * pts:
        raise ValueError(
            f"yq rows must be {row_size(p, n)} bytes ({p.name}, the partner of {t.name}, for {n} values), "
            f"got {b.shape[-1]}"
        )
    _check_size(math.prod(a.shape[:-1]) * 4, "the result")
    if a.ndim == 2:
        return _kquant.vec_dot(a, b, t.value)
    return _kquant.vec_dot(_rows(a), _rows(b), t.value).reshape(a.shape[:-1])


def matmul(wq: npt.ArrayLike, x: npt.ArrayLike, qtype: QTypeLike) -> np.ndarray:
    """Quantized weights (rows, row_bytes) times activations x, (n,) or (m, n).

    x is quantized to the partner type with ggml's reference quantizer, then each
    output is a quantized dot product. Returns (rows,) or (m, rows) float32.
    """
    t = QuantType.parse(qtype)
    w = _bytes(wq, "wq")
    if w.ndim != 2:
        raise ValueError(f"wq must be 2-D (rows, row_bytes), got shape {w.shape}")
    a = _floats(x, "x")
    if a.ndim not in (1, 2):
        raise ValueError(f"x must be (n,) or (m, n), got shape {a.shape}")
    rb = w.shape[1]
    if rb % t.type_size:
        raise ValueError(f"rows of {rb} bytes are not a whole number of {t.name} blocks ({t.type_size} bytes each)")
    m, n = (1, a.shape[0]) if a.ndim == 1 else a.shape
    nw = rb // t.type_size * t.block_size
    if n != nw:
        raise ValueError(f"x rows have {n} values but the {t.name} weight rows hold {nw} values")
    _check_size(m * row_size(vec_dot_type(t), n), "x quantized to the partner type")
    _check_size(m * w.shape[0] * 4, "the result")
    # reshape(1, n), not reshape(-1, n): -1 is ambiguous when n == 0
    out = _kquant.matmul(w, a.reshape(m, n), t.value)
    return out[0] if a.ndim == 1 else out


def set_num_threads(n: int) -> None:
    """Threads used by the kernels (default: KQUANT_NUM_THREADS, else every core)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"the number of threads must be an int, not {type(n).__name__}")
    if n < 1:
        raise ValueError("the number of threads must be at least 1")
    if n > 1 << 31:  # would be OverflowError converting to usize; the extension's own cap is far lower
        raise ValueError(f"the number of threads must be at most a few thousand, got {n}")
    _kquant.set_num_threads(int(n))


def isa() -> str:
    """The kernel path in use: "avx2", "neon" or "scalar" (`KQUANT_ISA` forces one)."""
    return _kquant.isa()


def available_isas() -> list:
    """Every kernel path this CPU runs, scalar first."""
    return list(_kquant.available_isas())


def get_num_threads() -> int:
    return int(_kquant.get_num_threads())


def _check_env() -> None:
    v = os.environ.get("KQUANT_NUM_THREADS")
    if v is not None and not (v.strip().isdigit() and int(v) > 0):
        warnings.warn(f"ignoring KQUANT_NUM_THREADS={v!r}: expected a positive integer", RuntimeWarning, stacklevel=3)


_check_env()
