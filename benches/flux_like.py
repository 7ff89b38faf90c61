"""Write a synthetic Flux-shaped diffusion checkpoint (safetensors, BF16) for trying kquant's
ComfyUI path: Flux's tensor names and shape ratios (double and single stream blocks, 128-wide
attention heads, 4x MLPs, the 64-channel patch input and 4096-wide text input), with a
smaller width and fewer blocks, and Gaussian weights (std 0.02) made here.

    python benches/flux_like.py flux-like.safetensors            # width 1024, 2 + 4 blocks
    kquant tradeoffs flux-like.safetensors
    kquant quantize flux-like.safetensors flux-like-Q4_K_S.gguf Q4_K_S

The numbers it gives are properties of the formats on Gaussian weights, not of Flux itself.
"""

from __future__ import annotations

import argparse
import json
import struct
from typing import Dict, List, Tuple

import numpy as np


def flux_tensors(hidden: int, n_double: int, n_single: int) -> List[Tuple[str, Tuple[int, ...]]]:
    h, head = hidden, 128
    out: List[Tuple[str, Tuple[int, ...]]] = []

    def linear(name: str, n_out: int, n_in: int) -> None:
        out.append((f"{name}.weight", (n_out, n_in)))
        out.append((f"{name}.bias", (n_out,)))

    linear("img_in", h, 64)
    linear("txt_in", h, 4096)
    for emb, n_in in (("time_in", 256), ("vector_in", 768), ("guidance_in", 256)):
        linear(f"{emb}.in_layer", h, n_in)
        linear(f"{emb}.out_layer", h, h)
    for i in range(n_double):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            linear(f"{b}_mod.lin", 6 * h, h)
            linear(f"{b}_attn.qkv", 3 * h, h)
            out.append((f"{b}_attn.norm.query_norm.scale", (head,)))
            out.append((f"{b}_attn.norm.key_norm.scale", (head,)))
            linear(f"{b}_attn.proj", h, h)
            linear(f"{b}_mlp.0", 4 * h, h)
            linear(f"{b}_mlp.2", h, 4 * h)
    for i in range(n_single):
        b = f"single_blocks.{i}"
        linear(f"{b}.linear1", 3 * h + 4 * h, h)
        linear(f"{b}.linear2", h, h + 4 * h)
        out.append((f"{b}.norm.query_norm.scale", (head,)))
        out.append((f"{b}.norm.key_norm.scale", (head,)))
        linear(f"{b}.modulation.lin", 3 * h, h)
    linear("final_layer.adaLN_modulation.1", 2 * h, h)
    linear("final_layer.linear", 64, h)
    return out


def write(path: str, hidden: int = 1024, n_double: int = 2, n_single: int = 4, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    header: Dict[str, object] = {}
    off = 0
    specs = flux_tensors(hidden, n_double, n_single)
    for name, shape in specs:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    params = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in specs:
            x = rng.standard_normal(shape, dtype=np.float32) * 0.02
            if name.endswith(".scale"):
                x += 1.0
            u = x.view(np.uint32)
            f.write(((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes())
            params += x.size
    return params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output")
    p.add_argument("--hidden", type=int, default=1024, help="width (Flux: 3072)")
    p.add_argument("--double", type=int, default=2, help="double-stream blocks (Flux: 19)")
    p.add_argument("--single", type=int, default=4, help="single-stream blocks (Flux: 38)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    n = write(a.output, a.hidden, a.double, a.single, a.seed)
    print(f"{a.output}: {n / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
