"""Property tests against two independent oracles: libgguf (ggml compiled: quantize with
and without an importance matrix, dequantize) and gguf-py (NumPy: dequantize every type,
quantize the legacy types). The oracles are test dependencies only."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kquant
from kquant import QuantType

from .strategies import imatrices, rows

libgguf = pytest.importorskip("libgguf") if os.uname().machine == "x86_64" else None
gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

WEIGHT_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def assert_same_floats(got: np.ndarray, want: np.ndarray) -> None:
    """Same non-finite positions; finite values equal to f32 rounding (gguf-py orders
    its NumPy operations differently from ggml's C)."""
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(got[np.isinf(got)], want[np.isinf(want)])
    fin = np.isfinite(want)
    atol = np.abs(want[fin]).max(initial=0.0) * 1e-6 + 1e-37
    np.testing.assert_allclose(got[fin], want[fin], rtol=2e-6, atol=atol)


def _diff(a: np.ndarray, b: np.ndarray) -> str:
    bad = np.argwhere(a != b)
    return f"{len(bad)} bytes differ, first at {tuple(bad[0])}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}"


@pytest.mark.skipif(libgguf is None, reason="libgguf wheels are x86-64 only")
@pytest.mark.parametrize("name", WEIGHT_TYPES)
@given(data=st.data())
def test_libgguf_bytes(name, data):
    t = QuantType[name]
    x = data.draw(rows(t.block_size, max_blocks=8 if t.block_size == 256 else 24))
    want = libgguf.quantize_rows(x, t.value)
    got = kquant.quantize(x, t)
    assert np.array_equal(got, want), "quantize: " + _diff(got, want)
    w = data.draw(imatrices(x.shape[1]))
    want_i = libgguf.quantize_rows(x, t.value, imatrix=w)
    got_i = kquant.quantize(x, t, imatrix=w)
    assert np.array_equal(got_i, want_i), "quantize with imatrix: " + _diff(got_i, want_i)
    dq = kquant.dequantize(got_i, t)
    assert np.array_equal(dq.view(np.uint32), libgguf.dequantize_rows(got_i, t.value).view(np.uint32))


@pytest.mark.parametrize("name", WEIGHT_TYPES + ["F16", "BF16"])
@given(data=st.data())
def test_gguf_py_dequantize(name, data):
    t = QuantType[name]
    x = data.draw(rows(max(t.block_size, 32), max_blocks=4))
    q = kquant.quantize(x, t)
    want = gguf_quants.dequantize(q, GGMLQuantizationType(t.value)).astype(np.float32)
    assert_same_floats(kquant.dequantize(q, t), want)


@pytest.mark.parametrize("name", LEGACY + ["BF16"])
@given(data=st.data())
def test_gguf_py_quantize(name, data):
    t = QuantType[name]
    x = data.draw(rows(max(t.block_size, 32), max_blocks=16))
    want = gguf_quants.quantize(x, GGMLQuantizationType(t.value))
    got = kquant.quantize(x, t)
    assert np.array_equal(got, want.view(np.uint8).reshape(got.shape)), _diff(got, want.view(np.uint8).reshape(got.shape))


@given(data=st.data())
def test_random_bytes_dequantize_like_gguf_py(data):
    """Arbitrary block bytes (not just what a quantizer writes) dequantize identically."""
    name = data.draw(st.sampled_from(WEIGHT_TYPES + ["Q8_K"]))
    t = QuantType[name]
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    nb = data.draw(st.integers(1, 4))
    q = rng.integers(0, 256, (2, nb * t.type_size), dtype=np.uint8)
    got = kquant.dequantize(q, t)
    if name == "Q8_K":
        # gguf-py has no Q8_K: d * q by definition
        d = q.reshape(2, nb, t.type_size)[:, :, :4].copy().view(np.float32)
        qs = q.reshape(2, nb, t.type_size)[:, :, 4:260].view(np.int8).astype(np.float32)
        assert_same_floats(got, (d * qs).reshape(2, -1))
        return
    assert_same_floats(got, gguf_quants.dequantize(q, GGMLQuantizationType(t.value)).astype(np.float32))


# ---- TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0 (issue 11) ----
# libgguf has all but Q2_0 (newer than every build on PyPI); gguf-py dequantizes all but
# Q1_0 and Q2_0. Q2_0 is checked against its definition in ggml (NumPy below).
PART2_LIBGGUF = ["TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0"]
PART2_GGUF_PY = ["TQ1_0", "TQ2_0", "MXFP4", "NVFP4"]
PART2 = PART2_LIBGGUF + ["Q2_0"]


def _part2_rows(t: QuantType, data):
    # several blocks and odd block counts: NVFP4/Q2_0 span two Q8_0 blocks, Q1_0 four
    return data.draw(rows(t.block_size, max_blocks=6 if t.block_size >= 64 else 12))


@pytest.mark.skipif(libgguf is None, reason="libgguf wheels are x86-64 only")
@pytest.mark.parametrize("name", PART2_LIBGGUF)
@settings(max_examples=60)
@given(data=st.data())
def test_libgguf_bytes_part2(name, data):
    t = QuantType[name]
    x = _part2_rows(t, data)
    want = libgguf.quantize_rows(x, t.value)
    got = kquant.quantize(x, t)
    assert np.array_equal(got, want), "quantize: " + _diff(got, want)
    w = data.draw(imatrices(x.shape[1]))
    got_i = kquant.quantize(x, t, imatrix=w)
    assert np.array_equal(got_i, libgguf.quantize_rows(x, t.value, imatrix=w)), "quantize with imatrix"
    # ggml ignores the weights for these formats
    assert np.array_equal(got_i, got)
    assert np.array_equal(kquant.dequantize(got, t).view(np.uint32), libgguf.dequantize_rows(got, t.value).view(np.uint32))


@pytest.mark.skipif(libgguf is None, reason="libgguf wheels are x86-64 only")
@pytest.mark.parametrize("name", PART2_LIBGGUF)
@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), nb=st.integers(1, 5))
def test_random_bytes_dequantize_like_libgguf_part2(name, seed, nb):
    """Every byte pattern (subnormal, NaN-free or not, codes the quantizers never write)."""
    t = QuantType[name]
    q = np.random.default_rng(seed).integers(0, 256, (3, nb * t.type_size), dtype=np.uint8)
    got = kquant.dequantize(q, t)
    want = libgguf.dequantize_rows(q, t.value)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name", PART2_GGUF_PY)
@settings(max_examples=40)
@given(data=st.data())
def test_gguf_py_dequantize_part2(name, data):
    t = QuantType[name]
    seed = data.draw(st.integers(0, 2**32 - 1))
    nb = data.draw(st.integers(1, 4))
    q = np.random.default_rng(seed).integers(0, 256, (2, nb * t.type_size), dtype=np.uint8)
    assert_same_floats(kquant.dequantize(q, t), gguf_quants.dequantize(q, GGMLQuantizationType(t.value)).astype(np.float32))
    x = _part2_rows(t, data)
    qx = kquant.quantize(x, t)
    assert_same_floats(kquant.dequantize(qx, t), gguf_quants.dequantize(qx, GGMLQuantizationType(t.value)).astype(np.float32))


def _q2_0_definition(x: np.ndarray) -> np.ndarray:
    """`quantize_row_q2_0_ref` in NumPy: d = max|x| per 64, code = clamp(roundf(x/d) + 1)."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // 64, 64)
    amax = np.abs(xb).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(amax > 0, np.float32(1.0) / amax, np.float32(0.0)).astype(np.float32)
        v = (xb * inv).astype(np.float64)
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    # x86: (int) of NaN/inf is INT_MIN, so the code clamps to 0
    code = np.where(np.isfinite(v), np.clip(r + 1, 0, 3), 0).astype(np.uint8)
    packed = (code.reshape(nrows, n // 64, 16, 4) << np.array([0, 2, 4, 6], np.uint8)).sum(axis=3, dtype=np.uint8)
    d = amax[..., 0].astype(np.float16).view(np.uint8).reshape(nrows, n // 64, 2)
    return np.concatenate([d, packed], axis=2).reshape(nrows, -1)


def _q2_0_dequantize_definition(q: np.ndarray) -> np.ndarray:
    nrows = q.shape[0]
    b = q.reshape(nrows, -1, 18)
    d = b[:, :, :2].copy().view(np.float16).astype(np.float32)
    codes = (b[:, :, 2:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
    lv = codes.reshape(nrows, b.shape[1], 64).astype(np.float32) - 1
    return (lv * d).reshape(nrows, -1)


@settings(max_examples=100)
@given(data=st.data())
def test_q2_0_definition(data):
    x = _part2_rows(QuantType.Q2_0, data)
    q = kquant.quantize(x, "Q2_0")
    assert np.array_equal(q, _q2_0_definition(x)), _diff(q, _q2_0_definition(x))
    w = data.draw(imatrices(x.shape[1]))
    assert np.array_equal(kquant.quantize(x, "Q2_0", imatrix=w), q)
    seed = data.draw(st.integers(0, 2**32 - 1))
    rq = np.random.default_rng(seed).integers(0, 256, q.shape, dtype=np.uint8)
    for qq in (q, rq):
        assert np.array_equal(kquant.dequantize(qq, "Q2_0").view(np.uint32), _q2_0_dequantize_definition(qq).view(np.uint32))


@pytest.mark.parametrize("name", PART2)
@settings(max_examples=40)
@given(data=st.data())
def test_part2_dots_against_f64(name, data):
    """vec_dot/matmul against the partner equal the f64 dot of the dequantized operands
    up to f32 rounding of ggml's block sums."""
    t = QuantType[name]
    # scales inside f16's range: an infinite scale makes the f64 product NaN
    x = data.draw(rows(t.block_size, max_blocks=6 if t.block_size >= 64 else 12, scales=(-12, -4, 0, 3, 8)))
    y = data.draw(rows(t.block_size, max_blocks=1, max_rows=1, scales=(-4, 0, 3)))
    y = np.resize(y, x.shape).astype(np.float32)
    q = kquant.quantize(x, t)
    p = kquant.vec_dot_type(t)
    yq = kquant.quantize(y, p)
    dots = kquant.vec_dot(q, yq, t)
    a = kquant.dequantize(q, t).astype(np.float64)
    b = kquant.dequantize(yq, p).astype(np.float64)
    want = (a * b).sum(axis=1)
    scale = np.abs(a * b).sum(axis=1)
    assert np.all(np.abs(dots - want) <= 1e-5 * scale + 1e-30), (dots, want, scale)
# Lattice i-quants. ggml aborts on overflowing weights (a search with no finite error),
# so the scales stay where x*x is finite; without an importance matrix ggml refuses the
# types that require one, and kquant raises instead.
LATTICE_TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S"]
FINITE_SCALES = (-140, -126, -40, -12, -4, 0, 0, 0, 3, 12, 40)


@pytest.mark.skipif(libgguf is None, reason="libgguf wheels are x86-64 only")
@pytest.mark.parametrize("name", LATTICE_TYPES)
@settings(max_examples=40)
@given(data=st.data())
def test_libgguf_bytes_lattice(name, data):
    t = QuantType[name]
    x = data.draw(rows(t.block_size, max_blocks=3, scales=FINITE_SCALES))
    if t.requires_imatrix:
        with pytest.raises(ValueError, match="importance matrix"):
            kquant.quantize(x, t)
    else:
        want = libgguf.quantize_rows(x, t.value)
        got = kquant.quantize(x, t)
        assert np.array_equal(got, want), "quantize: " + _diff(got, want)
    w = data.draw(imatrices(x.shape[1]))
    want_i = libgguf.quantize_rows(x, t.value, imatrix=w)
    got_i = kquant.quantize(x, t, imatrix=w)
    assert np.array_equal(got_i, want_i), "quantize with imatrix: " + _diff(got_i, want_i)
    dq = kquant.dequantize(got_i, t)
    assert np.array_equal(dq.view(np.uint32), libgguf.dequantize_rows(got_i, t.value).view(np.uint32))
    assert_same_floats(dq, gguf_quants.dequantize(got_i, GGMLQuantizationType(t.value)).astype(np.float32))


@pytest.mark.parametrize("name", LATTICE_TYPES)
@settings(max_examples=40)
@given(data=st.data())
def test_random_bytes_dequantize_lattice(name, data):
    """Any block bytes dequantize (no panic) as gguf-py does, and dot without a panic."""
    t = QuantType[name]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    nb = data.draw(st.integers(1, 3))
    q = rng.integers(0, 256, (2, nb * t.type_size), dtype=np.uint8)
    got = kquant.dequantize(q, t)
    assert_same_floats(got, gguf_quants.dequantize(q, GGMLQuantizationType(t.value)).astype(np.float32))
    y = kquant.quantize(rng.standard_normal((2, nb * 256)).astype(np.float32), kquant.vec_dot_type(t))
    assert kquant.vec_dot(q, y, t).shape == (2,)


# The lattice i-quants (IQ3_XXS, IQ3_S, IQ1_S, IQ1_M): ggml's quantizers are slow (a few M
# values/s), so fewer blocks; scales stay within 2^-40..2^12 because beyond that ggml's
# weighted errors overflow to inf and its neighbour search aborts the process.
LATTICE_IQ3_IQ1 = ["IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]
LATTICE_IQ3_IQ1_SCALES = (-40, -12, -4, 0, 0, 0, 3, 12)


@pytest.mark.skipif(libgguf is None, reason="libgguf wheels are x86-64 only")
@pytest.mark.parametrize("name", LATTICE_IQ3_IQ1)
@settings(max_examples=min(settings().max_examples, 40))
@given(data=st.data())
def test_libgguf_bytes_lattice_iq3_iq1(name, data):
    t = QuantType[name]
    x = data.draw(rows(256, max_blocks=4, max_rows=2, scales=LATTICE_IQ3_IQ1_SCALES))
    if t.requires_imatrix:
        with pytest.raises(ValueError, match="importance matrix"):
            kquant.quantize(x, t)
    else:
        want = libgguf.quantize_rows(x, t.value)
        got = kquant.quantize(x, t)
        assert np.array_equal(got, want), "quantize: " + _diff(got, want)
    w = data.draw(imatrices(x.shape[1]))
    want_i = libgguf.quantize_rows(x, t.value, imatrix=w)
    got_i = kquant.quantize(x, t, imatrix=w)
    assert np.array_equal(got_i, want_i), "quantize with imatrix: " + _diff(got_i, want_i)
    dq = kquant.dequantize(got_i, t)
    assert np.array_equal(dq.view(np.uint32), libgguf.dequantize_rows(got_i, t.value).view(np.uint32))


@pytest.mark.parametrize("name", LATTICE_IQ3_IQ1)
@settings(max_examples=min(settings().max_examples, 25))
@given(data=st.data())
def test_gguf_py_dequantize_lattice_iq3_iq1(name, data):
    t = QuantType[name]
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    nb = data.draw(st.integers(1, 3))
    # arbitrary bytes reach every grid index, sign and scale code; the f16 scales are
    # kept finite so that both sides compute with numbers
    q = rng.integers(0, 256, (2, nb * t.type_size), dtype=np.uint8)
    blocks = q.reshape(2, nb, t.type_size)
    if name == "IQ1_M":
        blocks[:, :, -1] &= 0x3F  # the last scale word's top nibble holds the f16 sign and top exponent bits
    else:
        blocks[:, :, 1] &= 0x3B
    got = kquant.dequantize(q, t)
    want = gguf_quants.dequantize(q, GGMLQuantizationType(t.value)).astype(np.float32)
    assert_same_floats(got, want)
    y = rng.standard_normal((2, nb * 256)).astype(np.float32)
    got_dot = kquant.vec_dot(q, kquant.quantize(y, kquant.vec_dot_type(t)), t)
    assert np.all(np.isfinite(got_dot))
