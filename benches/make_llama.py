"""Writes a synthetic Llama-shaped F32 GGUF model for the whole-model benchmark.

    python benches/make_llama.py OUT.gguf [--layers 8] [--width 2048] [--ffn 5632]
        [--heads 16] [--kv-heads 4] [--vocab 32000] [--seed 0]

Defaults give 0.49 B parameters (about 2 GB as F32) with grouped-query attention.
Weights are heavy-tailed with per-row scales, so quantization error behaves like a real
model's rather than a uniform Gaussian's. Tensors are generated and streamed one at a
time, so memory stays at one tensor.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def tensor_list(layers: int, width: int, ffn: int, heads: int, kv_heads: int, vocab: int):
    head_dim = width // heads
    kv = head_dim * kv_heads
    out = [("token_embd.weight", (vocab, width))]
    for i in range(layers):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", (width,)),
            (p + "attn_q.weight", (width, width)),
            (p + "attn_k.weight", (kv, width)),
            (p + "attn_v.weight", (kv, width)),
            (p + "attn_output.weight", (width, width)),
            (p + "ffn_norm.weight", (width,)),
            (p + "ffn_gate.weight", (ffn, width)),
            (p + "ffn_up.weight", (ffn, width)),
            (p + "ffn_down.weight", (width, ffn)),
        ]
    out += [("output_norm.weight", (width,)), ("output.weight", (vocab, width))]
    return out


def make_tensor(rng: np.random.Generator, name: str, shape) -> np.ndarray:
    if len(shape) == 1:
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    rows, n = shape
    w = rng.standard_t(4, shape).astype(np.float32)
    w *= (rng.lognormal(0.0, 0.35, (rows, 1)) * (0.6 / np.sqrt(n))).astype(np.float32)
    return w


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import kquant

    tensors = tensor_list(a.layers, a.width, a.ffn, a.heads, a.kv_heads, a.vocab)
    rng = np.random.default_rng(a.seed)
    with kquant.GGUFWriter(a.out) as w:
        meta = {
            "general.architecture": ("llama", "str"),
            "general.name": ("kquant synthetic llama", "str"),
            "general.file_type": (0, "u32"),
            "llama.block_count": (a.layers, "u32"),
            "llama.context_length": (4096, "u32"),
            "llama.embedding_length": (a.width, "u32"),
            "llama.feed_forward_length": (a.ffn, "u32"),
            "llama.attention.head_count": (a.heads, "u32"),
            "llama.attention.head_count_kv": (a.kv_heads, "u32"),
            "llama.rope.dimension_count": (a.width // a.heads, "u32"),
            "llama.attention.layer_norm_rms_epsilon": (1e-5, "f32"),
            "llama.vocab_size": (a.vocab, "u32"),
        }
        for k, (v, t) in meta.items():
            w.add_metadata(k, v, type=t)
        for name, shape in tensors:
            w.add_tensor_info(name, shape, "F32")
        for name, shape in tensors:
            w.write_tensor(name, make_tensor(rng, name, shape))
    n = sum(int(np.prod(s)) for _, s in tensors)
    print(f"wrote {a.out}: {len(tensors)} tensors, {n / 1e9:.3f} B parameters", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
