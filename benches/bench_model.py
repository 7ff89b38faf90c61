"""Whole-model benchmark: `kquant quantize` against a Python loop of libgguf's quantizer
over the same tensors and types, both with the same thread count, in the same run.

    python benches/bench_model.py [--model PATH] [--type Q4_K_M] [--threads 2] [--markdown FILE]

Without --model it writes the synthetic Llama of benches/make_llama.py to
benches/.cache/llama-0.5b-f32.gguf (about 2 GB) once. Peak anonymous memory (RssAnon,
which leaves out the memory-mapped input) is sampled every 20 ms from /proc.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

LIBGGUF_LOOP = r"""
import sys, numpy as np, libgguf, kquant
from kquant.model import plan_model
from kquant.recipes import QuantizeOptions
src, dst, ftype = sys.argv[1:4]
with kquant.GGUFReader(src) as r, open(dst, "wb") as out:
    plan = plan_model(r, ftype, QuantizeOptions())
    for p in plan:
        if p.quantize:
            x = r.dequantize(p.name)
            q = libgguf.quantize_rows(x.reshape(-1, x.shape[-1]), int(p.target_type))
            out.write(memoryview(np.ascontiguousarray(q)).cast("B"))
        else:
            out.write(memoryview(r.raw(p.name)).cast("B"))
"""


def run_measured(cmd, env) -> tuple[float, int]:
    """Wall seconds and peak RssAnon bytes of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0

    def sample():
        nonlocal peak
        path = f"/proc/{p.pid}/status"
        while p.poll() is None:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak = max(peak, int(line.split()[1]) * 1024)
            except OSError:
                break
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = p.communicate()
    dt = time.perf_counter() - t0
    th.join()
    if p.returncode:
        raise RuntimeError(f"{cmd[:4]} failed ({p.returncode}):\n{err[-2000:]}")
    return dt, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--markdown", help="append the result table to this file")
    a = ap.parse_args(argv)

    model = Path(a.model) if a.model else HERE / ".cache" / "llama-0.5b-f32.gguf"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {model} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "make_llama.py"), str(model)], check=True)

    env = dict(os.environ, KQUANT_NUM_THREADS=str(a.threads), LIBGGUF_NUM_THREADS=str(a.threads))
    size = model.stat().st_size
    rows = []
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        out = Path(tmp) / "out.gguf"
        for _ in range(a.repeat):
            kq = run_measured([sys.executable, "-m", "kquant", "quantize", str(model), str(out), a.type,
                               str(a.threads)], env)
            out_size = out.stat().st_size
            lg = run_measured([sys.executable, "-c", LIBGGUF_LOOP, str(model), str(out) + ".raw", a.type], env)
            rows.append((kq, lg, out_size))
    best_kq = min((r[0] for r in rows), key=lambda t: t[0])
    best_lg = min((r[1] for r in rows), key=lambda t: t[0])
    lines = [
        f"Model: {model.name} ({size / 2**30:.2f} GiB F32) -> {a.type}, {a.threads} threads",
        "",
        "| tool | seconds | peak anonymous memory | ratio |",
        "|---|---|---|---|",
        f"| kquant quantize | {best_kq[0]:.1f} | {best_kq[1] / 2**20:.0f} MiB | {best_lg[0] / best_kq[0]:.2f}x |",
        f"| libgguf loop | {best_lg[0]:.1f} | {best_lg[1] / 2**20:.0f} MiB | 1.00x |",
        "",
        f"Output size: {rows[0][2] / 2**20:.1f} MiB",
    ]
    print("\n".join(lines))
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write("\n## Whole model\n\nCommand: `python benches/bench_model.py " + " ".join(argv or sys.argv[1:])
                    + "`\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
