"""The size-budget solver against llama.cpp's low-bit recipes, at each recipe's own size.

    python benches/bench_budget_lowbit.py [--layers 4] [--width 768] [--ffn 2048] [--heads 12]
        [--kv-heads 4] [--vocab 8000] [--file-types IQ2_M,IQ3_M] [--sample-rows N] [--markdown]

A synthetic Llama (benches/make_llama.py's shapes and weights, built in memory) gets a synthetic
importance matrix: per-column mean squared activations with outlier channels, one vector per
layer input (attn_q/k/v share one, ffn_gate/up share one), and no entry for the token embedding,
as llama-imatrix leaves it (the embedding is a row look-up, not a matrix product). Every format
and the asked llama.cpp file types are measured once on every row (``--sample-rows``: on a
sample), the budget solver (``kquant.budget.choose_from_measurement``) gets each recipe's size
as its budget, and then both the recipe's and the solver's per-tensor types are quantized again,
every row with the importance matrix, and their error computed here with NumPy:
sum over tensors of n_t * ||W - Q(W)||^2_w / ||W||^2_w (column j weighted by its importance; the
token embedding unweighted), reported as the model's relative RMSE sqrt(error / parameters).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from make_llama import make_tensor, tensor_list  # noqa: E402

import kquant  # noqa: E402
from kquant.budget import choose_from_measurement  # noqa: E402
from kquant.recipes import ModelFacts  # noqa: E402
from kquant.tensors import ArraySource  # noqa: E402
from kquant.tradeoffs import DEFAULT_TYPES, measure  # noqa: E402


def synthetic_imatrix(arrays, seed):
    """Per-column importance: squared heavy-tailed activations with a few outlier channels."""
    rng = np.random.default_rng(seed)

    def vec(n):
        v = rng.lognormal(0.0, 1.0, n) ** 2
        out = rng.choice(n, max(1, n // 64), replace=False)
        v[out] *= rng.uniform(20, 200, out.size)
        return v.astype(np.float32)

    imat = {}
    shared = {}
    for name, a in arrays.items():
        if a.ndim != 2 or name == "token_embd.weight":
            continue
        stem = name.rsplit(".", 2)
        kind = stem[-2] if len(stem) == 3 else name
        group = {"attn_q": "attn_in", "attn_k": "attn_in", "attn_v": "attn_in",
                 "ffn_gate": "ffn_in", "ffn_up": "ffn_in"}.get(kind, kind)
        key = (stem[0] if len(stem) == 3 else "", group)
        if key not in shared:
            shared[key] = vec(a.shape[1])
        imat[name] = shared[key]
    return imat


def true_error(arrays, types, imat):
    """sum_t n_t ||W_t - Q(W_t)||^2_w / ||W_t||^2_w over every row, with NumPy."""
    total = 0.0
    for name, t in types.items():
        x = arrays[name]
        w = imat.get(name)
        y = kquant.dequantize(kquant.quantize(x, t, imatrix=w), t).astype(np.float64)
        d = (y - x) ** 2
        cw = np.ones(x.shape[1]) if w is None else w.astype(np.float64)
        total += x.size * float((d.sum(0) * cw).sum() / ((x.astype(np.float64) ** 2).sum(0) * cw).sum())
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--file-types", default="IQ2_M,IQ3_M")
    ap.add_argument("--sample-rows", type=int, default=0, help="rows measured per tensor (default 0: every row)")
    ap.add_argument("--markdown", action="store_true", help="print the result as a Markdown table")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also write kquant tradeoffs' plot of this model: every type and file type, the frontier")
    a = ap.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    arrays = {n: make_tensor(rng, n, s) for n, s in
              tensor_list(a.layers, a.width, a.ffn, a.heads, a.kv_heads, a.vocab)}
    facts = ModelFacts("llama", n_layer=a.layers, n_head=a.heads, n_head_kv=a.kv_heads, n_embd=a.width)
    src = ArraySource(arrays, facts, description="synthetic llama")
    imat = synthetic_imatrix(arrays, a.seed + 1)
    params = sum(x.size for x in arrays.values())
    fts = [f.strip().upper() for f in a.file_types.split(",") if f.strip()]

    t0 = time.perf_counter()
    m = measure(src, DEFAULT_TYPES, imatrix=imat, exact=a.sample_rows <= 0,
                sample_rows=a.sample_rows if a.sample_rows > 0 else None, file_types=None)
    t_measure = time.perf_counter() - t0
    print(f"synthetic llama: {a.layers} layers, width {a.width}, ffn {a.ffn}, vocab {a.vocab}: "
          f"{params / 1e6:.1f} M parameters; measured {len(DEFAULT_TYPES)} types "
          f"({'every row' if m.sample_rows is None else f'{m.sample_rows} rows per tensor'}) in {t_measure:.1f} s",
          file=sys.stderr)
    for k, v in {**m.skipped, **m.skipped_file_types}.items():
        print(f"skipped {k}: {v}", file=sys.stderr)
    if a.plot:
        from kquant.tradeoffs import Recommendation, _frontier

        ts = list(DEFAULT_TYPES)
        rec = Recommendation(m, ts, frontier=_frontier(m, ts, (), 24))
        rec.plot(a.plot, title=f"synthetic Llama, {params / 1e6:.1f} M parameters, synthetic imatrix "
                               f"(benches/bench_budget_lowbit.py)")

    rows = []
    for ft in fts:
        if ft in m.skipped_file_types:
            continue
        r = m.file_type_row(ft)
        plan = m.recipe_plans[kquant.recipes.FileType.parse(ft)].types
        t1 = time.perf_counter()
        c = choose_from_measurement(m, target_size=r["bytes"], compare=False)
        t_solve = time.perf_counter() - t1
        assert c.total_bytes <= r["bytes"]
        e_recipe = true_error(arrays, plan, imat)
        e_choice = true_error(arrays, c.tensor_types, imat)
        qp = m.quantizable_params
        rows.append({
            "file_type": ft, "bytes": r["bytes"], "bpw": r["bits_per_weight"],
            "recipe_rmse": math.sqrt(e_recipe / qp), "choice_bytes": c.total_bytes, "choice_bpw": c.bpw,
            "choice_rmse": math.sqrt(e_choice / qp), "ratio": e_choice / e_recipe, "solve_s": t_solve,
            "counts": c.counts(),
        })

    if a.markdown:
        print("| recipe | size | bits/w | recipe rel RMSE | budget choice size | budget rel RMSE | error ratio |"
              " budget choice's types |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            mix = ", ".join(f"{v} {k}" for k, v in sorted(r["counts"].items(), key=lambda kv: -kv[1]))
            print(f"| {r['file_type']} | {r['bytes']:,} B | {r['bpw']:.3f} | {r['recipe_rmse']:.4f} | "
                  f"{r['choice_bytes']:,} B | {r['choice_rmse']:.4f} | x{r['ratio']:.3f} | {mix} |")
    else:
        for r in rows:
            print(f"{r['file_type']:8} {r['bytes']:>11,} B {r['bpw']:6.3f} bpw  recipe rel RMSE {r['recipe_rmse']:.4f}"
                  f"  |  budget {r['choice_bytes']:>11,} B {r['choice_bpw']:6.3f} bpw rel RMSE {r['choice_rmse']:.4f}"
                  f"  error x{r['ratio']:.3f}  (solved in {r['solve_s']:.2f} s) {r['counts']}")
    worse = [r["file_type"] for r in rows if r["ratio"] >= 1.0]
    if worse:
        print(f"the budget choice is not better than {', '.join(worse)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
