"""llama-quantize's per-tensor type choice ("recipes"), in pure Python.

Given a model's tensors (name, shape, current type), a few model facts from
its GGUF metadata and a llama.cpp file type such as Q4_K_M, :func:`plan_quantization`
says for every tensor whether llama-quantize would convert it, to which type,
and why: the file type's default type, the mix upgrades (output, attn_v,
ffn_down, attn_output, layers that get more bits, GQA and 8-expert rules), the
row-length fallbacks and the user's overrides (``--tensor-type``,
``--output-tensor-type``, ``--token-embedding-type``, ``--leave-output-tensor``,
``--pure``, ``--allow-requantize``, ``--imatrix`` with ``--include-weights`` /
``--exclude-weights``).

Source of truth: llama.cpp ``src/llama-quant.cpp`` at commit
007dbbf3fd17eefe9b47fee45f48f7ba5e62b714 and ``tools/quantize/quantize.cpp`` at
03161a4eb9a2ec66ef97789f347c5a28279f06ea (2025/2026 master). Every file type
llama-quantize offers is modelled: the k-quant and legacy mixes, IQ4_NL/IQ4_XS,
the low-bit IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS,
IQ3_S, IQ3_M, the ternary TQ1_0/TQ2_0, Q1_0, Q2_0 (2.25 bpw, rows of 64;
new in 2026), NVFP4 and MXFP4_MOE (MXFP4 for the stacked expert tensors, Q8_0
for everything else). Worth knowing when comparing with files made by older
llama.cpp releases:

* the row-length fallback of Q2_K and Q3_K is Q4_0 here; older releases used
  IQ4_NL (the IQ1/IQ2/IQ3 types fall back to IQ4_NL, the TQ types and Q2_0 to
  Q4_0, in both);
* the importance-matrix requirement is decided tensor by tensor: IQ1_S,
  IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S and IQ3_XXS tensors (and Q2_K ones under
  Q2_K_S) need an entry, except the token embedding and output.weight. So
  the IQ3_XXS file type (its attn_q/attn_k become IQ2_S, the rest IQ3_XXS)
  needs an importance matrix too; older releases did not require one for
  IQ3_XXS tensors, and their llama-quantize refused the IQ1_S, IQ1_M,
  IQ2_XXS, IQ2_XS, IQ2_S and Q2_K_S file types up front without one.
  Without any imatrix the run stops at the first such tensor before writing;
  with one, only when a tensor it converts has no entry, which llama-quantize
  finds while writing. kquant checks every tensor first and names them all;
  ``missing_imatrix`` (``--missing-imatrix TYPE``) gives exactly those a
  type that needs no importance matrix instead;
* in MXFP4_MOE, BailingMoE3's 3-D MLA projections are Q8_0 (only its expert
  FFN tensors are MXFP4); earlier MXFP4_MOE releases made every tensor with a
  third axis larger than one MXFP4;
* ``attn_qkv.weight`` is counted and treated like ``attn_v.weight`` (the
  dedicated attn_qkv branch of the source cannot be reached any more), so
  Q4_K_M gives it Q6_K on the "more bits" layers and Q4_K elsewhere, where
  older releases gave it Q5_K everywhere (and Q3_K_M, Q3_K_L, IQ3_M gave it
  Q4_K);
* ``--tensor-type`` overrides now win over the mix rules, still go through the
  row-length fallback, apply under ``--pure`` too, and an overridden tensor
  does not advance the attn_v / ffn_down layer counters; older releases applied
  them after the mix and only when no fallback had happened;
* ``per_layer_token_embd.weight`` counts as a token embedding;
* ``--prune-layers`` (``prune_layers``) drops whole ``blk.N.`` layers and
  renumbers the rest; the mix rules still count the input's layers.

Shapes: :class:`TensorSpec` stores ``ne``, the shape in ggml order, ``ne[0]``
being the row length (what GGUF files and ``gguf.GGUFReader`` store). Use
:meth:`TensorSpec.from_numpy` for a NumPy-order shape (row length last).
"""

from __future__ import annotations

import enum
import operator
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Pattern, Sequence, Tuple, Union

from ._types import QTypeLike, QuantType

__all__ = [
    "FileType",
    "FileTypeLike",
    "TensorSpec",
    "ModelFacts",
    "QuantizeOptions",
    "TensorPlan",
    "QuantPlan",
    "QuantizeError",
    "IMATRIX_TYPES",
    "plan_quantization",
    "plan_gguf",
    "parse_prune_layers",
    "parse_tensor_type",
    "parse_tensor_type_text",
    "load_tensor_type_file",
    "tensors_from_gguf",
]

LLAMA_CPP_COMMIT = "007dbbf3fd17eefe9b47fee45f48f7ba5e62b714"


class QuantizeError(ValueError):
    """llama-quantize would stop with this error (requantizing, missing imatrix, bad shape)."""


class FileType(enum.IntEnum):
    """A llama.cpp file type (``LLAMA_FTYPE_*``); the value is llama.cpp's id.

    COPY is kquant's name for llama-quantize's ``COPY``: keep every tensor's
    type. llama.cpp has no id for it (it reuses ALL_F32 plus a flag), so its
    value, -1, is not a llama.cpp id.
    """

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 7
    Q5_0 = 8
    Q5_1 = 9
    Q2_K = 10
    Q3_K_S = 11
    Q3_K_M = 12
    Q3_K_L = 13
    Q4_K_S = 14
    Q4_K_M = 15
    Q5_K_S = 16
    Q5_K_M = 17
    Q6_K = 18
    IQ2_XXS = 19
    IQ2_XS = 20
    Q2_K_S = 21
    IQ3_XS = 22
    IQ3_XXS = 23
    IQ1_S = 24
    IQ4_NL = 25
    IQ3_S = 26
    IQ3_M = 27
    IQ2_S = 28
    IQ2_M = 29
    IQ4_XS = 30
    IQ1_M = 31
    BF16 = 32
    TQ1_0 = 36
    TQ2_0 = 37
    MXFP4_MOE = 38
    NVFP4 = 39
    Q1_0 = 40
    Q2_0 = 41
    COPY = -1

    def __str__(self) -> str:
        return self.name

    @property
    def default_type(self) -> Optional[QuantType]:
        """The tensor type most weights get (None for COPY)."""
        return _DEFAULT_TYPE.get(self)

    @classmethod
    def parse(cls, ftype: FileTypeLike) -> FileType:
        """A FileType from a FileType, a llama.cpp id or a name in any letter case.

        Like llama-quantize, Q3_K, Q4_K and Q5_K mean their _M variants; a
        ``LLAMA_FTYPE_MOSTLY_`` / ``LLAMA_FTYPE_ALL_`` prefix is accepted.
        """
        if isinstance(ftype, FileType):
            return ftype
        if isinstance(ftype, str):
            key = ftype.strip().upper()
            for prefix in ("LLAMA_FTYPE_", "MOSTLY_", "ALL_"):
                if key.startswith(prefix):
                    key = key[len(prefix):]
            key = _FTYPE_ALIASES.get(key, key)
            if key in cls.__members__:
                return cls[key]
            if re.fullmatch(r"[+-]?\d+", key):
                return cls._from_id(int(key))
            raise ValueError(f"unknown file type {ftype!r}; expected one of {', '.join(cls.__members__)}")
        if isinstance(ftype, bool) or not isinstance(ftype, int):
            raise TypeError(f"file type must be a FileType, a llama.cpp id or a name, not {type(ftype).__name__}")
        return cls._from_id(int(ftype))

    @classmethod
    def _from_id(cls, value: int) -> FileType:
        # -1 is kquant's own marker, not something a caller can mean by a number
        if value == cls.COPY.value:
            raise ValueError("file type id -1 is not a llama.cpp id; use 'COPY'")
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unsupported llama.cpp file type id {value}") from None


FileTypeLike = Union[FileType, int, str]

_FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

_DEFAULT_TYPE = {
    FileType.F32: QuantType.F32,
    FileType.F16: QuantType.F16,
    FileType.BF16: QuantType.BF16,
    FileType.Q4_0: QuantType.Q4_0,
    FileType.Q4_1: QuantType.Q4_1,
    FileType.Q5_0: QuantType.Q5_0,
    FileType.Q5_1: QuantType.Q5_1,
    FileType.Q8_0: QuantType.Q8_0,
    FileType.Q2_K: QuantType.Q2_K,
    FileType.Q2_K_S: QuantType.Q2_K,
    FileType.Q3_K_S: QuantType.Q3_K,
    FileType.Q3_K_M: QuantType.Q3_K,
    FileType.Q3_K_L: QuantType.Q3_K,
    FileType.Q4_K_S: QuantType.Q4_K,
    FileType.Q4_K_M: QuantType.Q4_K,
    FileType.Q5_K_S: QuantType.Q5_K,
    FileType.Q5_K_M: QuantType.Q5_K,
    FileType.Q6_K: QuantType.Q6_K,
    FileType.IQ4_NL: QuantType.IQ4_NL,
    FileType.IQ4_XS: QuantType.IQ4_XS,
    # llama_ftype_get_default_type: the IQ2_S and IQ2_M names are one step above their
    # default tensor type, and IQ3_XS starts from IQ3_S (its mix then lowers some tensors)
    FileType.IQ2_XXS: QuantType.IQ2_XXS,
    FileType.IQ2_XS: QuantType.IQ2_XS,
    FileType.IQ2_S: QuantType.IQ2_XS,
    FileType.IQ2_M: QuantType.IQ2_S,
    FileType.IQ3_XXS: QuantType.IQ3_XXS,
    FileType.IQ3_XS: QuantType.IQ3_S,
    FileType.IQ3_S: QuantType.IQ3_S,
    FileType.IQ3_M: QuantType.IQ3_S,
    FileType.IQ1_S: QuantType.IQ1_S,
    FileType.IQ1_M: QuantType.IQ1_M,
    FileType.TQ1_0: QuantType.TQ1_0,
    FileType.TQ2_0: QuantType.TQ2_0,
    FileType.MXFP4_MOE: QuantType.MXFP4,
    FileType.NVFP4: QuantType.NVFP4,
    FileType.Q1_0: QuantType.Q1_0,
    FileType.Q2_0: QuantType.Q2_0,
}


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the input model.

    ``ne`` is the shape in ggml order: ``ne[0]`` is the row length (the
    contiguous axis), as GGUF and ``gguf.GGUFReader`` report it. A NumPy array
    of shape ``(rows, n)`` has ``ne == (n, rows)``; build from NumPy order with
    :meth:`from_numpy`. ``type`` is the tensor's current type.
    """

    name: str
    ne: Tuple[int, ...]
    type: QuantType = QuantType.F32

    def __post_init__(self) -> None:
        ne = tuple(int(d) for d in self.ne)
        if not 1 <= len(ne) <= 8:  # ggml: 4; ComfyUI-GGUF's video models carry 5-D tensors
            raise ValueError(f"{self.name}: tensors have 1 to 8 dimensions, got ne={ne}")
        if any(d < 0 for d in ne):
            raise ValueError(f"{self.name}: negative dimension in ne={ne}")
        object.__setattr__(self, "ne", ne)
        object.__setattr__(self, "type", QuantType.parse(self.type))

    @classmethod
    def from_numpy(cls, name: str, shape: Sequence[int], type: QTypeLike = QuantType.F32) -> TensorSpec:
        """From a NumPy-order shape (row length last)."""
        return cls(name, tuple(reversed([int(d) for d in shape])), QuantType.parse(type))

    @property
    def shape(self) -> Tuple[int, ...]:
        """The NumPy-order shape (row length last)."""
        return tuple(reversed(self.ne))

    @property
    def row_length(self) -> int:
        return self.ne[0]

    @property
    def n_dims(self) -> int:
        """ggml_n_dims: trailing axes of length 1 do not count, so (4096, 1) is 1-D."""
        for i in range(len(self.ne) - 1, 0, -1):
            if self.ne[i] > 1:
                return i + 1
        return 1


TensorLike = Union[TensorSpec, Tuple[str, Sequence[int]], Tuple[str, Sequence[int], QTypeLike]]


def _as_spec(t: Any) -> TensorSpec:
    if isinstance(t, TensorSpec):
        return t
    if isinstance(t, (tuple, list)) and len(t) in (2, 3):
        return TensorSpec(t[0], tuple(t[1]), QuantType.parse(t[2]) if len(t) == 3 else QuantType.F32)
    raise TypeError(f"expected a TensorSpec or a (name, ne[, type]) tuple, got {t!r}")


@dataclass(frozen=True)
class ModelFacts:
    """The model hyperparameters llama.cpp's rules look at.

    ``n_layer`` is ``{arch}.block_count``; ``n_head`` / ``n_head_kv`` are
    layer 0's head counts (``n_head_kv`` None means no GQA: equal to
    ``n_head``); ``n_expert`` is ``{arch}.expert_count`` (0 for dense models).
    ``is_70b`` forces llama.cpp's LLM_TYPE_70B, which gives attn_v more bits;
    None infers it from the architecture and the layer count as llama.cpp's
    model loader does for the architectures that have a 70B size.
    """

    architecture: str = "llama"
    n_layer: int = 0
    n_head: int = 0
    n_head_kv: Optional[int] = None
    n_expert: int = 0
    n_embd: int = 0
    is_70b: Optional[bool] = None

    @property
    def n_gqa(self) -> int:
        """llama_hparams::n_gqa(0): query heads per KV head, 0 when there are no KV heads."""
        kv = self.n_head if self.n_head_kv is None else self.n_head_kv
        return 0 if kv == 0 else self.n_head // kv

    @property
    def llm_type_70b(self) -> bool:
        if self.is_70b is not None:
            return self.is_70b
        arch = self.architecture.lower()
        kv = self.n_head if self.n_head_kv is None else self.n_head_kv
        if arch == "llama":
            # the loader calls 80 equal-head layers 65B; only with GQA is it 70B
            return self.n_layer == 80 and self.n_expert != 8 and self.n_head != kv
        return (arch, self.n_layer) in _LLM_TYPE_70B

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any], architecture: Optional[str] = None) -> ModelFacts:
        """From GGUF key/values: ``general.architecture``, ``{arch}.block_count``,
        ``{arch}.attention.head_count[_kv]`` (scalars or per-layer arrays),
        ``{arch}.expert_count`` and ``{arch}.embedding_length``."""
        arch = architecture if architecture is not None else meta.get("general.architecture")
        if not arch:
            raise ValueError("no general.architecture in the metadata; pass architecture=")
        arch = str(arch)

        def first(key: str, default: Optional[int]) -> Optional[int]:
            v = meta.get(f"{arch}.{key}")
            if v is None:
                return default
            if isinstance(v, (str, bytes)):
                raise ValueError(f"{arch}.{key} is not a number: {v!r}")
            if hasattr(v, "__len__"):
                return int(v[0]) if len(v) else default
            return int(v)

        n_layer = first("block_count", None)
        if n_layer is None and _is_diffusion(arch):
            return cls(architecture=arch)  # ComfyUI-GGUF diffusion models have no hyperparameters
        if n_layer is None:
            raise ValueError(f"no {arch}.block_count in the metadata")
        n_head = first("attention.head_count", 0) or 0
        return cls(
            architecture=arch,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=first("attention.head_count_kv", None),
            n_expert=first("expert_count", 0) or 0,
            n_embd=first("embedding_length", 0) or 0,
        )

    @classmethod
    def from_gguf(cls, source: Any) -> ModelFacts:
        """From a GGUF file path or a ``gguf.GGUFReader``."""
        return cls.from_gguf_metadata(_reader_metadata(_reader(source)))


def _is_diffusion(arch: Any) -> bool:
    from .diffusion import is_diffusion_architecture

    return is_diffusion_architecture(arch)


# llama.cpp's loaders name these (architecture, block_count) pairs LLM_TYPE_70B
_LLM_TYPE_70B = {("deci", 80), ("qwen2", 80), ("jais2", 68)}


@dataclass(frozen=True)
class QuantizeOptions:
    """llama-quantize's options that change the per-tensor choice.

    ``tensor_types``: ``(pattern, type)`` pairs, or ``"pattern=type"`` strings
    (parsed like ``--tensor-type``, which lowercases the pattern); each pattern
    is a regular expression searched anywhere in the tensor name and the first
    that matches wins. ``output_tensor_type`` / ``token_embedding_type`` set
    those two tensors' types. ``leave_output_tensor`` keeps output.weight as
    it is. ``pure`` turns the mix rules off. ``allow_requantize`` permits
    converting an already quantized tensor. ``imatrix``: False for none, True
    for an importance matrix with an entry for every tensor, or the names the
    imatrix has entries for. ``include_weights`` / ``exclude_weights`` are
    name substrings (as in llama-quantize, not regexes) that keep or drop
    imatrix entries; at most one of the two may be given. ``dry_run`` reports
    the errors llama-quantize would stop with on the plan instead of raising.

    Two options go beyond llama-quantize's per-tensor behaviour:
    ``missing_imatrix``: a tensor type that needs no importance matrix, given
    to exactly the tensors that would get a type needing one (IQ1_S, IQ1_M,
    IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS; Q2_K under Q2_K_S) but have no entry (or
    when there is no imatrix at all); without it such tensors are an error,
    raised for all of them at once before anything is written.
    ``prune_layers``: layer numbers to drop (``--prune-layers``); the remaining
    ``blk.N.`` tensors are renumbered as llama-quantize does and keep their
    importance entries under their old names.
    """

    tensor_types: Sequence[Union[str, Tuple[Union[str, Pattern[str]], QTypeLike]]] = ()
    output_tensor_type: Optional[QTypeLike] = None
    token_embedding_type: Optional[QTypeLike] = None
    leave_output_tensor: bool = False
    pure: bool = False
    allow_requantize: bool = False
    imatrix: Union[bool, Iterable[str]] = False
    include_weights: Sequence[str] = ()
    exclude_weights: Sequence[str] = ()
    dry_run: bool = False
    missing_imatrix: Optional[QTypeLike] = None
    prune_layers: Sequence[int] = ()


def parse_tensor_type(arg: str) -> Tuple[str, QuantType]:
    """Parse one ``--tensor-type`` argument ``pattern=type``.

    As llama-quantize does, the pattern is lowercased and the type name is
    case-insensitive.
    """
    name, sep, qtype = arg.partition("=")
    if not sep:
        raise ValueError(f"malformed tensor type {arg!r}: expected pattern=type")
    if not name:
        raise ValueError(f"missing tensor name in {arg!r}")
    if not qtype:
        raise ValueError(f"missing quantization type in {arg!r}")
    try:
        t = QuantType.parse(qtype)
    except ValueError:
        raise ValueError(f"invalid quantization type {qtype!r} in {arg!r}") from None
    return name.lower(), t


def parse_tensor_type_text(text: str) -> List[Tuple[str, QuantType]]:
    """Parse a ``--tensor-type-file``'s text: ``pattern=type`` items separated by any whitespace."""
    return [parse_tensor_type(item) for item in text.split()]


def load_tensor_type_file(path: Union[str, os.PathLike]) -> List[Tuple[str, QuantType]]:
    """Read a ``--tensor-type-file``."""
    with open(path, encoding="utf-8") as f:
        return parse_tensor_type_text(f.read())


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorPlan:
    """What llama-quantize does with one tensor.

    ``quantize``: the tensor is converted (its target type differs from its
    current type). ``allowed``: llama.cpp's "may this tensor be quantized at
    all" test passed; a tensor can be allowed and still keep its type.
    ``use_imatrix``: the conversion gets the importance matrix.
    ``requires_imatrix``: the target type is one llama.cpp refuses to make
    without one. ``fallback``: the row-length fallback changed the type.
    ``source_name``: the tensor's name in the input when ``prune_layers``
    renumbered it (its importance entry is looked up under that name), else
    None; :attr:`input_name` gives the input name either way.
    """

    name: str
    ne: Tuple[int, ...]
    current_type: QuantType
    target_type: QuantType
    quantize: bool
    allowed: bool
    category: str
    reason: str
    use_imatrix: bool = False
    requires_imatrix: bool = False
    fallback: bool = False
    error: Optional[str] = None
    source_name: Optional[str] = None

    @property
    def input_name(self) -> str:
        """The tensor's name in the input file."""
        return self.source_name if self.source_name is not None else self.name

    def __str__(self) -> str:
        return f"{self.name}: {self.target_type.name} ({self.reason})"


@dataclass(frozen=True)
class QuantPlan:
    """The per-tensor plan, in the order llama-quantize processes and writes tensors.

    ``lacking_imatrix``: the tensors whose type needs an importance entry they
    do not have (given ``missing_imatrix``'s type, or in error);
    ``imatrix_error``: the error that stops (or, in a dry run, would stop) the
    quantization for them. ``pruned``: the input tensors ``prune_layers``
    dropped; ``block_count``: the output's ``{arch}.block_count`` when layers
    were pruned, else None.
    """

    file_type: FileType
    model: ModelFacts
    entries: Tuple[TensorPlan, ...]
    n_fallback: int = 0
    has_imatrix: bool = False
    lacking_imatrix: Tuple[str, ...] = ()
    imatrix_error: Optional[str] = None
    pruned: Tuple[str, ...] = ()
    block_count: Optional[int] = None
    _index: Dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({e.name: i for i, e in enumerate(self.entries)})

    def __iter__(self) -> Iterator[TensorPlan]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: Union[str, int]) -> TensorPlan:
        if isinstance(key, str):
            return self.entries[self._index[key]]
        return self.entries[key]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def types(self) -> Dict[str, QuantType]:
        """Tensor name -> target type."""
        return {e.name: e.target_type for e in self.entries}

    def quantized(self) -> List[TensorPlan]:
        """The entries that are converted."""
        return [e for e in self.entries if e.quantize]

    def summary(self) -> Dict[QuantType, int]:
        """How many tensors end up in each type."""
        return dict(Counter(e.target_type for e in self.entries))

    @property
    def errors(self) -> List[str]:
        """The errors llama-quantize would stop with (collected under dry_run)."""
        return [e.error for e in self.entries if e.error]

    def to_text(self) -> str:
        return "\n".join(str(e) for e in self.entries)


# --------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------


class _Cat(enum.Enum):
    TOKEN_EMBD = "token_embd"
    ATTENTION_Q = "attn_q"
    ATTENTION_V = "attn_v"
    ATTENTION_K = "attn_k"
    ATTENTION_QKV = "attn_qkv"
    ATTENTION_KV_B = "attn_kv_b"
    ATTENTION_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OUTPUT = "output"
    OTHER = "other"


_TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")

# order matters: the first substring found decides
_CATEGORY_SUBSTRINGS = (
    ("attn_qkv.weight", _Cat.ATTENTION_QKV),
    ("attn_kv_b.weight", _Cat.ATTENTION_KV_B),
    ("attn_v.weight", _Cat.ATTENTION_V),
    ("attn_k.weight", _Cat.ATTENTION_K),
    ("attn_q.weight", _Cat.ATTENTION_Q),
    ("attn_output.weight", _Cat.ATTENTION_OUTPUT),
    ("ffn_up", _Cat.FFN_UP),
    ("ffn_gate", _Cat.FFN_GATE),
    ("ffn_down", _Cat.FFN_DOWN),
)

_ATTN_V_LIKE = (_Cat.ATTENTION_V, _Cat.ATTENTION_QKV, _Cat.ATTENTION_KV_B)


def _category(name: str) -> _Cat:
    if name == "output.weight":
        return _Cat.OUTPUT
    if name in _TOKEN_EMBD_NAMES:
        return _Cat.TOKEN_EMBD
    for sub, cat in _CATEGORY_SUBSTRINGS:
        if sub in name:
            return cat
    return _Cat.OTHER


# substrings of names llama.cpp never quantizes, with the reason shown in the plan
_NEVER_QUANTIZED = (
    ("ffn_gate_inp.weight", "expert router (ffn_gate_inp)"),
    ("ffn_gate_tid2eid.weight", "token-to-expert routing table"),
    ("altup", "altup tensor (tiny)"),
    ("laurel", "laurel tensor (tiny)"),
    ("per_layer_model_proj", "per_layer_model_proj (kept as is)"),
    ("ssm_conv1d", "ssm conv1d weight (tiny)"),
    ("shortconv.conv.weight", "short conv weight (tiny)"),
    ("indexer.k_proj.weight", "indexer projection (tiny)"),
    ("indexer.q_proj.weight", "indexer projection (tiny)"),
    *(
        (f"time_mix_{s}.weight", "RWKV time-mix weight (small)")
        for s in (
            "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2",
            "g1", "g2", "decay_w1", "decay_w2", "lerp_fused",
        )
    ),
    ("attn_rel_b.weight", "relative position bias"),
    (".position_embd", "multimodal position embedding"),
    ("sam.pos_embd", "multimodal position embedding"),
    ("sam.neck.", "multimodal SAM neck"),
    ("sam.net_", "multimodal SAM net"),
    (".rel_pos", "multimodal relative position"),
    (".patch_embd", "multimodal patch embedding"),
    (".patch_merger", "multimodal patch merger"),
    ("a.rvq.codebook", "audio codebook"),
    ("mm.a.code_embd", "audio codebook"),
)


def _refusal(spec: TensorSpec, opts: QuantizeOptions, only_copy: bool) -> Optional[str]:
    """Why llama.cpp will not quantize this tensor, or None when it may."""
    if only_copy:
        return "COPY keeps every tensor"
    if spec.n_dims < 2:
        return "1-D tensor"
    name = spec.name
    if not name.endswith("weight"):
        return "not a weight"
    if "_norm.weight" in name:
        return "norm weight"
    if opts.leave_output_tensor and name == "output.weight":
        return "leave_output_tensor"
    for sub, why in _NEVER_QUANTIZED:
        if sub in name:
            return why
    # llama.cpp spells these through the architecture's tensor table; no
    # architecture uses the names for anything else
    if name in ("position_embd.weight", "token_types.weight"):
        return "positional embedding or token types"
    return None


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    # the first and last eighth of the layers, and every third one in between
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


_LAYER_RE = re.compile(r"blk\.\s*([+-]?\d+)")


def _layer_of(name: str) -> Optional[int]:
    """The layer number sscanf(name, "blk.%d.") reads, or None."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def _load_order_key(spec: TensorSpec) -> Tuple[int, str]:
    # llama.cpp's loader keeps weights in a map ordered by layer, then name;
    # the layer counters of the mix rules rely on that order
    layer = _layer_of(spec.name)
    return (-1 if layer is None else layer, spec.name)


# tensor_type_fallback: what a type becomes when rows are not whole blocks of it (and F16
# when the rows are not whole blocks of the fallback either); other types have no fallback
_FALLBACK = {
    QuantType.IQ1_S: QuantType.IQ4_NL,
    QuantType.IQ1_M: QuantType.IQ4_NL,
    QuantType.IQ2_XXS: QuantType.IQ4_NL,
    QuantType.IQ2_XS: QuantType.IQ4_NL,
    QuantType.IQ2_S: QuantType.IQ4_NL,
    QuantType.IQ3_XXS: QuantType.IQ4_NL,
    QuantType.IQ3_S: QuantType.IQ4_NL,
    QuantType.IQ4_XS: QuantType.IQ4_NL,
    QuantType.Q2_0: QuantType.Q4_0,
    QuantType.Q2_K: QuantType.Q4_0,
    QuantType.Q3_K: QuantType.Q4_0,
    QuantType.TQ1_0: QuantType.Q4_0,
    QuantType.TQ2_0: QuantType.Q4_0,
    QuantType.Q4_K: QuantType.Q5_0,
    QuantType.Q5_K: QuantType.Q5_1,
    QuantType.Q6_K: QuantType.Q8_0,
}

_F = FileType
_Q = QuantType

_ATTN_OUT_Q5_K_FOR_8_EXPERTS = {
    _F.Q2_K, _F.IQ3_XS, _F.IQ3_XXS, _F.Q3_K_S, _F.Q3_K_M, _F.IQ4_NL, _F.Q4_K_S, _F.Q4_K_M, _F.IQ3_S, _F.IQ3_M, _F.IQ4_XS,
}

# the file types with their own branch in the mix: every tensor of theirs that the rules
# touch gets one of a few fixed types, whatever its category's usual upgrade
_LOW_BIT = {_F.IQ2_XXS, _F.IQ2_XS, _F.IQ1_S, _F.IQ2_S, _F.IQ2_M, _F.IQ1_M}
# file types whose output (and tied token embedding) is Q5_K rather than Q6_K
_OUTPUT_Q5_K = {_F.IQ2_XXS, _F.IQ2_XS, _F.IQ3_XXS, _F.IQ1_S, _F.IQ2_S, _F.IQ2_M, _F.IQ1_M}
# the untied token embedding of these file types
_TOKEN_EMBD = {
    _F.IQ2_XXS: _Q.Q2_K, _F.IQ2_XS: _Q.Q2_K, _F.IQ1_S: _Q.Q2_K, _F.IQ1_M: _Q.Q2_K,
    _F.IQ2_S: _Q.IQ3_S, _F.IQ2_M: _Q.IQ3_S, _F.IQ3_XXS: _Q.IQ3_S,
    _F.TQ1_0: _Q.Q4_K, _F.TQ2_0: _Q.Q4_K, _F.Q2_0: _Q.Q4_K,
}
# tensor types that need an importance matrix in any file type (Q2_K needs one under Q2_K_S)
IMATRIX_TYPES = frozenset({_Q.IQ1_S, _Q.IQ1_M, _Q.IQ2_XXS, _Q.IQ2_XS, _Q.IQ2_S, _Q.IQ3_XXS})


class _Planner:
    def __init__(self, model: ModelFacts, ftype: FileType, opts: QuantizeOptions, specs: List[TensorSpec]):
        self.model = model
        self.ftype = ftype
        self.opts = opts
        self.arch = model.architecture.lower()
        self.is_falcon = self.arch == "falcon"
        self.n_expert = max(1, model.n_expert)
        self.has_imatrix = False
        self.n_attention_wv = sum(1 for s in specs if _category(s.name) in _ATTN_V_LIKE)
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = model.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_fallback = 0
        # tied embeddings: without an output.weight the token embedding doubles as the output
        self.tied = not any(s.name == "output.weight" for s in specs)
        self.patterns: List[Tuple[Pattern[str], QuantType]] = []
        for item in opts.tensor_types:
            if isinstance(item, str):
                pat, t = parse_tensor_type(item)
            else:
                pat, t = item[0], QuantType.parse(item[1])
            self.patterns.append((pat if isinstance(pat, re.Pattern) else re.compile(pat), t))
        self.output_type = None if opts.output_tensor_type is None else QuantType.parse(opts.output_tensor_type)
        self.embd_type = None if opts.token_embedding_type is None else QuantType.parse(opts.token_embedding_type)

    def layer_info(self, counter: int, n_layer: int, name: str) -> Tuple[int, int]:
        if self.n_expert > 1:
            # experts are not stored in layer order, so the counter is no use
            layer = _layer_of(name)
            if layer is None:
                raise QuantizeError(f"Failed to determine layer for tensor {name}")
            if layer < 0 or layer >= n_layer:
                raise QuantizeError(f"Bad layer {layer} for tensor {name}. Must be in [0, {n_layer})")
            return layer, n_layer
        return counter, n_layer

    def mix(self, spec: TensorSpec, cat: _Cat, new: QuantType, notes: List[str]) -> QuantType:
        """llama_tensor_get_type_impl: the file type's mix rules."""
        f = self.ftype
        m = self.model
        name = spec.name
        before = new

        def note(what: str, why: str = "") -> None:
            if new != before:
                kind = "downgrade" if new.bits_per_weight < before.bits_per_weight else "upgrade"
                notes.append(f"mix {kind}: {what} -> {new.name}" + (f" ({why})" if why else ""))

        if cat == _Cat.OUTPUT or (self.tied and cat == _Cat.TOKEN_EMBD):
            what = "output" if cat == _Cat.OUTPUT else "tied token embedding (used as output)"
            if self.output_type is not None:
                notes.append(f"{what}: output_tensor_type {self.output_type.name}")
                return self.output_type
            why = ""
            if f == _F.MXFP4_MOE:
                new, why = _Q.Q8_0, "MXFP4_MOE"
            elif self.is_falcon or spec.row_length % new.block_size:
                new = _Q.Q8_0
                why = "falcon" if self.is_falcon else f"row length {spec.row_length} not divisible by {before.block_size}"
            elif f in _OUTPUT_Q5_K:
                new, why = _Q.Q5_K, f"{f.name}"
            elif new != _Q.Q8_0:
                new, why = _Q.Q6_K, ""
            note(what, why)
            return new

        if f == _F.MXFP4_MOE:
            # only the stacked expert matrices (a third axis) are MXFP4; BailingMoE3's MLA
            # projections are 3-D too, so there only the expert FFN roles count
            experts = len(spec.ne) > 2 and spec.ne[2] > 1
            if self.arch == "bailingmoe3" and cat not in (_Cat.FFN_UP, _Cat.FFN_GATE, _Cat.FFN_DOWN):
                experts = False
            if experts:
                new = _Q.MXFP4
                notes.append("MXFP4_MOE: expert tensor -> MXFP4")
            else:
                new = _Q.Q8_0
                notes.append("MXFP4_MOE: not an expert tensor -> Q8_0")
            return new

        if cat == _Cat.TOKEN_EMBD:
            # an untied token embedding changes only under the IQ1/IQ2/IQ3_XXS/TQ/Q2_0 file types
            new = _TOKEN_EMBD.get(f, new)
            note("token_embd", f.name)
            return new

        if f in _LOW_BIT:
            two_m = f in (_F.IQ2_S, _F.IQ2_M)
            if cat in _ATTN_V_LIKE:
                i = self.i_attention_wv
                if m.n_gqa >= 4 or m.n_expert >= 4:
                    new = _Q.Q4_K
                    why = f"n_gqa {m.n_gqa} >= 4" if m.n_gqa >= 4 else f"{m.n_expert} experts >= 4"
                else:
                    new, why = (_Q.IQ3_S if two_m else _Q.Q2_K), f"attn_v #{i}"
                self.i_attention_wv += 1
                note(cat.value, why)
            elif m.n_expert == 8 and cat == _Cat.ATTENTION_K:
                new = _Q.Q4_K
                note("attn_k", "8 experts")
            elif cat == _Cat.FFN_DOWN:
                # this branch counts ffn_down tensors even in MoE models, unlike the usual one
                i, n = self.i_ffn_down, self.n_ffn_down
                if i < n // 8:
                    new = _Q.IQ3_S if two_m else _Q.Q2_K
                self.i_ffn_down += 1
                note("ffn_down", f"ffn_down #{i} of {n}, first eighth")
            elif cat == _Cat.ATTENTION_OUTPUT:
                if m.n_expert == 8:
                    new = _Q.Q5_K
                elif f in (_F.IQ1_S, _F.IQ1_M):
                    new = _Q.IQ2_XXS
                elif two_m:
                    new = _Q.IQ3_S
                note("attn_output", "8 experts" if m.n_expert == 8 else f.name)
            return new

        if cat in _ATTN_V_LIKE:
            i, n = self.i_attention_wv, self.n_attention_wv
            gqa = m.n_gqa
            why = ""
            if f == _F.Q2_K:
                new = _Q.Q4_K if gqa >= 4 else _Q.Q3_K
                why = f"n_gqa {gqa} >= 4" if gqa >= 4 else f"n_gqa {gqa} < 4"
            elif f == _F.Q2_K_S and gqa >= 4:
                new, why = _Q.Q4_K, f"n_gqa {gqa} >= 4"
            elif f == _F.IQ3_XXS:
                if gqa >= 4:
                    new, why = _Q.Q4_K, f"n_gqa {gqa} >= 4"
                elif not self.has_imatrix:
                    new, why = _Q.IQ3_S, "no imatrix"
            elif f in (_F.IQ3_XS, _F.IQ3_S) and gqa >= 4:
                new, why = _Q.Q4_K, f"n_gqa {gqa} >= 4"
            elif f == _F.IQ3_M:
                new = _Q.Q4_K
            elif f == _F.Q3_K_M:
                new = _Q.Q5_K if i < 2 else _Q.Q4_K
                why = f"attn_v #{i} of {n}" + (" (first two)" if i < 2 else "")
            elif f == _F.Q3_K_L:
                new = _Q.Q5_K
            elif f in (_F.IQ4_NL, _F.IQ4_XS) and gqa >= 4:
                new, why = _Q.Q5_K, f"n_gqa {gqa} >= 4"
            elif f in (_F.Q4_K_M, _F.Q5_K_M) and _use_more_bits(i, n):
                new, why = _Q.Q6_K, f"attn_v #{i} of {n} gets more bits"
            elif f == _F.Q4_K_S and i < 4:
                new, why = _Q.Q5_K, f"attn_v #{i} of {n} (first four)"
            if m.llm_type_70b and new in (_Q.Q3_K, _Q.Q4_K):
                # 70B shares each attn_v among 8 heads: it is small, so more bits cost little
                new, why = _Q.Q5_K, "70B model"
            if m.n_expert == 8:
                new, why = _Q.Q8_0, "8 experts"
            self.i_attention_wv += 1
            note(cat.value, why)
            return new

        if cat == _Cat.ATTENTION_K:
            if m.n_expert == 8:
                new = _Q.Q8_0
            elif f == _F.IQ3_XS:
                new = _Q.IQ3_XXS
            elif f == _F.IQ3_XXS:
                new = _Q.IQ2_S
            note("attn_k", "8 experts" if m.n_expert == 8 else f.name)
            return new

        if cat == _Cat.ATTENTION_Q:
            if f == _F.IQ3_XS:
                new = _Q.IQ3_XXS
            elif f == _F.IQ3_XXS:
                new = _Q.IQ2_S
            note("attn_q", f.name)
            return new

        if cat == _Cat.FFN_DOWN:
            i, n = self.layer_info(self.i_ffn_down, self.n_ffn_down, name)
            more = _use_more_bits(i, n)
            where = f"layer {i} of {n}"
            why = where
            if f == _F.Q2_K:
                new = _Q.Q3_K
            elif f == _F.Q2_K_S:
                if i < n // 8:
                    new, why = _Q.Q4_K, f"{where}, first eighth"
            elif f == _F.IQ3_XXS and not self.has_imatrix:
                new = _Q.Q4_K if i < n // 8 else _Q.Q3_K
                why = f"{where}" + (", first eighth" if i < n // 8 else "") + ", no imatrix"
            elif f == _F.Q3_K_M:
                if i < n // 16:
                    new, why = _Q.Q5_K, f"{where}, first sixteenth"
                elif not self.is_falcon or more:
                    new = _Q.Q4_K
                    why = f"{where}, falcon, gets more bits" if self.is_falcon else where
                else:
                    new = _Q.Q3_K
            elif f == _F.IQ3_M and (i < n // 8 or (m.n_expert == 8 and more)):
                new = _Q.Q4_K
                why = f"{where}, first eighth" if i < n // 8 else f"{where}, 8 experts, gets more bits"
            elif f == _F.Q3_K_L:
                new = _Q.Q4_K if self.is_falcon else _Q.Q5_K
            elif f == _F.Q4_K_M:
                if self.is_falcon:
                    if i < n // 16:
                        new, why = _Q.Q6_K, f"{where}, falcon, first sixteenth"
                    elif more:
                        new, why = _Q.Q5_K, f"{where}, falcon, gets more bits"
                    else:
                        new = _Q.Q4_K
                elif more:
                    new, why = _Q.Q6_K, f"{where} gets more bits"
            elif i < n // 8 and f in (_F.IQ4_NL, _F.IQ4_XS) and not self.has_imatrix:
                new, why = _Q.Q5_K, f"{where}, first eighth, no imatrix"
            elif f == _F.Q5_K_M and more:
                new, why = _Q.Q6_K, f"{where} gets more bits"
            elif f == _F.Q4_K_S and not self.is_falcon and i < n // 8:
                new, why = _Q.Q5_K, f"{where}, first eighth"
            elif f in (_F.Q4_0, _F.Q5_0) and self.has_imatrix and i < n // 8:
                # an imatrix does not tame the first ffn_down layers of Q4_0/Q5_0
                new = _Q.Q4_1 if f == _F.Q4_0 else _Q.Q5_1
                why = f"{where}, first eighth, with imatrix"
            self.i_ffn_down += 1
            note("ffn_down", why)
            return new

        if cat == _Cat.ATTENTION_OUTPUT:
            if not self.is_falcon:
                if m.n_expert == 8:
                    if f in _ATTN_OUT_Q5_K_FOR_8_EXPERTS:
                        new = _Q.Q5_K
                elif f == _F.Q2_K:
                    new = _Q.Q3_K
                elif f == _F.IQ3_XXS:
                    new = _Q.IQ3_S
                elif f in (_F.Q3_K_M, _F.IQ3_M):
                    new = _Q.Q4_K
                elif f == _F.Q3_K_L:
                    new = _Q.Q5_K
            elif f == _F.Q3_K_L:
                new = _Q.Q4_K
            note("attn_output", "8 experts" if m.n_expert == 8 else ("falcon" if self.is_falcon else ""))
            return new

        # the source's own attn_qkv branch sits after the attn_v-like one and never runs
        if cat in (_Cat.FFN_GATE, _Cat.FFN_UP):
            gate = cat == _Cat.FFN_GATE
            counter = self.i_ffn_gate if gate else self.i_ffn_up
            i, n = self.layer_info(counter, self.n_ffn_gate if gate else self.n_ffn_up, name)
            if f == _F.IQ3_XS and n // 8 <= i < 7 * n // 8:
                new = _Q.IQ3_XXS
            if gate:
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
            note(cat.value, f"layer {i} of {n}, middle layers")
        return new

    def fallback(self, spec: TensorSpec, new: QuantType, notes: List[str]) -> Tuple[QuantType, bool]:
        ncols = spec.row_length
        qk = new.block_size
        if ncols % qk == 0:
            return new, False
        self.n_fallback += 1
        alt = _FALLBACK.get(new)
        if alt is None:
            raise QuantizeError(
                f"no tensor type fallback is defined for type {new.name} "
                f"({spec.name}: row length {ncols} not divisible by {qk})"
            )
        why = f"row length {ncols} not divisible by {qk}"
        if ncols % alt.block_size:
            notes.append(f"fallback {new.name}->F16: {why}, nor by {alt.block_size} for {alt.name}")
            return _Q.F16, True
        notes.append(f"fallback {new.name}->{alt.name}: {why}")
        return alt, True

    def target(self, spec: TensorSpec, cat: _Cat, notes: List[str]) -> Tuple[QuantType, bool]:
        """llama_tensor_get_type for a tensor that may be quantized."""
        if self.embd_type is not None and cat == _Cat.TOKEN_EMBD:
            notes.append(f"token_embedding_type {self.embd_type.name}")
            return self.embd_type, False
        if self.output_type is not None and cat == _Cat.OUTPUT:
            notes.append(f"output_tensor_type {self.output_type.name}")
            return self.output_type, False

        default = self.ftype.default_type
        assert default is not None
        new = default
        notes.append(f"file type {self.ftype.name} default {default.name}")
        if default.is_float:
            return new, False
        manual = False
        for pat, qtype in self.patterns:
            if pat.search(spec.name):
                notes.append(f"tensor_types {pat.pattern!r} -> {qtype.name}")
                new = qtype
                manual = True
                break
        if not manual and not self.opts.pure:
            new = self.mix(spec, cat, new, notes)
        elif self.opts.pure and not manual:
            notes.append("pure: no mix")
        return self.fallback(spec, new, notes)


def _requires_imatrix(name: str, target: QuantType, ftype: FileType) -> bool:
    """tensor_requires_imatrix: llama-quantize will not write this tensor without an entry."""
    if name in _TOKEN_EMBD_NAMES or name == "output.weight":
        return False
    if target in IMATRIX_TYPES:
        return True
    return target == QuantType.Q2_K and ftype == FileType.Q2_K_S


def _needs_imatrix_under(t: QuantType, ftype: FileType) -> bool:
    return t in IMATRIX_TYPES or (t == QuantType.Q2_K and ftype == FileType.Q2_K_S)


def _imatrix_entries(opts: QuantizeOptions, specs: List[TensorSpec]) -> set:
    if opts.include_weights and opts.exclude_weights:
        raise ValueError("include_weights and exclude_weights cannot be used together")
    if opts.imatrix is True:
        names = {s.name for s in specs}
    elif opts.imatrix is False or opts.imatrix is None:
        return set()
    elif isinstance(opts.imatrix, str):
        raise TypeError("imatrix must be a bool or a collection of tensor names, not a str")
    else:
        names = {str(n) for n in opts.imatrix}
    for sub in opts.exclude_weights:
        names = {n for n in names if sub not in n}
    if opts.include_weights:
        names = {n for n in names if any(sub in n for sub in opts.include_weights)}
    return names


def plan_quantization(
    tensors: Iterable[TensorLike],
    model: Union[ModelFacts, Mapping[str, Any]],
    ftype: FileTypeLike,
    options: Optional[QuantizeOptions] = None,
    **kwargs: Any,
) -> QuantPlan:
    """Decide every tensor's type the way llama-quantize does.

    ``tensors``: :class:`TensorSpec` objects or ``(name, ne[, type])`` tuples,
    ``ne`` in ggml order (row length first). ``model``: :class:`ModelFacts` or
    a GGUF metadata mapping. ``ftype``: a :class:`FileType` or its name / id.
    Options come as a :class:`QuantizeOptions` or as its fields in keyword
    arguments (not both).

    Returns the plan in llama-quantize's processing order (by layer, then
    name). Raises :class:`QuantizeError` where llama-quantize stops: a tensor
    that is already quantized would be converted without
    ``allow_requantize``, tensors need importance entries they do not get
    (one error naming all of them, see ``missing_imatrix``), a row length has
    no fallback, or an MoE tensor name has no valid layer. With
    ``dry_run=True`` the first two are recorded in ``TensorPlan.error`` (and
    ``QuantPlan.imatrix_error``) instead.

    With ``prune_layers`` the plan names the tensors as they will be written
    (renumbered), and the rules still count the input's ``block_count``
    layers, as llama-quantize's do.
    """
    if options is not None and kwargs:
        raise TypeError("pass either options= or keyword options, not both")
    opts = options if options is not None else QuantizeOptions(**kwargs)
    ft = FileType.parse(ftype)
    facts = model if isinstance(model, ModelFacts) else ModelFacts.from_gguf_metadata(model)
    if _is_diffusion(facts.architecture):
        from .diffusion import plan_diffusion

        return plan_diffusion(tensors, facts, ft, opts)
    if facts.n_layer < 1:
        raise ValueError("model.n_layer (block_count) must be at least 1")

    specs = [_as_spec(t) for t in tensors]
    seen: set = set()
    for s in specs:
        if s.name in seen:
            raise ValueError(f"duplicate tensor name {s.name!r}")
        seen.add(s.name)
    specs.sort(key=_load_order_key)
    entries_imatrix = _imatrix_entries(opts, specs)
    kept, pruned, block_count = _prune(specs, _prune_list(opts.prune_layers, facts.n_layer))
    specs = [s for s, _ in kept]
    source = {s.name: src for s, src in kept}

    only_copy = ft == FileType.COPY
    planner = _Planner(facts, ft, opts, specs)
    planner.has_imatrix = bool(entries_imatrix)
    missing_type = _missing_imatrix_type(opts.missing_imatrix, ft)

    # first pass: choose types (llama.cpp's preliminary loop)
    chosen = []
    lacking: List[Tuple[str, QuantType]] = []
    for s in specs:
        cat = _category(s.name)
        notes: List[str] = []
        refusal = _refusal(s, opts, only_copy)
        fell_back = False
        if refusal is not None:
            target = s.type
            notes.append(f"kept: {refusal}")
        else:
            target, fell_back = planner.target(s, cat, notes)
        requires = _requires_imatrix(s.name, target, ft)
        src = source[s.name] or s.name
        error = None
        # without any imatrix llama-quantize refuses every such tensor; with one, only those
        # it converts and finds no entry for
        if (
            refusal is None
            and requires
            and src not in entries_imatrix
            and (not planner.has_imatrix or target != s.type)
        ):
            lacking.append((s.name, target))
            if missing_type is not None:
                notes.append(f"missing_imatrix: no importance entry for {target.name} -> {missing_type.name}")
                target, fell_back2 = planner.fallback(s, missing_type, notes)
                fell_back = fell_back or fell_back2
                requires = False
            elif not planner.has_imatrix:
                error = (
                    f"this quantization requires an importance matrix: {s.name} would be {target.name} "
                    f"(pass imatrix=, or missing_imatrix=TYPE, or choose another file type)"
                )
            else:
                error = (
                    f"missing importance matrix for tensor {s.name} in a very low-bit quantization "
                    f"({target.name}); pass missing_imatrix=TYPE to give it a type that needs none"
                )
        chosen.append((s, cat, refusal is None, target, fell_back, requires, notes, error))

    imatrix_error = None
    if lacking and missing_type is None:
        imatrix_error = _imatrix_message(ft, lacking, planner.has_imatrix)
        if not opts.dry_run:
            raise QuantizeError(imatrix_error)

    # second pass: what the conversion loop checks
    entries = []
    for s, cat, allowed, target, fell_back, requires, notes, error in chosen:
        convert = target != s.type
        src = source[s.name]
        use_imatrix = convert and not target.is_float and (src or s.name) in entries_imatrix
        if convert:
            if error is None and not s.type.is_float and not opts.allow_requantize:
                error = f"requantizing from type {s.type.name} is disabled ({s.name}); pass allow_requantize=True"
            if error is None and s.row_length % target.block_size:
                # only the explicit output/token-embedding types skip the fallback
                error = (
                    f"{s.name}: row length {s.row_length} is not a multiple of the "
                    f"{target.name} block size {target.block_size}"
                )
            if error is not None and not opts.dry_run:
                raise QuantizeError(error)
        else:
            if allowed:
                notes.append(f"already {target.name}, copied")
        if src is not None:
            notes.insert(0, f"renumbered from {src}")
        entries.append(
            TensorPlan(
                name=s.name,
                ne=s.ne,
                current_type=s.type,
                target_type=target,
                quantize=convert,
                allowed=allowed,
                category=cat.value,
                reason="; ".join(notes),
                use_imatrix=use_imatrix,
                requires_imatrix=requires,
                fallback=fell_back,
                error=error,
                source_name=src,
            )
        )
    return QuantPlan(
        file_type=ft,
        model=facts,
        entries=tuple(entries),
        n_fallback=planner.n_fallback,
        has_imatrix=planner.has_imatrix,
        lacking_imatrix=tuple(n for n, _ in lacking),
        imatrix_error=imatrix_error,
        pruned=tuple(pruned),
        block_count=block_count,
    )


def _missing_imatrix_type(value: Optional[QTypeLike], ft: FileType) -> Optional[QuantType]:
    if value is None:
        return None
    t = QuantType.parse(value)
    if _needs_imatrix_under(t, ft):
        raise ValueError(
            f"missing_imatrix type {t.name} needs an importance matrix itself"
            + (" under Q2_K_S" if t == QuantType.Q2_K else "")
            + "; choose one that does not, such as Q2_K, Q3_K, Q4_K, IQ4_XS or Q8_0"
        )
    return t


def _imatrix_message(ft: FileType, lacking: Sequence[Tuple[str, QuantType]], has_imatrix: bool) -> str:
    types = ", ".join(sorted({t.name for _, t in lacking}))
    fix = (
        "; or give exactly these tensors a type that needs none with --missing-imatrix TYPE "
        "(missing_imatrix=TYPE), e.g. Q4_K"
    )
    if not has_imatrix:
        shown = ", ".join(f"{n} ({t.name})" for n, t in lacking[:8])
        more = f" and {len(lacking) - 8} more" if len(lacking) > 8 else ""
        return (
            f"this quantization requires an importance matrix: file type {ft.name} puts {len(lacking)} "
            f"tensor(s) in {types}, which llama.cpp will not make without one ({shown}{more}); "
            f"pass one with --imatrix FILE (imatrix= in Python){fix}"
        )
    first = lacking[0][0]
    others = f" and {len(lacking) - 1} other tensor(s)" if len(lacking) > 1 else ""
    listing = ", ".join(f"{n} ({t.name})" for n, t in lacking)
    return (
        f"missing importance matrix for tensor {first}{others} in a very low-bit quantization ({types}): "
        f"the importance matrix has no entry for {listing}{fix}"
    )


_PRUNE_RE = re.compile(r"blk\.(\d+)\.")


def parse_prune_layers(text: str) -> List[int]:
    """``--prune-layers L0,L1,...``: the layer numbers, sorted and without repeats."""
    out = set()
    for part in str(text).split(","):
        try:
            v = int(part.strip())
        except ValueError:
            raise ValueError(f"invalid layer id {part.strip()!r} in {text!r}: expected comma-separated layer numbers") from None
        if v < 0:
            raise ValueError(f"invalid layer id {v} in {text!r}: layer numbers are >= 0")
        out.add(v)
    return sorted(out)


def _prune_list(layers: Any, n_layer: int) -> List[int]:
    """--prune-layers: sorted, without repeats; ints or a "1,5,7" string."""
    if isinstance(layers, str):
        layers = parse_prune_layers(layers)
    out = set()
    for v in layers:
        try:
            if isinstance(v, bool):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise TypeError(f"layer numbers must be integers, not {type(v).__name__}") from None
        if v < 0:
            raise ValueError(f"invalid layer id {v}: layer numbers are >= 0")
        if v >= n_layer:
            raise ValueError(f"cannot prune layer {v}: the model has {n_layer} layers (0 to {n_layer - 1})")
        out.add(v)
    if out and len(out) >= n_layer:
        raise ValueError(f"pruning layers {sorted(out)} would leave none of the model's {n_layer} layers")
    return sorted(out)


def _prune(
    specs: List[TensorSpec], prune: List[int]
) -> Tuple[List[Tuple[TensorSpec, Optional[str]]], List[str], Optional[int]]:
    """llama-quantize's remap_layer over the tensors in load order: a pruned layer's tensors
    go; layers below the first pruned one keep their number; each later layer takes the next
    free number, in the order it is met. Returns (spec, input name if renamed) pairs, the
    dropped names and the new block count (None when nothing is pruned)."""
    if not prune:
        return [(s, None) for s in specs], [], None
    mapped: Dict[int, Optional[int]] = {}
    next_id = 0
    kept: List[Tuple[TensorSpec, Optional[str]]] = []
    dropped: List[str] = []
    for s in specs:
        m = _PRUNE_RE.search(s.name)
        if m is None:
            kept.append((s, None))
            continue
        blk = int(m.group(1))
        if blk not in mapped:
            if blk in prune:
                mapped[blk] = None
            elif blk < prune[0]:
                mapped[blk] = blk
                next_id = blk + 1
            else:
                mapped[blk] = next_id
                next_id += 1
        new = mapped[blk]
        if new is None:
            dropped.append(s.name)
            continue
        name = s.name[: m.start(1)] + str(new) + s.name[m.end(1):]
        kept.append((TensorSpec(name, s.ne, s.type), s.name) if name != s.name else (s, None))
    return kept, dropped, next_id


# --------------------------------------------------------------------------
# GGUF helpers
# --------------------------------------------------------------------------


def _reader(source: Any) -> Any:
    """A GGUF reader: kquant's own for paths; readers passed in are used as they are
    (kquant.GGUFReader, or gguf-py's GGUFReader, which has ``fields``)."""
    if hasattr(source, "tensors") and (hasattr(source, "metadata") or hasattr(source, "fields")):
        return source
    from .gguf import GGUFReader

    return GGUFReader(os.fspath(source))


def _reader_metadata(reader: Any) -> Dict[str, Any]:
    if hasattr(reader, "metadata"):
        return {k: v for k, v in reader.metadata.items() if not k.startswith("tokenizer.")}
    meta: Dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("tokenizer."):
            continue  # large and irrelevant here
        try:
            meta[key] = f.contents()
        except Exception:  # noqa: BLE001 - a field we cannot decode is one we do not need
            continue
    return meta


def tensors_from_gguf(source: Any) -> List[TensorSpec]:
    """The tensors of a GGUF file (a path, a kquant.GGUFReader or a gguf-py reader) as
    TensorSpecs. Raises ValueError for a tensor type kquant does not know."""
    reader = _reader(source)
    out = []
    for t in reader.tensors:
        if hasattr(reader, "metadata"):  # kquant: NumPy-order shape, qtype already typed
            if not isinstance(t.qtype, QuantType):
                raise ValueError(f"{t.name}: tensor type {t.qtype!r} is not a kquant quantization type")
            out.append(TensorSpec.from_numpy(t.name, t.shape, t.qtype))
            continue
        try:
            qt = QuantType(int(t.tensor_type))
        except ValueError:
            raise ValueError(f"{t.name}: tensor type {t.tensor_type!r} is not a kquant type") from None
        out.append(TensorSpec(str(t.name), tuple(int(d) for d in t.shape), qt))
    return out


def plan_gguf(
    source: Any,
    ftype: FileTypeLike,
    options: Optional[QuantizeOptions] = None,
    **kwargs: Any,
) -> QuantPlan:
    """:func:`plan_quantization` for a GGUF file (path or ``gguf.GGUFReader``)."""
    reader = _reader(source)
    return plan_quantization(tensors_from_gguf(reader), ModelFacts.from_gguf(reader), ftype, options, **kwargs)
