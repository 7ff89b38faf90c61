"""ComfyUI-GGUF diffusion models: the patched llama-quantize's choices, 5-D tensors, long names,
the safetensors one-step path, and ComfyUI-GGUF's own reading of the output.

The oracle below is a straight transcription of ComfyUI-GGUF's tools/lcpp.patch (llama.cpp
b3962's llama_model_quantize_internal with the patch's image-model branches), written
independently of kquant.diffusion's tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

import kquant
from kquant.diffusion import ConvertedCheckpoint, corrected_shape, detect_architecture
from kquant.model import quantize_model
from kquant.recipes import QuantizeError, plan_quantization

from .diffusion_models import (
    MODELS,
    arrays,
    convert_types,
    to_bf16_exact,
    write_convert_style_gguf,
    write_safetensors,
)

gguf = pytest.importorskip("gguf")

ARCHS = sorted(MODELS)

# --------------------------------------------------------------------------
# the oracle: lcpp.patch, literally
# --------------------------------------------------------------------------

_DEFAULT = {
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0", "F16": "F16", "BF16": "BF16", "F32": "F32",
    "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS",
}


def _n_dims(ne) -> int:
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return n


def _patch_keeps(arch: str, name: str) -> bool:
    has = lambda s: s in name  # noqa: E731
    if arch in ("flux", "hyvid"):
        return any(map(has, ("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")))
    if arch in ("sd1", "sdxl"):
        return any(map(has, ("class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.",
                             "conv_in.", "conv_out."))) or name in ("input_blocks.0.0.weight", "out.2.weight")
    if arch == "sd3":
        return any(map(has, ("final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.", "y_embedder.",
                             "x_embedder."))) or name in ("proj_out.weight", "pos_embed")
    if arch == "aura":
        return any(map(has, ("t_embedder.", "init_x_linear."))) or name in (
            "modF.1.weight", "cond_seq_linear.weight", "final_linear.weight", "positional_encoding", "register_tokens")
    if arch == "ltxv":
        return any(map(has, ("adaln_single.", "caption_projection.", "patchify_proj.", "proj_out.", "scale_shift_table")))
    if arch == "wan":
        return any(map(has, ("modulation.", "patch_embedding.", "text_embedding.", "time_projection.",
                             "time_embedding.", "img_emb.", "head.")))
    if arch == "hidream":
        return any(map(has, ("p_embedder.", "t_embedder.", "x_embedder.", "final_layer.", ".ff_i.gate.weight",
                             "caption_projection.")))
    if arch == "cosmos":
        return any(map(has, ("p_embedder.", "t_embedder.", "t_embedding_norm.", "x_embedder.", "pos_embedder.",
                             "final_layer.")))
    if arch == "lumina2":
        return any(map(has, ("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.",
                             "noise_refiner.")))
    raise AssertionError(arch)


def oracle(arch: str, tensors, ftype: str) -> Dict[str, str]:
    """name -> type the patched llama-quantize writes; tensors: [(name, ne, type name)]."""
    counters = {"wv": 0}
    out = {}
    # b3962 walks the weights in file order
    for name, ne, cur in tensors:
        q = name.endswith("weight") and _n_dims(ne) >= 2 and "_norm.weight" not in name
        q = q and "ffn_gate_inp.weight" not in name and "attn_rel_b.weight" not in name
        q = q and not _patch_keeps(arch, name) and _n_dims(ne) == 2
        if not q:
            out[name] = cur
            continue
        new = _DEFAULT[ftype]
        if any(s in name for s in ("attn_v.weight", ".to_v.weight", ".v.weight", ".attn.w1v.weight",
                                   ".attn.w2v.weight", "_attn.v_proj.weight")):
            if ftype == "Q2_K":
                new = "Q3_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if counters["wv"] < 2 else "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M"):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and counters["wv"] < 4:
                new = "Q5_K"
            counters["wv"] += 1
        elif any(s in name for s in ("attn_qkv.weight", "attn.qkv.weight", "attention.qkv.weight")):
            new = {"Q3_K_M": "Q4_K", "Q3_K_L": "Q4_K", "Q4_K_M": "Q5_K", "Q5_K_M": "Q6_K"}.get(ftype, new)
        elif (
            "ffn_down" in name or ("experts." in name and ".w2.weight" in name)
            or any(s in name for s in (".ffn.2.weight", ".ff.net.2.weight", ".mlp.layer2.weight",
                                       ".adaln_modulation_mlp.2.weight", ".feed_forward.w2.weight"))
        ):
            new = {"Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "Q4_K_S": "Q5_K", "Q4_K_M": "Q6_K", "Q5_K_M": "Q6_K",
                   "Q4_0": "Q4_1", "Q5_0": "Q5_1"}.get(ftype, new)
        block = kquant.QuantType[new].block_size
        if ne[0] % block:
            new = "F16"  # the patch's fallback for k-quants; kquant's for the others
        out[name] = new
    return out


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


def _converted(arch: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, str], list]:
    """(checkpoint arrays, GGUF-named arrays as convert.py stores them, their types, orig_shape kvs)."""
    a = arrays(arch)
    prefix = "net." if arch == "cosmos" else ""
    named, kvs = {}, []
    for k, x in a.items():
        n = k[len(prefix):]
        if arch == "cosmos" and ("_extra_state" in n or "accum_" in n):
            continue
        if x.ndim > 4:
            continue  # convert.py leaves these to fix_5d_tensors.py
        if arch in ("sd1", "sdxl") and x.ndim > 1 and x.size >= 512 and x.size % 256 == 0 and x.shape[-1] % 256:
            kvs.append((f"comfy.gguf.orig_shape.{n}", list(x.shape)))
            x = x.reshape(-1, 256)
        named[n] = x
    # convert.py writes a safetensors checkpoint's tensors in key order (and the orig_shape keys with them)
    named = dict(sorted(named.items()))
    kvs.sort()
    return a, named, convert_types(arch, named), kvs


@pytest.fixture(scope="module")
def gguf_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("diffusion")
    out = {}
    for arch in ARCHS:
        _, named, types, kvs = _converted(arch)
        out[arch] = write_convert_style_gguf(d / f"{arch}-BF16.gguf", arch, named, types, kvs)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {arch: write_safetensors(d / f"{arch}.safetensors", arrays(arch)) for arch in ARCHS}


FTYPES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q4_0", "Q4_1",
          "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS", "F16", "BF16"]


# --------------------------------------------------------------------------
# the per-tensor choices
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_quantizes_with_the_patched_tools_choices(arch, gguf_models):
    with kquant.GGUFReader(gguf_models[arch]) as r:
        tensors = [(t.name, tuple(reversed(t.shape)), t.qtype.name) for t in r.tensors]
    for ft in FTYPES:
        report = quantize_model(gguf_models[arch], None, ft, dry_run=True)
        got = {t.name: t.target_type.name for t in report.tensors}
        assert got == oracle(arch, tensors, ft), (arch, ft)
        # llama-quantize b3962 writes in file order
        assert [t.name for t in report.tensors] == [t[0] for t in tensors]


def test_attention_v_counter_follows_file_order(tmp_path):
    # a convert.py file from a .ckpt keeps the checkpoint's (module) order, not name order
    rng = np.random.default_rng(4)
    names = [f"blocks.{b}.self_attn.v.weight" for b in (0, 1, 2, 10, 11)]
    t = {n: to_bf16_exact(rng.standard_normal((256, 256), dtype=np.float32)) for n in names}
    t["blocks.0.self_attn.norm_q.weight"] = np.ones(256, np.float32)
    t["text_embedding.2.weight"] = t[names[0]]
    t["head.modulation"] = np.ones((1, 2, 256), np.float32)
    types = {n: "BF16" if x.ndim == 2 else "F32" for n, x in t.items()}
    p = write_convert_style_gguf(tmp_path / "wan.gguf", "wan", t, types)
    got = {r.name: r.target_type.name for r in quantize_model(p, None, "Q4_K_S", dry_run=True).tensors}
    assert [got[n] for n in names] == ["Q5_K"] * 4 + ["Q4_K"]


def test_hand_checked_choices(gguf_models):
    def plan(arch, ft):
        return {t.name: t.target_type.name for t in quantize_model(gguf_models[arch], None, ft, dry_run=True).tensors}

    flux = plan("flux", "Q4_K_M")
    assert flux["double_blocks.0.img_attn.qkv.weight"] == "Q5_K"  # fused qkv
    assert flux["double_blocks.0.img_mlp.2.weight"] == "Q4_K"  # no ffn_down rule matches Flux's names
    assert flux["img_in.weight"] == flux["final_layer.linear.weight"] == "BF16"  # kept
    assert flux["double_blocks.0.img_attn.norm.query_norm.scale"] == "F32"
    wan = plan("wan", "Q4_K_S")
    # attention-v counted in file order, which convert.py sorts by name (it gets the keys of a
    # safetensors file sorted): blocks.0 (cross, self), blocks.1, blocks.10, then blocks.2
    assert [wan[f"blocks.{b}.self_attn.v.weight"] for b in (0, 1, 10, 2)] == ["Q5_K", "Q5_K", "Q5_K", "Q4_K"]
    assert wan["blocks.0.cross_attn.v.weight"] == "Q5_K"
    assert wan["blocks.0.ffn.2.weight"] == "Q5_K" and wan["blocks.0.ffn.0.weight"] == "Q4_K"
    assert wan["blocks.0.modulation"] == "F32" and wan["text_embedding.2.weight"] == "BF16"
    aura = plan("aura", "Q3_K_M")
    assert [aura[n] for n in ("double_layers.0.attn.w1v.weight", "double_layers.0.attn.w2v.weight",
                              "double_layers.3.attn.w1v.weight")] == ["Q5_K", "Q5_K", "Q4_K"]
    hid = plan("hidream", "Q4_0")
    assert hid["double_stream_blocks.0.block.ff_i.experts.0.w2.weight"] == "Q4_1"
    assert hid["double_stream_blocks.0.block.ff_i.shared_experts.w2.weight"] == "Q4_1"
    assert hid["double_stream_blocks.0.block.ff_i.gate.weight"] == "F32"
    cosmos = plan("cosmos", "Q4_K_M")
    assert cosmos["blocks.0.self_attn.v_proj.weight"] == "Q6_K" and cosmos["blocks.0.mlp.layer2.weight"] == "Q6_K"
    assert cosmos["blocks.0.cross_attn.v_proj.weight"] == "Q6_K"
    sdxl = plan("sdxl", "Q5_K_S")
    assert sdxl["input_blocks.3.0.op.weight"] == "Q5_K"  # a conv weight regrouped to rows of 256
    assert sdxl["input_blocks.0.0.weight"] == sdxl["out.2.weight"] == "BF16"
    assert sdxl["input_blocks.4.1.small.weight"] == "F16"  # F32 (small), rows of 64: k-quant falls back to F16
    lumina = plan("lumina2", "Q5_K_M")
    assert lumina["layers.0.attention.qkv.weight"] == lumina["layers.0.feed_forward.w2.weight"] == "Q6_K"
    assert lumina["context_refiner.0.attention.qkv.weight"] == "BF16"
    sd3 = plan("sd3", "Q8_0")
    assert sd3["pos_embed"] == "BF16" and sd3["x_embedder.proj.weight"] == "BF16"


def test_importance_matrix_rules(gguf_models):
    # the patch refuses every i-quant; kquant offers those ggml makes without an importance matrix
    for ft in ("IQ4_NL", "IQ4_XS"):
        out = gguf_models["flux"].parent / f"flux-{ft}.gguf"
        rep = quantize_model(gguf_models["flux"], out, ft)
        assert ft in {t.target_type.name for t in rep.tensors}
        _, sd = comfy_load(out)  # ComfyUI-GGUF dequantizes both (dequant.py)
        x = _converted("flux")[1]["double_blocks.0.img_mlp.0.weight"]
        y = sd["double_blocks.0.img_mlp.0.weight"]
        assert np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2)) < 0.12
    # llama.cpp's Q2_K_S needs one, for image models too
    with pytest.raises(QuantizeError, match="importance matrix"):
        quantize_model(gguf_models["flux"], None, "Q2_K_S")
    plan = plan_quantization([("double_blocks.0.img_attn.proj.weight", (256, 256), "BF16")],
                             {"general.architecture": "flux"}, "Q2_K_S", imatrix=True)
    assert plan["double_blocks.0.img_attn.proj.weight"].use_imatrix


def test_pins_and_pure(gguf_models):
    pinned = {t.name: t.target_type.name for t in quantize_model(
        gguf_models["wan"], None, "Q4_K_S", tensor_types=["self_attn.v=q8_0", "ffn\\.0=q6_k"], dry_run=True).tensors}
    assert pinned["blocks.0.self_attn.v.weight"] == "Q8_0" and pinned["blocks.0.ffn.0.weight"] == "Q6_K"
    # pinned tensors do not advance the attention-v counter: the cross-attention one is first
    assert pinned["blocks.0.cross_attn.v.weight"] == "Q5_K"
    pure = {t.name: t.target_type.name for t in quantize_model(gguf_models["wan"], None, "Q4_K_S", pure=True,
                                                               dry_run=True).tensors}
    assert pure["blocks.0.self_attn.v.weight"] == pure["blocks.0.ffn.2.weight"] == "Q4_K"


def test_unstripped_checkpoint_is_refused():
    with pytest.raises(QuantizeError, match="model.diffusion_model."):
        plan_quantization([("model.diffusion_model.img_in.weight", (64, 256), "BF16")],
                          {"general.architecture": "flux"}, "Q4_K_S")


def test_shape_corrections():
    assert corrected_shape("sd3", "pos_embed", (64, 256)) == (1, 64, 256)
    assert corrected_shape("aura", "register_tokens", (8, 256)) == (1, 8, 256)
    assert corrected_shape("wan", "blocks.3.modulation", (6, 256)) == (1, 6, 256)
    assert corrected_shape("wan", "img_emb.emb_pos", (514, 256)) == (1, 514, 256)
    assert corrected_shape("wan", "blocks.3.self_attn.v.weight", (256, 256)) == (256, 256)
    assert corrected_shape("flux", "pos_embed", (64, 256)) == (64, 256)
    assert corrected_shape("sd3", "pos_embed", (1, 64, 256)) == (1, 64, 256)


def test_trimmed_shapes_are_restored(tmp_path):
    # a file from a tool that dropped the leading 1 (as ggml's writer does) gets its 3 axes back
    x = to_bf16_exact(np.random.default_rng(1).standard_normal((64, 256), dtype=np.float32))
    w = to_bf16_exact(np.random.default_rng(2).standard_normal((768, 256), dtype=np.float32))
    src = write_convert_style_gguf(tmp_path / "sd3.gguf", "sd3", {"pos_embed": x, "joint_blocks.0.x_block.attn.qkv.weight": w},
                                   {"pos_embed": "BF16", "joint_blocks.0.x_block.attn.qkv.weight": "BF16"})
    quantize_model(src, tmp_path / "out.gguf", "Q8_0")
    with kquant.GGUFReader(tmp_path / "out.gguf") as r:
        assert r.tensor("pos_embed").shape == (1, 64, 256)
        assert np.array_equal(r.dequantize("pos_embed")[0], x)


# --------------------------------------------------------------------------
# ComfyUI-GGUF's loader, re-implemented in a few lines (loader.py: gguf_sd_loader)
# --------------------------------------------------------------------------

IMG_ARCH_LIST = {"flux", "sd1", "sdxl", "sd3", "aura", "hidream", "cosmos", "ltxv", "hyvid", "wan", "lumina2"}


def comfy_load(path) -> Tuple[str, Dict[str, np.ndarray]]:
    """What ComfyUI-GGUF's gguf_sd_loader does with a file, with NumPy in place of torch: gguf-py's
    GGUFReader, the architecture check, comfy.gguf.orig_shape.* (an ARRAY of INT32) else the
    reversed GGUF shape, F32/F16 viewed in that shape, the rest dequantized (as its ops do)."""
    r = gguf.GGUFReader(str(path))
    f = r.get_field("general.architecture")
    assert f is not None and f.types == [gguf.GGUFValueType.STRING]
    arch = str(f.parts[f.data[-1]], encoding="utf-8")
    assert arch in IMG_ARCH_LIST
    out = {}
    for t in r.tensors:
        field = r.get_field(f"comfy.gguf.orig_shape.{t.name}")
        if field is not None:
            assert field.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
            shape = tuple(int(field.parts[i][0]) for i in field.data)
        else:
            shape = tuple(int(v) for v in reversed(t.shape))
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            x = np.asarray(t.data).reshape(shape).astype(np.float32)
        else:
            x = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        out[t.name] = x
    return arch, out


_TOL = {"F32": 0, "BF16": 0, "F16": 1e-3, "Q8_0": 0.01, "Q6_K": 0.03, "Q5_K": 0.06, "Q5_1": 0.06, "Q5_0": 0.06,
        "Q4_K": 0.12, "Q4_1": 0.12, "Q4_0": 0.12, "IQ4_XS": 0.12, "IQ4_NL": 0.12}


@pytest.mark.parametrize("arch", ARCHS)
def test_comfyui_loader_reads_the_one_step_output(arch, checkpoints, tmp_path):
    out = tmp_path / f"{arch}-Q4_K_M.gguf"
    quantize_model(checkpoints[arch], out, "Q4_K_M")
    loaded_arch, sd = comfy_load(out)
    assert loaded_arch == arch
    ref = arrays(arch)
    prefix = "net." if arch == "cosmos" else ""
    expected = {k[len(prefix):]: v for k, v in ref.items() if not ("_extra_state" in k or "accum_" in k)}
    assert set(sd) == set(expected)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    for name, x in expected.items():
        y = sd[name]
        assert y.shape == x.shape, name  # 5-D, regrouped and leading-1 shapes all come back
        err = float(np.sqrt(np.mean((y - x) ** 2)) / max(np.sqrt(np.mean(x**2)), 1e-12))
        assert err <= _TOL[types[name]], (name, types[name], err)


@pytest.mark.parametrize("arch", ["wan", "hyvid"])
def test_5d_tensors_in_the_same_run(arch, checkpoints, tmp_path):
    out = tmp_path / "q.gguf"
    quantize_model(checkpoints[arch], out, "Q5_K_M")
    name = "patch_embedding.weight" if arch == "wan" else "img_in.proj.weight"
    with kquant.GGUFReader(out) as r:
        t = r.tensor(name)
        assert t.shape == (256, 16, 1, 2, 2) and t.qtype == kquant.QuantType.F32  # as fix_5d_tensors.py adds it
        assert np.array_equal(r.dequantize(name), arrays(arch)[name])
    # a GGUF that already holds the 5-D tensor (a fixed file, or kquant's own) is requantized as is
    again = tmp_path / "again.gguf"
    quantize_model(out, again, "Q8_0", allow_requantize=True)
    with kquant.GGUFReader(again) as r:
        assert r.tensor(name).shape == (256, 16, 1, 2, 2)


def test_missing_5d_tensor_is_reported(gguf_models):
    logs = []
    quantize_model(gguf_models["wan"], None, "Q4_K_S", dry_run=True, log=logs.append)
    assert any("patch_embedding.weight" in m and "5-D" in m for m in logs)


def test_long_names(tmp_path):
    long = "blocks.0." + "x" * (127 - len("blocks.0.") - len(".v.weight")) + ".v.weight"
    assert len(long) == 127
    a = arrays("wan")
    a[long] = a.pop("blocks.0.cross_attn.v.weight")
    ck = write_safetensors(tmp_path / "wan.safetensors", a)
    out = tmp_path / "wan.gguf"
    quantize_model(ck, out, "Q4_K_S")
    _, sd = comfy_load(out)
    assert sd[long].shape == (256, 256)
    with kquant.GGUFReader(out) as r:
        assert r.tensor(long).qtype == kquant.QuantType.Q5_K  # an attention-v, counted like the rest
    # from a GGUF (gguf-py writes long names too) to a GGUF
    again = tmp_path / "again.gguf"
    quantize_model(out, again, "Q8_0", allow_requantize=True)
    a[long + "x"] = a.pop(long)
    with pytest.raises(ValueError, match="127"):
        ConvertedCheckpoint(write_safetensors(tmp_path / "too_long.safetensors", a))


# --------------------------------------------------------------------------
# the safetensors one-step path: what convert.py writes, quantized
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_conversion_matches_convert_py(arch, checkpoints, tmp_path):
    """COPY writes the converted file itself: the same tensors, types, values and metadata as the
    convert.py-style file written with gguf-py (plus the 5-D tensors fix_5d_tensors.py adds)."""
    out = tmp_path / "copy.gguf"
    quantize_model(checkpoints[arch], out, "COPY")
    ref = {t.name: t for t in gguf.GGUFReader(str(_gguf_of(arch, tmp_path))).tensors}
    mine = gguf.GGUFReader(str(out))
    five_d = {n for n, s in MODELS[arch] if len(s) > 4}
    assert {t.name for t in mine.tensors} == set(ref) | five_d
    for t in mine.tensors:
        if t.name in five_d:
            continue
        r = ref[t.name]
        assert t.tensor_type == r.tensor_type and list(t.shape) == list(r.shape), t.name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(r.data).view(np.uint8)), t.name
    mine_r, ref_r = kquant.GGUFReader(out), kquant.GGUFReader(_gguf_of(arch, tmp_path))
    assert mine_r.metadata == ref_r.metadata  # architecture, quantization version, file type, orig_shape
    assert mine_r.metadata_types == ref_r.metadata_types  # orig_shape: arrays of i32, as loader.py demands
    assert (arch in ("sd1", "sdxl")) == any(k.startswith("comfy.gguf.orig_shape.") for k in mine_r.metadata)


def _gguf_of(arch: str, tmp_path: Path) -> Path:
    p = tmp_path / f"{arch}-ref.gguf"
    if not p.exists():
        _, named, types, kvs = _converted(arch)
        write_convert_style_gguf(p, arch, named, types, kvs)
    return p


@pytest.mark.parametrize("arch", ["flux", "sdxl", "wan"])
def test_one_step_equals_convert_then_quantize(arch, checkpoints, tmp_path):
    one = tmp_path / "one.gguf"
    quantize_model(checkpoints[arch], one, "Q4_K_S")
    two = tmp_path / "two.gguf"
    quantize_model(_gguf_of(arch, tmp_path), two, "Q4_K_S")
    a, b = kquant.GGUFReader(one), kquant.GGUFReader(two)
    assert a.metadata == b.metadata
    names_b = {t.name for t in b.tensors}
    for t in a.tensors:
        if t.name not in names_b:
            assert len(t.shape) == 5  # only what convert.py leaves to fix_5d_tensors.py
            continue
        u = b.tensor(t.name)
        assert (t.shape, t.qtype) == (u.shape, u.qtype)
        assert np.array_equal(a.raw(t.name), b.raw(t.name)), t.name


def test_conversion_dtypes(tmp_path):
    a = arrays("flux")
    rng = np.random.default_rng(3)
    f8 = rng.integers(0, 256, size=(256, 256), dtype=np.uint8)
    f8[(f8 & 0x7F) == 0x7F] = 0  # no NaNs
    a["double_blocks.0.img_attn.proj.weight"] = f8
    a["extra.at_threshold.weight"] = np.ones((4, 256), np.float32)  # 1024 values: small, stays F32
    a["extra.above_threshold.weight"] = np.ones((5, 205), np.float32)
    dtypes = {n: "F32" for n in a}
    dtypes["double_blocks.0.img_attn.proj.weight"] = "F8_E4M3"
    dtypes["double_blocks.0.txt_attn.proj.weight"] = "F16"
    dtypes["double_blocks.0.img_attn.norm.query_norm.scale"] = "F16"
    p = write_safetensors(tmp_path / "m.safetensors", a, dtypes=dtypes)
    ck = ConvertedCheckpoint(p)
    types = {t.name: t.qtype.name for t in ck.tensors}
    assert ck.file_type == 1  # F32 checkpoint: MOSTLY_F16
    assert types["double_blocks.0.img_mlp.0.weight"] == "F16"  # F32 weights become F16
    assert types["double_blocks.0.img_attn.qkv.bias"] == "F32"  # 1-D F32 stays
    assert types["double_blocks.0.img_attn.norm.query_norm.scale"] == "F16"  # 1-D F16 stays F16
    assert types["double_blocks.0.img_attn.proj.weight"] == "F16"
    assert types["extra.at_threshold.weight"] == "F32" and types["extra.above_threshold.weight"] == "F16"
    # float8 e4m3fn decoded exactly (values are exact in F16)
    x = ck.dequantize("double_blocks.0.img_attn.proj.weight")
    e = (f8 >> 3) & 15
    m = (f8 & 7).astype(np.float64)
    s = np.where(f8 & 0x80, -1.0, 1.0)
    want = s * np.where(e == 0, m / 8 * 2.0**-6, (1 + m / 8) * 2.0 ** (e.astype(np.float64) - 7))
    assert np.array_equal(x, want.astype(np.float32))
    w = a["double_blocks.0.img_mlp.0.weight"]
    assert np.array_equal(ck.dequantize("double_blocks.0.img_mlp.0.weight"), w.astype(np.float16).astype(np.float32))


def test_detection_and_prefixes(tmp_path):
    a = {"model.diffusion_model." + k: v for k, v in arrays("flux").items()}
    a["first_stage_model.decoder.conv_in.weight"] = np.zeros((4, 4, 3, 3), np.float32)  # dropped with the VAE
    ck = ConvertedCheckpoint(write_safetensors(tmp_path / "full.safetensors", a))
    assert ck.arch.name == "flux" and ck.prefix == "model.diffusion_model."
    assert {t.name for t in ck.tensors} == set(arrays("flux"))
    for arch in ARCHS:
        names = [n[4:] if arch == "cosmos" else n for n, _ in MODELS[arch]]
        assert detect_architecture(names).name == arch
    with pytest.raises(ValueError, match="diffusers"):
        detect_architecture(["transformer_blocks.0.attn.norm_added_k.weight", "double_blocks.0.img_attn.proj.weight"])
    with pytest.raises(ValueError, match="unknown model architecture"):
        detect_architecture(["blk.0.attn_q.weight"])


# --------------------------------------------------------------------------
# tradeoffs and budgets see the same tensors
# --------------------------------------------------------------------------


def test_tradeoffs_and_budget(gguf_models, checkpoints, tmp_path):
    from kquant.tradeoffs import measure

    for src in (gguf_models["flux"], checkpoints["flux"]):
        m = measure(src, ["Q4_K", "Q8_0"], sample_rows=16)
        plan = quantize_model(src, None, "Q4_K_M", dry_run=True)
        allowed = {t.name for t in plan.tensors if "kept" not in t.reason}
        assert {t.name for t in m.tensors} == allowed
    out = tmp_path / "b.gguf"
    # the unquantized embeddings and final layer (BF16) are a large share of so small a model
    rep = quantize_model(checkpoints["flux"], out, target_bpw=7.0)
    assert 6.0 < rep.bits_per_weight <= 7.0 + 1e-9
    _, sd = comfy_load(out)
    assert sd["double_blocks.0.img_attn.qkv.weight"].shape == (768, 256)
    # the budget's per-tensor choice is what gets written, mixed-case names included
    recipe = tmp_path / "recipe.txt"
    quantize_model(checkpoints["lumina2"], out, target_bpw=10.0, tensor_type_out=recipe)
    chosen = {}
    with kquant.GGUFReader(out) as r:
        written = {t.name: t.qtype.name for t in r.tensors}
    for line in recipe.read_text().split():
        pat, t = line.rsplit("=", 1)
        hits = [n for n in written if re.search(pat, n)]
        assert len(hits) == 1, pat
        chosen[hits[0]] = t
    assert "layers.0.adaLN_modulation.0.weight" in chosen
    assert all(written[n] == t for n, t in chosen.items())
    assert len(set(chosen.values())) > 1


def test_cli(checkpoints, tmp_path, capsys):
    from kquant.cli import main

    out = tmp_path / "f.gguf"
    assert main(["quantize", str(checkpoints["flux"]), str(out), "Q4_K_S"]) == 0
    assert out.exists()
    assert main(["tradeoffs", str(out), "--types", "q8_0"]) == 0
    assert "Q8_0" in capsys.readouterr().out
