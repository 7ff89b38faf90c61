"""Scaling out: `kquant variants`, executors (local worker processes and a Dask cluster on
loopback) and split GGUF sets. Every output is compared byte for byte with the plain
single-process `quantize_model`."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.cli import main as cli_main
from kquant.executors import TensorTask, fingerprint, quantize_task
from kquant.model import quantize_model
from kquant.split import assign_parts, part_paths, split_name
from kquant.tradeoffs import measure
from kquant.variants import quantize_variants, variant_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import make_llama  # noqa: E402

from .test_model import write_dat_imatrix  # noqa: E402

SMALL = ["--layers=2", "--width=256", "--ffn=512", "--heads=4", "--kv-heads=2", "--vocab=512"]
TYPES = ["Q4_K_M", "Q4_K_S", "Q8_0"]
SPAWN = multiprocessing.get_context("spawn")  # forking after kquant's thread pool started can hang


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "llama-f32.gguf"
    assert make_llama.main([str(path), *SMALL]) == 0
    return path


@pytest.fixture(scope="module")
def imatrix(model, tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    with kquant.GGUFReader(model) as r:
        entries = {t.name: rng.lognormal(0, 1, t.shape[-1]) for t in r.tensors if len(t.shape) == 2}
    path = tmp_path_factory.mktemp("imat") / "imatrix.dat"
    write_dat_imatrix(path, entries)
    return path


@pytest.fixture(scope="module")
def reference(model, imatrix, tmp_path_factory) -> dict:
    """The plain run's bytes, per (file type, with imatrix)."""
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for t in TYPES:
        quantize_model(model, d / f"{t}.gguf", t)
        quantize_model(model, d / f"{t}-imat.gguf", t, imatrix=imatrix)
        out[t, False] = (d / f"{t}.gguf").read_bytes()
        out[t, True] = (d / f"{t}-imat.gguf").read_bytes()
    return out


def assert_variants(outdir: Path, model: Path, reference: dict, imat: bool = False, types=TYPES) -> None:
    for t in types:
        got = Path(variant_path(model, outdir, t))
        assert got.name == f"llama-f32-{t}.gguf"
        assert got.read_bytes() == reference[t, imat], t


def only(path: Path) -> list:
    return sorted(p.name for p in path.iterdir())


# --------------------------------------------------------------------------
# variants in one process
# --------------------------------------------------------------------------


def test_variants_are_byte_identical_to_quantize(model, imatrix, reference, tmp_path):
    reports = quantize_variants(model, tmp_path / "plain", TYPES)
    assert [r.ftype.name for r in reports] == TYPES
    assert_variants(tmp_path / "plain", model, reference)
    quantize_variants(model, tmp_path / "imat", TYPES, imatrix=imatrix)
    assert_variants(tmp_path / "imat", model, reference, imat=True)


def test_variants_read_and_convert_each_tensor_once(model, tmp_path, monkeypatch):
    calls = []
    real = kquant.GGUFReader.dequantize

    def counting(self, name):
        calls.append(name)
        return real(self, name)

    monkeypatch.setattr(kquant.GGUFReader, "dequantize", counting)
    quantize_variants(model, tmp_path, TYPES)
    assert len(calls) == len(set(calls)) > 10
    calls.clear()
    for t in TYPES:
        quantize_model(model, tmp_path / f"one-{t}.gguf", t)
    assert len(calls) > 2 * len(set(calls))  # the separate runs convert again per type


def test_variants_errors(model, tmp_path):
    with pytest.raises(ValueError, match="given twice"):
        quantize_variants(model, tmp_path, ["Q4_K_M", "q4_k_m"])
    with pytest.raises(ValueError, match="one recipe"):
        quantize_variants(model, tmp_path, ["Q4_K_M"], target_bpw=4.5)
    with pytest.raises(ValueError):
        quantize_variants(model, tmp_path, ["Q9_K"])
    reports = quantize_variants(model, None, TYPES, dry_run=True)
    assert [r.dry_run for r in reports] == [True] * 3 and only(tmp_path) == []


def test_variants_failure_leaves_no_file(tmp_path):
    """NaN weights in a late tensor: every output is abandoned, nothing appears."""
    src = tmp_path / "in" / "nan.gguf"
    src.parent.mkdir()
    with kquant.GGUFWriter(src) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("llama.block_count", 1)
        names = ["blk.0.attn_q.weight", "blk.0.attn_output.weight", "blk.0.ffn_up.weight"]
        for name in names:
            w.add_tensor_info(name, (8, 256), "F32")
        for name in names:
            x = np.ones((8, 256), np.float32)
            if name == names[-1]:
                x[3, 7] = np.nan
            w.write_tensor(name, x)
    with pytest.raises(ValueError, match="NaN|nan"):
        quantize_variants(src, tmp_path / "out", ["Q4_0", "Q8_0"])
    assert only(tmp_path / "out") == []
    with pytest.raises(ValueError, match="NaN|nan"):
        quantize_model(src, tmp_path / "out" / "x.gguf", "Q4_0", executor="local:2")
    assert only(tmp_path / "out") == []


PEAK_ANON = """
import sys, threading, time
import kquant
peak = [0]
def anon():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('RssAnon:'))
base = anon()
def watch():
    while True:
        peak[0] = max(peak[0], anon()); time.sleep(0.002)
threading.Thread(target=watch, daemon=True).start()
kquant.quantize_variants(sys.argv[1], sys.argv[2], ['Q4_K_M', 'Q5_K_M', 'Q6_K', 'Q8_0'], nthreads=1)
time.sleep(0.01)
print(peak[0] - base)
"""


def test_variants_memory_is_not_per_type(tmp_path):
    """Peak anonymous memory stays a few tensors' worth with four types, not four copies."""
    big = tmp_path / "bigger.gguf"
    make_llama.main([str(big), "--layers=6", "--width=512", "--ffn=1536", "--heads=8", "--kv-heads=2", "--vocab=4096"])
    r = subprocess.run([sys.executable, "-c", PEAK_ANON, str(big), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grown = int(r.stdout.split()[-1])
    largest = 4096 * 512 * 4  # token_embd / output as float32
    assert grown < 4 * largest < big.stat().st_size / 2, (grown, big.stat().st_size)
    assert len(only(tmp_path / "out")) == 4


# --------------------------------------------------------------------------
# local worker processes
# --------------------------------------------------------------------------


def test_local_executor_is_byte_identical(model, imatrix, reference, tmp_path):
    out = tmp_path / "q.gguf"
    quantize_model(model, out, "Q4_K_M", imatrix=imatrix, executor="local:2")
    assert out.read_bytes() == reference["Q4_K_M", True]
    with cf.ProcessPoolExecutor(2, mp_context=SPAWN) as ex:  # any concurrent.futures.Executor
        quantize_variants(model, tmp_path / "v", TYPES, executor=ex)
    assert_variants(tmp_path / "v", model, reference)


def test_tensor_bytes_sent_when_the_path_is_not_shared(model, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("KQUANT_EXECUTOR_INPUT", "bytes")
    quantize_variants(model, tmp_path, TYPES, executor="local:2")
    assert_variants(tmp_path, model, reference)


def test_worker_asks_for_bytes_it_cannot_read(model, tmp_path):
    with kquant.GGUFReader(model) as r:
        t = r.tensor("blk.0.attn_q.weight")
        raw = np.array(r.raw(t.name)).reshape(-1)
    good = TensorTask(t.name, int(t.qtype), t.shape, t.offset, t.nbytes, str(model), fingerprint(str(model)),
                      [(int(QuantType.Q4_K), None)])
    want = kquant.quantize(raw.view(np.float32).reshape(t.shape), "q4_k")
    assert np.array_equal(quantize_task(good)[0], want)
    for path, fp in [(str(tmp_path / "absent.gguf"), good.fingerprint), (str(model), (t.nbytes, "0" * 32))]:
        task = TensorTask(**{**good.__dict__, "path": path, "fingerprint": fp})
        assert type(quantize_task(task)).__name__ == "NeedBytes"
        task.data = raw
        assert np.array_equal(quantize_task(task)[0], want)


class KillingExecutor(cf.Executor):
    """Forwards to `inner`; before the `at`-th submission calls `kill()` once."""

    def __init__(self, inner, at, kill):
        self.inner, self.at, self.kill, self.n = inner, at, kill, 0
        self.killed = None

    def submit(self, fn, /, *args, **kwargs):
        self.n += 1
        if self.n == self.at:
            self.killed = self.kill()
        return self.inner.submit(fn, *args, **kwargs)


def test_dead_local_worker_is_a_clear_error(model, tmp_path):
    def kill():
        pid = next(iter(ex._processes))
        os.kill(pid, signal.SIGKILL)
        return pid

    with cf.ProcessPoolExecutor(2, mp_context=SPAWN) as ex:
        ex.submit(int).result()  # start the workers
        with pytest.raises(OSError, match="worker process died"):
            quantize_variants(model, tmp_path / "out", TYPES, executor=KillingExecutor(ex, 3, kill))
    assert only(tmp_path / "out") == []


class _Job:
    def __init__(self, cost):
        self.cost = cost


def _echo(job):
    time.sleep(0.002)
    return job.cost


def test_in_flight_work_is_bounded(monkeypatch):
    from kquant.executors import ordered_results

    class Counting(cf.ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn, *args, **kwargs):
            Counting.submitted += 1
            return super().submit(fn, *args, **kwargs)

    def run(costs, **kw):
        Counting.submitted = 0
        most, got = 0, []
        with Counting(4) as ex:
            for r in ordered_results(ex, _echo, [_Job(c) for c in costs], lambda j: j, workers=4, **kw):
                most = max(most, Counting.submitted - len(got))
                got.append(r)
        assert got == costs  # in order
        return most

    assert run(list(range(1, 40))) == 8  # twice the workers
    assert run([100] * 10, max_bytes=250) == 2  # memory cap
    assert run([1000] * 5, max_bytes=250) == 1  # always one
    monkeypatch.setenv("KQUANT_EXECUTOR_MEMORY", "300B")
    assert run([100] * 10) == 3
    monkeypatch.setenv("KQUANT_EXECUTOR_MEMORY", "lots")
    with pytest.raises(ValueError, match="KQUANT_EXECUTOR_MEMORY"):
        run([1])


def test_executor_spec_errors(model, tmp_path):
    with pytest.raises(ValueError, match="local:N"):
        quantize_model(model, tmp_path / "x.gguf", "Q4_0", executor="nonsense")
    with pytest.raises(ValueError, match="at least one"):
        quantize_model(model, tmp_path / "x.gguf", "Q4_0", executor="local:0")
    with pytest.raises(TypeError):
        quantize_model(model, tmp_path / "x.gguf", "Q4_0", executor=42)
    assert only(tmp_path) == []


def test_budget_with_executor(model, tmp_path):
    here, there = tmp_path / "here.gguf", tmp_path / "there.gguf"
    r1 = quantize_model(model, here, target_bpw=5.0)
    r2 = quantize_model(model, there, target_bpw=5.0, executor="local:2")
    assert r1.budget == r2.budget and here.read_bytes() == there.read_bytes()


@pytest.mark.parametrize("access", ["auto", "bytes"])
def test_measure_with_local_executor(model, access, monkeypatch):
    monkeypatch.setenv("KQUANT_EXECUTOR_INPUT", access)
    here = measure(model, ["q4_k", "q8_0", "iq4_xs"], exact=True)
    there = measure(model, ["q4_k", "q8_0", "iq4_xs"], exact=True, executor="local:2")
    assert [m.info for m in here.tensors] == [m.info for m in there.tensors]
    for a, b in zip(here.tensors, there.tensors):
        assert {t: (s.se, s.max_abs) for t, s in a.stats.items()} == {t: (s.se, s.max_abs) for t, s in b.stats.items()}
        assert a.sx == b.sx
    sampled = measure(model, ["q4_k"], sample_rows=16, executor="local:2")  # sampled rows too
    local = measure(model, ["q4_k"], sample_rows=16)
    assert [m.stats[QuantType.Q4_K].se for m in sampled.tensors] == [m.stats[QuantType.Q4_K].se for m in local.tensors]
    assert all(m.rows_measured <= 16 for m in sampled.tensors)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def test_cli_variants(model, reference, tmp_path, capsys):
    assert cli_main(["variants", str(model), str(tmp_path), *TYPES, "--executor", "local:2", "--nthreads", "1"]) == 0
    assert_variants(tmp_path, model, reference)
    out = capsys.readouterr().out
    assert all(f"== {t}" in out for t in TYPES)
    assert cli_main(["variants", str(model), str(tmp_path / "dry"), "Q4_0", "--dry-run"]) == 0
    assert "blk.0.attn_q.weight" in capsys.readouterr().out and not (tmp_path / "dry").exists()
    with pytest.raises(SystemExit):  # budgets choose one recipe: not a variants option
        cli_main(["variants", str(model), str(tmp_path), "Q4_0", "--target-bpw", "4"])


def test_cli_tradeoffs_with_executor(model, tmp_path, capsys):
    import json

    args = ["tradeoffs", str(model), "--types", "q4_k,q8_0", "--exact", "--quiet"]
    assert cli_main([*args, "--json", str(tmp_path / "here.json")]) == 0
    assert cli_main([*args, "--json", str(tmp_path / "there.json"), "--executor", "local:2"]) == 0
    here, there = (json.loads((tmp_path / f).read_text()) for f in ("here.json", "there.json"))
    assert here["tensors"] == there["tensors"] and len(here["tensors"]) > 10


# --------------------------------------------------------------------------
# split sets
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_set(model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("split")
    quantize_model(model, d / "llama-f32.gguf", "COPY", split_max_size=300_000)
    parts = only(d)
    assert len(parts) > 3 and parts[0] == "llama-f32-00001-of-%05d.gguf" % len(parts)
    return d / parts[0]


def test_split_set_reads_as_the_whole_model(model, split_set, tmp_path):
    single = tmp_path / "copy.gguf"  # the same output, not split
    quantize_model(model, single, "COPY")
    with kquant.GGUFReader(single) as one, kquant.GGUFReader(split_set) as r:
        assert [t.name for t in r.tensors] == [t.name for t in one.tensors]
        assert len(r.paths) == len(only(split_set.parent)) and {t.part for t in r.tensors} == set(range(len(r.paths)))
        for t in one.tensors:
            assert np.array_equal(r.raw(t.name), one.raw(t.name))
            assert np.array_equal(r.dequantize(t.name), one.dequantize(t.name))
        assert r.metadata["split.no"] == 0 and r.metadata["split.count"] == len(r.paths)
        assert r.metadata_type("split.count") == "u16" and r.metadata_type("split.tensors.count") == "i32"
        assert r.metadata["split.tensors.count"] == len(one.tensors)
        meta = {k: v for k, v in r.metadata.items() if not k.startswith("split.")}
        assert meta == one.metadata
    # the parts are valid GGUF files for gguf-py too; later parts carry only the split keys
    gguf = pytest.importorskip("gguf")
    second = gguf.GGUFReader(str(split_set).replace("-00001-", "-00002-"))
    keys = [k for k in second.fields if not k.startswith("GGUF.")]
    assert keys == ["split.no", "split.count", "split.tensors.count"]
    assert second.fields["split.no"].types == [gguf.GGUFValueType.UINT16]


def test_split_set_quantizes_like_the_single_file(model, split_set, reference, tmp_path):
    out = tmp_path / "q.gguf"
    quantize_model(split_set, out, "Q8_0")
    assert out.read_bytes() == reference["Q8_0", False]
    quantize_variants(split_set, tmp_path / "v", TYPES)
    assert only(tmp_path / "v") == [f"llama-f32-{t}.gguf" for t in sorted(TYPES)]
    assert_variants(tmp_path / "v", model, reference)
    a = measure(model, ["q4_k"], exact=True)
    b = measure(split_set, ["q4_k"], exact=True)
    se = lambda m: {t.name: t.stats[QuantType.Q4_K].se for t in m.tensors}  # noqa: E731
    assert se(a) == se(b) and len(se(a)) > 10


def test_keep_split_writes_parts_like_the_input(model, split_set, tmp_path):
    n = len(only(split_set.parent))
    quantize_model(split_set, tmp_path / "copy.gguf", "COPY", keep_split=True)
    assert only(tmp_path) == [split_name("copy", k, n) for k in range(n)]
    for k in range(n):  # COPY of a split set with --keep-split gives the set back
        src = split_set.parent / split_name("llama-f32", k, n)
        assert (tmp_path / split_name("copy", k, n)).read_bytes() == src.read_bytes()
    (tmp_path / "q").mkdir()
    quantize_model(split_set, tmp_path / "q" / "q4.gguf", "Q4_K_M", keep_split=True)
    with kquant.GGUFReader(tmp_path / "q" / split_name("q4", 0, n)) as r, kquant.GGUFReader(split_set) as s:
        assert [(t.name, t.part) for t in r.tensors] == [(t.name, t.part) for t in s.tensors]
    with pytest.raises(ValueError, match="exclude each other"):
        quantize_model(split_set, tmp_path / "z.gguf", "Q4_0", keep_split=True, split_max_size="1MB")


def test_split_max_size_and_executor(model, reference, tmp_path):
    quantize_variants(model, tmp_path, ["Q4_K_M", "Q8_0"], split_max_size="100KB", executor="local:2")
    names = only(tmp_path)
    for t in ["Q4_K_M", "Q8_0"]:
        parts = [n for n in names if n.startswith(f"llama-f32-{t}-")]
        assert len(parts) > 1 and parts[0].endswith(f"-00001-of-{len(parts):05d}.gguf")
        with kquant.GGUFReader(tmp_path / parts[0]) as r:
            assert len(r.paths) == len(parts)
            for p in r.paths:
                data = sum(-(-t.nbytes // 32) * 32 for t in r.tensors if r.paths[t.part] == p)
                assert data <= 100_000 or sum(1 for t in r.tensors if r.paths[t.part] == p) == 1
            joined = tmp_path / "joined" / f"{t}.gguf"
            joined.parent.mkdir(exist_ok=True)
        quantize_model(tmp_path / parts[0], joined, "COPY")
        assert joined.read_bytes() == reference[t, False]


def test_split_errors(split_set, tmp_path):
    d = split_set.parent
    parts = only(d)
    n = len(parts)
    second = d / parts[1]
    with pytest.raises(ValueError, match=r"part 2 of .*open the first part.*00001"):
        kquant.GGUFReader(second)
    with kquant.GGUFReader(second, join_split=False) as r:
        assert len(r.paths) == 1 and 0 < len(r.tensors) < r.metadata["split.tensors.count"]
    # a missing part
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in parts[:-1]:
        os.link(d / p, broken / p)
    with pytest.raises(ValueError, match=f"part {n} of {n} .* missing"):
        kquant.GGUFReader(broken / parts[0])
    with pytest.raises(ValueError, match="missing"):
        quantize_model(broken / parts[0], tmp_path / "o.gguf", "Q4_0")
    # a part of another set in its place
    other = tmp_path / "other"
    other.mkdir()
    quantize_model(split_set, other / "x.gguf", "COPY", split_max_size=2_000_000)
    m = len(only(other))
    assert 1 < m < n
    os.link(other / split_name("x", m - 1, m), broken / parts[-1])
    with pytest.raises(ValueError, match="another set"):
        kquant.GGUFReader(broken / parts[0])
    # a first part renamed so the others cannot be found
    renamed = tmp_path / "renamed.gguf"
    os.link(split_set, renamed)
    with pytest.raises(ValueError, match="cannot be found"):
        kquant.GGUFReader(renamed)
    assert not (tmp_path / "o.gguf").exists()


def test_split_layout_helpers():
    assert assign_parts([10, 10, 10], max_size=64, alignment=32) == [0, 0, 1]
    assert assign_parts([100, 10], max_size=64, alignment=32) == [0, 1]  # a large tensor gets a part
    assert assign_parts([1, 2], input_parts=[0, 1]) == [0, 1]
    assert part_paths("out.gguf", 1) == ["out.gguf"]
    assert part_paths("d/out.gguf", 2) == ["d/out-00001-of-00002.gguf", "d/out-00002-of-00002.gguf"]
    assert part_paths("d/out-00001-of-00007.gguf", 2)[1] == "d/out-00002-of-00002.gguf"


# --------------------------------------------------------------------------
# a Dask cluster of worker processes on loopback
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    import logging

    old = os.environ.get("KQUANT_NUM_THREADS")
    os.environ["KQUANT_NUM_THREADS"] = "1"  # two single-threaded workers on a small machine
    try:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
    finally:
        if old is None:
            os.environ.pop("KQUANT_NUM_THREADS", None)
        else:
            os.environ["KQUANT_NUM_THREADS"] = old
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def test_dask_quantize_and_variants_are_byte_identical(dask_client, model, imatrix, reference, tmp_path):
    out = tmp_path / "q.gguf"
    quantize_model(model, out, "Q4_K_M", imatrix=imatrix, executor=dask_client)
    assert out.read_bytes() == reference["Q4_K_M", True]
    quantize_variants(model, tmp_path / "v", TYPES, executor=dask_client.get_executor())
    assert_variants(tmp_path / "v", model, reference)
    # the command line connects to the scheduler by address
    addr = dask_client.scheduler.address
    assert addr.startswith("tcp://127.0.0.1:")
    assert cli_main(["quantize", str(model), str(tmp_path / "cli.gguf"), "Q8_0", "--executor", addr]) == 0
    assert (tmp_path / "cli.gguf").read_bytes() == reference["Q8_0", False]


def test_dask_measure_matches_local(dask_client, model):
    here = measure(model, ["q4_k", "q6_k"], exact=True)
    there = measure(model, ["q4_k", "q6_k"], exact=True, executor=dask_client)
    for a, b in zip(here.tensors, there.tensors):
        assert a.info == b.info and a.sx == b.sx
        assert {t: s.se for t, s in a.stats.items()} == {t: s.se for t, s in b.stats.items()}
    rec = kquant.recommend(model, target_bpw=5.0, executor=dask_client)
    assert rec.choice.bpw <= 5.0


def test_dask_error_ends_the_run_without_output(dask_client, tmp_path):
    src = tmp_path / "nan.gguf"
    with kquant.GGUFWriter(src) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("llama.block_count", 1)
        w.add_tensor_info("blk.0.attn_q.weight", (4, 256), "F32")
        w.write_tensor("blk.0.attn_q.weight", np.full((4, 256), np.inf, np.float32))
    with pytest.raises(ValueError, match="blk.0.attn_q.weight"):
        quantize_variants(src, tmp_path / "out", ["Q4_0", "Q8_0"], executor=dask_client)
    assert only(tmp_path / "out") == []


@pytest.fixture(scope="module")
def slower_model(tmp_path_factory) -> Path:
    """Enough work per tensor (tens of ms) that a kill lands while tasks are running."""
    path = tmp_path_factory.mktemp("slow") / "llama-f32.gguf"
    make_llama.main([str(path), "--layers=4", "--width=512", "--ffn=1536", "--heads=8", "--kv-heads=2", "--vocab=2048"])
    return path


def test_dask_killed_worker_is_rescheduled(dask_client, slower_model, tmp_path):
    """SIGKILL a worker process mid-run: Dask reruns its tensors elsewhere, bytes unchanged."""
    types = ["Q2_K", "Q4_K_M", "IQ4_XS"]
    quantize_variants(slower_model, tmp_path / "ref", types)
    pids = dask_client.run(os.getpid)

    def kill():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            busy = {w: ts for w, ts in dask_client.processing().items() if ts and w in pids}
            if busy:
                worker = next(iter(busy))
                os.kill(pids[worker], signal.SIGKILL)
                return worker, list(busy[worker])
            time.sleep(0.005)
        return None

    ex = KillingExecutor(dask_client.get_executor(pure=False), 4, kill)
    quantize_variants(slower_model, tmp_path / "out", types, executor=ex)
    assert ex.killed is not None and ex.killed[1], "no worker had work when the kill came"
    for t in types:
        name = f"llama-f32-{t}.gguf"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), t
    # the worker really died (its nanny starts a new one)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and ex.killed[0] in dask_client.scheduler_info()["workers"]:
        time.sleep(0.1)
    assert ex.killed[0] not in dask_client.scheduler_info()["workers"]
