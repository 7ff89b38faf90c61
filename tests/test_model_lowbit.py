"""Whole-model quantization with the low-bit file types: every tensor's bytes against
libgguf (ggml's own quantizer) with the same importance entry, the importance-matrix
refusal and --missing-imatrix, and --prune-layers."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.model import quantize_model
from kquant.recipes import FileType, QuantizeError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import make_llama  # noqa: E402

Q = QuantType
# ffn 352: ffn_down rows are whole 32-blocks but not 64- or 256-blocks, so the row-length
# fallbacks run too; 3 layers with GQA 2
SMALL = dict(layers=3, width=256, ffn=352, heads=4, kv_heads=2, vocab=320)
FILE_TYPES = [
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
    "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "Q2_0", "MXFP4_MOE",
]
NEED_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ1_S", "IQ1_M"}


def write_dat_imatrix(path: Path, entries: dict, ncall: int = 3) -> None:
    """llama.cpp's legacy imatrix layout: sums over `ncall` calls."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, v in entries.items():
            b = name.encode()
            v = np.asarray(v, np.float32).ravel()
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, v.size))
            f.write((v * ncall).tobytes())
        f.write(struct.pack("<i", 10))
        ds = b"calibration.txt"
        f.write(struct.pack("<i", len(ds)) + ds)


def values(path: Path) -> dict:
    with kquant.GGUFReader(path) as r:
        return {t.name: r.dequantize(t.name) for t in r.tensors}


def imatrix_for(src: dict, path: Path, skip=()) -> Path:
    rng = np.random.default_rng(7)
    entries = {}
    for n, x in src.items():
        if x.ndim >= 2 and n not in skip:
            n_mat = x.shape[0] if x.ndim == 3 else 1
            entries[n] = rng.lognormal(0, 1, n_mat * x.shape[-1]).astype(np.float32)
    write_dat_imatrix(path, entries)
    return path


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("lowbit")
    path = d / "llama-f32.gguf"
    assert make_llama.main([str(path)] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]) == 0
    src = values(path)
    return path, src, imatrix_for(src, d / "imatrix.dat")


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """A tiny Llama-architecture MoE: 2 layers, 4 experts of rows 256 / 512, and a router."""
    d = tmp_path_factory.mktemp("moe")
    path = d / "moe-f32.gguf"
    rng = np.random.default_rng(3)
    width, ff, n_exp, layers = 256, 512, 4, 2
    tensors = [("token_embd.weight", (320, width)), ("output_norm.weight", (width,)), ("output.weight", (320, width))]
    for i in range(layers):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", (width,)), (b + "attn_q.weight", (width, width)),
            (b + "attn_k.weight", (128, width)), (b + "attn_v.weight", (128, width)),
            (b + "attn_output.weight", (width, width)), (b + "ffn_norm.weight", (width,)),
            (b + "ffn_gate_inp.weight", (n_exp, width)),
            (b + "ffn_gate_exps.weight", (n_exp, ff, width)), (b + "ffn_up_exps.weight", (n_exp, ff, width)),
            (b + "ffn_down_exps.weight", (n_exp, width, ff)),
        ]
    meta = {
        "general.architecture": ("llama", "str"), "general.file_type": (0, "u32"),
        "llama.block_count": (layers, "u32"), "llama.embedding_length": (width, "u32"),
        "llama.attention.head_count": (4, "u32"), "llama.attention.head_count_kv": (2, "u32"),
        "llama.expert_count": (n_exp, "u32"), "llama.expert_used_count": (2, "u32"),
    }
    with kquant.GGUFWriter(path) as w:
        for k, (v, t) in meta.items():
            w.add_metadata(k, v, type=t)
        for n, s in tensors:
            w.add_tensor_info(n, s, "F32")
        for n, s in tensors:
            w.write_tensor(n, (rng.standard_t(4, s) * 0.05).astype(np.float32))
    src = values(path)
    return path, src, imatrix_for(src, d / "imatrix.dat")


def reference(x: np.ndarray, qtype: QuantType, w) -> np.ndarray:
    """ggml's bytes for tensor x (NumPy order) with importance w (None, (n,) or (n_expert, n)):
    libgguf, expert by expert as llama-quantize does; kquant.quantize (golden-tested against
    ggml) for Q2_0, which libgguf does not build."""
    libgguf = pytest.importorskip("libgguf")
    mats = x if x.ndim == 3 else x.reshape(1, -1, x.shape[-1])
    out = []
    for e, m in enumerate(mats):
        we = None if w is None else (w[e] if w.ndim == 2 else w)
        if qtype == Q.Q2_0:
            out.append(np.asarray(kquant.quantize(m, qtype, imatrix=we)).reshape(m.shape[0], -1))
        else:
            out.append(libgguf.quantize_rows(np.ascontiguousarray(m), int(qtype), imatrix=we))
    return np.concatenate(out, axis=0)


def check_bytes(out: Path, src: dict, imat_path, expect_imatrix: bool) -> set:
    imat = kquant.load_imatrix(imat_path) if imat_path is not None else None
    kinds = set()
    with kquant.GGUFReader(out) as q:
        for t in q.tensors:
            if t.qtype == Q.F32:
                assert np.array_equal(q.dequantize(t.name), src[t.name]), t.name
                continue
            x = src[t.name]
            w = imat.for_tensor(t.name, x.shape) if imat is not None and not t.qtype.is_float else None
            if expect_imatrix and t.qtype in (Q.IQ2_XXS, Q.IQ2_XS, Q.IQ1_S, Q.IQ1_M, Q.IQ2_S, Q.IQ3_XXS):
                assert w is not None, t.name
            want = reference(x, t.qtype, w)
            got = np.asarray(q.raw(t.name)).reshape(want.shape)
            assert np.array_equal(got, want), (t.name, t.qtype.name)
            kinds.add(t.qtype)
    return kinds


@pytest.mark.parametrize("ftype", FILE_TYPES)
def test_bytes_equal_ggml(llama, tmp_path, ftype):
    path, src, imat = llama
    out = tmp_path / f"{ftype}.gguf"
    report = quantize_model(path, out, ftype, imatrix=imat, nthreads=2)
    with kquant.GGUFReader(out) as q:
        assert q.metadata["general.file_type"] == FileType[ftype].value
        assert q.metadata["quantize.imatrix.entries_count"] > 0
        planned = {t.name: t.target_type for t in report.tensors}
        assert {t.name: t.qtype for t in q.tensors} == planned
    kinds = check_bytes(out, src, imat, True)
    default = FileType[ftype].default_type
    assert default in kinds or ftype == "MXFP4_MOE", (ftype, kinds)
    assert report.bits_per_weight < 9


def test_q1_0_and_nvfp4_bytes_equal_ggml(tmp_path):
    # rows of 256 and 512: whole Q1_0 (128) and NVFP4 (64) blocks, which have no fallback
    path = tmp_path / "even.gguf"
    assert make_llama.main([str(path), "--layers=1", "--width=256", "--ffn=512", "--heads=4", "--kv-heads=2",
                            "--vocab=256"]) == 0
    src = values(path)
    for ftype in ("Q1_0", "NVFP4"):
        out = tmp_path / f"{ftype}.gguf"
        quantize_model(path, out, ftype)
        assert FileType[ftype].default_type in check_bytes(out, src, None, False)


def test_imatrix_that_does_not_fit_is_refused_before_writing(llama, tmp_path):
    path, src, _ = llama
    rng = np.random.default_rng(1)
    entries = {n: rng.lognormal(0, 1, x.shape[-1]).astype(np.float32) for n, x in src.items() if x.ndim == 2}
    entries["blk.0.ffn_up.weight"] = entries["blk.0.ffn_up.weight"][:128]
    entries["blk.2.attn_q.weight"] = np.ones(512, np.float32)
    bad = tmp_path / "bad.dat"
    write_dat_imatrix(bad, entries)
    with pytest.raises(ValueError, match="does not fit 2 tensor") as e:
        quantize_model(path, tmp_path / "never.gguf", "IQ2_XS", imatrix=bad)
    assert "blk.0.ffn_up.weight" in str(e.value) and "blk.2.attn_q.weight" in str(e.value)
    assert not (tmp_path / "never.gguf").exists()


def test_moe_bytes_equal_ggml(moe, tmp_path):
    path, src, imat = moe
    out = tmp_path / "mxfp4.gguf"
    quantize_model(path, out, "MXFP4_MOE", imatrix=imat)
    with kquant.GGUFReader(out) as q:
        types = {t.name: t.qtype for t in q.tensors}
    assert types["blk.1.ffn_down_exps.weight"] is Q.MXFP4 and types["blk.0.attn_q.weight"] is Q.Q8_0
    assert types["blk.0.ffn_gate_inp.weight"] is Q.F32 and types["output.weight"] is Q.Q8_0
    check_bytes(out, src, imat, True)
    # per-expert importance rows through a low-bit type
    out = tmp_path / "iq2xxs.gguf"
    quantize_model(path, out, "IQ2_XXS", imatrix=imat)
    assert Q.IQ2_XXS in check_bytes(out, src, imat, True)


def test_refusal_names_the_types_and_dry_run_works(llama, tmp_path):
    path, _, _ = llama
    for ftype in sorted(NEED_IMATRIX):
        with pytest.raises(QuantizeError, match="requires an importance matrix") as e:
            quantize_model(path, tmp_path / "never.gguf", ftype)
        assert "--imatrix" in str(e.value)
    assert not (tmp_path / "never.gguf").exists()
    report = quantize_model(path, None, "IQ2_XXS", dry_run=True)
    assert report.dry_run and any("will stop" in n and "IQ2_XXS" in n for n in report.notes)
    r = run_cli("quantize", path, tmp_path / "cli.gguf", "iq1_m")
    assert r.returncode == 2 and "IQ1_M" in r.stderr and "--imatrix" in r.stderr
    assert "--missing-imatrix" in r.stderr and not (tmp_path / "cli.gguf").exists()
    r = run_cli("quantize", path, tmp_path / "cli.gguf", "iq1_m", "--dry-run")
    assert r.returncode == 0 and "blk.0.attn_q.weight" in r.stdout and "IQ1_M" in r.stdout
    assert "will stop" in r.stderr


def test_missing_imatrix(llama, tmp_path):
    path, src, _ = llama
    lacking = {"blk.1.attn_q.weight", "blk.2.ffn_up.weight"}
    imat = imatrix_for(src, tmp_path / "partial.dat", skip=lacking)
    with pytest.raises(QuantizeError) as e:
        quantize_model(path, tmp_path / "never.gguf", "IQ2_XS", imatrix=imat)
    assert all(n in str(e.value) for n in lacking) and not (tmp_path / "never.gguf").exists()
    out = tmp_path / "mi.gguf"
    r = run_cli("quantize", path, out, "IQ2_XS", "--imatrix", imat, "--missing-imatrix", "q4_k")
    assert r.returncode == 0, r.stderr
    assert "missing_imatrix: 2 tensor(s)" in r.stderr
    with kquant.GGUFReader(out) as q:
        types = {t.name: t.qtype for t in q.tensors}
        for n in lacking:
            assert types[n] is Q.Q4_K
            x = src[n]
            assert np.array_equal(q.raw(n).reshape(-1), np.asarray(kquant.quantize(x, Q.Q4_K)).reshape(-1))
    assert types["blk.1.attn_k.weight"] is Q.IQ2_XS
    check_bytes(out, src, imat, False)
    r = run_cli("quantize", path, tmp_path / "dry.gguf", "IQ2_XS", "--imatrix", imat, "--missing-imatrix",
                "q4_k", "--dry-run")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("blk.1.attn_q.weight"))
    assert "Q4_K" in line and r.returncode == 0


def test_prune_layers(llama, tmp_path):
    path, src, imat = llama
    out = tmp_path / "pruned.gguf"
    r = run_cli("quantize", path, out, "IQ2_XS", "--imatrix", imat, "--prune-layers", "1")
    assert r.returncode == 0, r.stderr
    assert "block_count 3 -> 2" in r.stderr
    loaded = kquant.load_imatrix(imat)
    with kquant.GGUFReader(out) as q:
        assert q.metadata["llama.block_count"] == 2 and q.metadata_type("llama.block_count") == "u32"
        names = {t.name for t in q.tensors}
        assert "blk.2.attn_q.weight" not in names and "blk.1.attn_q.weight" in names
        assert len(names) == len(src) - 9
        # new layer 1 is old layer 2, quantized with old layer 2's importance entry
        for t in q.tensors:
            old = t.name.replace("blk.1.", "blk.2.")
            x = src[old]
            if t.qtype == Q.F32:
                assert np.array_equal(q.dequantize(t.name), x)
                continue
            w = loaded.for_tensor(old, x.shape)
            want = reference(x, t.qtype, w)
            assert np.array_equal(np.asarray(q.raw(t.name)).reshape(want.shape), want), t.name
    with pytest.raises(ValueError, match="executors"):
        quantize_model(path, tmp_path / "x.gguf", "Q8_0", prune_layers=[1], keep_split=True)
    r = run_cli("quantize", path, tmp_path / "bad.gguf", "Q8_0", "--prune-layers", "1,x")
    assert r.returncode == 2 and "invalid layer id" in r.stderr


def test_progress_and_timing(llama, tmp_path, capsys):
    path, _, imat = llama
    report = quantize_model(path, tmp_path / "p.gguf", "IQ3_XXS", imatrix=imat, progress=True)
    err = capsys.readouterr().err
    assert "100.0%" in err and "eta" in err
    assert report.seconds > 0 and all(t.seconds >= 0 for t in report.tensors)
    assert sum(t.seconds for t in report.tensors) <= report.seconds
    assert "time:" in report.summary()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kquant", *map(str, args)], capture_output=True, text=True)
