"""The built-in demo: quantize a sample tensor with every format and show size against error."""

from __future__ import annotations

import time

import numpy as np

from ._api import dequantize, quantize
from ._types import QuantType

WEIGHT_TYPES = [
    QuantType.Q2_K, QuantType.Q3_K, QuantType.Q4_0, QuantType.Q4_1, QuantType.IQ4_NL, QuantType.IQ4_XS,
    QuantType.Q4_K, QuantType.Q5_0, QuantType.Q5_1, QuantType.Q5_K, QuantType.Q6_K, QuantType.Q8_0,
    QuantType.BF16, QuantType.F16,
]


def sample_tensor(rows: int = 512, n: int = 4096, seed: int = 0) -> np.ndarray:
    """A synthetic weight-like matrix: heavy-tailed values with per-row and per-column scales."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(5, (rows, n)) * 0.02
    w *= rng.lognormal(0.0, 0.3, (rows, 1)) * rng.lognormal(0.0, 0.2, (1, n))
    return w.astype(np.float32)


def error_stats(x: np.ndarray, y: np.ndarray) -> dict:
    d = (y.astype(np.float64) - x)
    se = float(np.sum(d * d))
    sx = float(np.sum(x.astype(np.float64) ** 2))
    rel = (se / sx) ** 0.5 if sx else 0.0
    return {
        "rel_rmse": rel,
        "snr_db": float("inf") if se == 0 else 10 * np.log10(sx / se),
        "max_abs": float(np.abs(d).max(initial=0.0)),
    }


def run(types=WEIGHT_TYPES, out=print) -> list:
    x = sample_tensor()
    out(f"kquant demo: a {x.shape[0]} x {x.shape[1]} synthetic weight matrix "
        f"({x.nbytes / 2**20:.1f} MiB as F32), each format quantized and dequantized\n")
    out(f"{'type':8} {'bits/w':>7} {'size MiB':>9} {'rel RMSE':>9} {'SNR dB':>7} {'max |err|':>10} {'ms':>7}")
    results = []
    for t in types:
        t0 = time.perf_counter()
        q = quantize(x, t)
        y = dequantize(q, t)
        ms = (time.perf_counter() - t0) * 1e3
        s = error_stats(x, y)
        results.append({"type": t.name, "bits_per_weight": t.bits_per_weight, "bytes": q.nbytes, **s})
        out(f"{t.name:8} {t.bits_per_weight:7.3f} {q.nbytes / 2**20:9.2f} {s['rel_rmse']:9.5f} "
            f"{s['snr_db']:7.2f} {s['max_abs']:10.3g} {ms:7.1f}")
    return results
