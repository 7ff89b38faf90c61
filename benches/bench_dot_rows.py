"""Dots of many distinct quantized rows against one Q8_K row: kquant and native ggml.

    python benches/bench_dot_rows.py GGML_BUILD_DIR [--types IQ2_XXS ...] [--rows 64] [--repeat 5]

`bench_native_ggml.py` dots one row over and over, so any table a kernel reads stays in
L1/L2 however large it is. Here every call takes the next of `--rows` different rows
(4 MiB and more of quantized data), as a matrix product does, and both sides walk the
same rows in the same order. One thread; values per second of the best pass.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np

import kquant
from kquant import QuantType

sys.path.insert(0, str(Path(__file__).parent))
from bench_native_ggml import TraitsCpu  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--types", nargs="*", default=["IQ2_XXS", "IQ2_XS", "IQ2_S"])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    d = Path(a.build_dir)
    ctypes.CDLL(str(next(d.rglob("libggml-base.so"))), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(next(d.rglob("libggml-cpu.so"))), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TraitsCpu)
    kquant.set_num_threads(1)
    rng = np.random.default_rng(0)
    nd = 1 << 18
    print(f"kquant {kquant.__version__} ({kquant.isa()}) against native ggml d99724f, 1 thread, "
          f"{a.rows} distinct rows of {nd} values")
    print("| type | kquant | ggml | kquant / ggml |\n|---|---|---|---|")
    for name in a.types:
        t = QuantType.parse(name)
        w = rng.lognormal(0, 1, nd).astype(np.float32)
        x = kquant.quantize((rng.standard_t(5, (a.rows, nd)) * 0.02).astype(np.float32), t, imatrix=w)
        rows = [np.ascontiguousarray(x[r : r + 1]) for r in range(a.rows)]
        yq = kquant.quantize(rng.standard_normal((1, nd)).astype(np.float32), kquant.vec_dot_type(t))
        vd = cpu.ggml_get_type_traits_cpu(t.value).contents.vec_dot
        s = (ctypes.c_float * 1)()
        for q in rows[:2]:
            vd(nd, s, 0, q.ctypes.data, 0, yq.ctypes.data, 0, 1)
            want = float(np.asarray(kquant.vec_dot(q, yq, t)).ravel()[0])
            assert abs(want - s[0]) <= 1e-3 * max(1.0, abs(want)), f"{name}: dots differ: {want} vs {s[0]}"
        kb = gb = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for q in rows:
                kquant.vec_dot(q, yq, t)
            kb = min(kb, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for q in rows:
                vd(nd, s, 0, q.ctypes.data, 0, yq.ctypes.data, 0, 1)
            gb = min(gb, time.perf_counter() - t0)
        k, g = a.rows * nd / kb, a.rows * nd / gb
        print(f"| {name} | {k / 1e9:.3g}G | {g / 1e9:.3g}G | {k / g:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
