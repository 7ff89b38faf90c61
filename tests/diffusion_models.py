"""Small synthetic diffusion checkpoints with each architecture's real tensor names.

Shapes are scaled down (hidden size 256, one or two blocks) but keep the features the rules
look at: which axes exist (5-D Conv3d weights, leading axes of 1), rows that are or are not
a multiple of 256, tensors under convert.py's 1024-element threshold. Values are random,
made here; nothing comes from outside.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

D = 256

# architecture -> [(name in the checkpoint, PyTorch shape)]
MODELS: Dict[str, List[Tuple[str, Tuple[int, ...]]]] = {
    "flux": [
        ("img_in.weight", (D, 64)), ("img_in.bias", (D,)),
        ("txt_in.weight", (D, 512)), ("txt_in.bias", (D,)),
        ("time_in.in_layer.weight", (D, 256)), ("time_in.out_layer.weight", (D, D)),
        ("vector_in.in_layer.weight", (D, 768)), ("guidance_in.in_layer.weight", (D, 256)),
        ("double_blocks.0.img_attn.qkv.weight", (3 * D, D)), ("double_blocks.0.img_attn.qkv.bias", (3 * D,)),
        ("double_blocks.0.img_attn.proj.weight", (D, D)),
        ("double_blocks.0.img_attn.norm.query_norm.scale", (64,)),
        ("double_blocks.0.img_mlp.0.weight", (2 * D, D)), ("double_blocks.0.img_mlp.2.weight", (D, 2 * D)),
        ("double_blocks.0.img_mod.lin.weight", (6 * D, D)),
        ("double_blocks.0.txt_attn.qkv.weight", (3 * D, D)), ("double_blocks.0.txt_attn.proj.weight", (D, D)),
        ("double_blocks.0.txt_mlp.2.weight", (D, 2 * D)),
        ("single_blocks.0.linear1.weight", (5 * D, D)), ("single_blocks.0.linear2.weight", (D, 3 * D)),
        ("single_blocks.0.modulation.lin.weight", (3 * D, D)), ("single_blocks.0.norm.key_norm.scale", (64,)),
        ("final_layer.linear.weight", (64, D)), ("final_layer.adaLN_modulation.1.weight", (2 * D, D)),
    ],
    "sd3": [
        ("pos_embed", (1, 64, D)),
        ("x_embedder.proj.weight", (D, 16, 2, 2)), ("x_embedder.proj.bias", (D,)),
        ("t_embedder.mlp.0.weight", (D, 256)), ("y_embedder.mlp.0.weight", (D, 512)),
        ("context_embedder.weight", (D, 512)),
        ("joint_blocks.0.x_block.attn.qkv.weight", (3 * D, D)), ("joint_blocks.0.x_block.attn.proj.weight", (D, D)),
        ("joint_blocks.0.x_block.attn.ln_q.weight", (64,)),
        ("joint_blocks.0.x_block.mlp.fc1.weight", (4 * D, D)), ("joint_blocks.0.x_block.mlp.fc2.weight", (D, 4 * D)),
        ("joint_blocks.0.x_block.adaLN_modulation.1.weight", (6 * D, D)),
        ("joint_blocks.0.context_block.attn.qkv.weight", (3 * D, D)),
        ("final_layer.linear.weight", (64, D)), ("final_layer.adaLN_modulation.1.weight", (2 * D, D)),
    ],
    "aura": [
        ("positional_encoding", (1, 64, D)), ("register_tokens", (1, 8, D)),
        ("init_x_linear.weight", (D, 64)), ("t_embedder.mlp.0.weight", (D, 256)),
        ("cond_seq_linear.weight", (D, 512)), ("modF.1.weight", (2 * D, D)), ("final_linear.weight", (64, D)),
        ("double_layers.0.modX.1.weight", (6 * D, D)),
        ("double_layers.0.attn.w1q.weight", (D, D)), ("double_layers.0.attn.w1v.weight", (D, D)),
        ("double_layers.0.attn.w2v.weight", (D, D)), ("double_layers.0.attn.w1o.weight", (D, D)),
        ("double_layers.0.mlpX.c_fc1.weight", (2 * D, D)), ("double_layers.0.mlpX.c_proj.weight", (D, 2 * D)),
        ("double_layers.3.modX.1.weight", (6 * D, D)), ("double_layers.3.attn.w1v.weight", (D, D)),
        ("single_layers.0.attn.w1v.weight", (D, D)), ("single_layers.0.mlp.c_proj.weight", (D, 2 * D)),
    ],
    "hidream": [
        ("caption_projection.0.linear.weight", (D, 512)),
        ("x_embedder.proj.weight", (D, 64)), ("t_embedder.timestep_embedder.linear_1.weight", (D, 256)),
        ("p_embedder.pooled_embedder.linear_1.weight", (D, 512)),
        ("double_stream_blocks.0.block.attn1.to_q.weight", (D, D)),
        ("double_stream_blocks.0.block.attn1.to_v.weight", (D, D)),
        ("double_stream_blocks.0.block.attn1.to_v_t.weight", (D, D)),
        ("double_stream_blocks.0.block.attn1.q_rms_norm.weight", (D,)),
        ("double_stream_blocks.0.block.ff_i.shared_experts.w1.weight", (2 * D, D)),
        ("double_stream_blocks.0.block.ff_i.shared_experts.w2.weight", (D, 2 * D)),
        ("double_stream_blocks.0.block.ff_i.shared_experts.w3.weight", (2 * D, D)),
        ("double_stream_blocks.0.block.ff_i.experts.0.w2.weight", (D, 2 * D)),
        ("double_stream_blocks.0.block.ff_i.gate.weight", (4, D)),
        ("single_stream_blocks.0.block.attn1.to_v.weight", (D, D)),
        ("final_layer.linear.weight", (64, D)),
    ],
    "cosmos": [  # stored with the "net." prefix every key carries
        ("net.x_embedder.proj.1.weight", (D, 68)), ("net.t_embedder.1.linear_1.weight", (D, 256)),
        ("net.t_embedding_norm.weight", (D,)), ("net.pos_embedder.dim_spatial_range", (32,)),
        ("net.pos_embedder.seq", (64, 32)),
        ("net.blocks.0.self_attn.q_proj.weight", (D, D)), ("net.blocks.0.self_attn.v_proj.weight", (D, D)),
        ("net.blocks.0.self_attn.q_norm.weight", (64,)), ("net.blocks.0.cross_attn.v_proj.weight", (D, 512)),
        ("net.blocks.0.mlp.layer1.weight", (4 * D, D)), ("net.blocks.0.mlp.layer2.weight", (D, 4 * D)),
        ("net.blocks.0.adaln_modulation_cross_attn.1.weight", (D, D)),
        ("net.blocks.0.adaln_modulation_mlp.2.weight", (3 * D, D)),
        ("net.blocks.0.self_attn._extra_state", (16,)), ("net.accum_video_sample_counter", (1,)),
        ("net.final_layer.linear.weight", (64, D)),
    ],
    "ltxv": [
        ("adaln_single.emb.timestep_embedder.linear_1.weight", (D, 256)),
        ("adaln_single.emb.timestep_embedder.linear_2.weight", (D, D)), ("adaln_single.linear.weight", (6 * D, D)),
        ("caption_projection.linear_1.weight", (D, 512)), ("caption_projection.linear_2.weight", (D, D)),
        ("patchify_proj.weight", (D, 128)), ("proj_out.weight", (128, D)), ("scale_shift_table", (2, D)),
        ("transformer_blocks.0.attn1.to_q.weight", (D, D)), ("transformer_blocks.0.attn1.to_v.weight", (D, D)),
        ("transformer_blocks.0.attn1.to_out.0.weight", (D, D)), ("transformer_blocks.0.attn1.q_norm.weight", (D,)),
        ("transformer_blocks.0.attn2.to_v.weight", (D, 512)),
        ("transformer_blocks.0.ff.net.0.proj.weight", (4 * D, D)), ("transformer_blocks.0.ff.net.2.weight", (D, 4 * D)),
        *((f"transformer_blocks.{i}.scale_shift_table", (6, D)) for i in range(28)),
    ],
    "hyvid": [
        ("img_in.proj.weight", (D, 16, 1, 2, 2)), ("img_in.proj.bias", (D,)),
        ("txt_in.input_embedder.weight", (D, 512)),
        ("txt_in.individual_token_refiner.blocks.0.self_attn_qkv.weight", (3 * D, D)),
        ("txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight", (3 * D, D)),
        ("time_in.mlp.0.weight", (D, 256)), ("vector_in.in_layer.weight", (D, 768)),
        ("guidance_in.mlp.0.weight", (D, 256)),
        ("double_blocks.0.img_attn_qkv.weight", (3 * D, D)), ("double_blocks.0.img_attn_proj.weight", (D, D)),
        ("double_blocks.0.img_attn_q_norm.weight", (64,)),
        ("double_blocks.0.img_mlp.fc1.weight", (4 * D, D)), ("double_blocks.0.img_mlp.fc2.weight", (D, 4 * D)),
        ("double_blocks.0.img_mod.linear.weight", (6 * D, D)), ("double_blocks.0.txt_attn_qkv.weight", (3 * D, D)),
        ("single_blocks.0.linear1.weight", (7 * D, D)), ("single_blocks.0.linear2.weight", (D, 5 * D)),
        ("final_layer.linear.weight", (64, D)),
    ],
    "wan": [
        ("patch_embedding.weight", (D, 16, 1, 2, 2)), ("patch_embedding.bias", (D,)),
        ("text_embedding.0.weight", (D, 512)), ("text_embedding.2.weight", (D, D)),
        ("time_embedding.0.weight", (D, 256)), ("time_projection.1.weight", (6 * D, D)),
        ("head.head.weight", (64, D)), ("head.modulation", (1, 2, D)),
        ("img_emb.emb_pos", (1, 514, D)), ("img_emb.proj.1.weight", (D, 512)),
        *(
            item
            for b in (0, 1, 2, 10)
            for item in (
                (f"blocks.{b}.modulation", (1, 6, D)),
                (f"blocks.{b}.self_attn.q.weight", (D, D)), (f"blocks.{b}.self_attn.v.weight", (D, D)),
                (f"blocks.{b}.self_attn.norm_q.weight", (D,)),
                (f"blocks.{b}.ffn.0.weight", (2 * D, D)), (f"blocks.{b}.ffn.2.weight", (D, 2 * D)),
            )
        ),
        ("blocks.0.cross_attn.v.weight", (D, D)), ("blocks.0.norm3.weight", (D,)),
    ],
    "sdxl": [  # the ldm ("reference") UNet layout
        ("input_blocks.0.0.weight", (64, 4, 3, 3)), ("input_blocks.0.0.bias", (64,)),
        ("input_blocks.1.0.in_layers.0.weight", (64,)), ("input_blocks.1.0.in_layers.2.weight", (64, 64, 3, 3)),
        ("input_blocks.3.0.op.weight", (64, 64, 3, 3)), ("input_blocks.6.0.op.weight", (64, 64, 3, 3)),
        ("input_blocks.4.1.proj_in.weight", (64, 64, 1, 1)),
        ("input_blocks.4.1.transformer_blocks.0.attn1.to_v.weight", (64, 64)),
        ("input_blocks.4.1.transformer_blocks.0.ff.net.2.weight", (64, 256)),
        ("input_blocks.4.1.norm.weight", (64,)), ("input_blocks.4.1.small.weight", (4, 64)),
        ("output_blocks.2.2.conv.weight", (64, 64, 3, 3)), ("output_blocks.5.2.conv.weight", (64, 64, 3, 3)),
        ("label_emb.0.0.weight", (256, 512)), ("time_embed.0.weight", (256, 64)),
        ("out.0.weight", (64,)), ("out.2.weight", (4, 64, 3, 3)),
    ],
    "sd1": [
        ("input_blocks.0.0.weight", (64, 4, 3, 3)),
        ("input_blocks.3.0.op.weight", (64, 64, 3, 3)), ("input_blocks.6.0.op.weight", (64, 64, 3, 3)),
        ("input_blocks.9.0.op.weight", (64, 64, 3, 3)),
        ("output_blocks.2.1.conv.weight", (64, 64, 3, 3)), ("output_blocks.5.2.conv.weight", (64, 64, 3, 3)),
        ("output_blocks.8.2.conv.weight", (64, 64, 3, 3)),
        ("middle_block.1.transformer_blocks.0.attn1.to_v.weight", (64, 64)),
        ("middle_block.1.transformer_blocks.0.attn2.to_v.weight", (64, 768)),
        ("time_embed.0.weight", (256, 64)), ("out.2.weight", (4, 64, 3, 3)),
    ],
    "lumina2": [
        ("cap_embedder.0.weight", (D,)), ("cap_embedder.1.weight", (D, 512)),
        ("context_refiner.0.attention.qkv.weight", (3 * D, D)), ("noise_refiner.0.attention.qkv.weight", (3 * D, D)),
        ("layers.0.attention.qkv.weight", (3 * D, D)), ("layers.0.attention.out.weight", (D, D)),
        ("layers.0.attention_norm1.weight", (D,)),
        ("layers.0.feed_forward.w1.weight", (2 * D, D)), ("layers.0.feed_forward.w2.weight", (D, 2 * D)),
        ("layers.0.feed_forward.w3.weight", (2 * D, D)), ("layers.0.adaLN_modulation.0.weight", (4 * D, D)),
        ("t_embedder.mlp.0.weight", (D, 256)), ("x_embedder.weight", (D, 64)),
        ("final_layer.linear.weight", (64, D)),
    ],
}


def arrays(arch: str, seed: int = 0) -> Dict[str, np.ndarray]:
    """The checkpoint's tensors as float32, values exactly representable in BF16."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in MODELS[arch]:
        x = (rng.standard_normal(shape, dtype=np.float32) * 0.05).astype(np.float32)
        out[name] = to_bf16_exact(x)
    return out


def to_bf16_exact(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.view(np.float32)


_ST = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2), "F8_E4M3": ("u1", 1)}


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], dtype: str = "BF16",
                      dtypes: Mapping[str, str] = {}) -> Path:
    """A safetensors file; each tensor stored in `dtype` (or `dtypes[name]`)."""
    header: Dict[str, object] = {}
    blobs: List[bytes] = []
    off = 0
    for name, x in tensors.items():
        dt = dtypes.get(name, dtype)
        if dt == "BF16":
            b = (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        elif dt == "F8_E4M3":
            b = np.ascontiguousarray(x, np.uint8).tobytes()
        else:
            b = np.ascontiguousarray(x, _ST[dt][0]).tobytes()
        header[name] = {"dtype": dt, "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    return path


def write_convert_style_gguf(path: Path, arch: str, tensors: Mapping[str, np.ndarray],
                             types: Mapping[str, str], extra_kv: Sequence[Tuple[str, List[int]]] = ()) -> Path:
    """A GGUF laid out as ComfyUI-GGUF's convert.py writes it, with gguf-py."""
    import gguf

    w = gguf.GGUFWriter(path=None, arch=arch)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    for key, value in extra_kv:
        w.add_array(key, value)
    for name, x in tensors.items():
        qt = gguf.GGMLQuantizationType[types[name]]
        w.add_tensor(name, gguf.quants.quantize(np.asarray(x, np.float32), qt), raw_dtype=qt)
    w.write_header_to_file(path=str(path))
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def convert_types(arch: str, tensors: Mapping[str, np.ndarray]) -> Dict[str, str]:
    """convert.py's storage type for a BF16 checkpoint's tensors (4-D at most)."""
    hiprec = {"hidream": (".ff_i.gate.weight", "img_emb.emb_pos"), "cosmos": ("pos_embedder",),
              "wan": (".modulation",), "ltxv": ("scale_shift_table",)}.get(arch, ())
    out = {}
    for name, x in tensors.items():
        small = x.ndim == 1 or x.size <= 1024 or any(h in name for h in hiprec)
        out[name] = "F32" if small else "BF16"
    return out
