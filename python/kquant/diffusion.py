"""Image and video diffusion models in ComfyUI-GGUF's layout (Flux, SD3, SDXL, Wan, ...).

ComfyUI-GGUF (github.com/city96/ComfyUI-GGUF) converts a diffusion checkpoint to a BF16/F16
GGUF with ``tools/convert.py`` and quantizes it with llama.cpp b3962 patched by
``tools/lcpp.patch``. This module holds the facts of both steps, one table per architecture,
so that ``kquant quantize`` makes the same per-tensor choices without a patched llama.cpp:

* which tensors stay as they are (the patch's per-architecture name lists, only 2-D tensors
  quantized, plus llama.cpp's own "ends in weight", "no _norm.weight" tests);
* the upgrades of attention-v, fused qkv and feed-forward-down tensors in the _S/_M/_L mixes,
  with llama.cpp's counter of attention-v tensors, which b3962 advances in file order (a
  convert.py file from safetensors is sorted by name);
* the row-length fallback (a k-quant on rows not a multiple of 256 becomes F16);
* the shape corrections (tensors whose leading axes of 1 ggml would drop keep 3 axes);
* the metadata kept (everything, ``comfy.gguf.orig_shape.*`` included; file type and
  quantization version rewritten).

Beyond the patched tool: tensors with more than 4 axes (Wan, HunyuanVideo Conv3d weights) are
carried in the same run as F32, where ComfyUI-GGUF's ``fix_5d_tensors.py`` would put them;
the formats that need no importance matrix (IQ4_NL, IQ4_XS, ...) are allowed, where the patch
refuses every i-quant; and a safetensors checkpoint is read directly
(:class:`ConvertedCheckpoint`: what ``convert.py`` would write, without the file in between).

Sources of truth: ComfyUI-GGUF at commit 795e451 (``tools/lcpp.patch``, ``tools/convert.py``,
``tools/fix_5d_tensors.py``, ``loader.py``).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._types import QuantType
from .recipes import FileType, ModelFacts
from .tensors import TensorInfo, TensorSource, _read_st_header

__all__ = [
    "DiffusionArch",
    "ARCHITECTURES",
    "DETECTION_ORDER",
    "is_diffusion_architecture",
    "detect_architecture",
    "plan_diffusion",
    "corrected_shape",
    "ConvertedCheckpoint",
    "open_model",
    "source_for",
    "CheckpointSource",
    "needs_imatrix",
    "MAX_NAME_LEN",
    "ORIG_SHAPE_PREFIX",
]

ORIG_SHAPE_PREFIX = "comfy.gguf.orig_shape."
# convert.py refuses longer names; its patched ggml holds 128 bytes with the NUL
MAX_NAME_LEN = 127
# convert.py's thresholds: tensors this small stay F32; sd1/sdxl rows are regrouped by 256
_SMALL_TENSOR = 1024
_REGROUP_MIN = 512


@dataclass(frozen=True)
class DiffusionArch:
    """One architecture's facts.

    Quantizing (lcpp.patch): ``keep_substrings`` / ``keep_names`` name the tensors that stay
    unquantized; ``pad_to_3d`` the tensors whose shape is corrected to 3 axes
    (``(name, exact)`` pairs: an exact name or a substring).

    Converting (convert.py): ``detect`` lists key sets, any one of which identifies the
    architecture (all keys of the set present); ``banned`` keys mark a checkpoint in a layout
    ComfyUI-GGUF cannot load; ``hiprec`` substrings keep F32; ``ignore`` substrings drop the
    key; ``regroup`` reshapes tensors whose rows are not a multiple of 256 into rows of 256 and
    records the original shape (sd1, sdxl).
    """

    name: str
    keep_substrings: Tuple[str, ...] = ()
    keep_names: Tuple[str, ...] = ()
    pad_to_3d: Tuple[Tuple[str, bool], ...] = ()
    detect: Tuple[Tuple[str, ...], ...] = ()
    banned: Tuple[str, ...] = ()
    hiprec: Tuple[str, ...] = ()
    ignore: Tuple[str, ...] = ()
    regroup: bool = False
    has_5d: bool = False

    def keeps(self, name: str) -> bool:
        return name in self.keep_names or any(s in name for s in self.keep_substrings)


FLUX = DiffusionArch(
    "flux",
    keep_substrings=("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."),
    detect=(("transformer_blocks.0.attn.norm_added_k.weight",), ("double_blocks.0.img_attn.proj.weight",)),
    banned=("transformer_blocks.0.attn.norm_added_k.weight",),
)

SD3 = DiffusionArch(
    "sd3",
    keep_substrings=("final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.", "y_embedder.", "x_embedder."),
    keep_names=("proj_out.weight", "pos_embed"),
    pad_to_3d=(("pos_embed", True),),
    detect=(("transformer_blocks.0.attn.add_q_proj.weight",), ("joint_blocks.0.x_block.attn.qkv.weight",)),
    banned=("transformer_blocks.0.attn.add_q_proj.weight",),
)

AURA = DiffusionArch(
    "aura",
    keep_substrings=("t_embedder.", "init_x_linear."),
    keep_names=("modF.1.weight", "cond_seq_linear.weight", "final_linear.weight", "positional_encoding", "register_tokens"),
    pad_to_3d=(("positional_encoding", True), ("register_tokens", True)),
    detect=(("double_layers.3.modX.1.weight",), ("joint_transformer_blocks.3.ff_context.out_projection.weight",)),
    banned=("joint_transformer_blocks.3.ff_context.out_projection.weight",),
)

HIDREAM = DiffusionArch(
    "hidream",
    keep_substrings=("p_embedder.", "t_embedder.", "x_embedder.", "final_layer.", ".ff_i.gate.weight", "caption_projection."),
    detect=(("caption_projection.0.linear.weight", "double_stream_blocks.0.block.ff_i.shared_experts.w3.weight"),),
    hiprec=(".ff_i.gate.weight", "img_emb.emb_pos"),
)

COSMOS = DiffusionArch(
    "cosmos",
    keep_substrings=("p_embedder.", "t_embedder.", "t_embedding_norm.", "x_embedder.", "pos_embedder.", "final_layer."),
    detect=(("blocks.0.mlp.layer1.weight", "blocks.0.adaln_modulation_cross_attn.1.weight"),),
    hiprec=("pos_embedder",),
    ignore=("_extra_state", "accum_"),
)

LTXV = DiffusionArch(
    "ltxv",
    keep_substrings=("adaln_single.", "caption_projection.", "patchify_proj.", "proj_out.", "scale_shift_table"),
    detect=(
        (
            "adaln_single.emb.timestep_embedder.linear_2.weight",
            "transformer_blocks.27.scale_shift_table",
            "caption_projection.linear_2.weight",
        ),
    ),
    hiprec=("scale_shift_table",),
)

HYVID = DiffusionArch(
    "hyvid",
    keep_substrings=("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."),
    detect=(("double_blocks.0.img_attn_proj.weight", "txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight"),),
    has_5d=True,
)

WAN = DiffusionArch(
    "wan",
    keep_substrings=(
        "modulation.", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.", "img_emb.", "head.",
    ),
    # ".modulation" only when ggml would have dropped a leading 1; emb_pos always
    pad_to_3d=((".modulation", False), ("img_emb.emb_pos", True)),
    detect=(("blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation"),),
    hiprec=(".modulation",),
    has_5d=True,
)

SDXL = DiffusionArch(
    "sdxl",
    keep_substrings=(
        "class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.", "conv_in.", "conv_out.",
    ),
    keep_names=("input_blocks.0.0.weight", "out.2.weight"),
    detect=(
        ("down_blocks.0.downsamplers.0.conv.weight", "add_embedding.linear_1.weight"),
        (
            "input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight",
            "output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight",
        ),
        ("label_emb.0.0.weight",),
    ),
    regroup=True,
)

SD1 = DiffusionArch(
    "sd1",
    keep_substrings=SDXL.keep_substrings,
    keep_names=SDXL.keep_names,
    detect=(
        ("down_blocks.0.downsamplers.0.conv.weight",),
        (
            "input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "input_blocks.9.0.op.weight",
            "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight",
        ),
    ),
    regroup=True,
)

LUMINA2 = DiffusionArch(
    "lumina2",
    keep_substrings=("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.", "noise_refiner."),
    detect=(("cap_embedder.1.weight", "context_refiner.0.attention.qkv.weight"),),
)

ARCHITECTURES: Dict[str, DiffusionArch] = {
    a.name: a for a in (FLUX, SD1, SDXL, SD3, AURA, LTXV, HYVID, WAN, HIDREAM, COSMOS, LUMINA2)
}
# convert.py tries them in this order; the first whose key set is present wins
DETECTION_ORDER: Tuple[str, ...] = (
    "flux", "sd3", "aura", "hidream", "cosmos", "ltxv", "hyvid", "wan", "sdxl", "sd1", "lumina2",
)

# names the patch refuses outright: a checkpoint whose prefixes were not stripped
_NOT_A_UNET = ("model.diffusion_model.", "first_stage_model.", "single_transformer_blocks.", "joint_transformer_blocks.")

# the patch's upgrade rules, shared by every architecture (substring tests, in this order)
_ATTN_V = ("attn_v.weight", ".to_v.weight", ".v.weight", ".attn.w1v.weight", ".attn.w2v.weight", "_attn.v_proj.weight")
_ATTN_QKV = ("attn_qkv.weight", "attn.qkv.weight", "attention.qkv.weight")
_FFN_DOWN = (
    "ffn_down", ".ffn.2.weight", ".ff.net.2.weight", ".mlp.layer2.weight", ".adaln_modulation_mlp.2.weight",
    ".feed_forward.w2.weight",
)

# llama.cpp b3962's own "never quantize" substrings that can appear in any model
_LLAMA_KEEPS = (
    "_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d.weight", "time_mix_first.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "attn_rel_b.weight",
)

def is_diffusion_architecture(arch: Any) -> bool:
    return isinstance(arch, str) and arch.lower() in ARCHITECTURES


def needs_imatrix(t: QuantType) -> bool:
    """Whether ggml refuses to make `t` without an importance matrix."""
    flag = getattr(t, "requires_imatrix", None)
    if flag is not None:
        return bool(flag)
    return t.name in ("IQ2_XXS", "IQ2_XS", "IQ1_S")


def _category(name: str) -> str:
    if any(s in name for s in _ATTN_V):
        return "attn_v"
    if any(s in name for s in _ATTN_QKV):
        return "attn_qkv"
    if any(s in name for s in _FFN_DOWN) or ("experts." in name and ".w2.weight" in name):
        return "ffn_down"
    return "other"


def _upgrade(ftype: Any, cat: str, new: QuantType, i_attn_v: int) -> Tuple[QuantType, str]:
    """img_tensor_get_type's mix rules; returns the new type and why."""
    F, q = FileType, QuantType
    if cat == "attn_v":
        if ftype == F.Q2_K:
            return q.Q3_K, ""
        if ftype == F.Q3_K_M:
            return (q.Q5_K, f"attn_v #{i_attn_v}, first two") if i_attn_v < 2 else (q.Q4_K, f"attn_v #{i_attn_v}")
        if ftype == F.Q3_K_L:
            return q.Q5_K, ""
        if ftype in (F.Q4_K_M, F.Q5_K_M):
            return q.Q6_K, ""
        if ftype == F.Q4_K_S and i_attn_v < 4:
            return q.Q5_K, f"attn_v #{i_attn_v}, first four"
        return new, ""
    if cat == "attn_qkv":
        table = {F.Q3_K_M: q.Q4_K, F.Q3_K_L: q.Q4_K, F.Q4_K_M: q.Q5_K, F.Q5_K_M: q.Q6_K}
        return table.get(ftype, new), ""
    if cat == "ffn_down":
        table = {
            F.Q3_K_M: q.Q4_K, F.Q3_K_L: q.Q5_K, F.Q4_K_S: q.Q5_K, F.Q4_K_M: q.Q6_K, F.Q5_K_M: q.Q6_K,
            F.Q4_0: q.Q4_1, F.Q5_0: q.Q5_1,
        }
        return table.get(ftype, new), ""
    return new, ""


def _refusal(arch: DiffusionArch, spec: Any, only_copy: bool, leave_output: bool = False) -> Optional[str]:
    """Why the patched llama-quantize keeps this tensor as it is, or None."""
    if only_copy:
        return "COPY keeps every tensor"
    name = spec.name
    if leave_output and name == "output.weight":
        return "leave_output_tensor"
    if not name.endswith("weight"):
        return "not a weight"
    if spec.n_dims != 2:
        return f"{spec.n_dims}-D tensor (image models quantize only 2-D ones)"
    for s in _LLAMA_KEEPS:
        if s in name:
            return f"llama.cpp keeps {s}"
    if arch.keeps(name):
        return f"{arch.name} keeps this tensor unquantized"
    return None


def _patterns(items: Iterable[Any]) -> List[Tuple["re.Pattern[str]", QuantType]]:
    from .recipes import parse_tensor_type

    out = []
    for item in items:
        if isinstance(item, str):
            pat, t = parse_tensor_type(item)
        else:
            pat, t = item[0], QuantType.parse(item[1])
        out.append((pat if isinstance(pat, re.Pattern) else re.compile(pat), t))
    return out


def plan_diffusion(tensors: Iterable[Any], facts: Any, ftype: Any, options: Any = None) -> Any:
    """The patched llama-quantize's plan (see the module docs) as a :class:`kquant.recipes.QuantPlan`.

    Honoured options: ``tensor_types`` (kquant's pins: they win, go through the F16 fallback and
    do not advance the attention-v counter), ``pure`` (no upgrades), ``allow_requantize``,
    ``leave_output_tensor``, ``imatrix`` / ``include_weights`` / ``exclude_weights`` and
    ``dry_run``. ``output_tensor_type`` and ``token_embedding_type`` do nothing here, as in
    the patched tool (these models have no such tensors).
    """
    from . import recipes as R

    opts = options if options is not None else R.QuantizeOptions()
    ft = R.FileType.parse(ftype)
    arch = ARCHITECTURES[facts.architecture.lower()]
    specs = [R._as_spec(t) for t in tensors]
    seen: set = set()
    for s in specs:
        if s.name in seen:
            raise ValueError(f"duplicate tensor name {s.name!r}")
        seen.add(s.name)
        for bad in _NOT_A_UNET:
            if bad in s.name:
                raise R.QuantizeError(
                    f"{s.name}: not a supported diffusion model file (the {bad!r} prefix should have been "
                    f"stripped; convert the checkpoint with kquant or ComfyUI-GGUF's convert.py)"
                )
    # b3962 walks (and writes) the weights in file order; the sort by layer and name came in
    # a later release (llama.cpp PR 9935)
    only_copy = ft == R.FileType.COPY
    patterns = _patterns(opts.tensor_types)
    imat_names = R._imatrix_entries(opts, specs)
    has_imatrix = bool(imat_names)
    i_attn_v = 0
    n_fallback = 0
    entries = []
    for s in specs:
        notes: List[str] = []
        refusal = _refusal(arch, s, only_copy, opts.leave_output_tensor)
        fell_back = False
        cat = _category(s.name)
        if refusal is not None:
            target = s.type
            notes.append(f"kept: {refusal}")
        else:
            default = ft.default_type
            assert default is not None
            target = default
            notes.append(f"file type {ft.name} default {default.name}")
            manual = False
            for pat, qt in patterns:
                if pat.search(s.name):
                    notes.append(f"tensor_types {pat.pattern!r} -> {qt.name}")
                    target, manual = qt, True
                    break
            if not manual and not opts.pure:
                before = target
                target, why = _upgrade(ft, cat, target, i_attn_v)
                if cat == "attn_v":
                    i_attn_v += 1
                if target != before:
                    notes.append(f"mix upgrade: {cat} -> {target.name}" + (f" ({why})" if why else ""))
            elif opts.pure and not manual:
                notes.append("pure: no mix")
            if not target.is_float and s.row_length % target.block_size:
                # the patch sends a k-quant whose rows are not whole blocks to F16; kquant does the
                # same for every other type (ggml would stop there)
                notes.append(f"fallback {target.name}->F16: row length {s.row_length} not divisible by {target.block_size}")
                target, fell_back = QuantType.F16, True
                n_fallback += 1
        requires = refusal is None and (
            needs_imatrix(target) or (target == QuantType.Q2_K and ft == R.FileType.Q2_K_S)
        )
        convert = target != s.type
        use_imatrix = convert and not target.is_float and s.name in imat_names
        error = None
        if convert:
            if requires and not use_imatrix:
                error = (
                    f"{s.name} would be {target.name}, which needs an importance matrix "
                    f"(pass imatrix=, or choose a type that needs none: IQ4_NL, IQ4_XS, the k-quants, ...)"
                )
            elif not s.type.is_float and not opts.allow_requantize:
                error = f"requantizing from type {s.type.name} is disabled ({s.name}); pass allow_requantize=True"
            if error is not None and not opts.dry_run:
                raise R.QuantizeError(error)
        elif refusal is None:
            notes.append(f"already {target.name}, copied")
        entries.append(
            R.TensorPlan(
                name=s.name, ne=s.ne, current_type=s.type, target_type=target, quantize=convert,
                allowed=refusal is None, category=cat, reason="; ".join(notes), use_imatrix=use_imatrix,
                requires_imatrix=requires, fallback=fell_back, error=error,
            )
        )
    return R.QuantPlan(file_type=ft, model=facts, entries=tuple(entries), n_fallback=n_fallback, has_imatrix=has_imatrix)


def corrected_shape(arch: str, name: str, shape: Sequence[int]) -> Tuple[int, ...]:
    """The NumPy-order shape the patched llama-quantize restores for `name` (3 axes for SD3's
    pos_embed, AuraFlow's positional_encoding / register_tokens, Wan's modulations and
    emb_pos), given a shape that may have lost its leading 1s; other shapes unchanged.

    kquant keeps every tensor's axes anyway; this repairs files written by tools that dropped
    them (ggml itself drops leading axes of length 1 when it writes)."""
    a = ARCHITECTURES.get(arch.lower()) if isinstance(arch, str) else None
    shape = tuple(int(d) for d in shape)
    if a is None or len(shape) >= 3:
        return shape
    for key, exact in a.pad_to_3d:
        if (name == key) if exact else (key in name):
            return (1,) * (3 - len(shape)) + shape
    return shape


# --------------------------------------------------------------------------
# convert.py: a safetensors checkpoint read as the BF16/F16 GGUF it would become
# --------------------------------------------------------------------------

# safetensors dtype -> (NumPy dtype of the stored bytes, kind)
_ST_DTYPES = {
    "F32": ("<f4", "f32"), "BF16": ("<u2", "bf16"), "F16": ("<f2", "f16"), "F64": ("<f8", "other"),
    "F8_E4M3": ("u1", "f8_e4m3"), "F8_E5M2": ("u1", "f8_e5m2"),
    "I8": ("i1", "other"), "U8": ("u1", "other"), "I16": ("<i2", "other"), "U16": ("<u2", "other"),
    "I32": ("<i4", "other"), "U32": ("<u4", "other"), "I64": ("<i8", "other"), "U64": ("<u8", "other"),
    "BOOL": ("u1", "other"),
}


def _f8_table(exp_bits: int, man_bits: int, bias: int, e4m3: bool) -> np.ndarray:
    """All 256 float8 values as float32 (e4m3fn: no infinities, 0x7f/0xff NaN; e5m2: IEEE-like)."""
    out = np.empty(256, np.float32)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> man_bits) & ((1 << exp_bits) - 1)
        m = b & ((1 << man_bits) - 1)
        if e4m3 and e == 15 and m == 7:
            v = float("nan")
        elif not e4m3 and e == 31:
            v = float("inf") if m == 0 else float("nan")
        elif e == 0:
            v = m / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            v = (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)
        out[b] = sign * v
    return out


_F8 = {"f8_e4m3": _f8_table(4, 3, 7, True), "f8_e5m2": _f8_table(5, 2, 15, False)}


def _bf16_bits_to_f32(u: np.ndarray) -> np.ndarray:
    return (np.asarray(u, dtype=np.uint32) << 16).view(np.float32)


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    # round to nearest even, NaN kept quiet: what gguf-py's BF16 conversion does
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u.astype(np.uint64) + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 64).astype(np.uint16), r)


@dataclass
class _Entry:
    key: str  # the name in the checkpoint
    name: str  # the GGUF name (prefix stripped)
    file: Path
    offset: int
    kind: str
    npdt: str
    src_shape: Tuple[int, ...]
    shape: Tuple[int, ...]  # as written (sd1/sdxl tensors regrouped to rows of 256)
    qtype: QuantType


@dataclass(frozen=True)
class ConvertedTensorInfo:
    """A tensor of a :class:`ConvertedCheckpoint`, like :class:`kquant.gguf.GGUFTensorInfo`."""

    name: str
    shape: Tuple[int, ...]
    qtype: QuantType
    nbytes: int
    offset: int
    n_elements: int

    @property
    def raw_shape(self) -> Tuple[int, ...]:
        t = self.qtype
        return self.shape[:-1] + (self.shape[-1] // t.block_size * t.type_size,)


def _strip_prefix(keys: Sequence[str]) -> Tuple[Optional[str], Dict[str, str]]:
    """convert.py's prefix handling: key -> new name for the keys it keeps."""
    prefix = None
    for p in ("model.diffusion_model.", "model."):
        if any(k.startswith(p) for k in keys):
            prefix = p
            break
    if prefix is None and keys and all(k.startswith("net.") for k in keys):
        prefix = "net."
    if prefix is None:
        return None, {k: k for k in keys}
    # convert.py keeps a key when the prefix occurs anywhere in it and removes every occurrence
    return prefix, {k: k.replace(prefix, "") for k in keys if prefix in k}


def detect_architecture(names: Iterable[str]) -> DiffusionArch:
    """convert.py's detection on (prefix-stripped) checkpoint keys; ValueError if none fits."""
    have = set(names)
    for a in (ARCHITECTURES[n] for n in DETECTION_ORDER):
        for keys in a.detect:
            if all(k in have for k in keys):
                if any(k in have for k in a.banned):
                    raise ValueError(
                        f"this {a.name} checkpoint is in a layout ComfyUI-GGUF cannot load (diffusers rather "
                        f"than the reference key format); save it in the reference format first"
                    )
                return a
    raise ValueError(
        "unknown model architecture: not one of ComfyUI-GGUF's diffusion models "
        f"({', '.join(DETECTION_ORDER)}) by its tensor names"
    )


class ConvertedCheckpoint:
    """A safetensors diffusion checkpoint (a file or a folder of shards) seen as the GGUF
    ComfyUI-GGUF's ``convert.py`` writes from it, with the 5-D tensors that
    ``fix_5d_tensors.py`` would add back, in F32.

    Reader interface of :class:`kquant.GGUFReader` (``metadata``, ``metadata_type``,
    ``tensors``, ``tensor``, ``raw``, ``dequantize``, ``alignment``) so that
    :func:`kquant.quantize_model` quantizes it directly. ``raw`` converts on the fly (BF16
    kept, F32 sources rounded to F16 as convert.py does), so values match the converted file.
    """

    alignment = 32
    version = 3

    def __init__(self, path: Union[str, "os.PathLike[str]"]):
        p = Path(path)
        files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        if not files:
            raise ValueError(f"no .safetensors files in {p}")
        self.path = os.fspath(p)
        raw: List[Tuple[str, Path, int, str, Tuple[int, ...]]] = []
        for f in files:
            header, data_start = _read_st_header(f)
            header.pop("__metadata__", None)
            for key, e in header.items():
                dt = e.get("dtype") if isinstance(e, dict) else None
                if dt not in _ST_DTYPES:
                    raise ValueError(f"{f}: tensor {key!r} has dtype {dt!r}, which kquant cannot read")
                shape = tuple(int(d) for d in e.get("shape", ()))
                begin, end = (int(o) for o in e["data_offsets"])
                if end - begin != math.prod(shape) * np.dtype(_ST_DTYPES[dt][0]).itemsize:
                    raise ValueError(f"{f}: {key}: {end - begin} bytes for shape {shape} of {dt}")
                raw.append((key, f, data_start + begin, dt, shape))
        raw.sort(key=lambda r: r[0])  # safetensors' load_file hands convert.py the keys sorted
        self._maps: Dict[Path, np.memmap] = {}
        keys = [r[0] for r in raw]
        if len(set(keys)) != len(keys):
            dup = next(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(f"{p}: tensor {dup!r} appears in more than one shard")
        self.prefix, renamed = _strip_prefix(keys)
        arch = detect_architecture(renamed.values())
        self.arch = arch
        kept = [r for r in raw if r[0] in renamed]
        too_long = [(renamed[r[0]], len(renamed[r[0]].encode("utf-8"))) for r in kept]
        too_long = [t for t in too_long if t[1] > MAX_NAME_LEN]
        if too_long:
            listed = ", ".join(f"{n!r} ({k})" for n, k in too_long)
            raise ValueError(f"tensor names may be at most {MAX_NAME_LEN} bytes; too long: {listed}")
        dtypes = Counter(r[3] for r in kept)
        main = dtypes.most_common(1)[0][0] if dtypes else "F16"
        self.file_type = 32 if main == "BF16" else 1  # LLAMA_FTYPE_MOSTLY_BF16 / _F16
        self.metadata: Dict[str, Any] = {
            "general.architecture": arch.name,
            "general.quantization_version": 2,
            "general.file_type": self.file_type,
        }
        self._types: Dict[str, str] = {
            "general.architecture": "str", "general.quantization_version": "u32", "general.file_type": "u32",
        }
        self.ignored: List[str] = []
        self._entries: Dict[str, _Entry] = {}
        self.tensors: List[ConvertedTensorInfo] = []
        offset = 0
        for key, f, off, dt, shape in kept:
            name = renamed[key]
            if any(s in name for s in arch.ignore):
                self.ignored.append(name)
                continue
            npdt, kind = _ST_DTYPES[dt]
            if not shape:
                shape = (1,)  # GGUF has no 0-D tensors
            n = math.prod(shape)
            wide = kind in ("f32", "bf16")
            if len(shape) > 4:
                qt = QuantType.F32  # fix_5d_tensors.py adds these back in F32
            elif kind == "bf16":
                qt = QuantType.BF16
            else:
                qt = QuantType.F16
            small = len(shape) == 1 or n <= _SMALL_TENSOR or any(s in name for s in arch.hiprec)
            if wide and len(shape) <= 4 and small:
                qt = QuantType.F32
            out_shape = shape
            if (
                arch.regroup and 1 < len(shape) <= 4 and n >= _REGROUP_MIN and n % 256 == 0 and shape[-1] % 256 != 0
            ):
                out_shape = (n // 256, 256)
                self.metadata[ORIG_SHAPE_PREFIX + name] = list(shape)
                self._types[ORIG_SHAPE_PREFIX + name] = "arr[i32]"
            nbytes = n * qt.type_size
            self._entries[name] = _Entry(key, name, f, off, kind, npdt, shape, out_shape, qt)
            self.tensors.append(ConvertedTensorInfo(name, out_shape, qt, nbytes, offset, n))
            offset += nbytes
        self._index = {t.name: i for i, t in enumerate(self.tensors)}

    # -- reader interface ------------------------------------------------------------------

    def __enter__(self) -> "ConvertedCheckpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._maps.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[ConvertedTensorInfo]:
        return iter(self.tensors)

    def metadata_type(self, key: str) -> str:
        return self._types[key]

    @property
    def metadata_types(self) -> Dict[str, str]:
        return dict(self._types)

    def tensor(self, name: str) -> ConvertedTensorInfo:
        try:
            return self.tensors[self._index[name]]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None

    def _source(self, e: _Entry, rows: Any = None) -> np.ndarray:
        m = self._maps.get(e.file)
        if m is None:
            m = self._maps[e.file] = np.memmap(e.file, dtype=np.uint8, mode="r")
        n = math.prod(e.src_shape)
        a = m[e.offset:e.offset + n * np.dtype(e.npdt).itemsize].view(e.npdt)
        a = a.reshape(-1, e.shape[-1])
        return a if rows is None else a[rows]

    def rows(self, name: str, index: Any = None) -> np.ndarray:
        """Rows of the converted tensor (as written: regrouped for sd1/sdxl) as float32."""
        e = self._entries[name]
        a = self._source(e, index)
        if e.kind == "bf16":
            x = _bf16_bits_to_f32(a)
        elif e.kind in _F8:
            x = _F8[e.kind][a]
        else:
            x = np.asarray(a, dtype=np.float32)
        if e.qtype == QuantType.F16:
            with np.errstate(over="ignore"):
                x = x.astype(np.float16).astype(np.float32)
        return x

    def raw(self, name: str) -> np.ndarray:
        """The converted tensor's bytes, shaped like :meth:`kquant.GGUFReader.raw`."""
        e = self._entries[name]
        info = self.tensor(name)
        if e.qtype == QuantType.BF16:
            data = np.ascontiguousarray(self._source(e)).view(np.uint8)
        elif e.qtype == QuantType.F16:
            data = self.rows(name).astype("<f2").view(np.uint8)
        else:
            data = np.ascontiguousarray(self.rows(name), dtype="<f4").view(np.uint8)
        return data.reshape(info.raw_shape)

    def dequantize(self, name: str) -> np.ndarray:
        return self.rows(name).reshape(self.tensor(name).shape)


class _CorrectedGGUF:
    """A GGUFReader whose tensor shapes carry the patch's shape corrections."""

    def __init__(self, reader: Any, arch: str):
        import dataclasses

        self._r = reader
        self.tensors = [
            dataclasses.replace(t, shape=corrected_shape(arch, t.name, t.shape)) if len(t.shape) < 3 else t
            for t in reader.tensors
        ]
        self._by_name = {t.name: t for t in self.tensors}

    def __getattr__(self, item: str) -> Any:
        return getattr(self._r, item)

    def __enter__(self) -> "_CorrectedGGUF":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._r.close()

    def tensor(self, name: str) -> Any:
        return self._by_name[name]

    def dequantize(self, name: str) -> np.ndarray:
        return self._r.dequantize(name).reshape(self._by_name[name].shape)


def _is_safetensors(p: Path) -> bool:
    return p.suffix == ".safetensors" or (p.is_dir() and any(p.glob("*.safetensors")))


def open_model(path: Union[str, "os.PathLike[str]"]) -> Any:
    """The reader :func:`kquant.quantize_model` works on: a :class:`kquant.GGUFReader` (with the
    patch's shape corrections for a diffusion architecture), or, for a safetensors diffusion
    checkpoint, a :class:`ConvertedCheckpoint`."""
    from .gguf import GGUFReader

    p = Path(path)
    if _is_safetensors(p):
        try:
            return ConvertedCheckpoint(p)
        except ValueError as e:
            if "unknown model architecture" not in str(e):
                raise
            raise ValueError(
                f"{p}: {e}. kquant quantize reads GGUF files, and safetensors checkpoints only of these "
                f"diffusion models; convert other models to GGUF first (llama.cpp's convert_hf_to_gguf.py)"
            ) from None
    reader = GGUFReader(p)
    arch = reader.metadata.get("general.architecture")
    if is_diffusion_architecture(arch):
        return _CorrectedGGUF(reader, arch)
    return reader


def missing_5d_note(reader: Any) -> Optional[str]:
    """A warning for a Wan / HunyuanVideo GGUF from convert.py, which leaves its 5-D tensors
    out (they go to a side file for ``fix_5d_tensors.py``)."""
    arch = str(getattr(reader, "metadata", {}).get("general.architecture", "")).lower()
    a = ARCHITECTURES.get(arch)
    if a is None or not a.has_5d:
        return None
    names = {t.name for t in reader.tensors}
    missing = [
        n[: -len(".bias")] + ".weight"
        for n in names
        if n.endswith(".bias") and n[: -len(".bias")] + ".weight" not in names
        and any(s in n for s in ("patch_embedding.", "img_in."))
    ]
    if not missing:
        return None
    return (
        f"warning: {', '.join(sorted(missing))} missing: convert.py leaves {arch}'s 5-D tensors out of its GGUF; "
        f"quantize from the safetensors checkpoint instead (kquant keeps them), or add them with fix_5d_tensors.py"
    )


class CheckpointSource(TensorSource):
    """A :class:`kquant.tensors.TensorSource` over a :class:`ConvertedCheckpoint`, so that
    ``kquant tradeoffs`` and the size budgets measure the tensors that get quantized."""

    def __init__(self, checkpoint: ConvertedCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint
        self.description = f"{checkpoint.path} ({checkpoint.arch.name}, as converted by ComfyUI-GGUF's convert.py)"
        for t in checkpoint.tensors:
            key = checkpoint._entries[t.name].key
            self._add(TensorInfo(t.name, t.shape, t.qtype, t.nbytes, key if key != t.name else ""))
        self.facts = ModelFacts(architecture=checkpoint.arch.name)

    def rows(self, name: str, index: Optional[np.ndarray] = None) -> np.ndarray:
        return self.checkpoint.rows(name, index)


def source_for(path: Union[str, "os.PathLike[str]"]) -> Optional[CheckpointSource]:
    """A :class:`CheckpointSource` for a safetensors diffusion checkpoint, or None when the file
    is not one of the architectures here."""
    try:
        return CheckpointSource(ConvertedCheckpoint(path))
    except ValueError:
        return None
