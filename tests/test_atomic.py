"""No half-written models: `kquant quantize` killed at any moment, or out of space,
leaves no file at OUT and no stray temporary files. Plus concurrent readers."""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import kquant

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import make_llama  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "llama.gguf"
    make_llama.main([str(path), "--layers=4", "--width=512", "--ffn=1024", "--heads=8", "--kv-heads=2", "--vocab=2048"])
    return path


def quantize_cmd(src: Path, out: Path, ftype: str = "Q4_K_M"):
    return [sys.executable, "-m", "kquant", "quantize", str(src), str(out), ftype, "1"]


def test_sigkill_at_random_points_leaves_nothing(model, tmp_path):
    # how long a full run takes, to spread the kills over it
    full = tmp_path / "full"
    full.mkdir()
    t0 = time.perf_counter()
    subprocess.run(quantize_cmd(model, full / "out.gguf"), check=True, capture_output=True)
    duration = time.perf_counter() - t0
    rng = random.Random(1234)
    killed = 0
    for i in range(12):
        d = tmp_path / f"run{i}"
        d.mkdir()
        p = subprocess.Popen(quantize_cmd(model, d / "out.gguf"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, duration * 0.95))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.wait()
        left = sorted(x.name for x in d.iterdir())
        # nothing at all, or (killed after the rename, or not killed) the whole file
        assert left in ([], ["out.gguf"]), f"kill {i}: left {left}"
        if left:
            assert (d / "out.gguf").read_bytes() == (full / "out.gguf").read_bytes(), f"kill {i}: partial file"
        else:
            assert p.returncode == -signal.SIGKILL
    assert killed >= 6


def test_out_of_space_is_reported_and_leaves_nothing(model, tmp_path):
    out = tmp_path / "out.gguf"
    limit = model.stat().st_size // 20  # far less than the output needs

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(quantize_cmd(model, out, "Q8_0"), capture_output=True, text=True, preexec_fn=small_files)
    assert r.returncode == 2
    assert "File too large" in r.stderr or "No space" in r.stderr, r.stderr
    assert "out.gguf" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_run(model, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    r = subprocess.run(quantize_cmd(model, out, "Q4_K_M") + ["--tensor-type", "attn_q=q9_k"], capture_output=True)
    assert r.returncode == 2
    assert out.read_bytes() == b"keep me" and sorted(x.name for x in tmp_path.iterdir()) == ["out.gguf"]


def test_concurrent_readers_agree_with_serial(model):
    with kquant.GGUFReader(model) as r:
        names = [t.name for t in r.tensors]
        serial = {n: r.dequantize(n) for n in names}
    errors = []

    def work(seed):
        rng = random.Random(seed)
        try:
            with kquant.GGUFReader(model) as r:
                for n in rng.sample(names, len(names)):
                    assert np.array_equal(r.dequantize(n), serial[n])
                    q = kquant.quantize(serial[n].reshape(-1, serial[n].shape[-1]), "q8_0")
                    assert np.array_equal(q, kquant.quantize(serial[n].reshape(-1, serial[n].shape[-1]), "q8_0"))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
