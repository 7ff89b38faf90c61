"""The Python API's contract: accepted inputs, shapes, and clear errors for bad ones."""

import numpy as np
import pytest

import kquant
from kquant import QuantType

ALL_BLOCK_TYPES = [t for t in QuantType if not t.is_float and t.is_implemented]


def sample(nrows=3, n=512, seed=0):
    return np.random.default_rng(seed).standard_normal((nrows, n)).astype(np.float32)


def test_quant_type_properties():
    assert QuantType.Q4_K.block_size == 256 and QuantType.Q4_K.type_size == 144
    assert QuantType.Q4_K.bits_per_weight == 4.5
    assert QuantType.Q8_0.bits_per_weight == 8.5
    assert QuantType.F16.block_size == 1 and QuantType.F16.type_size == 2
    assert int(QuantType.IQ4_XS) == 23 and int(QuantType.BF16) == 30
    assert QuantType.parse("q4_k") is QuantType.Q4_K
    assert QuantType.parse(" Iq4_Nl ") is QuantType.IQ4_NL
    assert QuantType.parse(12) is QuantType.Q4_K
    assert kquant.vec_dot_type("q4_1") is QuantType.Q8_1
    assert kquant.vec_dot_type(QuantType.IQ4_XS) is QuantType.Q8_K
    assert kquant.vec_dot_type("iq4_nl") is QuantType.Q8_0
    assert kquant.row_size("q6_k", 512) == 420


@pytest.mark.parametrize("bad", ["q4_k_m", "Q9_0", "", 4, 99, -1])
def test_bad_type_names_and_ids(bad):
    with pytest.raises(ValueError, match="unknown"):
        kquant.quantize(sample(), bad)


@pytest.mark.parametrize("bad", [None, 4.0, b"q4_0", [2]])
def test_bad_type_kinds(bad):
    with pytest.raises(TypeError):
        kquant.quantize(sample(), bad)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ">f4", ">f8", "<f2"])
def test_any_float_dtype_and_byte_order(dtype):
    x = sample().astype(np.float16).astype(np.float32)  # values exact in every dtype
    ref = kquant.quantize(x, "q4_0")
    assert np.array_equal(kquant.quantize(x.astype(dtype), "q4_0"), ref)


def test_strided_and_fortran_inputs():
    x = sample(6, 1024)
    ref = kquant.quantize(x[::2, ::2], "q8_0")
    assert np.array_equal(ref, kquant.quantize(np.ascontiguousarray(x[::2, ::2]), "q8_0"))
    assert np.array_equal(kquant.quantize(np.asfortranarray(x), "q8_0"), kquant.quantize(x, "q8_0"))
    q = kquant.quantize(x, "q8_0")
    assert np.array_equal(kquant.dequantize(np.asfortranarray(q), "q8_0"), kquant.dequantize(q, "q8_0"))


def test_python_lists_and_leading_shape():
    x = sample(6, 64).reshape(2, 3, 64)
    q = kquant.quantize(x, "q8_0")
    assert q.shape == (2, 3, 68)
    assert kquant.dequantize(q, "q8_0").shape == (2, 3, 64)
    assert np.array_equal(kquant.quantize(x.tolist(), "q8_0"), q)
    assert kquant.quantize(x[0, 0], "q8_0").shape == (68,)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64, object])
def test_non_float_input_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="floating"):
        kquant.quantize(np.zeros((2, 32), dtype=dtype), "q8_0")


def test_dequantize_wants_uint8():
    q = kquant.quantize(sample(), "q4_0")
    with pytest.raises(TypeError, match="uint8"):
        kquant.dequantize(q.astype(np.int8), "q4_0")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_row(bad):
    x = sample(5, 256)
    x[3, 17] = bad
    with pytest.raises(ValueError, match="row 3"):
        kquant.quantize(x, "q4_k")


def test_float64_overflowing_float32_is_refused():
    x = np.full((1, 32), 1e300)
    with pytest.raises(ValueError, match="row 0"):
        kquant.quantize(x, "q8_0")


def test_wrong_row_length_says_what_is_expected():
    with pytest.raises(ValueError, match="multiple of the Q4_K block size 256"):
        kquant.quantize(sample(2, 100), "q4_k")
    with pytest.raises(ValueError, match="Q4_0"):
        kquant.dequantize(np.zeros((2, 17), np.uint8), "q4_0")


def test_imatrix_rules():
    x = sample(2, 256)
    with pytest.raises(ValueError, match=r"shape \(256,\)"):
        kquant.quantize(x, "q4_k", imatrix=np.ones(255, np.float32))
    with pytest.raises(ValueError, match="finite and >= 0"):
        kquant.quantize(x, "q4_k", imatrix=-np.ones(256, np.float32))
    w = np.ones(256, np.float32)
    w[5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        kquant.quantize(x, "q4_k", imatrix=w)
    with pytest.raises(TypeError):
        kquant.quantize(x, "q4_k", imatrix=np.ones(256, np.int64))


@pytest.mark.parametrize("t", ["q4_0", "q4_k", "f16", "iq4_xs"])
def test_zero_rows_give_empty_results(t):
    n = 256
    q = kquant.quantize(np.zeros((0, n), np.float32), t)
    assert q.shape == (0, kquant.row_size(t, n)) and q.dtype == np.uint8
    d = kquant.dequantize(q, t)
    assert d.shape == (0, n) and d.dtype == np.float32
    p = kquant.vec_dot_type(t)
    assert kquant.vec_dot(q, np.zeros((0, kquant.row_size(p, n)), np.uint8), t).shape == (0,)


def test_vec_dot_partner_checks():
    x = sample(2, 256)
    q = kquant.quantize(x, "q4_k")
    with pytest.raises(ValueError, match="Q8_K"):
        kquant.vec_dot(q, kquant.quantize(x, "q8_0"), "q4_k")
    with pytest.raises(ValueError, match="leading shape"):
        kquant.vec_dot(q, kquant.quantize(x[:1], "q8_k"), "q4_k")
    with pytest.raises(ValueError, match="activation"):
        kquant.vec_dot(kquant.quantize(x, "q8_k"), kquant.quantize(x, "q8_k"), "q8_k")


def test_vec_dot_close_to_float_dot():
    x, y = sample(4, 1024, 1), sample(4, 1024, 2)
    for t in ["q8_0", "q4_0", "f16", "f32"]:
        d = kquant.vec_dot(kquant.quantize(x, t), kquant.quantize(y, kquant.vec_dot_type(t)), t)
        exact = (x.astype(np.float64) * y).sum(axis=1)
        assert np.allclose(d, exact, atol=0.05 * np.abs(x * y).sum(axis=1).max()), t


def test_matmul_shapes_and_errors():
    w = kquant.quantize(sample(8, 256), "q8_0")
    assert kquant.matmul(w, sample(1, 256)[0], "q8_0").shape == (8,)
    assert kquant.matmul(w, sample(3, 256), "q8_0").shape == (3, 8)
    with pytest.raises(ValueError, match="256"):
        kquant.matmul(w, sample(3, 128), "q8_0")
    with pytest.raises(ValueError):
        kquant.matmul(w[0], sample(3, 256), "q8_0")


def test_float_storage_types_round_to_nearest_even():
    x = np.array([[1.0, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 65520.0]], np.float32)
    assert np.array_equal(kquant.quantize(x, "f16").view(np.float16), x.astype(np.float16))
    assert np.array_equal(kquant.dequantize(kquant.quantize(x, "f16"), "f16"), x.astype(np.float16).astype(np.float32))
    b = np.array([[1.0, np.float32(1.0 + 2**-8), np.float32(1.0 + 3 * 2**-8)]], np.float32)
    bits = kquant.quantize(b, "bf16").view(np.uint16)
    assert list(bits[0]) == [0x3F80, 0x3F80, 0x3F82]
    assert np.array_equal(kquant.quantize(x, "f32").view(np.float32), x)


def test_results_do_not_depend_on_thread_count():
    x = sample(64, 4096, 7)
    old = kquant.get_num_threads()
    try:
        kquant.set_num_threads(1)
        one = kquant.quantize(x, "q4_0"), kquant.dequantize(kquant.quantize(x, "q8_0"), "q8_0")
        kquant.set_num_threads(4)
        four = kquant.quantize(x, "q4_0"), kquant.dequantize(kquant.quantize(x, "q8_0"), "q8_0")
    finally:
        kquant.set_num_threads(old)
    assert all(np.array_equal(a, b) for a, b in zip(one, four))


def test_thread_knob_errors():
    with pytest.raises(ValueError):
        kquant.set_num_threads(0)
    with pytest.raises(TypeError):
        kquant.set_num_threads("2")


def test_isa_reports_the_active_path():
    assert kquant.isa() in kquant.available_isas()
    assert kquant.available_isas()[0] == "scalar"


def _run(code, **env):
    import os
    import subprocess
    import sys

    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def test_forced_scalar_path_gives_the_same_bytes():
    code = (
        "import numpy as np, kquant;"
        "x=np.random.default_rng(3).standard_normal((8, 512)).astype(np.float32);"
        "print(kquant.isa());"
        "[print(t, kquant.quantize(x, t).tobytes().hex()[:4000], kquant.dequantize(kquant.quantize(x, t), t).tobytes().hex()[:4000])"
        " for t in ['q4_0','q8_0','q4_k','q6_k','iq4_xs','f16','bf16']]"
    )
    forced = _run(code, KQUANT_ISA="scalar")
    default = _run(code)
    assert forced.returncode == 0 and default.returncode == 0, forced.stderr + default.stderr
    assert forced.stdout.splitlines()[0] == "scalar"
    assert forced.stdout.splitlines()[1:] == default.stdout.splitlines()[1:]


def test_forcing_a_missing_path_is_a_clear_error():
    missing = next((i for i in ("neon", "avx2") if i not in kquant.available_isas()), None)
    if missing is None:
        pytest.skip("this CPU runs every path")
    r = _run("import kquant, numpy as np; kquant.quantize(np.ones((1, 32), np.float32), 'q8_0')", KQUANT_ISA=missing)
    assert r.returncode != 0 and "KQUANT_ISA" in r.stderr and "ValueError" in r.stderr
    r = _run("import kquant; kquant.isa()", KQUANT_ISA="sse9")
    assert "not a known instruction set" in r.stderr


def test_stub_matches_the_extension():
    """_kquant.pyi lists exactly the extension's public names."""
    import ast
    from pathlib import Path

    stub = Path(kquant.__file__).with_name("_kquant.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {t.target.id for t in tree.body if isinstance(t, ast.AnnAssign)}
    actual = {n for n in dir(kquant._kquant) if not n.startswith("_")} | {"__version__"}
    assert declared | {"__version__"} == actual
