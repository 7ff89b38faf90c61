"""Optional: run ComfyUI-GGUF's own tools/convert.py on the synthetic checkpoints and compare
its file with what kquant reads from the same checkpoint.

Runs only where a ComfyUI-GGUF checkout is available: $KQUANT_COMFYUI_GGUF pointing at a
checkout, or a bare git mirror of it (read with ``git show HEAD:tools/convert.py``). Nothing of
ComfyUI-GGUF is part of kquant; its script is read at test time. convert.py needs torch and
safetensors only to load and hold tensors, so both are replaced here by small NumPy stand-ins
(BF16 held as float32, as convert.py converts it anyway).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant.model import quantize_model

from .diffusion_models import MODELS, arrays, write_safetensors

gguf = pytest.importorskip("gguf")
pytest.importorskip("tqdm")

_DEFAULT_MIRROR = Path("/work/.mirror/city96+ComfyUI-GGUF/repo")


def _convert_source() -> str:
    where = os.environ.get("KQUANT_COMFYUI_GGUF")
    p = Path(where) if where else _DEFAULT_MIRROR
    if (p / "tools" / "convert.py").is_file():
        return (p / "tools" / "convert.py").read_text()
    if p.is_dir():
        try:
            return subprocess.run(["git", "-C", str(p), "show", "HEAD:tools/convert.py"], check=True,
                                  capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            pass
    pytest.skip("no ComfyUI-GGUF checkout (set KQUANT_COMFYUI_GGUF)")


class _DType:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Tensor:
    """The few torch.Tensor operations convert.py uses."""

    def __init__(self, data: np.ndarray, dtype: _DType):
        self._data, self.dtype = data, dtype

    @property
    def shape(self):
        return self._data.shape

    def to(self, dtype):
        return _Tensor(self._data.astype(np.float32 if dtype.name == "float32" else np.float16), dtype)

    def numpy(self):
        return self._data


def _stand_ins(saved: dict):
    torch = types.ModuleType("torch")
    for n in ("bfloat16", "float32", "float16"):
        setattr(torch, n, _DType(n))
    torch.from_numpy = lambda a: _Tensor(a, torch.float32 if a.dtype == np.float32 else torch.float16)

    def load_file(path):
        raw = Path(path).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        out = {}
        for k, e in header.items():
            b = np.frombuffer(raw, np.uint8, e["data_offsets"][1] - e["data_offsets"][0], 8 + n + e["data_offsets"][0])
            shape = tuple(e["shape"])
            if e["dtype"] == "BF16":
                out[k] = _Tensor((b.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape), torch.bfloat16)
            elif e["dtype"] == "F32":
                out[k] = _Tensor(b.view("<f4").reshape(shape), torch.float32)
            else:
                out[k] = _Tensor(b.view("<f2").reshape(shape), torch.float16)
        return out

    st = types.ModuleType("safetensors")
    st_torch = types.ModuleType("safetensors.torch")
    st_torch.load_file = load_file
    st_torch.save_file = lambda sd, path: saved.update({k: v.numpy() for k, v in sd.items()})
    st.torch = st_torch
    return {"torch": torch, "safetensors": st, "safetensors.torch": st_torch}


@pytest.mark.parametrize("arch,dtype", [(a, "BF16") for a in sorted(MODELS)] + [("flux", "F32"), ("wan", "F16")])
def test_kquant_reads_a_checkpoint_as_convert_py_writes_it(arch, dtype, tmp_path, monkeypatch):
    src = _convert_source()
    saved: dict = {}
    for name, mod in _stand_ins(saved).items():
        monkeypatch.setitem(sys.modules, name, mod)
    ns: dict = {"__name__": "comfyui_gguf_convert"}
    exec(compile(src, "ComfyUI-GGUF/tools/convert.py", "exec"), ns)  # noqa: S102 - their script, read at test time
    ck = write_safetensors(tmp_path / f"{arch}.safetensors", arrays(arch), dtype=dtype)
    monkeypatch.chdir(tmp_path)
    ref, _ = ns["convert_file"](str(ck), str(tmp_path / "ref.gguf"), interact=False, overwrite=True)

    mine = tmp_path / "mine.gguf"
    quantize_model(ck, mine, "COPY")
    a, b = kquant.GGUFReader(mine), kquant.GGUFReader(ref)
    assert a.metadata == b.metadata and a.metadata_types == b.metadata_types
    ref_names = [t.name for t in b.tensors]
    five_d = {n for n, s in MODELS[arch] if len(s) > 4}
    assert {t.name for t in a.tensors} == set(ref_names) | five_d
    assert set(saved) == five_d  # what convert.py set aside for fix_5d_tensors.py
    for t in a.tensors:
        if t.name in five_d:
            assert np.array_equal(a.dequantize(t.name), saved[t.name])
            continue
        u = b.tensor(t.name)
        assert (t.shape, t.qtype) == (u.shape, u.qtype), t.name
        assert np.array_equal(a.raw(t.name), b.raw(t.name)), t.name
    # and quantizing the two gives the same file contents
    qa, qb = tmp_path / "qa.gguf", tmp_path / "qb.gguf"
    quantize_model(ck, qa, "Q4_K_M")
    quantize_model(ref, qb, "Q4_K_M")
    ra, rb = kquant.GGUFReader(qa), kquant.GGUFReader(qb)
    assert ra.metadata == rb.metadata
    for t in rb.tensors:
        assert np.array_equal(ra.raw(t.name), rb.raw(t.name)), t.name
