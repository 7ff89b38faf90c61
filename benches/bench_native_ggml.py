"""kquant against a native ggml build loaded with ctypes, one thread, same process.

    python benches/bench_native_ggml.py GGML_BUILD_DIR [--types tq1_0 ...] [--ops dequantize vec_dot]
    python benches/bench_native_ggml.py GGML_BUILD_DIR --lattice   # the seven IQ1/IQ2/IQ3 formats

GGML_BUILD_DIR holds libggml-base.so and libggml-cpu.so from ggml at d99724f built with
`cmake -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON -DGGML_OPENMP=OFF` (the build used for
benches/RESULTS.md: `cmake --build build --target ggml-cpu ggml-base`). For types that
ggml-python's older ggml lacks (NVFP4, Q1_0, Q2_0) this is the only native anchor.
Values per second are best-of-N wall times; ratios are kquant / ggml (and kquant / libgguf
for dequantize when libgguf imports: it has no dot). Lattice formats quantize with an
importance matrix (IQ2_XXS, IQ2_XS and IQ1_S need one; `--imatrix no` or `both` also
times them without) and on 16 rows, as their quantizers are slow; every quantize checks
that both sides wrote the same bytes.
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
LATTICE = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]
OPS = ["quantize", "dequantize", "vec_dot"]


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


def bench_type(name, ops, base, cpu, libgguf, rng, use_imat=True) -> dict:
    """Values per second (kquant, ggml, libgguf or 0) per (type, op)."""
    t = QuantType.parse(name)
    lattice = t.name in LATTICE
    n, rows = 4096, (16 if lattice else 256)
    x = (rng.standard_t(5, (rows, n)) * 0.02).astype(np.float32)
    imat = rng.lognormal(0, 1, n).astype(np.float32) if lattice else None
    if not use_imat:
        imat = None
    imat_p = imat.ctypes.data if imat is not None else None
    out = np.empty((rows, kquant.row_size(t, n)), np.uint8)
    gq = lambda: base.ggml_quantize_chunk(t.value, x.ctypes.data, out.ctypes.data, 0, rows, n, imat_p)  # noqa: E731
    gq()
    q = kquant.quantize(x, t, imatrix=imat)
    assert np.array_equal(q, out), f"{t.name}: kquant and ggml bytes differ"
    res = {}
    if "quantize" in ops:
        k = best(lambda: kquant.quantize(x, t, imatrix=imat))
        res[(t.name, "quantize")] = (x.size / k, x.size / best(gq), 0.0)
    if "dequantize" in ops:
        # dequantize in L2 (64K values) so that the kernels, not page faults, are timed
        qs = np.ascontiguousarray(np.resize(q, (16, q.shape[1])))
        y = np.empty(16 * n, np.float32)
        tf = base.ggml_get_type_traits(t.value).contents.to_float
        k = best(lambda: kquant.dequantize(qs, t))
        g = best(lambda: tf(qs.ctypes.data, y.ctypes.data, 16 * n))
        lg = best(lambda: libgguf.dequantize_rows(qs, t.value)) if libgguf else 0.0
        res[(t.name, "dequantize 64K")] = (16 * n / k, 16 * n / g, 16 * n / lg if lg else 0.0)
    if "vec_dot" in ops:
        nd = 1 << 18
        w = np.resize(imat, nd) if lattice else None
        qd = kquant.quantize(rng.standard_normal((1, nd)).astype(np.float32), t, imatrix=w)
        yqd = kquant.quantize(rng.standard_normal((1, nd)).astype(np.float32), kquant.vec_dot_type(t))
        vd = cpu.ggml_get_type_traits_cpu(t.value).contents.vec_dot
        s = (ctypes.c_float * 1)()
        k = best(lambda: kquant.vec_dot(qd, yqd, t))
        g = best(lambda: vd(nd, s, 0, qd.ctypes.data, 0, yqd.ctypes.data, 0, 1))
        want = float(np.asarray(kquant.vec_dot(qd, yqd, t)).ravel()[0])
        assert abs(want - s[0]) <= 1e-3 * max(1.0, abs(want)), f"{t.name}: dots differ: {want} vs {s[0]}"
        res[(t.name, "vec_dot 256K")] = (nd / k, nd / g, 0.0)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--types", nargs="*", default=None)
    ap.add_argument("--lattice", action="store_true", help="the seven lattice formats instead of the default types")
    ap.add_argument("--ops", nargs="*", default=OPS, choices=OPS)
    ap.add_argument("--repeat", type=int, default=1, help="passes over the types; each row keeps its best")
    ap.add_argument("--imatrix", choices=["yes", "no", "both"], default="yes",
                    help="lattice formats: quantize with an importance matrix, without, or both (rows tagged)")
    a = ap.parse_args(argv)
    types = a.types or (LATTICE if a.lattice else TYPES)
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
    try:
        import libgguf  # type: ignore
    except ImportError:
        libgguf = None
    rng = np.random.default_rng(0)
    print(f"kquant {kquant.__version__} ({kquant.isa()}) against native ggml d99724f, 1 thread"
          + (", libgguf" if libgguf else ""))
    best_of: dict = {}
    for _ in range(a.repeat):
        for name in types:
            for use in {"yes": [True], "no": [False], "both": [False, True]}[a.imatrix]:
                tag = "" if a.imatrix == "yes" else (" +imatrix" if use else " no imatrix")
                for (tn, op), v in bench_type(name, a.ops, base, cpu, libgguf, rng, use).items():
                    key = (tn + tag, op)
                    best_of[key] = v if key not in best_of else [max(p, q) for p, q in zip(best_of[key], v)]
    print("| type | op | kquant | ggml | kquant / ggml | libgguf | kquant / libgguf |\n|---|---|---|---|---|---|---|")
    for (tname, op), (k, g, lg) in best_of.items():
        lcol = f"{lg / 1e9:.3g}G | {k / lg:.2f}x" if lg else "- | -"
        print(f"| {tname} | {op} | {k / 1e9:.3g}G | {g / 1e9:.3g}G | {k / g:.2f}x | {lcol} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
