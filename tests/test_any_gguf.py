"""Any GGUF opens: a file holding one tensor of every ggml type round-trips through
kquant's reader and writer with ggml's bytes (golden `q`) and values (golden `dq`);
`tradeoffs` and `quantize --allow-requantize` accept models stored in any implemented
type; type ids ggml does not define are refused with a clear error."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant import QuantType
from kquant.gguf import PlainType
from kquant.model import quantize_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import make_llama  # noqa: E402

PLAIN_VALUES = {
    PlainType.I8: np.array([[-128, -1, 0, 1], [127, 5, -7, 9]], np.int8),
    PlainType.I16: np.array([[-32768, 1, 2, 32767]], np.int16),
    PlainType.I32: np.array([[-(2**31), -1, 0, 2**31 - 1]], np.int32),
    PlainType.I64: np.array([[-(2**63), 2**63 - 1, 3, -4]], np.int64),
    PlainType.F64: np.array([[0.1, -2.0, 1e300, -0.0]], np.float64),
}


def every_type_tensors(golden_path: Path):
    """(name, type, bytes, expected float32 values or None) for every ggml tensor type:
    ggml's golden bytes and values where they exist, kquant's own output for F32, F16,
    BF16 and Q8_1 (whose bytes the golden tests pin through Q4_1/Q5_1's partner)."""
    out = []
    x = np.random.default_rng(11).standard_normal((3, 256)).astype(np.float32)
    for t in QuantType:
        f = golden_path / f"{t.name}.npz"
        if f.exists():
            with np.load(f) as z:
                key = "q" if "q" in z.files else "q_imat"
                dq = "dq" if key == "q" else "dq_imat"
                q = z[key][:4]
                want = z[dq][:4] if dq in z.files else None
        else:
            q = kquant.quantize(x, t)
            want = kquant.dequantize(q, t)
        out.append((f"w.{t.name.lower()}", t, np.ascontiguousarray(q), want))
    for t, v in PLAIN_VALUES.items():
        with np.errstate(over="ignore"):  # F64 beyond float32 reads as inf, as ggml's cast
            out.append((f"ids.{t.name.lower()}", t, v, v.astype(np.float32)))
    return out


def write_every_type(path: Path, tensors) -> None:
    with kquant.GGUFWriter(path) as w:
        w.add_metadata("general.architecture", "llama")
        for name, t, q, _ in tensors:
            if isinstance(t, PlainType):
                w.add_tensor_info(name, q.shape, t)
            else:
                n = q.shape[1] // t.type_size * t.block_size
                w.add_tensor_info(name, (q.shape[0], n), t)
        for name, _, q, _ in tensors:
            w.write_tensor(name, q)


def test_every_ggml_type_round_trips(golden_path, tmp_path):
    tensors = every_type_tensors(golden_path)
    assert {t for _, t, _, _ in tensors} == set(QuantType) | set(PlainType)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_every_type(a, tensors)
    with kquant.GGUFReader(a) as r:
        assert [t.name for t in r.tensors] == [n for n, *_ in tensors]
        for name, t, q, want in tensors:
            info = r.tensor(name)
            assert info.qtype == t
            raw = np.asarray(r.raw(name))
            assert np.array_equal(raw.view(np.uint8).reshape(-1), q.view(np.uint8).reshape(-1)), name
            if isinstance(t, PlainType) or t.is_implemented:
                got = r.dequantize(name)
                assert got.shape == info.shape
                assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name
            else:  # lattice i-quants until their kernels land: a clear refusal, no crash
                with pytest.raises(ValueError, match=t.name):
                    r.dequantize(name)
        # the reader's bytes written again give the same file
        with kquant.GGUFWriter(b) as w:
            for k, v in r.metadata.items():
                w.add_metadata(k, v)
            for info in r.tensors:
                w.add_tensor_info(info.name, info.shape, info.qtype)
            for info in r.tensors:
                w.write_tensor(info.name, np.asarray(r.raw(info.name)).view(np.uint8))
    assert a.read_bytes() == b.read_bytes()


def test_gguf_py_reads_the_new_types(golden_path, tmp_path):
    """gguf-py (0.19 knows every type up to Q1_0) sees the same bytes. Its Q8_1 is the
    old 40-byte block (ggml's is 36), so Q8_1 is left out."""
    gguf = pytest.importorskip("gguf")
    known = {int(v) for v in gguf.GGMLQuantizationType} - {int(QuantType.Q8_1)}
    tensors = [t for t in every_type_tensors(golden_path) if int(t[1]) in known]
    path = tmp_path / "known.gguf"
    write_every_type(path, tensors)
    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    for name, t, q, _ in tensors:
        g = by_name[name]
        assert int(g.tensor_type) == int(t)
        assert np.array_equal(np.asarray(g.data).view(np.uint8).reshape(-1), q.view(np.uint8).reshape(-1)), name


def _type_id_offset(path: Path, name: str) -> int:
    """File offset of the type id of tensor `name` (after its dims)."""
    data = path.read_bytes()
    key = struct.pack("<Q", len(name)) + name.encode()
    i = data.index(key) + len(key)
    (n_dims,) = struct.unpack_from("<I", data, i)
    return i + 4 + 8 * n_dims


@pytest.mark.parametrize("bad, why", [(43, "unknown ggml type id 43"), (4, "Q4_2"), (31, "Q4_0_4_4"), (2**31, str(2**31))])
def test_undefined_type_ids_are_refused(tmp_path, bad, why):
    path = tmp_path / "bad.gguf"
    with kquant.GGUFWriter(path) as w:
        w.add_tensor_info("t", (2, 32), "Q8_0")
        w.write_tensor("t", kquant.quantize(np.ones((2, 32), np.float32), "q8_0"))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, _type_id_offset(path, "t"), bad)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=why):
        kquant.GGUFReader(path)


SMALL = dict(layers=1, width=256, ffn=512, heads=4, kv_heads=2, vocab=256)


@pytest.fixture(scope="module")
def stored_in_every_type(tmp_path_factory):
    """A small Llama whose weight matrices are stored in every implemented block type in
    turn (one model per group of types), plus the F32 original's values."""
    d = tmp_path_factory.mktemp("any")
    src = d / "f32.gguf"
    args = [str(src)] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert make_llama.main(args) == 0
    types = [t for t in QuantType if t.is_implemented and t != QuantType.F32]
    models = []
    with kquant.GGUFReader(src) as r:
        mats = [t for t in r.tensors if len(t.shape) == 2]
        for g in range(0, len(types), len(mats)):
            group = types[g : g + len(mats)]
            path = d / f"stored-{g}.gguf"
            stored = {}
            with kquant.GGUFWriter(path) as w:
                for k, v in r.metadata.items():
                    w.add_metadata(k, v)
                plan = []
                for info in r.tensors:
                    t = group[sum(len(p.shape) == 2 for p, _ in plan) % len(group)] if len(info.shape) == 2 else QuantType.F32
                    plan.append((info, t))
                    w.add_tensor_info(info.name, info.shape, t)
                for info, t in plan:
                    x = r.dequantize(info.name)
                    x2 = x.reshape(-1, x.shape[-1])
                    imat = np.ones(x2.shape[1], np.float32) if t.requires_imatrix else None
                    q = kquant.quantize(x2, t, imatrix=imat)
                    w.write_tensor(info.name, q)
                    stored[info.name] = (t, kquant.dequantize(q, t).reshape(x.shape))
            models.append((path, stored))
    assert {t for _, s in models for t, _ in s.values()} >= set(types)
    return models


def test_requantize_from_any_type(stored_in_every_type, tmp_path):
    for path, stored in stored_in_every_type:
        out = tmp_path / (path.stem + "-q8_0.gguf")
        with pytest.raises(ValueError, match="requantiz"):
            quantize_model(path, out, "Q8_0")
        assert not out.exists()
        quantize_model(path, out, "Q8_0", allow_requantize=True)
        with kquant.GGUFReader(out) as r:
            for name, (t, values) in stored.items():
                info = r.tensor(name)
                if info.qtype == QuantType.Q8_0 and t != QuantType.Q8_0:
                    # requantized from the stored type's exact values
                    want = kquant.quantize(values.reshape(-1, values.shape[-1]), "Q8_0")
                    assert np.array_equal(np.asarray(r.raw(name)).reshape(want.shape), want), (name, t)


def test_cli_requantize_from_any_type(stored_in_every_type, tmp_path):
    path, stored = stored_in_every_type[0]
    out = tmp_path / "cli-q4_0.gguf"
    r = subprocess.run(
        [sys.executable, "-m", "kquant", "quantize", str(path), str(out), "q4_0", "--allow-requantize"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    with kquant.GGUFReader(out) as g:
        assert any(t.qtype == QuantType.Q4_0 for t in g.tensors)
        assert {t.name for t in g.tensors} == set(stored)


def test_tradeoffs_on_any_type(stored_in_every_type, tmp_path):
    for path, stored in stored_in_every_type:
        m = kquant.tradeoffs.measure(path, ["Q8_0", "Q4_K"], exact=True)
        names = {t.name for t in m.tensors}
        assert {n for n, (t, v) in stored.items() if v.ndim == 2} <= names
        r = subprocess.run(
            [sys.executable, "-m", "kquant", "tradeoffs", str(path), "--types", "q8_0,q4_k", "--json", str(tmp_path / "t.json"), "--quiet"],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "t.json").stat().st_size > 0
