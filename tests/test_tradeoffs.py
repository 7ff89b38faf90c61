"""kquant.tradeoffs and kquant.tensors: size and error per type, measured on a model's weights.

Expected errors are computed here with NumPy from kquant.quantize / dequantize (whose bytes are
checked against ggml elsewhere), not read back from the module under test.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.cli import main as cli_main
from kquant.tensors import SafetensorsSource, hf_to_gguf_name, open_source, sample_path
from kquant.tradeoffs import (
    DEFAULT_SAMPLE_ROWS,
    DEFAULT_TYPES,
    Recommendation,
    effective_type,
    measure,
    parse_types,
    recommend,
)

Q = QuantType


def weights(rows, n, seed, tail=4.0):
    """Heavy-tailed weights with per-row and per-column scales."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(tail, (rows, n)) * 0.02
    x *= rng.lognormal(0, 0.5, (rows, 1)) * rng.lognormal(0, 0.3, (1, n))
    return x.astype(np.float32)


def small_model():
    """A few GGUF-named tensors: two quantizable matrices (one with rows of 384, which take the
    row-length fallbacks), a norm and a bias that are kept."""
    return {
        "blk.0.attn_q.weight": weights(64, 512, 1),
        "blk.0.ffn_up.weight": weights(96, 384, 2),
        "blk.0.attn_norm.weight": np.ones(512, np.float32),
        "blk.0.attn_q.bias": np.zeros(64, np.float32),
    }


def numpy_errors(x, qtype, w=None):
    """(weighted squared error, weighted squared norm, max |error|) computed directly."""
    x2 = x.reshape(-1, x.shape[-1])
    y = kquant.dequantize(kquant.quantize(x2, qtype, imatrix=w), qtype).astype(np.float64)
    d = y - x2
    cw = np.ones(x2.shape[1]) if w is None else w.astype(np.float64)
    return float(((d * d).sum(0) * cw).sum()), float(((x2.astype(np.float64) ** 2).sum(0) * cw).sum()), float(
        np.abs(d).max()
    )


def test_effective_type_follows_llama_fallbacks():
    assert effective_type(Q.Q4_K, 4096) == Q.Q4_K
    assert effective_type(Q.Q4_K, 384) == Q.Q5_0
    assert effective_type(Q.Q5_K, 384) == Q.Q5_1
    assert effective_type(Q.Q6_K, 384) == Q.Q8_0
    assert effective_type(Q.Q2_K, 384) == Q.Q4_0
    assert effective_type(Q.Q3_K, 384) == Q.Q4_0
    assert effective_type(Q.IQ4_XS, 384) == Q.IQ4_NL
    assert effective_type(Q.Q4_K, 48) == Q.F16  # neither 256 nor 32 divides 48
    assert effective_type(Q.Q8_0, 48) == Q.F16
    assert effective_type(Q.F16, 7) == Q.F16


def test_parse_types():
    assert parse_types(None) == list(DEFAULT_TYPES)
    assert parse_types(["q4_k,Q8_0", "iq4_xs q4_k"]) == [Q.Q4_K, Q.Q8_0, Q.IQ4_XS]
    with pytest.raises(ValueError):
        parse_types(["Q8_K"])
    with pytest.raises(ValueError):
        parse_types(["nope"])


def test_measurement_matches_numpy():
    arrays = small_model()
    types = [Q.Q4_K, Q.Q6_K, Q.Q8_0, Q.IQ4_XS]
    m = measure(arrays, types, exact=True)
    assert [t.name for t in m.tensors] == ["blk.0.attn_q.weight", "blk.0.ffn_up.weight"]
    assert sorted(i.name for i, _ in m.fixed) == ["blk.0.attn_norm.weight", "blk.0.attn_q.bias"]
    fixed_bytes = (512 + 64) * 4
    assert m.fixed_bytes == fixed_bytes
    total_params = sum(a.size for a in arrays.values())
    assert m.total_params == total_params
    doc = m.to_json()
    for t in types:
        row = m.type_row(t)
        nbytes, weighted, max_abs = fixed_bytes, 0.0, 0.0
        qparams = 0
        for name in ("blk.0.attn_q.weight", "blk.0.ffn_up.weight"):
            x = arrays[name]
            e = effective_type(t, x.shape[-1])
            se, sx, mx = numpy_errors(x, e)
            rb = kquant.row_size(e, x.shape[-1]) * x.shape[0]
            nbytes += rb
            weighted += x.size * se / sx
            qparams += x.size
            max_abs = max(max_abs, mx)
            per = next(d for d in doc["tensors"] if d["name"] == name)["errors"][t.name]
            assert per["type_used"] == e.name
            assert per["bytes"] == rb
            assert per["rel_rmse"] == pytest.approx(math.sqrt(se / sx), rel=1e-9)
            assert per["snr_db"] == pytest.approx(10 * math.log10(sx / se), rel=1e-9)
            assert per["max_abs_err"] == pytest.approx(mx, rel=1e-6)
        assert row["bytes"] == nbytes
        assert row["bits_per_weight"] == pytest.approx(nbytes * 8 / total_params)
        assert row["rel_rmse"] == pytest.approx(math.sqrt(weighted / qparams), rel=1e-9)
        assert row["snr_db"] == pytest.approx(-10 * math.log10(weighted / qparams), rel=1e-9)
        assert row["max_abs_err"] == pytest.approx(max_abs, rel=1e-6)
    # the 384-long rows fall back, the 512-long ones do not
    assert m.type_row(Q.Q4_K)["fallbacks"] == {"Q5_0": 1}
    assert m.type_row(Q.Q8_0)["fallbacks"] == {}


def test_json_shape():
    m = measure(small_model(), [Q.Q4_K, Q.Q8_0], exact=True)
    d = m.to_json()
    assert [r["type"] for r in d["types"]] == ["Q4_K", "Q8_0"]
    for r in d["types"]:
        assert {"type", "bits_per_weight", "bytes", "rel_rmse", "snr_db", "max_abs_err"} <= set(r)
    t = d["tensors"][0]
    assert {"name", "shape", "params", "errors"} <= set(t)
    assert t["shape"] == [64, 512] and t["params"] == 64 * 512
    assert set(t["errors"]) == {"Q4_K", "Q8_0"}
    json.dumps(d)


def test_imatrix_weights_quantization_and_error():
    arrays = small_model()
    rng = np.random.default_rng(7)
    w = (rng.lognormal(0, 1.0, 512) ** 2).astype(np.float32)
    m = measure(arrays, [Q.Q4_K, Q.Q3_K], imatrix={"blk.0.attn_q.weight": w}, exact=True)
    assert m.imatrix
    x = arrays["blk.0.attn_q.weight"]
    for t in (Q.Q4_K, Q.Q3_K):
        se, sx, _ = numpy_errors(x, t, w)
        assert m.tensor("blk.0.attn_q.weight").rel_mse(t) == pytest.approx(se / sx, rel=1e-9)
        # quantizing without the imatrix and weighting the error gives a different (larger) error
        se_plain, _, _ = numpy_errors(x, t)
        assert se / sx != pytest.approx(se_plain / sx, rel=1e-6)
    # a tensor the imatrix does not name is measured unweighted
    y = arrays["blk.0.ffn_up.weight"]
    se, sx, _ = numpy_errors(y, Q.Q4_0)  # Q3_K falls back to Q4_0 at rows of 384
    assert m.tensor("blk.0.ffn_up.weight").rel_mse(Q.Q3_K) == pytest.approx(se / sx, rel=1e-9)


def test_imatrix_per_expert():
    x = np.stack([weights(16, 256, 3), weights(16, 256, 4) * 3])
    w = np.stack([np.linspace(0.1, 4, 256), np.linspace(4, 0.1, 256)]).astype(np.float32)
    m = measure({"blk.0.ffn_up_exps.weight": x}, [Q.Q4_K], imatrix={"blk.0.ffn_up_exps.weight": w}, exact=True)
    se = sx = 0.0
    for e in range(2):
        a, b, _ = numpy_errors(x[e], Q.Q4_K, w[e])
        se, sx = se + a, sx + b
    assert m.tensors[0].rel_mse(Q.Q4_K) == pytest.approx(se / sx, rel=1e-9)
    with pytest.raises(ValueError, match="imatrix"):
        measure({"a.weight": weights(8, 256, 1)}, [Q.Q4_K], imatrix={"a.weight": np.ones(100)})


def test_sampling_is_deterministic_and_estimates_well():
    arrays = {"blk.0.ffn_down.weight": weights(1000, 256, 5), "blk.1.ffn_down.weight": weights(700, 256, 6)}
    a = measure(arrays, [Q.Q4_K], sample_rows=100, seed=3)
    b = measure(dict(reversed(list(arrays.items()))), [Q.Q4_K], sample_rows=100, seed=3)
    c = measure(arrays, [Q.Q4_K], sample_rows=100, seed=4)
    exact = measure(arrays, [Q.Q4_K], exact=True)
    assert a.sampled and not exact.sampled
    for name in arrays:
        ta, tb, tc, te = (m.tensor(name) for m in (a, b, c, exact))
        assert ta.rows_measured == 100 and te.rows_measured == arrays[name].shape[0]
        # same seed: same rows whatever the order of the tensors
        assert ta.rel_mse(Q.Q4_K) == tb.rel_mse(Q.Q4_K)
        assert ta.rel_mse(Q.Q4_K) != tc.rel_mse(Q.Q4_K)
        assert ta.rel_mse(Q.Q4_K) == pytest.approx(te.rel_mse(Q.Q4_K), rel=0.25)
        # sizes never depend on sampling
        assert ta.nbytes(Q.Q4_K) == te.nbytes(Q.Q4_K)
    assert a.type_row(Q.Q4_K)["bytes"] == exact.type_row(Q.Q4_K)["bytes"]
    # the sampled rows are a seeded choice: recompute them independently
    from kquant.tradeoffs import _sample_index

    idx = _sample_index("blk.0.ffn_down.weight", 1000, 100, 3)
    assert len(np.unique(idx)) == 100 and idx.min() >= 0 and idx.max() < 1000
    x = arrays["blk.0.ffn_down.weight"][idx]
    se, sx, _ = numpy_errors(x, Q.Q4_K)
    assert a.tensor("blk.0.ffn_down.weight").rel_mse(Q.Q4_K) == pytest.approx(se / sx, rel=1e-9)
    assert DEFAULT_SAMPLE_ROWS == 128


def test_nan_is_refused_with_the_tensor_name():
    x = weights(4, 256, 1)
    x[2, 5] = np.nan
    with pytest.raises(ValueError, match="blk.0.attn_k.weight"):
        measure({"blk.0.attn_k.weight": x}, [Q.Q4_K], exact=True)


# --------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------


def write_safetensors(path, tensors, metadata=None):
    """A minimal safetensors writer: {name: (dtype, shape, raw bytes)}."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    off, blobs = 0, []
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors_reader(tmp_path):
    a = weights(8, 64, 1)
    b = weights(4, 32, 2)
    c = weights(3, 16, 3)
    c_bf16 = (c.view(np.uint32) >> 16).astype("<u2")
    write_safetensors(
        tmp_path / "model.safetensors",
        {
            "model.layers.0.self_attn.q_proj.weight": ("F32", a.shape, a.astype("<f4").tobytes()),
            "model.layers.0.mlp.down_proj.weight": ("F16", b.shape, b.astype("<f2").tobytes()),
            "lm_head.weight": ("BF16", c.shape, c_bf16.tobytes()),
            "position_ids": ("I64", (1, 4), np.arange(4, dtype="<i8").tobytes()),
        },
    )
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "mistral", "num_hidden_layers": 1, "num_attention_heads": 8,
                    "num_key_value_heads": 2, "hidden_size": 64})
    )
    src = open_source(tmp_path / "model.safetensors")
    assert isinstance(src, SafetensorsSource)
    assert [t.name for t in src.tensors] == ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"]
    assert src.skipped == ["position_ids"]
    assert src.facts.architecture == "llama" and src.facts.n_head_kv == 2 and src.facts.n_layer == 1
    np.testing.assert_array_equal(src.load("blk.0.attn_q.weight"), a)
    np.testing.assert_array_equal(src.load("blk.0.ffn_down.weight"), b.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(src.load("output.weight"), (c_bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_array_equal(src.rows("blk.0.attn_q.weight", np.array([1, 5])), a[[1, 5]])
    assert src.info("output.weight").type == Q.BF16 and src.info("output.weight").nbytes == c.size * 2
    # a folder of shards reads as one model
    src2 = open_source(tmp_path)
    assert [t.name for t in src2.tensors] == [t.name for t in src.tensors]


def test_safetensors_reader_rejects_garbage(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        SafetensorsSource(p)
    write_safetensors(p, {"x.weight": ("F32", (2, 2), b"\0" * 8)})
    raw = bytearray(p.read_bytes())
    p.write_bytes(bytes(raw[:-4]))  # data cut short: the offsets point past the end
    with pytest.raises(ValueError, match="data_offsets"):
        SafetensorsSource(p)
    with pytest.raises(ValueError, match="neither a GGUF"):
        open_source(__file__)


def test_hf_names():
    assert hf_to_gguf_name("model.layers.12.self_attn.v_proj.weight") == "blk.12.attn_v.weight"
    assert hf_to_gguf_name("model.layers.3.post_attention_layernorm.weight") == "blk.3.ffn_norm.weight"
    assert hf_to_gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    assert hf_to_gguf_name("encoder.layer.5.intermediate.dense.bias") == "blk.5.ffn_up.bias"
    assert hf_to_gguf_name("encoder.layer.0.output.dense.weight") == "blk.0.ffn_down.weight"
    assert hf_to_gguf_name("encoder.layer.0.attention.output.dense.weight") == "blk.0.attn_output.weight"
    assert hf_to_gguf_name("embeddings.word_embeddings.weight") == "token_embd.weight"
    assert hf_to_gguf_name("something.else.weight") == "something.else.weight"
    assert hf_to_gguf_name("blk.0.attn_q.weight") == "blk.0.attn_q.weight"


def _gguf_writer():
    try:
        from kquant.gguf import GGUFWriter
    except ImportError:
        pytest.skip("kquant.GGUFWriter is not available")
    return GGUFWriter


def test_gguf_source_dequantizes(tmp_path):
    GGUFWriter = _gguf_writer()
    a = weights(32, 256, 1)
    b = weights(16, 256, 2)
    qa = kquant.quantize(a, Q.Q4_K)
    path = tmp_path / "m.gguf"
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("llama.block_count", 1, type="u32")
    w.add_tensor_info("blk.0.attn_q.weight", a.shape, Q.Q4_K)
    w.add_tensor_info("blk.0.attn_k.weight", b.shape, Q.F16)
    w.add_tensor_info("blk.0.attn_norm.weight", (256,), Q.F32)
    w.write_header()
    w.write_tensor("blk.0.attn_q.weight", qa)
    w.write_tensor("blk.0.attn_k.weight", b.astype(np.float16))
    w.write_tensor("blk.0.attn_norm.weight", np.ones(256, np.float32))
    w.close()
    src = open_source(path)
    assert src.facts.n_layer == 1
    np.testing.assert_array_equal(src.load("blk.0.attn_q.weight"), kquant.dequantize(qa, Q.Q4_K))
    np.testing.assert_array_equal(src.rows("blk.0.attn_q.weight", np.array([3, 7])),
                                  kquant.dequantize(qa, Q.Q4_K)[[3, 7]])
    np.testing.assert_array_equal(src.load("blk.0.attn_k.weight"), b.astype(np.float16).astype(np.float32))
    m = measure(path, [Q.Q8_0], exact=True)
    assert m.fixed_bytes == 256 * 4
    assert [t.name for t in m.tensors] == ["blk.0.attn_q.weight", "blk.0.attn_k.weight"]


# --------------------------------------------------------------------------
# the built-in sample, recommend() and the command line
# --------------------------------------------------------------------------


def test_builtin_sample_is_real_and_small():
    p = sample_path()
    assert p.is_file() and p.stat().st_size <= 3_200_000
    assert (p.parent / "README.md").is_file() and (p.parent / "LICENSE-Apache-2.0.txt").is_file()
    src = open_source(None)
    names = {t.name for t in src.tensors}
    assert {"blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"} <= names
    assert src.facts.architecture == "bert" and src.facts.n_layer == 6
    q = src.load("blk.0.attn_q.weight")
    assert q.shape == (384, 384) and q.dtype == np.float32
    # trained weights: not Gaussian (heavier tails than a normal's kurtosis of 3)
    k = float(np.mean((q - q.mean()) ** 4) / np.var(q) ** 2)
    assert k > 3.5


def test_recommend_prints(monkeypatch):
    r = recommend(types=["Q4_K", "Q8_0"], target_bpw=6.0)
    assert isinstance(r, Recommendation)
    assert [row["type"] for row in r.table] == ["Q4_K", "Q8_0"]
    text = repr(r)
    assert "Q4_K" in text and "rel RMSE" in text and "budget" in text
    assert "<table>" in r._repr_html_()
    assert r.choice.bpw <= 6.0
    assert r.best_within(r.table[1]["bytes"])["type"] == "Q8_0"
    assert kquant.recommend is recommend


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "t.json"
    png = tmp_path / "t.png"
    recipe = tmp_path / "recipe.txt"
    args = ["tradeoffs", "--types", "Q4_K,Q6_K", "--types", "Q8_0", "--json", str(out),
            "--target-bpw", "6", "--tensor-type-out", str(recipe), "--quiet"]
    have_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_mpl = False
    if have_mpl:
        args += ["--plot", str(png)]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "Q6_K" in text and "nearest fixed recipe" in text
    d = json.loads(out.read_text())
    assert [r["type"] for r in d["types"]] == ["Q4_K", "Q6_K", "Q8_0"]
    assert len(d["tensors"]) == 4 and d["choice"]["bits_per_weight"] <= 6
    assert d["tensors"][0]["errors"]["Q4_K"]["rel_rmse"] > 0
    lines = recipe.read_text().splitlines()
    assert len(lines) == 4 and all(line.startswith("^blk\\.0\\.") for line in lines)
    if have_mpl:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli_main(["tradeoffs", "--plot", str(tmp_path / "x.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_errors(capsys):
    assert cli_main(["tradeoffs", "/nonexistent/model.gguf"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["tradeoffs", "--types", "Q9_X"]) == 2
    assert cli_main(["tradeoffs", "--tensor-type-out", "x.txt"]) == 2


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "kquant", "tradeoffs", "--types", "Q8_0", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Q8_0" in r.stdout and "all-MiniLM-L6-v2" in r.stdout


def test_cli_on_a_gguf_model_with_an_imatrix_file(tmp_path, capsys):
    GGUFWriter = _gguf_writer()
    a = weights(48, 256, 11)
    b = weights(32, 512, 12)
    path = tmp_path / "m.gguf"
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("llama.block_count", 1, type="u32")
    w.add_tensor_info("blk.0.attn_q.weight", a.shape, Q.F16)
    w.add_tensor_info("blk.0.ffn_down.weight", b.shape, Q.F32)
    w.write_header()
    w.write_tensor("blk.0.attn_q.weight", a.astype(np.float16))
    w.write_tensor("blk.0.ffn_down.weight", b)
    w.close()
    # llama-imatrix's legacy format, one call: the stored values are the importances
    imp = (np.random.default_rng(3).lognormal(0, 1, 256) ** 2).astype("<f4")
    name = b"blk.0.attn_q.weight"
    raw = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, imp.size) + imp.tobytes()
    (tmp_path / "imatrix.dat").write_bytes(raw)
    out = tmp_path / "t.json"
    assert cli_main(["tradeoffs", str(path), "--types", "Q4_K,Q2_K", "--imatrix", str(tmp_path / "imatrix.dat"),
                     "--exact", "--json", str(out), "--quiet"]) == 0
    assert "importance-weighted" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["imatrix"] and d["exact"]
    x = a.astype(np.float16).astype(np.float32)
    for t in ("Q4_K", "Q2_K"):
        se, sx, mx = numpy_errors(x, t, imp)
        got = next(e for e in d["tensors"] if e["name"] == "blk.0.attn_q.weight")["errors"][t]
        assert got["rel_rmse"] == pytest.approx(math.sqrt(se / sx), rel=1e-9)
        assert got["max_abs_err"] == pytest.approx(mx, rel=1e-6)
        se, sx, _ = numpy_errors(b, t)
        got = next(e for e in d["tensors"] if e["name"] == "blk.0.ffn_down.weight")["errors"][t]
        assert got["rel_rmse"] == pytest.approx(math.sqrt(se / sx), rel=1e-9)
