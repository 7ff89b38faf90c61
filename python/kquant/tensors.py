"""Tensor sources for measuring quantization error: GGUF files, safetensors files, in-memory arrays
and the built-in sample of real weights.

Every source names its tensors the way GGUF files do (``blk.0.attn_q.weight``), because
llama-quantize's rules (:mod:`kquant.recipes`) and its ``--tensor-type`` patterns match those
names. Hugging Face names of the Llama and BERT families are translated; other names are kept.

A source reads rows lazily: :meth:`TensorSource.rows` returns chosen rows as float32 without
loading the rest, so a large model can be sampled from a memory map. Quantized GGUF tensors are
dequantized (only the rows asked for).

Only floating-point tensors are model weights here: integer buffers such as BERT's
``position_ids`` are left out, as llama.cpp's converters leave them out.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ._api import dequantize
from ._types import QuantType, row_size
from .recipes import ModelFacts

__all__ = [
    "TensorInfo",
    "TensorSource",
    "ArraySource",
    "SafetensorsSource",
    "GGUFSource",
    "open_source",
    "sample_path",
    "hf_to_gguf_name",
    "facts_from_hf_config",
]

PathLike = Union[str, "os.PathLike[str]"]

_DATA = Path(__file__).resolve().parent / "data"
SAMPLE_FILE = "minilm_l6_v2_sample.safetensors"


def sample_path() -> Path:
    """The built-in sample: a few real all-MiniLM-L6-v2 weight tensors (see data/README.md)."""
    return _DATA / SAMPLE_FILE


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: GGUF-style ``name``, NumPy-order ``shape`` (row length last), the ``type`` it is
    stored in, its stored bytes, and ``source_name`` (the name in the file, when it differs)."""

    name: str
    shape: Tuple[int, ...]
    type: QuantType
    nbytes: int
    source_name: str = ""

    @property
    def params(self) -> int:
        return math.prod(self.shape)

    @property
    def row_length(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1]) if self.shape else 1


class TensorSource:
    """Tensors by name. Subclasses implement :meth:`rows`."""

    description: str = ""
    facts: Optional[ModelFacts] = None
    tensors: List[TensorInfo]

    def __init__(self) -> None:
        self.tensors = []
        self._by_name: Dict[str, TensorInfo] = {}

    def _add(self, info: TensorInfo) -> None:
        if info.name in self._by_name:
            raise ValueError(f"duplicate tensor name {info.name!r} in {self.description}")
        self.tensors.append(info)
        self._by_name[info.name] = info

    def info(self, name: str) -> TensorInfo:
        return self._by_name[name]

    def rows(self, name: str, index: Optional[np.ndarray] = None) -> np.ndarray:
        """Rows of the tensor flattened to (n_rows, row_length), as float32; all when index is None."""
        raise NotImplementedError

    def load(self, name: str) -> np.ndarray:
        """The whole tensor as float32, in its NumPy-order shape."""
        return self.rows(name).reshape(self.info(name).shape)

    def model_facts(self) -> ModelFacts:
        """The facts llama-quantize's rules need; guessed from the names when the source has none."""
        if self.facts is not None:
            return self.facts
        layers = [int(m.group(1)) for t in self.tensors if (m := re.match(r"blk\.(\d+)\.", t.name))]
        return ModelFacts(architecture="llama", n_layer=max(layers) + 1 if layers else 1)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}: {len(self.tensors)} tensors>"


def _to_2d(a: np.ndarray) -> np.ndarray:
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(-1, a.shape[-1]) if a.shape[-1] else a.reshape(math.prod(a.shape[:-1]), 0)


class ArraySource(TensorSource):
    """In-memory arrays: a mapping of GGUF-style names to float arrays (NumPy order)."""

    def __init__(self, arrays: Mapping[str, Any], facts: Optional[ModelFacts] = None, description: str = "arrays"):
        super().__init__()
        self.description = description
        self.facts = facts
        self._arrays: Dict[str, np.ndarray] = {}
        for name, a in arrays.items():
            a = np.asarray(a)
            if a.dtype.kind != "f":
                raise TypeError(f"{name}: expected floating-point values, got dtype {a.dtype}")
            stored = {2: QuantType.F16, 4: QuantType.F32}.get(a.dtype.itemsize, QuantType.F32)
            self._arrays[name] = a
            self._add(TensorInfo(str(name), tuple(int(d) for d in a.shape), stored, a.size * stored.type_size))

    def rows(self, name: str, index: Optional[np.ndarray] = None) -> np.ndarray:
        a = _to_2d(self._arrays[name])
        return np.asarray(a if index is None else a[index], dtype=np.float32)


# --------------------------------------------------------------------------
# Hugging Face names and config
# --------------------------------------------------------------------------

_HF_GLOBAL = {
    # Llama family
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    # BERT family
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}

_HF_LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}

_HF_LAYER_RE = re.compile(r"^(?:model\.layers|encoder\.layer|bert\.encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$")


def hf_to_gguf_name(name: str) -> str:
    """The GGUF name llama.cpp's converter gives a Hugging Face Llama- or BERT-family tensor;
    other names come back unchanged."""
    m = _HF_LAYER_RE.match(name)
    if m:
        mapped = _HF_LAYER.get(m.group(2))
        return f"blk.{m.group(1)}.{mapped}.{m.group(3)}" if mapped else name
    stem, dot, suffix = name.rpartition(".")
    if dot and suffix in ("weight", "bias"):
        if stem.startswith("bert."):
            stem = stem[len("bert."):]
        mapped = _HF_GLOBAL.get(stem)
        if mapped:
            return f"{mapped}.{suffix}"
    return name


# Hugging Face model_type -> llama.cpp architecture name, where they differ
_HF_ARCH = {"mistral": "llama", "mixtral": "llama"}


def facts_from_hf_config(config: Mapping[str, Any]) -> Optional[ModelFacts]:
    """ModelFacts from a Hugging Face ``config.json``; None when it has no layer count."""
    n_layer = config.get("num_hidden_layers") or config.get("n_layer")
    if not n_layer:
        return None
    model_type = str(config.get("model_type", "llama")).lower()
    n_head = int(config.get("num_attention_heads") or 0)
    kv = config.get("num_key_value_heads")
    return ModelFacts(
        architecture=_HF_ARCH.get(model_type, model_type),
        n_layer=int(n_layer),
        n_head=n_head,
        n_head_kv=None if kv is None else int(kv),
        n_expert=int(config.get("num_local_experts") or config.get("num_experts") or 0),
        n_embd=int(config.get("hidden_size") or 0),
    )


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

_ST_DTYPES = {"F32": (QuantType.F32, "<f4"), "F16": (QuantType.F16, "<f2"), "BF16": (QuantType.BF16, "<u2")}


def _bf16_to_f32(u: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << 16).view(np.float32)


class SafetensorsSource(TensorSource):
    """One safetensors file, or a folder of them (a sharded checkpoint), read through memory maps.

    F32, F16 and BF16 tensors are read; tensors of other dtypes are skipped. Model facts come from a
    ``config.json`` beside the file, or from a ``config`` entry in the file's ``__metadata__``.
    """

    def __init__(self, path: PathLike):
        super().__init__()
        p = Path(path)
        files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        if not files:
            raise ValueError(f"no .safetensors files in {p}")
        self.description = str(p)
        self.path = p
        self.skipped: List[str] = []
        self._where: Dict[str, Tuple[Path, int, str, Tuple[int, ...]]] = {}
        self._maps: Dict[Path, np.memmap] = {}
        config: Optional[Mapping[str, Any]] = None
        for f in files:
            header, data_start = _read_st_header(f)
            meta = header.pop("__metadata__", None) or {}
            if config is None and isinstance(meta.get("config"), str):
                try:
                    config = json.loads(meta["config"])
                except ValueError:
                    config = None
            for sname, entry in header.items():
                dtype = entry.get("dtype")
                shape = tuple(int(d) for d in entry.get("shape", ()))
                begin, end = (int(o) for o in entry["data_offsets"])
                if dtype not in _ST_DTYPES:
                    self.skipped.append(sname)
                    continue
                qt, npdt = _ST_DTYPES[dtype]
                if end - begin != math.prod(shape) * qt.type_size:
                    raise ValueError(f"{f}: {sname}: {end - begin} bytes for shape {shape} of {dtype}")
                name = hf_to_gguf_name(sname)
                self._add(TensorInfo(name, shape, qt, end - begin, sname if name != sname else ""))
                self._where[name] = (f, data_start + begin, npdt, shape)
        cfg_file = (p if p.is_dir() else p.parent) / "config.json"
        if cfg_file.is_file():
            with open(cfg_file, encoding="utf-8") as fh:
                config = json.load(fh)
        self.facts = facts_from_hf_config(config) if config else None

    def _map(self, f: Path) -> np.memmap:
        m = self._maps.get(f)
        if m is None:
            m = self._maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
        return m

    def rows(self, name: str, index: Optional[np.ndarray] = None) -> np.ndarray:
        f, off, npdt, shape = self._where[name]
        n = math.prod(shape)
        item = np.dtype(npdt).itemsize
        a = _to_2d(self._map(f)[off:off + n * item].view(npdt).reshape(shape))
        if index is not None:
            a = a[index]
        if npdt == "<u2":
            return _bf16_to_f32(np.asarray(a))
        return np.asarray(a, dtype=np.float32)


def _read_st_header(f: Path) -> Tuple[Dict[str, Any], int]:
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{f}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise ValueError(f"{f}: not a safetensors file (header length {n})")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{f}: not a safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{f}: not a safetensors file (header is not an object)")
    data_len = size - 8 - n
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offs = v.get("data_offsets") if isinstance(v, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and 0 <= offs[0] <= offs[1] <= data_len):
            raise ValueError(f"{f}: tensor {k!r} has bad data_offsets {offs!r}")
    return header, 8 + n


# --------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------


class GGUFSource(TensorSource):
    """A GGUF file read with :class:`kquant.GGUFReader`; quantized tensors are dequantized."""

    def __init__(self, path: PathLike):
        super().__init__()
        from .gguf import GGUFReader

        self.description = os.fspath(path)
        self.reader = GGUFReader(path)
        self.skipped: List[str] = []
        for t in self.reader.tensors:
            if not isinstance(t.qtype, QuantType):
                # integer and F64 tensors (token tables, indices) are not weights
                self.skipped.append(str(t.name))
                continue
            self._add(TensorInfo(str(t.name), tuple(int(d) for d in t.shape), t.qtype, int(t.nbytes)))
        meta = self.reader.metadata
        try:
            self.facts = ModelFacts.from_gguf_metadata(meta)
        except ValueError:
            self.facts = None

    def rows(self, name: str, index: Optional[np.ndarray] = None) -> np.ndarray:
        info = self.info(name)
        n = info.row_length
        raw = np.asarray(self.reader.raw(name)).view(np.uint8).reshape(-1)
        rb = row_size(info.type, n)
        raw = raw[: info.n_rows * rb].reshape(info.n_rows, rb)
        if index is not None:
            raw = raw[index]
        if info.type == QuantType.F32:
            return np.ascontiguousarray(raw).view("<f4").astype(np.float32)
        if info.type == QuantType.F16:
            return np.ascontiguousarray(raw).view("<f2").astype(np.float32)
        if info.type == QuantType.BF16:
            return _bf16_to_f32(np.ascontiguousarray(raw).view("<u2"))
        return dequantize(np.ascontiguousarray(raw), info.type)


# --------------------------------------------------------------------------


def open_source(model: Any = None, facts: Optional[ModelFacts] = None) -> TensorSource:
    """A TensorSource from ``None`` (the built-in sample), a path to a ``.gguf`` or ``.safetensors``
    file or a folder of safetensors shards, a mapping of names to arrays, or a TensorSource."""
    if isinstance(model, TensorSource):
        src = model
    elif model is None:
        src = SafetensorsSource(sample_path())
        src.description = "built-in sample (all-MiniLM-L6-v2, 4 weight matrices)"
    elif isinstance(model, Mapping):
        src = ArraySource(model)
    elif isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not p.exists():
            raise FileNotFoundError(f"no such file: {p}")
        if p.is_dir() or p.suffix == ".safetensors":
            from .diffusion import source_for

            # a ComfyUI diffusion checkpoint is measured as ComfyUI-GGUF's convert.py writes it
            src = source_for(p) or SafetensorsSource(p)
        else:
            with open(p, "rb") as fh:
                magic = fh.read(4)
            if magic != b"GGUF":
                raise ValueError(f"{p}: neither a GGUF file (magic {magic!r}) nor a .safetensors file")
            src = GGUFSource(p)
    else:
        raise TypeError(f"model must be a path, a mapping of arrays or a TensorSource, not {type(model).__name__}")
    if facts is not None:
        src.facts = facts
    return src
