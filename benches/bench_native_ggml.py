"""kquant against a native ggml build loaded with ctypes, one thread, same process.

    python benches/bench_native_ggml.py GGML_BUILD_DIR [--types tq1_0 ...]

GGML_BUILD_DIR holds libggml-base.so and libggml-cpu.so from ggml at d99724f built with
`cmake -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON -DGGML_OPENMP=OFF` (the build used for
benches/RESULTS.md: `cmake --build build --target ggml-cpu ggml-base`). For types that
ggml-python's older ggml lacks (NVFP4, Q1_0, Q2_0) this is the only native anchor.
Values per second are best-of-N wall times; ratios are kquant / ggml.
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

TYPES = ["TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]


class Traits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)),
        ("from_float_ref", ctypes.c_void_p),
    ]


VEC_DOT = ctypes.CFUNCTYPE(
    None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
)


class TraitsCpu(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", VEC_DOT), ("vec_dot_type", ctypes.c_int),
                ("nrows", ctypes.c_int64)]


def best(fn, min_time=0.3, max_reps=200):
    fn()
    b, spent, reps = float("inf"), 0.0, 0
    while reps < 5 or (spent < min_time and reps < max_reps):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        b, spent, reps = min(b, dt), spent + dt, reps + 1
    return b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--types", nargs="*", default=TYPES)
    a = ap.parse_args(argv)
    d = Path(a.build_dir)
    base = ctypes.CDLL(str(next(d.rglob("libggml-base.so"))), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(next(d.rglob("libggml-cpu.so"))), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()  # without it the quantized dots return 0
    base.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TraitsCpu)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    kquant.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"kquant {kquant.__version__} ({kquant.isa()}) against native ggml d99724f, 1 thread")
    print("| type | op | kquant | ggml | kquant / ggml |\n|---|---|---|---|---|")
    for name in a.types:
        t = QuantType.parse(name)
        n, rows = 4096, 256
        x = (rng.standard_t(5, (rows, n)) * 0.02).astype(np.float32)
        out = np.empty((rows, kquant.row_size(t, n)), np.uint8)
        gq = lambda: base.ggml_quantize_chunk(t.value, x.ctypes.data, out.ctypes.data, 0, rows, n, None)  # noqa: E731
        gq()
        q = kquant.quantize(x, t)
        assert np.array_equal(q, out), f"{t.name}: kquant and ggml bytes differ"
        res = [("quantize", best(lambda: kquant.quantize(x, t)), best(gq))]
        # dequantize in L2 (64K values) so that the kernels, not page faults, are timed
        qs = np.ascontiguousarray(q[:16])
        y = np.empty(16 * n, np.float32)
        tf = base.ggml_get_type_traits(t.value).contents.to_float
        res.append(("dequantize 64K", best(lambda: kquant.dequantize(qs, t)),
                    best(lambda: tf(qs.ctypes.data, y.ctypes.data, 16 * n))))
        nd = 1 << 18
        qd = kquant.quantize(rng.standard_normal((1, nd)).astype(np.float32), t)
        yqd = kquant.quantize(rng.standard_normal((1, nd)).astype(np.float32), kquant.vec_dot_type(t))
        vd = cpu.ggml_get_type_traits_cpu(t.value).contents.vec_dot
        s = (ctypes.c_float * 1)()
        res.append(("vec_dot 256K", best(lambda: kquant.vec_dot(qd, yqd, t)),
                    best(lambda: vd(nd, s, 0, qd.ctypes.data, 0, yqd.ctypes.data, 0, 1))))
        vals = {"quantize": x.size, "dequantize 64K": 16 * n, "vec_dot 256K": nd}
        for op, k, g in res:
            v = vals[op]
            print(f"| {t.name} | {op} | {v / k / 1e9:.3g}G | {v / g / 1e9:.3g}G | {g / k:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
