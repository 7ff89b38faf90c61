"""NumPy conventions: `out=` for quantize and dequantize, and dequantize(dtype=np.float16)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import kquant
from kquant import QuantType


def _quantized(t: QuantType, x: np.ndarray) -> np.ndarray:
    try:
        return kquant.quantize(x, t)
    except ValueError:  # types that need an importance matrix
        return kquant.quantize(x, t, imatrix=np.ones(x.shape[-1], np.float32))


def _x(t: QuantType, lead=(3, 4), seed=0) -> np.ndarray:
    n = 2 * max(t.block_size, 32)
    return np.random.default_rng(seed).standard_normal(lead + (n,)).astype(np.float32)


def _random_blocks(t: QuantType, rows: int, blocks: int) -> np.ndarray:
    return np.random.default_rng(t.value).integers(0, 256, (rows, blocks * t.type_size), dtype=np.uint8)


@pytest.mark.parametrize("t", [t for t in QuantType if t.is_implemented], ids=str)
def test_out_same_as_new_arrays(t):
    x = _x(t)
    q = _quantized(t, x)
    qo = np.full(q.shape, 0xAB, np.uint8)
    try:
        r = kquant.quantize(x, t, out=qo)
    except ValueError:
        r = kquant.quantize(x, t, imatrix=np.ones(x.shape[-1], np.float32), out=qo)
    assert r is qo and np.array_equal(qo, q)
    d = kquant.dequantize(q, t)
    do = np.full(d.shape, np.nan, np.float32)
    assert kquant.dequantize(q, t, out=do) is do
    assert np.array_equal(do.view(np.uint32), d.view(np.uint32))
    # out may be a view into a bigger array, as long as it is C-contiguous
    big = np.zeros((2,) + d.shape, np.float32)
    assert kquant.dequantize(q, t, out=big[1]) is not None and np.array_equal(big[1], d) and not big[0].any()


@pytest.mark.parametrize("t", [t for t in QuantType if t.is_implemented], ids=str)
def test_half_is_float32_rounded_to_nearest(t):
    for q in (_quantized(t, _x(t)), _random_blocks(t, 5, 3)):
        want = kquant.dequantize(q, t)
        with np.errstate(over="ignore"):
            want16 = want.astype(np.float16)  # NumPy rounds to nearest even, as ggml's fp32->fp16
        got = kquant.dequantize(q, t, dtype=np.float16)
        assert got.dtype == np.float16 and got.shape == want.shape
        nan = np.isnan(want16)
        assert np.array_equal(np.isnan(got), nan)  # NaN payloads may differ; positions may not
        assert np.array_equal(got.view(np.uint16)[~nan], want16.view(np.uint16)[~nan])
        ho = np.empty(want.shape, np.float16)
        assert kquant.dequantize(q, t, out=ho) is ho  # dtype taken from out
        assert np.array_equal(ho.view(np.uint16), got.view(np.uint16))
        assert kquant.dequantize(q, t, out=np.empty(want.shape, np.float16), dtype="float16").dtype == np.float16


def test_half_rounding_ties_and_overflow():
    # F32 "dequantize" is the identity: the conversion alone, on hand-picked values
    v = np.array(
        [1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65520.0, 65519.99, -1e6, 2**-25, 2**-24 * 1.5, -0.0, np.inf, -np.inf],
        np.float32,
    )
    got = kquant.dequantize(v.view(np.uint8), "f32", dtype=np.float16)
    with np.errstate(over="ignore"):
        want = v.astype(np.float16)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    assert got[0] == 1.0 and got[1] == np.float16(1 + 2**-9)  # ties to even
    assert np.isinf(got[3]) and got[4] == 65504  # 65520 rounds up to inf


def test_half_chunks_and_threads():
    """Long and many rows: converted through small chunks by several workers."""
    x = np.random.default_rng(3).standard_normal((37, 40_000 // 32 * 32)).astype(np.float32)
    x2 = np.random.default_rng(4).standard_normal((3000, 96)).astype(np.float32)
    old = kquant.get_num_threads()
    try:
        for n in (1, 3):
            kquant.set_num_threads(n)
            for a in (x, x2):
                q = kquant.quantize(a, "q8_0")
                got = kquant.dequantize(q, "q8_0", dtype=np.float16)
                want = kquant.dequantize(q, "q8_0").astype(np.float16)
                assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    finally:
        kquant.set_num_threads(old)


def test_half_has_no_float32_intermediate():
    """NumPy's allocations (tracked by tracemalloc) stay at the half-precision result."""
    q = kquant.quantize(np.random.default_rng(5).standard_normal((512, 4096)).astype(np.float32), "q4_k")
    n_values = 512 * 4096
    tracemalloc.start()
    try:
        h = kquant.dequantize(q, "q4_k", dtype=np.float16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.nbytes == 2 * n_values
    assert peak < 2 * n_values + (1 << 20), f"peak {peak} bytes for a {2 * n_values}-byte result"


def test_large_results_same_as_small_path():
    """From 1 M values on results are allocated by NumPy and filled in place."""
    x = np.random.default_rng(6).standard_normal((2, 1100, 512)).astype(np.float32)
    q = kquant.quantize(x, "q5_k")
    assert q.shape == (2, 1100, 352)
    assert np.array_equal(q[1], kquant.quantize(x[1], "q5_k"))  # 563 K values: the small path
    d = kquant.dequantize(q, "q5_k")
    assert d.shape == x.shape and np.array_equal(d[1], kquant.dequantize(q[1], "q5_k"))


def test_out_errors():
    x = np.ones((4, 64), np.float32)
    q = kquant.quantize(x, "q8_0")
    with pytest.raises(ValueError, match=r"shape \(4, 68\)"):
        kquant.quantize(x, "q8_0", out=np.empty((4, 67), np.uint8))
    with pytest.raises(TypeError, match="dtype uint8"):
        kquant.quantize(x, "q8_0", out=np.empty((4, 68), np.int8))
    with pytest.raises(ValueError, match=r"shape \(4, 64\)"):
        kquant.dequantize(q, "q8_0", out=np.empty((64, 4), np.float32))
    with pytest.raises(TypeError, match="float32 or float16"):
        kquant.dequantize(q, "q8_0", out=np.empty((4, 64), np.float64))
    with pytest.raises(TypeError, match="float32 or float16"):
        kquant.dequantize(q, "q8_0", dtype=np.int32)
    with pytest.raises(TypeError, match="float32 or float16"):
        kquant.dequantize(q, "q8_0", dtype=">f2")
    with pytest.raises(TypeError, match="must have dtype float16"):
        kquant.dequantize(q, "q8_0", out=np.empty((4, 64), np.float32), dtype=np.float16)
    with pytest.raises(TypeError, match="NumPy array"):
        kquant.dequantize(q, "q8_0", out=[0.0] * 256)
    with pytest.raises(ValueError, match="C-contiguous"):
        kquant.dequantize(q, "q8_0", out=np.empty((64, 4), np.float32).T)
    ro = np.empty((4, 64), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kquant.dequantize(q, "q8_0", out=ro)
    buf = np.zeros(4 * 68 + 4 * 64 * 4, np.uint8)
    qb = buf[: 4 * 68].reshape(4, 68)
    qb[:] = q
    with pytest.raises(ValueError, match="share memory"):
        kquant.dequantize(qb, "q8_0", out=buf.view(np.float32)[: 4 * 64].reshape(4, 64))
    with pytest.raises(ValueError, match="share memory"):
        kquant.quantize(x, "q8_0", out=x.reshape(-1).view(np.uint8)[: 4 * 68].reshape(4, 68))
    with pytest.raises(ValueError, match="non-finite"):
        kquant.quantize(np.full((4, 64), np.nan, np.float32), "q8_0", out=np.empty((4, 68), np.uint8))
