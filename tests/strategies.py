"""Hypothesis strategies for rows that stress quantizers: heavy tails, sparse rows,
exact .5 ties, constants, tiny and huge scales. Values come from a drawn seed so that
large rows stay cheap to generate and shrink well."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

KINDS = ["normal", "student_t", "sparse", "ties", "constant", "ramp", "uniform_pos", "mixed_zero_blocks", "outlier"]


def make_rows(kind: str, seed: int, nrows: int, n: int, log2_scale: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.float32(2.0) ** log2_scale
    shape = (nrows, n)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "student_t":
        x = rng.standard_t(2.5, shape)
    elif kind == "sparse":
        x = np.where(rng.random(shape) < 0.05, rng.standard_normal(shape) * 10, 0.0)
    elif kind == "ties":
        # multiples of 1/2 and 1/4: quotients by power-of-two scales land on exact .5 ties
        x = rng.integers(-16, 17, shape) / rng.choice([2.0, 4.0])
    elif kind == "constant":
        x = np.full(shape, rng.choice([-3.0, -0.5, 0.0, 0.5, 1.0, 7.0]))
    elif kind == "ramp":
        x = np.tile(np.linspace(-1.0, 1.0, n), (nrows, 1)) * rng.choice([1.0, -1.0])
    elif kind == "uniform_pos":
        x = rng.random(shape) + 0.5
    elif kind == "mixed_zero_blocks":
        x = rng.standard_normal(shape)
        x[:, : n // 2] = 0.0
    else:  # one huge outlier per row
        x = rng.standard_normal(shape) * 0.01
        x[np.arange(nrows), rng.integers(0, n, nrows)] = rng.choice([-50.0, 50.0])
    return (x * scale).astype(np.float32)


@st.composite
def rows(draw, block: int, max_blocks: int = 8, max_rows: int = 3, scales=(-140, -126, -40, -12, -4, 0, 0, 0, 3, 12, 40, 120)):
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    nrows = draw(st.integers(1, max_rows))
    n = block * draw(st.integers(1, max_blocks))
    log2_scale = draw(st.sampled_from(scales))
    return make_rows(kind, seed, nrows, n, log2_scale)


@st.composite
def imatrices(draw, n: int):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["lognormal", "sparse", "ones", "some_zero"]))
    if kind == "lognormal":
        w = rng.lognormal(0.0, 1.5, n)
    elif kind == "sparse":
        w = np.where(rng.random(n) < 0.2, rng.random(n) * 100, 1e-3)
    elif kind == "ones":
        w = np.ones(n)
    else:
        w = rng.random(n)
        w[rng.random(n) < 0.3] = 0.0
    return w.astype(np.float32)
