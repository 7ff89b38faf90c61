"""Kernel benchmark: kquant against ggml (native, via ggml-python), libgguf and gguf-py,
measured in the same run, with a memory-copy and a float32 BLAS baseline.

    python benches/bench_kernels.py                 # every format, table to stdout
    python benches/bench_kernels.py --types q4_k q8_0 --markdown benches/RESULTS.md

Anchors are optional: a missing one shows as '-'. `benches/setup.sh` installs them
(ggml-python builds ggml from source with -march=native, about two minutes).
Values per second are best-of-N wall times; ratios are kquant / fastest anchor.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time
from typing import Callable, Optional

import numpy as np

import kquant
from kquant import QuantType

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
# the lattice i-quants: quantizers of a few M values/s in ggml, so fewer values
LATTICE = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]
TYPES += LATTICE
TYPES += ["TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]
# newer than the anchors' builds (libgguf 0.2.2, gguf-py 0.19)
NOT_IN_LIBGGUF = (QuantType.Q2_0,)
NOT_IN_GGUF_PY = (QuantType.Q1_0, QuantType.Q2_0)


def best_time(fn: Callable[[], object], min_time: float = 0.3, max_reps: int = 50) -> float:
    fn()  # warm up caches, pools and lazy initialisation
    best = float("inf")
    spent = 0.0
    reps = 0
    while reps < 3 or (spent < min_time and reps < max_reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        reps += 1
    return best


class Ggml:
    """Native ggml through ggml-python's ctypes bindings."""

    def __init__(self):
        from ggml import ggml as G  # type: ignore

        self.G = G
        G.ggml_cpu_init()  # without it the quantized dots silently return 0

    def quantize(self, t: QuantType, x: np.ndarray, imat: Optional[np.ndarray]):
        G = self.G
        rows, n = x.shape
        out = np.empty((rows, kquant.row_size(t, n)), np.uint8)
        ip = imat.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) if imat is not None else None
        xp = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

        def run():
            G.ggml_quantize_chunk(t.value, xp, out.ctypes.data_as(ctypes.c_void_p), 0, rows, n, ip)

        return run

    def dequantize(self, t: QuantType, q: np.ndarray, n_total: int):
        to_float = self.G.ggml_get_type_traits(t.value).contents.to_float
        out = np.empty(n_total, np.float32)
        qp = q.ctypes.data_as(ctypes.c_void_p)
        op = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        return lambda: to_float(qp, op, n_total)

    def vec_dot(self, t: QuantType, q: np.ndarray, yq: np.ndarray, n: int):
        vd = self.G.ggml_get_type_traits_cpu(t.value).contents.vec_dot
        s = (ctypes.c_float * 1)()
        qp, yp = q.ctypes.data_as(ctypes.c_void_p), yq.ctypes.data_as(ctypes.c_void_p)
        return lambda: vd(n, s, 0, qp, 0, yp, 0, 1)


def load_anchor(name: str):
    try:
        if name == "ggml":
            return Ggml()
        if name == "libgguf":
            import libgguf  # type: ignore

            return libgguf
        if name == "gguf-py":
            from gguf import quants  # type: ignore

            return quants
    except Exception as e:  # an anchor that cannot load is reported, not fatal
        print(f"# anchor {name} unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    return None


def fmt_rate(v: Optional[float]) -> str:
    if v is None:
        return "-"
    for unit, s in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= s:
            return f"{v / s:.3g}{unit}"
    return f"{v:.3g}"


def bench_type(t: QuantType, anchors: dict, n_quant: int, n_slow: int, threads: int) -> list[dict]:
    rng = np.random.default_rng(0)
    n = 4096
    slow = t.block_size == 256 or t in (QuantType.IQ4_NL,)
    total = n_slow if slow else n_quant
    if t.name in LATTICE:
        total = max(n, n_slow // 8)
    x = (rng.standard_t(5, (total // n, n)) * 0.02).astype(np.float32)
    imat = rng.lognormal(0, 1, n).astype(np.float32)

    def need(m: int):  # an importance matrix where the type cannot go without one
        return np.ones(m, np.float32) if t.requires_imatrix else None

    q = kquant.quantize(x, t, imatrix=need(n))
    rows = []

    def row(op: str, values: int, kq: float, others: dict):
        anchors_v = {k: (values / v if v else None) for k, v in others.items()}
        kq_v = values / kq
        fastest = max((v for v in anchors_v.values() if v), default=None)
        rows.append({"type": t.name, "op": op, "threads": threads, "kquant": kq_v, **anchors_v,
                     "ratio": kq_v / fastest if fastest else None})

    g, lg, gp = anchors.get("ggml"), anchors.get("libgguf"), anchors.get("gguf-py")
    # quantize, without and with an importance matrix
    for op, w in (("quantize", None), ("quantize imatrix", imat)):
        if w is not None and t == QuantType.Q8_0:
            continue
        if w is None and t.requires_imatrix:
            continue
        others = {}
        if g and threads == 1:
            others["ggml"] = best_time(g.quantize(t, x, w))
        if lg and t not in NOT_IN_LIBGGUF:
            others["libgguf"] = best_time(lambda: lg.quantize_rows(x, t.value, imatrix=w))
        if gp and w is None and t.block_size == 32 and t not in (QuantType.IQ4_NL, QuantType.MXFP4):
            from gguf import GGMLQuantizationType  # type: ignore

            others["gguf-py"] = best_time(lambda: gp.quantize(x, GGMLQuantizationType(t.value)))
        row(op, x.size, best_time(lambda: kquant.quantize(x, t, imatrix=w)), others)
    # dequantize
    others = {}
    if g and threads == 1:
        others["ggml"] = best_time(g.dequantize(t, q, x.size))
    if lg and t not in NOT_IN_LIBGGUF:
        others["libgguf"] = best_time(lambda: lg.dequantize_rows(q, t.value))
    if gp and t not in NOT_IN_GGUF_PY:
        from gguf import GGMLQuantizationType  # type: ignore

        others["gguf-py"] = best_time(lambda: gp.dequantize(q, GGMLQuantizationType(t.value)))
    row("dequantize", x.size, best_time(lambda: kquant.dequantize(q, t)), others)
    # vec_dot of one 256K-value row, Python call included for kquant
    nd = 1 << 18
    xd = (rng.standard_normal((1, nd))).astype(np.float32)
    qd = kquant.quantize(xd, t, imatrix=need(nd))
    yqd = kquant.quantize(rng.standard_normal((1, nd)).astype(np.float32), kquant.vec_dot_type(t))
    others = {}
    if g and threads == 1:
        others["ggml"] = best_time(g.vec_dot(t, qd, yqd, nd))
    row("vec_dot 256K", nd, best_time(lambda: kquant.vec_dot(qd, yqd, t)), others)
    # matvec 14336 x 4096 against NumPy float32 BLAS
    # the full 14336 x 4096 shape where quantizing it is quick; slow quantizers get fewer rows
    wrows = 14336 if not slow or t == QuantType.Q4_K else 4096
    if t.name in LATTICE:
        wrows = 1024
    wf = (rng.standard_normal((wrows, 4096)) * 0.02).astype(np.float32)
    wq = kquant.quantize(wf, t, imatrix=need(4096))
    v = rng.standard_normal(4096).astype(np.float32)
    row("matvec", wf.size, best_time(lambda: kquant.matmul(wq, v, t)), {"numpy f32": best_time(lambda: wf @ v)})
    return rows


def baselines() -> list[str]:
    a = np.ones(1 << 22, np.float32)  # 16 MiB
    b = np.empty_like(a)
    t_copy = best_time(lambda: np.copyto(b, a))
    x = np.zeros((1, 256), np.float32)
    q = kquant.quantize(x, "q8_0")
    t_small = best_time(lambda: kquant.dequantize(q, "q8_0"), max_reps=2000)
    return [
        f"- memory copy (NumPy copyto, 16 MiB): {a.nbytes * 2 / t_copy / 1e9:.1f} GB/s moved",
        f"- one-row 256-value `kquant.dequantize` call: {t_small * 1e6:.2f} us",
    ]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, NumPy {np.__version__}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", nargs="*", default=TYPES)
    ap.add_argument("--threads", nargs="*", type=int, default=[1, os.cpu_count() or 1])
    ap.add_argument("--values", type=int, default=1 << 22, help="values per fast quantize/dequantize run")
    ap.add_argument("--slow-values", type=int, default=1 << 20, help="values for k-quant/IQ4 quantize")
    ap.add_argument("--anchors", nargs="*", default=["ggml", "libgguf", "gguf-py"])
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args(argv)

    anchors = {name: a for name in args.anchors if (a := load_anchor(name)) is not None}
    cols = ["kquant"] + [a for a in ("ggml", "libgguf", "gguf-py", "numpy f32") if a in anchors or a == "numpy f32"]
    lines = [f"Machine: {machine()}", f"kquant {kquant.__version__}, anchors: {', '.join(anchors) or 'none'}", ""]
    lines += baselines() + [""]
    header = "| type | op | threads | " + " | ".join(cols) + " | kquant / fastest anchor |"
    lines += [header, "|" + "---|" * (len(cols) + 4)]
    print("\n".join(lines), flush=True)
    for threads in args.threads:
        kquant.set_num_threads(threads)
        os.environ["LIBGGUF_NUM_THREADS"] = str(threads)
        for name in args.types:
            for r in bench_type(QuantType.parse(name), anchors, args.values, args.slow_values, threads):
                ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
                line = f"| {r['type']} | {r['op']} | {threads} | " + " | ".join(
                    fmt_rate(r.get(c)) for c in cols) + f" | {ratio} |"
                lines.append(line)
                print(line, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# Kernel benchmark\n\nValues per second (best of several runs); command: "
                    f"`python benches/bench_kernels.py {' '.join(argv or sys.argv[1:])}`\n\n")
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
