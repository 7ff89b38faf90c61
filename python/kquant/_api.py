"""NumPy-in, NumPy-out quantization functions."""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from . import _kquant
from ._types import QTypeLike, QuantType, row_size, vec_dot_type

__all__ = ["quantize", "dequantize", "vec_dot", "matmul", "set_num_threads", "get_num_threads"]


def _floats(x: Any, what: str) -> np.ndarray:
    """A C-contiguous native float32 array with the same values as `x`."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(f"{what} must hold floating-point values, got dtype {a.dtype}")
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(a, dtype=np.float32)


def _bytes(q: Any, what: str) -> np.ndarray:
    a = np.asarray(q)
    if a.dtype != np.uint8:
        raise TypeError(f"{what} must be a uint8 array of quantized blocks, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{what} must have at least one dimension (..., row_bytes)")
    return np.ascontiguousarray(a)


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.shape[-1] else a.reshape(int(np.prod(a.shape[:-1])), 0)


def quantize(x: npt.ArrayLike, qtype: QTypeLike, *, imatrix: Optional[npt.ArrayLike] = None) -> np.ndarray:
    """Quantize rows of `x` (shape (..., n)) to `qtype`, byte-exact with ggml.

    n must be a multiple of the type's block size. Returns uint8 of shape
    (..., row_bytes). With `imatrix` (n non-negative importance weights) ggml's
    weighted search is used; Q8_0 ignores it, as ggml does. NaN or Inf raises
    ValueError naming the row (rows counted after flattening the leading axes).
    """
    t = QuantType.parse(qtype)
    a = _floats(x, "x")
    if a.ndim == 0:
        raise ValueError("x must have at least one dimension (..., n)")
    n = a.shape[-1]
    rb = row_size(t, n)
    w = None
    if imatrix is not None:
        w = _floats(imatrix, "imatrix")
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"imatrix must have shape ({n},) to match the row length, got {w.shape}")
    out = _kquant.quantize(_rows(a), t.value, w)
    return out.reshape(a.shape[:-1] + (rb,))


def dequantize(q: npt.ArrayLike, qtype: QTypeLike) -> np.ndarray:
    """Dequantize uint8 rows (..., row_bytes) of `qtype` to float32 (..., n), bit-exact with ggml."""
    t = QuantType.parse(qtype)
    a = _bytes(q, "q")
    rb = a.shape[-1]
    if rb % t.type_size:
        raise ValueError(f"rows of {rb} bytes are not a whole number of {t.name} blocks ({t.type_size} bytes each)")
    n = rb // t.type_size * t.block_size
    out = _kquant.dequantize(_rows(a), t.value)
    return out.reshape(a.shape[:-1] + (n,))


def vec_dot(q: npt.ArrayLike, yq: npt.ArrayLike, qtype: QTypeLike) -> np.ndarray:
    """Row-wise dot products of `q` (qtype rows) with `yq` (rows of `vec_dot_type(qtype)`).

    Both have the same leading shape; returns float32 of that shape.
    """
    t = QuantType.parse(qtype)
    a = _bytes(q, "q")
    b = _bytes(yq, "yq")
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"q and yq must have the same leading shape, got {a.shape[:-1]} and {b.shape[:-1]}")
    rb = a.shape[-1]
    if rb % t.type_size:
        raise ValueError(f"rows of {rb} bytes are not a whole number of {t.name} blocks ({t.type_size} bytes each)")
    n = rb // t.type_size * t.block_size
    p = vec_dot_type(t)
    if b.shape[-1] != row_size(p, n):
        raise ValueError(
            f"yq rows must be {row_size(p, n)} bytes ({p.name}, the partner of {t.name}, for {n} values), "
            f"got {b.shape[-1]}"
        )
    out = _kquant.vec_dot(_rows(a), _rows(b), t.value)
    return out.reshape(a.shape[:-1])


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
    out = _kquant.matmul(w, a.reshape(-1, a.shape[-1]), t.value)
    return out[0] if a.ndim == 1 else out


def set_num_threads(n: int) -> None:
    """Threads used by the kernels (default: KQUANT_NUM_THREADS, else every core)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"the number of threads must be an int, not {type(n).__name__}")
    if n < 1:
        raise ValueError("the number of threads must be at least 1")
    _kquant.set_num_threads(int(n))


def get_num_threads() -> int:
    return int(_kquant.get_num_threads())


def _check_env() -> None:
    v = os.environ.get("KQUANT_NUM_THREADS")
    if v is not None and not (v.strip().isdigit() and int(v) > 0):
        warnings.warn(f"ignoring KQUANT_NUM_THREADS={v!r}: expected a positive integer", RuntimeWarning, stacklevel=3)


_check_env()
