"""kquant tradeoffs / recommend over every format and every llama.cpp file type, and the budget
solver's frontier: types that need an importance matrix, file-type rows from the per-tensor
measurements, the least-error-for-each-size curve, and the solver against the recipes.

Expected sizes come from an independent dry-run plan and kquant.row_size; expected errors from
NumPy over kquant.quantize / dequantize.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.budget import choose_from_measurement, frontier
from kquant.cli import main as cli_main
from kquant.recipes import FileType, TensorSpec, plan_quantization
from kquant.tensors import ArraySource
from kquant.tradeoffs import ALL_FILE_TYPES, DEFAULT_TYPES, measure, recommend, split_tensors

from .test_budget import synthetic_llama

Q = QuantType
NEEDS_IMATRIX = {"IQ1_S", "IQ2_XXS", "IQ2_XS"}


@pytest.fixture(scope="module")
def model():
    arrays, facts = synthetic_llama(n_layer=2, d=256, n_head=4, n_kv=2, ff=512, vocab=512, seed=5)
    rng = np.random.default_rng(9)
    # an entry for every matrix, the token embedding included, so every type can be made
    imat = {n: (rng.lognormal(0, 1, a.shape[-1]) ** 2).astype(np.float32) for n, a in arrays.items() if a.ndim == 2}
    return ArraySource(arrays, facts, description="small llama"), arrays, imat


@pytest.fixture(scope="module")
def plain(model):
    src, _, _ = model
    return measure(src, None, file_types=None, sample_rows=32)


@pytest.fixture(scope="module")
def weighted(model):
    src, _, imat = model
    return measure(src, None, imatrix=imat, file_types=None, exact=True)


def test_default_types_span_every_format():
    names = {t.name for t in DEFAULT_TYPES}
    assert {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4",
            "Q1_0", "Q2_0", "Q2_K", "Q4_K", "Q8_0"} <= names
    assert "F32" not in names and "Q8_K" not in names
    assert FileType.COPY not in ALL_FILE_TYPES and {FileType.IQ2_M, FileType.IQ3_M, FileType.Q4_K_M} <= set(ALL_FILE_TYPES)


def test_without_imatrix_the_types_that_need_one_are_skipped_with_the_reason(plain):
    assert set(plain.skipped) == NEEDS_IMATRIX
    for reason in plain.skipped.values():
        assert "importance matrix" in reason and "--imatrix" in reason
    rows = {r["type"] for r in plain.table()}
    assert not rows & NEEDS_IMATRIX and {"IQ1_M", "IQ2_S", "IQ3_XXS", "Q1_0", "TQ1_0"} <= rows
    # the file types llama-quantize refuses without an imatrix are skipped too, the others have rows
    sk = plain.skipped_file_types
    assert {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "Q2_K_S"} <= set(sk)
    assert all("importance matrix" in v for v in sk.values())
    have = {r["file_type"] for r in plain.file_type_table()}
    assert {"Q2_K", "Q3_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS", "Q8_0", "TQ1_0"} <= have
    assert not have & set(sk)
    with pytest.raises(ValueError, match="importance matrix"):
        plain.file_type_row("IQ2_M")


def test_with_an_imatrix_every_type_is_measured(model, weighted):
    src, arrays, imat = model
    assert weighted.skipped == {} and weighted.skipped_file_types == {}
    rows = {r["type"]: r for r in weighted.table()}
    assert NEEDS_IMATRIX <= set(rows)
    # one tensor's IQ2_XXS error, importance-weighted, against NumPy
    name = "blk.0.ffn_up.weight"
    x, w = arrays[name], imat[name].astype(np.float64)
    y = kquant.dequantize(kquant.quantize(x, Q.IQ2_XXS, imatrix=imat[name]), Q.IQ2_XXS).astype(np.float64)
    expect = ((y - x) ** 2).sum(0) @ w / ((x.astype(np.float64) ** 2).sum(0) @ w)
    assert weighted.tensor(name).rel_mse(Q.IQ2_XXS) == pytest.approx(expect, rel=1e-6)
    assert rows["IQ1_S"]["bits_per_weight"] < rows["IQ2_XXS"]["bits_per_weight"] < rows["Q2_K"]["bits_per_weight"]


@pytest.mark.parametrize("which", ["plain", "weighted"])
def test_file_type_rows_are_the_plans_sizes_and_errors(model, which, request):
    m = request.getfixturevalue(which)
    src, _, imat = model
    quant, fixed = split_tensors(src)
    specs = [TensorSpec.from_numpy(i.name, i.shape, i.type) for i in src.tensors]
    rows = m.file_type_table()
    assert len(rows) + len(m.skipped_file_types) == len(ALL_FILE_TYPES)
    assert [r["bytes"] for r in rows] == sorted(r["bytes"] for r in rows)
    for r in rows:
        plan = plan_quantization(specs, src.model_facts(), r["file_type"], dry_run=True, allow_requantize=True,
                                 imatrix=set(imat) if which == "weighted" else False)
        assert plan.imatrix_error is None
        types = {i.name: plan[i.name].target_type for i in quant}
        nbytes = sum(i.n_rows * kquant.row_size(types[i.name], i.row_length) for i in quant)
        assert r["bytes"] == nbytes + sum(b for _, b in fixed), r["file_type"]
        assert r["error"] == pytest.approx(sum(m.tensor(n).error(t) for n, t in types.items()), rel=1e-12)
        assert sum(r["tensor_types"].values()) == len(quant)


def test_frontier_falls_and_is_never_above_a_recipe(plain, weighted):
    for m in (plain, weighted):
        rows = m.file_type_table()
        fr = frontier(m, points=12, sizes=[r["bytes"] for r in rows])
        assert len(fr) >= 12
        for a, b in zip(fr, fr[1:]):
            assert a.total_bytes < b.total_bytes and a.error > b.error
        for p in fr:
            assert p.total_bytes <= p.budget_bytes
        lo = fr[0].total_bytes
        for r in rows:
            if r["bytes"] >= lo:
                best = min(p.error for p in fr if p.total_bytes <= r["bytes"])
                assert best <= r["error"] * (1 + 1e-12), r["file_type"]
    assert NEEDS_IMATRIX & {k for p in frontier(weighted, points=8) for k in p.counts}


@pytest.mark.parametrize("ftype", ["IQ2_M", "IQ3_M", "Q4_K_M"])
def test_solver_beats_or_equals_the_recipe_at_its_size(model, weighted, ftype):
    _, arrays, imat = model
    r = weighted.file_type_row(ftype)
    c = choose_from_measurement(weighted, target_size=r["bytes"])
    assert c.total_bytes <= r["bytes"]
    assert c.predicted_error <= r["error"] * (1 + 1e-12)
    assert c.recipe is not None and c.recipe.file_type.name == ftype

    # every row was measured, so the prediction is the error NumPy finds
    def err(types):
        total = 0.0
        for name, t in types.items():
            x, w = arrays[name], imat[name].astype(np.float64)
            y = kquant.dequantize(kquant.quantize(x, t, imatrix=imat[name]), t).astype(np.float64)
            total += x.size * float(((y - x) ** 2).sum(0) @ w / ((x.astype(np.float64) ** 2).sum(0) @ w))
        return total

    if ftype == "IQ2_M":
        assert err(c.tensor_types) == pytest.approx(c.predicted_error, rel=1e-6)
        assert err(c.recipe.tensor_types) == pytest.approx(r["error"], rel=1e-6)


def test_recommend_json_text_and_plot(model, tmp_path):
    src, _, _ = model
    rec = recommend(src, types=["Q2_K", "IQ2_XXS", "Q4_K", "Q8_0"], file_types=["Q4_K_M", "IQ2_M", "Q2_K"],
                    sample_rows=16, frontier_points=6, target_bpw=4.0)
    d = json.loads(json.dumps(rec.to_json(), allow_nan=True))
    assert {"types", "skipped_types", "file_types", "skipped_file_types", "frontier", "choice"} <= set(d)
    assert [r["type"] for r in d["types"]] == ["Q2_K", "Q4_K", "Q8_0"]
    assert d["skipped_types"][0]["type"] == "IQ2_XXS" and "importance matrix" in d["skipped_types"][0]["reason"]
    assert [r["file_type"] for r in d["file_types"]] == ["Q2_K", "Q4_K_M"]
    assert d["skipped_file_types"][0]["file_type"] == "IQ2_M"
    assert {"bytes", "bits_per_weight", "rel_rmse", "error", "tensor_types"} <= set(d["file_types"][0])
    errs = [p["error"] for p in d["frontier"]]
    assert len(errs) >= 3 and errs == sorted(errs, reverse=True)
    text = repr(rec)
    assert "Q4_K_M" in text and "skipped types" in text and "IQ2_M: needs an importance matrix" in text
    assert "frontier" in text and "<table>" in rec._repr_html_()
    pytest.importorskip("matplotlib")
    png = tmp_path / "t.png"
    rec.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_carries_file_types_and_frontier(tmp_path, capsys):
    out = tmp_path / "t.json"
    args = ["tradeoffs", "--types", "Q4_K,IQ1_S", "--file-types", "Q4_K_M,IQ1_M", "--frontier-points", "4",
            "--json", str(out), "--quiet"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "Q4_K_M" in text and "IQ1_S: ggml will not quantize IQ1_S without an importance matrix" in text
    d = json.loads(out.read_text())
    assert [r["type"] for r in d["types"]] == ["Q4_K"]
    assert [r["file_type"] for r in d["file_types"]] == ["Q4_K_M"]
    assert d["skipped_file_types"][0]["file_type"] == "IQ1_M"
    assert d["frontier"] and all(math.isfinite(p["rel_rmse"]) for p in d["frontier"])
    assert cli_main(["tradeoffs", "--types", "Q8_0", "--file-types", "none", "--frontier-points", "0",
                     "--json", str(out), "--quiet"]) == 0
    d = json.loads(out.read_text())
    assert d["file_types"] == [] and d["frontier"] == []
