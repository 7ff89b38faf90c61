"""Threads: many Python threads calling at once, results that do not depend on the
kernel thread count, and the GIL released while kernels run."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import kquant
from kquant import QuantType

TYPES = [t for t in QuantType if t.is_implemented]
# ggml gives these activation formats no dot product of their own
ACTIVATION_ONLY = {QuantType.Q8_1, QuantType.Q8_K}
THREAD_COUNTS = [1, 2, 3, 7]


@pytest.fixture(autouse=True)
def restore_threads():
    old = kquant.get_num_threads()
    yield
    kquant.set_num_threads(old)


def rng_inputs(t: QuantType, nrows: int, n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((nrows, n)).astype(np.float32)
    x[:, :: 7] *= 20  # outliers make the searches take different paths per block
    w = rng.lognormal(0.0, 1.5, n).astype(np.float32)
    y = rng.standard_normal((nrows, n)).astype(np.float32)
    xa = rng.standard_normal((m, n)).astype(np.float32)
    return x, w, y, xa


def operations(t: QuantType, nrows: int, n: int, m: int = 3, seed: int = 0):
    """(name, zero-argument call) for every operation on `t`, over fixed inputs."""
    x, w, y, xa = rng_inputs(t, nrows, n, m, seed)
    q = kquant.quantize(x, t, imatrix=w if t.requires_imatrix else None)
    ops = [
        ("quantize", lambda: kquant.quantize(x, t)),
        ("quantize+imatrix", lambda: kquant.quantize(x, t, imatrix=w)),
        ("dequantize", lambda: kquant.dequantize(q, t)),
    ]
    if t.requires_imatrix:  # ggml has no quantizer without one (kquant raises)
        ops = ops[1:]
    if t not in ACTIVATION_ONLY:
        yq = kquant.quantize(y, kquant.vec_dot_type(t))
        ops += [("vec_dot", lambda: kquant.vec_dot(q, yq, t)), ("matmul", lambda: kquant.matmul(q, xa, t))]
    return ops


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_many_python_threads_at_once_match_serial_calls():
    # 48 rows x 2048 values spans several pool tasks, so calls share the pool for real
    jobs = [(f"{t.name} {name}", call) for t in TYPES for name, call in operations(t, 48, 2048, seed=t.value)]
    kquant.set_num_threads(1)
    serial = {label: call() for label, call in jobs}

    n_threads, calls_each = 8, 20
    start = threading.Barrier(n_threads + 1)
    done = threading.Event()
    failures: list[str] = []
    settings_seen: set[int] = set()

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(calls_each):
                label, call = jobs[(i * 7 + j * 11) % len(jobs)]
                if not same(call(), serial[label]):
                    failures.append(f"thread {i} call {j}: {label} differs from the serial result")
        except BaseException as e:  # noqa: BLE001 - any exception in a worker is a failure to report
            failures.append(f"thread {i}: {type(e).__name__}: {e}")

    def knob() -> None:
        start.wait()
        k = 0
        while not done.is_set():
            n = THREAD_COUNTS[k % len(THREAD_COUNTS)]
            kquant.set_num_threads(n)
            settings_seen.add(kquant.get_num_threads())
            k += 1
            time.sleep(0.002)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    knobber = threading.Thread(target=knob)
    for th in workers + [knobber]:
        th.start()
    for th in workers:
        th.join(timeout=300)
    done.set()
    knobber.join(timeout=60)
    assert not any(th.is_alive() for th in workers + [knobber]), "a thread hung"
    assert not failures, failures[:10]
    assert settings_seen <= set(THREAD_COUNTS) and len(settings_seen) > 1


def test_one_call_from_many_threads_on_the_same_arrays():
    # the same input objects, read by every thread at once (read-only borrows must not clash)
    x = np.random.default_rng(3).standard_normal((64, 4096)).astype(np.float32)
    x.flags.writeable = False
    kquant.set_num_threads(2)
    want = kquant.quantize(x, "q4_k")
    results: list[object] = [None] * 8

    def run(i: int) -> None:
        try:
            results[i] = kquant.quantize(x, "q4_k")
        except BaseException as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert all(isinstance(r, np.ndarray) and same(r, want) for r in results), results


@pytest.mark.parametrize("shape", ["many rows", "one huge row"])
@pytest.mark.parametrize("t", TYPES, ids=str)
def test_results_do_not_depend_on_the_thread_count(t, shape):
    nrows, n = (301, 512) if shape == "many rows" else (1, 2**17)
    ops = operations(t, nrows, n, m=2, seed=100 + t.value)
    results = {}
    for count in THREAD_COUNTS:
        kquant.set_num_threads(count)
        assert kquant.get_num_threads() == count
        results[count] = [call() for _, call in ops]
    for count in THREAD_COUNTS[1:]:
        for (name, _), a, b in zip(ops, results[1], results[count]):
            assert same(a, b), f"{t.name} {name}: {count} threads differ from 1"


def test_matmul_with_many_weight_rows_does_not_depend_on_the_thread_count():
    # the pool splits weight rows here, not activation rows
    rng = np.random.default_rng(5)
    w = kquant.quantize(rng.standard_normal((1031, 512)).astype(np.float32), "q4_k")
    x = rng.standard_normal((5, 512)).astype(np.float32)
    outs = []
    for count in THREAD_COUNTS:
        kquant.set_num_threads(count)
        outs.append(kquant.matmul(w, x, "q4_k"))
    assert all(same(o, outs[0]) for o in outs[1:])


class Counter(threading.Thread):
    """Counts in pure Python: it can only advance while this thread holds the GIL."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.count = 0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            self.count += 1


def _quantize_job(scale: int):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64 * scale, 4096)).astype(np.float32)
    w = rng.lognormal(0.0, 1.0, 4096).astype(np.float32)
    return lambda: kquant.quantize(x, "iq4_nl", imatrix=w)


def _matmul_job(scale: int):
    rng = np.random.default_rng(10)
    wq = kquant.quantize(rng.standard_normal((1024, 4096)).astype(np.float32), "f16")
    x = rng.standard_normal((4 * scale, 4096)).astype(np.float32)
    return lambda: kquant.matmul(wq, x, "f16")


@pytest.mark.parametrize("make_job", [_quantize_job, _matmul_job], ids=["quantize", "matmul"])
def test_the_gil_is_released_while_kernels_run(make_job):
    """While a kernel runs, a Python thread keeps counting at a good share of its free rate.

    Were the GIL held, the counter would stall for the whole call (at most a few 5 ms
    switch intervals of progress). Comparing against the counter's own measured rate,
    over a call of at least 0.3 s, keeps this independent of machine speed and load.
    """
    kquant.set_num_threads(1)  # leaves a core for the counter on a 2-core machine
    scale, job = 1, make_job(1)
    while True:  # grow the job until one call takes long enough to measure
        t0 = time.perf_counter()
        job()
        took = time.perf_counter() - t0
        if took >= 0.3 or scale >= 64:
            break
        scale *= max(2, int(0.4 / max(took, 1e-3)) + 1)
        scale = min(scale, 64)
        job = make_job(scale)

    counter = Counter()
    counter.start()
    try:
        best = 0.0
        for _ in range(3):
            c0 = counter.count
            time.sleep(0.2)  # sleeping releases the GIL: the counter's free rate
            rate = (counter.count - c0) / 0.2
            c0, t0 = counter.count, time.perf_counter()
            job()
            c1, took = counter.count, time.perf_counter() - t0
            best = max(best, (c1 - c0) / (rate * took))
            if best > 0.15:
                break
    finally:
        counter.stop = True
        counter.join(timeout=10)
    assert took > 0.1, f"the job took only {took:.3f} s: too short to tell"
    assert best > 0.15, f"the counter ran at {best:.1%} of its free rate during the kernel: the GIL was held"
