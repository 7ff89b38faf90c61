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


# The lattice i-quants (IQ3_XXS, IQ3_S, IQ1_S, IQ1_M): ggml's quantizers are slow (a few M
# values/s), so fewer blocks; scales stay within 2^-40..2^12 because beyond that ggml's
# weighted errors overflow to inf and its neighbour search aborts the process.
LATTICE_TYPES = ["IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]
LATTICE_SCALES = (-40, -12, -4, 0, 0, 0, 3, 12)


@pytest.mark.skipif(libgguf is None, reason="libgguf wheels are x86-64 only")
@pytest.mark.parametrize("name", LATTICE_TYPES)
@settings(max_examples=min(settings().max_examples, 40))
@given(data=st.data())
def test_libgguf_bytes_lattice(name, data):
    t = QuantType[name]
    x = data.draw(rows(256, max_blocks=4, max_rows=2, scales=LATTICE_SCALES))
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


@pytest.mark.parametrize("name", LATTICE_TYPES)
@settings(max_examples=min(settings().max_examples, 25))
@given(data=st.data())
def test_gguf_py_dequantize_lattice(name, data):
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
