"""Hostile arguments to every public function.

Each call must give the answer for the contiguous native float32 / uint8 copy of
its arguments, or a ValueError / TypeError that names the problem. Anything else
(MemoryError, OverflowError, a Rust panic, an abort, a hang) fails the test: the
helpers below catch only ValueError and TypeError.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import operator

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

import kquant
from kquant import QuantType

TYPES = [t for t in QuantType if t.is_implemented]
BLOCK_TYPES = [t for t in TYPES if not t.is_float]
# ggml gives these activation formats no dot product of their own
ACTIVATION_ONLY = {QuantType.Q8_1, QuantType.Q8_K}
FLOAT_DTYPES = [np.dtype(d) for d in ("<f2", ">f2", "<f4", ">f4", "<f8", ">f8")] + [np.dtype(np.longdouble)]
FLOAT_LAYOUTS = ["c", "fortran", "flipped", "strided", "readonly", "unaligned", "list", "memoryview", "masked"]
BYTE_LAYOUTS = ["c", "fortran", "flipped", "strided", "readonly", "memoryview", "bytearray", "masked"]
HUGE = 2**40

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def outcome(fn, *args, **kw):
    """fn's result, or the ValueError / TypeError it raised; other exceptions propagate and fail the test."""
    try:
        return fn(*args, **kw)
    except (ValueError, TypeError) as e:
        return e


def assert_same(got, want):
    """Same exception (type and message) or bit-identical arrays of the same shape and dtype."""
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want), (got, want)
        return
    assert isinstance(got, np.ndarray), got
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def assert_error(result, kind, *words):
    """`result` is a `kind` error whose message mentions at least one of `words` (case-insensitive)."""
    assert isinstance(result, kind), f"expected {kind.__name__}, got {result!r}"
    msg = str(result).lower()
    assert not words or any(w.lower() in msg for w in words), (str(result), words)


def hostile(a: np.ndarray, layout: str, dtype=None):
    """Something that holds the values of `a` (in `dtype`) but is laid out as `layout` says."""
    a = a.astype(dtype or a.dtype)
    if layout == "c":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "flipped":  # negative strides on every axis
        return np.flip(np.flip(a).copy())
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "readonly":
        a.flags.writeable = False
        return a
    if layout == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if layout == "list":
        return a.tolist()
    if layout == "memoryview":
        return memoryview(a)
    if layout == "bytearray":
        return bytearray(a.tobytes())
    if layout == "masked":
        return np.ma.masked_array(a, mask=np.zeros(a.shape, bool))
    raise AssertionError(layout)


def layout_ok(a: np.ndarray, layout: str) -> bool:
    # a list of an empty axis loses the axes after it; bytearray is 1-D only
    if layout == "list":
        return np.asarray(a.tolist()).shape == a.shape
    if layout == "bytearray":
        return a.ndim == 1
    return True


def f16_exact(rng: np.random.Generator, shape) -> np.ndarray:
    """float32 values that every float dtype holds exactly, so a dtype change keeps the values."""
    return (rng.standard_normal(shape) * 4).astype(np.float16).astype(np.float32)


@st.composite
def leading_shapes(draw, max_rows=3):
    return tuple(draw(st.lists(st.integers(0, max_rows), min_size=0, max_size=2)))


# ---------------------------------------------------------------------------
# dtypes, byte orders, layouts, containers: same answer as the contiguous copy


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    lead=leading_shapes(),
    blocks=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    layout=st.sampled_from(FLOAT_LAYOUTS),
    dtype=st.sampled_from(FLOAT_DTYPES),
    imatrix=st.sampled_from([None, *FLOAT_LAYOUTS]),
    wdtype=st.sampled_from(FLOAT_DTYPES),
)
def test_quantize_any_float_layout_matches_contiguous_copy(t, lead, blocks, seed, layout, dtype, imatrix, wdtype):
    rng = np.random.default_rng(seed)
    n = blocks * t.block_size * (8 if t.is_float else 1)
    x = f16_exact(rng, lead + (n,))
    assume(layout_ok(x, layout))
    w = None
    if imatrix is not None:
        w = np.abs(f16_exact(rng, (n,)))
        assume(layout_ok(w, imatrix))
    want = outcome(kquant.quantize, x, t, imatrix=w)
    assert isinstance(want, np.ndarray) and want.shape == lead + (kquant.row_size(t, n),), want
    wh = None if w is None else hostile(w, imatrix, wdtype)
    got = outcome(kquant.quantize, hostile(x, layout, dtype), t, imatrix=wh)
    assert_same(got, want)


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    lead=leading_shapes(),
    blocks=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    layout=st.sampled_from(BYTE_LAYOUTS),
)
def test_dequantize_any_byte_layout_and_random_bytes(t, lead, blocks, seed, layout):
    # random bytes: any scale (NaN and Inf halfs included) and any index must decode without a crash
    q = np.random.default_rng(seed).integers(0, 256, lead + (blocks * t.type_size,), dtype=np.uint8)
    assume(layout_ok(q, layout))
    want = outcome(kquant.dequantize, q, t)
    assert isinstance(want, np.ndarray) and want.shape == lead + (blocks * t.block_size,), want
    assert want.dtype == np.float32
    assert_same(outcome(kquant.dequantize, hostile(q, layout), t), want)


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    lead=leading_shapes(),
    blocks=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    layouts=st.tuples(st.sampled_from(BYTE_LAYOUTS), st.sampled_from(BYTE_LAYOUTS)),
)
def test_vec_dot_any_byte_layout_and_random_bytes(t, lead, blocks, seed, layouts):
    rng = np.random.default_rng(seed)
    p = kquant.vec_dot_type(t)
    n = blocks * t.block_size
    q = rng.integers(0, 256, lead + (blocks * t.type_size,), dtype=np.uint8)
    yq = rng.integers(0, 256, lead + (kquant.row_size(p, n),), dtype=np.uint8)
    assume(layout_ok(q, layouts[0]) and layout_ok(yq, layouts[1]))
    want = outcome(kquant.vec_dot, q, yq, t)
    if t in ACTIVATION_ONLY and n and q.size:
        assert_error(want, ValueError, "activation")
    else:
        assert isinstance(want, np.ndarray) and want.shape == lead and want.dtype == np.float32, want
    assert_same(outcome(kquant.vec_dot, hostile(q, layouts[0]), hostile(yq, layouts[1]), t), want)


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    rows=st.integers(0, 4),
    m=st.sampled_from([None, 0, 1, 3]),
    blocks=st.integers(0, 2),
    seed=st.integers(0, 2**32 - 1),
    wlayout=st.sampled_from(BYTE_LAYOUTS),
    xlayout=st.sampled_from(FLOAT_LAYOUTS),
    dtype=st.sampled_from(FLOAT_DTYPES),
)
def test_matmul_any_layout_matches_contiguous_and_vec_dot(t, rows, m, blocks, seed, wlayout, xlayout, dtype):
    rng = np.random.default_rng(seed)
    n = blocks * t.block_size
    w = rng.integers(0, 256, (rows, blocks * t.type_size), dtype=np.uint8)
    x = f16_exact(rng, (n,) if m is None else (m, n))
    assume(layout_ok(w, wlayout) and layout_ok(x, xlayout))
    want = outcome(kquant.matmul, w, x, t)
    if t in ACTIVATION_ONLY and rows and n and m != 0:
        assert_error(want, ValueError, "activation")
    else:
        assert isinstance(want, np.ndarray) and want.dtype == np.float32, want
        assert want.shape == ((rows,) if m is None else (m, rows))
        # the definition: each weight row dotted with the partner-quantized activation row
        xs = x.reshape(1 if m is None else m, n)
        xq = kquant.quantize(xs, kquant.vec_dot_type(t))
        for i in range(xs.shape[0]):
            dots = kquant.vec_dot(w, np.repeat(xq[i : i + 1], rows, axis=0), t) if rows else np.zeros(0, np.float32)
            assert_same(want.reshape(xs.shape[0], rows)[i], dots)
    assert_same(outcome(kquant.matmul, hostile(w, wlayout), hostile(x, xlayout, dtype), t), want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("layout", FLOAT_LAYOUTS)
def test_every_float_layout_and_dtype(layout, dtype):
    # the random tests above may miss a pairing; this one does not
    rng = np.random.default_rng(1)
    x, w = f16_exact(rng, (3, 256)), np.abs(f16_exact(rng, (256,)))
    for t in ("q4_k", "iq4_nl", "f16"):
        assert_same(kquant.quantize(hostile(x, layout, dtype), t), kquant.quantize(x, t))
        if layout != "list":
            got = kquant.quantize(hostile(x, layout, dtype), t, imatrix=hostile(w, layout, dtype))
            assert_same(got, kquant.quantize(x, t, imatrix=w))
    wq = kquant.quantize(f16_exact(rng, (5, 256)), "q4_k")
    assert_same(kquant.matmul(wq, hostile(x, layout, dtype), "q4_k"), kquant.matmul(wq, x, "q4_k"))
    assert_same(kquant.matmul(wq, hostile(x[0], layout, dtype), "q4_k"), kquant.matmul(wq, x[0], "q4_k"))


@pytest.mark.parametrize("layout", BYTE_LAYOUTS)
def test_every_byte_layout(layout):
    rng = np.random.default_rng(2)
    q = kquant.quantize(f16_exact(rng, (3, 256)), "q5_k")
    yq = kquant.quantize(f16_exact(rng, (3, 256)), "q8_k")
    for a in (q, q[0]):
        if layout_ok(a, layout):
            assert_same(kquant.dequantize(hostile(a, layout), "q5_k"), kquant.dequantize(a, "q5_k"))
    if layout_ok(q, layout):
        assert_same(kquant.vec_dot(hostile(q, layout), hostile(yq, layout), "q5_k"), kquant.vec_dot(q, yq, "q5_k"))
        x = f16_exact(rng, (2, 256))
        assert_same(kquant.matmul(hostile(q, layout), x, "q5_k"), kquant.matmul(q, x, "q5_k"))
    if layout_ok(q[0], layout):
        got = kquant.vec_dot(hostile(q[0], layout), hostile(yq[0], layout), "q5_k")
        assert_same(got, kquant.vec_dot(q[0], yq[0], "q5_k"))


# ---------------------------------------------------------------------------
# wrong dtypes

NON_FLOAT_DTYPES = [
    np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.complex64, np.complex128, object,
    "U4", "S4", "V4", "M8[s]", "m8[s]", [("a", "<f4")], [("re", "<f4"), ("im", "<f4")],
]  # fmt: skip
NON_FLOAT_OBJECTS = [
    "abc", b"abc", 3, [1, 2, 3], [[1, 2]], {"a": 1.0}, [1.0, "x"], object(), 1 + 2j,
    np.array([1.0, 2.0], dtype=object), np.arange(4.0).view(np.complex128),
]  # fmt: skip
NON_BYTE_DTYPES = [
    np.int8, np.uint16, ">u2", np.int64, np.float16, np.float32, np.bool_, object, "S1", "V1", [("a", "u1")],
]  # fmt: skip
NON_BYTE_OBJECTS = ["abc", b"\x00" * 34, None, 3, [0] * 34, [[0] * 34], 1.5, np.zeros(34, np.int8)]


def cases(dtypes, objects):
    return [pytest.param(("dtype", d), id=f"dtype={d!r}") for d in dtypes] + [
        pytest.param(("object", o), id=f"object={type(o).__name__}:{i}") for i, o in enumerate(objects)
    ]


def build(case, shape):
    kind, v = case
    return np.zeros(shape, dtype=v) if kind == "dtype" else v


@pytest.mark.parametrize("where", ["x", "imatrix", "matmul x"])
@pytest.mark.parametrize("case", cases(NON_FLOAT_DTYPES, NON_FLOAT_OBJECTS))
def test_non_float_inputs_are_type_errors(where, case):
    good = np.ones((2, 32), np.float32)
    if where == "x":
        r = outcome(kquant.quantize, build(case, (2, 32)), "q8_0")
    elif where == "imatrix":
        r = outcome(kquant.quantize, good, "q8_0", imatrix=build(case, (32,)))
    else:
        r = outcome(kquant.matmul, kquant.quantize(good, "q8_0"), build(case, (2, 32)), "q8_0")
    assert_error(r, TypeError, "floating")
    assert str(r).startswith(where.split()[-1] + " "), r


@pytest.mark.parametrize("where", ["dequantize", "vec_dot q", "vec_dot yq", "matmul"])
@pytest.mark.parametrize("case", cases(NON_BYTE_DTYPES, NON_BYTE_OBJECTS))
def test_non_uint8_blocks_are_type_errors(where, case):
    q = kquant.quantize(np.ones((2, 32), np.float32), "q8_0")
    arr = build(case, (2, 34))
    if where == "dequantize":
        r = outcome(kquant.dequantize, arr, "q8_0")
    elif where == "vec_dot q":
        r = outcome(kquant.vec_dot, arr, q, "q8_0")
    elif where == "vec_dot yq":
        r = outcome(kquant.vec_dot, q, arr, "q8_0")
    else:
        r = outcome(kquant.matmul, arr, np.ones(32, np.float32), "q8_0")
    assert_error(r, TypeError, "uint8")


def test_ragged_lists_are_value_errors():
    assert isinstance(outcome(kquant.quantize, [[1.0] * 32, [1.0] * 31], "q8_0"), ValueError)
    assert isinstance(outcome(kquant.dequantize, [[0] * 34, [0] * 33], "q8_0"), (TypeError, ValueError))


# ---------------------------------------------------------------------------
# wrong shapes and byte counts


@SETTINGS
@given(t=st.sampled_from(TYPES), lead=leading_shapes(), n=st.integers(0, 600), seed=st.integers(0, 2**32 - 1))
def test_quantize_row_length_must_be_whole_blocks(t, lead, n, seed):
    x = f16_exact(np.random.default_rng(seed), lead + (n,))
    r = outcome(kquant.quantize, x, t)
    if n % t.block_size:
        assert_error(r, ValueError, f"multiple of the {t.name} block size {t.block_size}")
    elif t.requires_imatrix:  # whole blocks, but ggml has no quantizer without an imatrix
        assert_error(r, ValueError, "importance matrix")
    else:
        assert r.shape == lead + (n // t.block_size * t.type_size,) and r.dtype == np.uint8


@SETTINGS
@given(t=st.sampled_from(TYPES), lead=leading_shapes(), nb=st.integers(0, 700))
def test_dequantize_byte_count_must_be_whole_blocks(t, lead, nb):
    r = outcome(kquant.dequantize, np.zeros(lead + (nb,), np.uint8), t)
    if nb % t.type_size:
        assert_error(r, ValueError, t.name)
        assert str(t.type_size) in str(r)
    else:
        assert r.shape == lead + (nb // t.type_size * t.block_size,) and r.dtype == np.float32
        assert not r.any()


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    lead_q=leading_shapes(),
    lead_y=leading_shapes(),
    nb=st.integers(0, 700),
    extra=st.sampled_from([0, 0, 0, 1, -1, 34, -2]),
)
def test_vec_dot_shapes_and_byte_counts(t, lead_q, lead_y, nb, extra):
    p = kquant.vec_dot_type(t)
    n = nb // t.type_size * t.block_size
    yb = max(kquant.row_size(p, n) + extra, 0)
    r = outcome(kquant.vec_dot, np.zeros(lead_q + (nb,), np.uint8), np.zeros(lead_y + (yb,), np.uint8), t)
    problems = []
    if lead_q != lead_y:
        problems.append("leading shape")
    if nb % t.type_size:
        problems.append(t.name)
    elif yb != kquant.row_size(p, n):
        problems.append(p.name)
    if problems:
        assert_error(r, ValueError, *problems)
    elif t in ACTIVATION_ONLY and n and int(np.prod(lead_q)):
        assert_error(r, ValueError, "activation")
    else:
        assert r.shape == lead_q and r.dtype == np.float32 and not r.any()


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    wshape=st.lists(st.integers(0, 3), min_size=0, max_size=3),
    xlead=st.sampled_from([None, (), (0,), (1,), (3,), (2, 2), (1, 0)]),
    wblocks=st.integers(0, 2),
    xn=st.sampled_from(["same", "other", "odd"]),
    wextra=st.sampled_from([0, 0, 1]),
)
def test_matmul_shapes(t, wshape, xlead, wblocks, xn, wextra):
    nb = wblocks * t.type_size + wextra
    wshape = tuple(wshape[:-1]) + (nb,) if wshape else ()
    nw = nb // t.type_size * t.block_size
    n = {"same": nw, "other": nw + t.block_size, "odd": nw + 1}[xn]
    xshape = () if xlead is None else xlead + (n,)
    r = outcome(kquant.matmul, np.zeros(wshape, np.uint8), np.zeros(xshape, np.float32), t)
    problems = []
    if len(wshape) != 2:
        problems += ["2-D", "dimension"]
    if len(xshape) not in (1, 2):
        problems += ["(n,) or (m, n)"]
    if len(wshape) == 2 and nb % t.type_size:
        problems.append(t.name)
    elif len(xshape) in (1, 2) and xshape[-1] != nw:
        problems.append(f"{xshape[-1]} values")
    if problems:
        assert_error(r, ValueError, *problems)
        return
    rows, m = wshape[0], (1 if len(xshape) == 1 else xshape[0])
    if t in ACTIVATION_ONLY and rows and nw and m:
        assert_error(r, ValueError, "activation")
    else:
        assert r.shape == ((rows,) if len(xshape) == 1 else (m, rows)) and r.dtype == np.float32 and not r.any()


def test_zero_dimensional_inputs_are_refused():
    q = kquant.quantize(np.ones(32, np.float32), "q8_0")
    assert_error(outcome(kquant.quantize, np.float32(1.0), "f32"), ValueError, "dimension")
    assert_error(outcome(kquant.quantize, np.array(1.0), "f32"), ValueError, "dimension")
    assert_error(outcome(kquant.quantize, 1.0, "f32"), ValueError, "dimension")
    assert_error(outcome(kquant.dequantize, np.uint8(7), "q8_0"), ValueError, "dimension")
    assert_error(outcome(kquant.vec_dot, np.uint8(7), q, "q8_0"), ValueError, "dimension")
    assert_error(outcome(kquant.vec_dot, q, np.uint8(7), "q8_0"), ValueError, "dimension")
    assert_error(outcome(kquant.matmul, q[None], np.float32(1.0), "q8_0"), ValueError, "(n,) or (m, n)")
    assert_error(outcome(kquant.matmul, np.uint8(7), np.ones(32, np.float32), "q8_0"), ValueError, "dimension")
    assert_error(
        outcome(kquant.quantize, np.ones(32, np.float32), "q8_0", imatrix=np.float32(1)), ValueError, "imatrix"
    )


def test_empty_and_zero_length_rows_give_empty_results():
    for t in TYPES:
        p = kquant.vec_dot_type(t)
        kw = {"imatrix": np.zeros(0, np.float32)} if t.requires_imatrix else {}
        assert kquant.quantize(np.zeros((3, 0), np.float32), t, **kw).shape == (3, 0)
        assert kquant.quantize(np.zeros(0, np.float32), t, **kw).shape == (0,)
        assert kquant.quantize([], t, **kw).shape == (0,)
        assert kquant.dequantize(np.zeros((2, 0), np.uint8), t).shape == (2, 0)
        assert kquant.dequantize(bytearray(), t).shape == (0,)
        assert np.array_equal(kquant.vec_dot(np.zeros((4, 0), np.uint8), np.zeros((4, 0), np.uint8), t), np.zeros(4))
        yq = np.zeros((0, kquant.row_size(p, t.block_size)), np.uint8)
        assert kquant.vec_dot(np.zeros((0, t.type_size), np.uint8), yq, t).shape == (0,)
        # zero-length rows multiply to zeros, as an empty sum is
        empty_w = np.zeros((3, 0), np.uint8)
        assert np.array_equal(kquant.matmul(empty_w, np.zeros((2, 0), np.float32), t), np.zeros((2, 3)))
        assert np.array_equal(kquant.matmul(empty_w, np.zeros(0, np.float32), t), np.zeros(3))
        no_w, one_block = np.zeros((0, t.type_size), np.uint8), np.zeros((3, t.type_size), np.uint8)
        assert kquant.matmul(no_w, np.zeros((2, t.block_size), np.float32), t).shape == (2, 0)
        assert kquant.matmul(one_block, np.zeros((0, t.block_size), np.float32), t).shape == (0, 3)


# ---------------------------------------------------------------------------
# huge views over tiny buffers: refused before anything is allocated


def broadcast(value, dtype, shape):
    return np.broadcast_to(np.array(value, dtype), shape)


def zero_size(dtype, shape):
    return as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))


def _partner_rows(t, shape):
    return broadcast(0, np.uint8, shape + (kquant.row_size(kquant.vec_dot_type(t), t.block_size),))


HUGE_CASES = {
    "quantize one huge row": lambda t: kquant.quantize(broadcast(1, np.float32, (1, HUGE * t.block_size)), t),
    "quantize huge rows": lambda t: kquant.quantize(broadcast(1, np.float32, (HUGE, t.block_size)), t),
    "quantize huge f16 row": lambda t: kquant.quantize(broadcast(1, np.float16, (HUGE * t.block_size,)), t),
    "quantize huge imatrix": lambda t: kquant.quantize(
        np.ones((1, t.block_size), np.float32), t, imatrix=broadcast(1, np.float32, (HUGE * t.block_size,))
    ),
    "dequantize one huge row": lambda t: kquant.dequantize(broadcast(0, np.uint8, (2, HUGE * t.type_size)), t),
    "dequantize huge rows": lambda t: kquant.dequantize(broadcast(0, np.uint8, (HUGE, t.type_size)), t),
    "vec_dot huge rows": lambda t: kquant.vec_dot(
        broadcast(0, np.uint8, (HUGE, t.type_size)), _partner_rows(t, (HUGE,)), t
    ),
    "vec_dot many empty rows": lambda t: kquant.vec_dot(
        zero_size(np.uint8, (HUGE, 0)), zero_size(np.uint8, (HUGE, 0)), t
    ),
    "matmul huge weights": lambda t: kquant.matmul(
        broadcast(0, np.uint8, (HUGE, t.type_size)), np.ones(t.block_size, np.float32), t
    ),
    "matmul huge x": lambda t: kquant.matmul(
        np.zeros((1, t.type_size), np.uint8), broadcast(1, np.float32, (HUGE, t.block_size)), t
    ),
    "matmul many empty rows": lambda t: kquant.matmul(zero_size(np.uint8, (HUGE, 0)), np.zeros((4, 0), np.float32), t),
    "matmul empty rows squared": lambda t: kquant.matmul(
        zero_size(np.uint8, (2**24, 0)), zero_size(np.float32, (2**24, 0)), t
    ),
}


@pytest.mark.parametrize("t", TYPES, ids=str)
@pytest.mark.parametrize("case", sorted(HUGE_CASES))
def test_huge_views_are_refused_before_allocating(case, t):
    start = time.perf_counter()
    r = outcome(HUGE_CASES[case], t)
    assert_error(r, ValueError, "memory", "too large", "allocate")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("t", TYPES, ids=str)
def test_huge_counts_of_empty_rows_are_fine_when_the_result_is_empty(t):
    kw = {"imatrix": np.zeros(0, np.float32)} if t.requires_imatrix else {}
    assert kquant.quantize(zero_size(np.float32, (HUGE, 0)), t, **kw).shape == (HUGE, 0)
    assert kquant.quantize(zero_size(np.float32, (2**20, 2**20, 0)), t, **kw).shape == (2**20, 2**20, 0)
    assert kquant.dequantize(zero_size(np.uint8, (HUGE, 0)), t).shape == (HUGE, 0)
    r = outcome(kquant.quantize, zero_size(np.float32, (0, HUGE * t.block_size)), t)
    if t.requires_imatrix:
        assert_error(r, ValueError, "importance matrix")
    else:
        assert r.shape == (0, HUGE * t.type_size)


# ---------------------------------------------------------------------------
# NaN and Inf anywhere


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    blocks=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
    bad=st.sampled_from([np.nan, np.inf, -np.inf, 1e39, -1e300]),
    nbad=st.integers(1, 3),
    dtype=st.sampled_from(FLOAT_DTYPES),
    layout=st.sampled_from(["c", "fortran", "flipped", "strided"]),
)
def test_non_finite_values_name_the_first_bad_row(t, lead, blocks, seed, bad, nbad, dtype, layout):
    rng = np.random.default_rng(seed)
    n = blocks * t.block_size
    x = f16_exact(rng, lead + (n,)).astype(np.float64)
    flat = x.reshape(-1)
    at = rng.integers(0, flat.size, nbad)
    flat[at] = bad  # every one of these is NaN or +-Inf once in float32
    with np.errstate(over="ignore"):
        xh = hostile(x, layout, dtype)
    first_row = int(at.min()) // n
    assert_error(outcome(kquant.quantize, xh, t), ValueError, f"row {first_row} ")
    # activations go through the same check
    if len(lead) <= 1 and t not in ACTIVATION_ONLY:
        w = np.zeros((2, blocks * t.type_size), np.uint8)
        r = outcome(kquant.matmul, w, xh, t)
        assert_error(r, ValueError, f"row {first_row} ")


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    blocks=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
    bad=st.sampled_from([np.nan, np.inf, -np.inf, -1.0, -1e-30, 1e39]),
    dtype=st.sampled_from(FLOAT_DTYPES),
)
def test_bad_imatrix_values_are_refused(t, blocks, seed, bad, dtype):
    rng = np.random.default_rng(seed)
    n = blocks * t.block_size
    w = np.abs(f16_exact(rng, (n,))).astype(np.float64)
    w[rng.integers(0, n)] = bad
    if bad == -1e-30 and dtype.itemsize == 2:
        return  # float16 rounds it to -0.0, which is allowed
    with np.errstate(over="ignore"):
        r = outcome(kquant.quantize, f16_exact(rng, (2, n)), t, imatrix=w.astype(dtype))
    assert_error(r, ValueError, "imatrix")


@SETTINGS
@given(
    t=st.sampled_from(TYPES),
    blocks=st.integers(0, 2),
    shape=st.sampled_from(["short", "long", "empty", "2d", "row", "col", "scalar"]),
)
def test_imatrix_of_the_wrong_shape_is_refused(t, blocks, shape):
    n = blocks * t.block_size
    w = {
        "short": np.ones(max(n - 1, 0)) if n else None,
        "long": np.ones(n + 1),
        "empty": np.ones(0) if n else None,
        "2d": np.ones((1, n)),
        "row": np.ones((2, n)),
        "col": np.ones((n, 1)),
        "scalar": np.float64(1.0),
    }[shape]
    if w is None:
        return
    r = outcome(kquant.quantize, np.ones((2, n), np.float32), t, imatrix=w)
    assert_error(r, ValueError, "imatrix")
    assert f"({n},)" in str(r)


# ---------------------------------------------------------------------------
# qtype values

NAMES = {t.name: t for t in QuantType}
IDS = {t.value: t for t in QuantType}


def expected_type(v):
    """What the qtype argument `v` means: a QuantType, or the exception class it must raise."""
    if isinstance(v, QuantType):
        return v
    if isinstance(v, str):
        return NAMES.get(v.strip().upper(), ValueError)
    if isinstance(v, (bool, np.bool_)):
        return TypeError
    try:
        i = operator.index(v)  # ints, NumPy integers and integer 0-d arrays are ids
    except TypeError:
        return TypeError
    return IDS.get(i, ValueError)


QTYPE_VALUES = st.one_of(
    st.sampled_from(TYPES),
    st.integers(-(2**100), 2**100),
    st.integers(-5, 40),
    st.text(max_size=8),
    st.sampled_from(["q4_k_m", "Q9_0", "", " ", "q4_0\x00", " q4_0\t", "Q4_0.", "f64", "i8", "Ｑ4_0", "ıq4_nl"]),
    st.floats(allow_nan=True),
    st.sampled_from([None, True, False, b"q4_0", bytearray(b"q4_0"), [2], (2,), {2: 2}, 2 + 0j, object()]),
    st.sampled_from([np.int64(8), np.uint8(2), np.float64(8.0), np.str_("q8_0"), np.array(8), np.array("q8_0")]),
)


@settings(SETTINGS, max_examples=200)
@given(v=QTYPE_VALUES)
def test_qtype_values(v):
    want = expected_type(v)
    x = np.linspace(-1, 1, 512, dtype=np.float32).reshape(2, 256)
    calls = {
        "quantize": lambda t: kquant.quantize(x, t),
        "dequantize": lambda t: kquant.dequantize(np.zeros((2, 0), np.uint8), t),
        "vec_dot": lambda t: kquant.vec_dot(np.zeros((2, 0), np.uint8), np.zeros((2, 0), np.uint8), t),
        "matmul": lambda t: kquant.matmul(np.zeros((2, 0), np.uint8), np.zeros(0, np.float32), t),
        "vec_dot_type": lambda t: kquant.vec_dot_type(t),
        "row_size": lambda t: kquant.row_size(t, 256),
        "parse": lambda t: QuantType.parse(t),
    }
    for name, call in calls.items():
        r = outcome(call, v)
        if isinstance(want, QuantType):
            assert_same_value(r, outcome(call, want))
        elif isinstance(v, np.integer) and isinstance(r, (np.ndarray, int, QuantType)):
            assert_same_value(r, outcome(call, QuantType(int(v))))  # accepting NumPy ints is fine too
        else:
            assert_error(r, want, "unknown" if want is ValueError else "qtype")
            if want is ValueError:
                assert repr(v)[:20] in str(r) or str(v)[:20] in str(r), (name, r)


def assert_same_value(got, want):
    if isinstance(want, (np.ndarray, Exception)):
        assert_same(got, want)
    else:
        assert got == want and type(got) is type(want), (got, want)


# ---------------------------------------------------------------------------
# row_size, vec_dot_type, the thread knob


@SETTINGS
@given(t=st.sampled_from(TYPES), n=st.one_of(st.integers(-(2**70), 2**70), st.integers(-600, 600)))
def test_row_size_of_any_int(t, n):
    r = outcome(kquant.row_size, t, n)
    if n < 0 or n % t.block_size:
        assert_error(r, ValueError, f"block size {t.block_size}")
    else:
        assert r == n // t.block_size * t.type_size and type(r) is int


@pytest.mark.parametrize("n", [None, "x", [256], np.nan])
def test_row_size_of_non_numbers(n):
    assert isinstance(outcome(kquant.row_size, "q8_0", n), (TypeError, ValueError))


@pytest.mark.parametrize("n", [float("inf"), 32.5])
def test_row_size_of_non_integral_floats(n):
    r = outcome(kquant.row_size, "q8_0", n)
    assert isinstance(r, (TypeError, ValueError))


@pytest.fixture
def restore_threads():
    old = kquant.get_num_threads()
    yield
    kquant.set_num_threads(old)


@pytest.mark.parametrize(
    "bad",
    [0, -1, -(2**70), 2**31, 2**64, 2**70, 10**6, 1025, np.int64(0), np.int64(10**12)],
    ids=repr,
)
def test_thread_counts_out_of_range_are_value_errors(bad, restore_threads):
    before = kquant.get_num_threads()
    assert_error(outcome(kquant.set_num_threads, bad), ValueError, "number of threads")
    assert kquant.get_num_threads() == before


@pytest.mark.parametrize("bad", [1.0, 2.5, float("nan"), "2", None, True, False, [2], np.float64(2), 2 + 0j], ids=repr)
def test_thread_counts_of_the_wrong_kind_are_type_errors(bad, restore_threads):
    before = kquant.get_num_threads()
    assert_error(outcome(kquant.set_num_threads, bad), TypeError, "int")
    assert kquant.get_num_threads() == before


@pytest.mark.parametrize("n", [1, 2, 3, 7, np.int64(5), np.uint8(3), 64], ids=repr)
def test_thread_counts_in_range_are_kept(n, restore_threads):
    kquant.set_num_threads(n)
    assert kquant.get_num_threads() == int(n) and type(kquant.get_num_threads()) is int
    x = np.ones((64, 1024), np.float32)
    assert np.array_equal(kquant.dequantize(kquant.quantize(x, "f16"), "f16"), x)


@pytest.mark.parametrize("value", ["100000", "99999999999999999999999", "0", "-3", "two", ""])
def test_hostile_thread_environment_variable(value):
    code = (
        "import numpy as np, warnings, kquant\n"
        "warnings.simplefilter('ignore')\n"
        "n = kquant.get_num_threads()\n"
        "assert 1 <= n <= 1024, n\n"
        "x = np.ones((256, 256), np.float32)\n"
        "assert np.array_equal(kquant.dequantize(kquant.quantize(x, 'f32'), 'f32'), x)\n"
    )
    env = dict(os.environ, KQUANT_NUM_THREADS=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
