"""kquant against ggml's own output (../shared/golden, see its README)."""

import numpy as np
import pytest

import kquant
from kquant import QuantType

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ4_NL", "IQ4_XS"]
TYPES += ["TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]
TYPES += ["IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]  # second set: no `q` where an imatrix is required


@pytest.fixture(scope="module", params=TYPES)
def golden(request, golden_path):
    with np.load(golden_path / f"{request.param}.npz") as z:
        return request.param, {k: z[k] for k in z.files}


def _first_diff(a, b, names):
    bad = np.argwhere(a != b)
    r, c = bad[0][:2]
    return f"row {r} ({names[r]}) byte {c}: got {a[r, c]} want {b[r, c]} ({len(bad)} bytes differ)"


def test_quantize(golden):
    t, g = golden
    if "q" not in g:
        assert bool(g["requires_imatrix"]) and QuantType[t].requires_imatrix
        with pytest.raises(ValueError, match="importance matrix"):
            kquant.quantize(g["x"], t)
        return
    q = kquant.quantize(g["x"], t)
    assert q.dtype == np.uint8 and q.shape == g["q"].shape
    assert np.array_equal(q, g["q"]), _first_diff(q, g["q"], g["case_names"])


def test_quantize_imatrix(golden):
    t, g = golden
    if "q_imat" not in g:
        pytest.skip(f"{t} has no importance-matrix vectors")
    q = kquant.quantize(g["x"], t, imatrix=g["imat"])
    assert np.array_equal(q, g["q_imat"]), _first_diff(q, g["q_imat"], g["case_names"])


def test_q8_0_ignores_imatrix(golden_path):
    with np.load(golden_path / "Q8_0.npz") as z:
        x, q = z["x"], z["q"]
    w = np.linspace(0.0, 3.0, x.shape[1], dtype=np.float32)
    assert np.array_equal(kquant.quantize(x, "Q8_0", imatrix=w), q)


def test_dequantize_bit_exact(golden):
    t, g = golden
    for qn, dqn in [("q", "dq"), ("q_imat", "dq_imat")]:
        if qn in g and dqn in g:
            dq = kquant.dequantize(g[qn], t)
            assert dq.dtype == np.float32
            assert np.array_equal(dq.view(np.uint32), g[dqn].view(np.uint32)), qn


def test_partner_quantize(golden):
    t, g = golden
    if "yq" not in g:
        pytest.skip(f"{t} is an activation format")
    p = kquant.vec_dot_type(t)
    assert p.name.lower() == str(g["vec_dot_type"]).lower()
    yq = kquant.quantize(g["y"], p)
    assert np.array_equal(yq, g["yq"]), _first_diff(yq, g["yq"], g["case_names"])


def test_vec_dot(golden):
    t, g = golden
    if "dot" not in g and "dot_imat" in g:
        # second set without `q`: the importance-matrix arrays stand in
        g = {**g, "q": g["q_imat"], "dq": g["dq_imat"], "dot": g["dot_imat"], "dot_avx2": g["dot_imat_avx2"]}
        g["dot_f64"] = g["dot_imat_f64"]
        g.pop("dot_imat")
    if "dot" not in g:
        pytest.skip(f"{t} is an activation format")
    dots = kquant.vec_dot(g["q"], g["yq"], t)
    p = kquant.vec_dot_type(t)
    scale = np.abs(g["dq"].astype(np.float64) * kquant.dequantize(g["yq"], p).astype(np.float64)).sum(axis=1)
    want = g["dot_f64"]
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(dots), nan), "NaN where ggml's dot is NaN (overflowing q8_1 sums), nowhere else"
    err = np.abs(dots.astype(np.float64) - want)
    # where the k-quants' scale and min terms nearly cancel, ggml's own dots (scalar and
    # AVX2) are further than the tolerance from the f64 value; being bit-identical to
    # either of them passes
    same_as_ggml = (dots.view(np.uint32) == g["dot"].view(np.uint32)) | (
        dots.view(np.uint32) == g["dot_avx2"].view(np.uint32)
    )
    ok = same_as_ggml | (err <= 1e-5 * scale)
    assert np.all(ok[~nan]), f"dot errors {err[~ok]} vs scale {scale[~ok]}"
    # and the imatrix bytes dot like ggml too
    if "dot_imat" in g:
        di = kquant.vec_dot(g["q_imat"], g["yq"], t)
        ok = ~np.isnan(g["dot_imat"])
        assert np.allclose(di[ok], g["dot_imat"][ok], rtol=1e-4, atol=1e-5 * scale[ok].max())


def test_matmul_matches_vec_dot(golden):
    t, g = golden
    if "dot" not in g and "dot_imat" not in g:
        pytest.skip(f"{t} is an activation format")
    rows = slice(0, 4)
    w, y = g["q" if "q" in g else "q_imat"][rows], g["y"][rows]
    full = kquant.matmul(w, y, t)
    assert full.shape == (4, 4)
    yq = kquant.quantize(y, kquant.vec_dot_type(t))
    for i in range(4):
        expect = kquant.vec_dot(w, np.broadcast_to(yq[i], (4, yq.shape[1])), t)
        assert np.array_equal(full[i], expect)
    assert np.array_equal(kquant.matmul(w, y[0], t), full[0])


def test_dequantize_imatrix_bit_exact(golden):
    t, g = golden
    if "dq_imat" not in g:
        pytest.skip(f"{t} has no dq_imat")
    dq = kquant.dequantize(g["q_imat"], t)
    assert np.array_equal(dq.view(np.uint32), g["dq_imat"].view(np.uint32))
# ---- second set (README "Second set"): found by the `requires_imatrix` key, so every
# implemented type with such a file is checked without editing a list here


def _second_set() -> list:
    from .conftest import golden_dir

    out = []
    for t in QuantType:
        path = golden_dir() / f"{t.name}.npz"
        if t.is_implemented and path.is_file():
            with np.load(path) as z:
                if "requires_imatrix" in z.files:
                    out.append(t.name)
    return out


@pytest.fixture(scope="module", params=_second_set())
def golden2(request, golden_path):
    with np.load(golden_path / f"{request.param}.npz") as z:
        return request.param, {k: z[k] for k in z.files}


def test_second_set_quantize(golden2):
    t, g = golden2
    assert bool(g["requires_imatrix"]) == QuantType[t].requires_imatrix
    if "q" in g:
        q = kquant.quantize(g["x"], t)
        assert np.array_equal(q, g["q"]), _first_diff(q, g["q"], g["case_names"])
    else:
        with pytest.raises(ValueError, match="importance matrix"):
            kquant.quantize(g["x"], t)
    q = kquant.quantize(g["x"], t, imatrix=g["imat"])
    assert np.array_equal(q, g["q_imat"]), _first_diff(q, g["q_imat"], g["case_names"])


@pytest.mark.parametrize("which", ["", "_imat"])
def test_second_set_dequantize_and_dot(golden2, which):
    t, g = golden2
    if f"q{which}" not in g:
        pytest.skip(f"{t}: ggml quantizes it only with an importance matrix")
    q, dq = g[f"q{which}"], g[f"dq{which}"]
    got = kquant.dequantize(q, t)
    assert np.array_equal(got.view(np.uint32), dq.view(np.uint32))
    dots = kquant.vec_dot(q, g["yq"], t)
    p = kquant.vec_dot_type(t)
    scale = np.abs(dq.astype(np.float64) * kquant.dequantize(g["yq"], p).astype(np.float64)).sum(axis=1)
    want = g[f"dot{which}_f64"]
    same_as_ggml = (dots.view(np.uint32) == g[f"dot{which}"].view(np.uint32)) | (
        dots.view(np.uint32) == g[f"dot{which}_avx2"].view(np.uint32)
    )
    ok = same_as_ggml | (np.abs(dots.astype(np.float64) - want) <= 1e-5 * scale)
    assert np.all(ok), f"dots {dots[~ok]} want {want[~ok]} (scale {scale[~ok]})"
