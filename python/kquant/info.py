"""`kquant info FILE`: what is inside a GGUF file, before using it.

Like gguf-py's ``gguf-dump``, from kquant's Rust parser: the architecture and key
metadata, every tensor's name, type, shape and size, totals per type, the parameter
count and bits per weight. ``--json`` prints the same as data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, TextIO

__all__ = ["gguf_info", "add_parser"]

# llama.cpp's LLAMA_FTYPE ids (general.file_type); ids llama.cpp retired are left out
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE",
}  # fmt: skip

# per-architecture keys worth a line of their own, after general.*
_ARCH_KEYS = [
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "rope.freq_base",
    "expert_count",
    "expert_used_count",
    "vocab_size",
]
_GENERAL_KEYS = [
    "general.architecture",
    "general.name",
    "general.basename",
    "general.size_label",
    "general.finetune",
    "general.license",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
]
# arrays up to this long are shown in full; longer ones as their type and length
_ARRAY_SHOWN = 8


def _value(v: Any, kind: str) -> Any:
    """A metadata value as data: long arrays become {"type", "count"}."""
    if isinstance(v, list) and len(v) > _ARRAY_SHOWN:
        return {"type": kind, "count": len(v)}
    return v


def gguf_info(path: "str | os.PathLike[str]") -> Dict[str, Any]:
    """Everything ``kquant info`` reports about a GGUF file, as plain data.

    A file with a tensor type kquant's reader does not know is read with gguf-py's
    reader instead, when gguf-py is installed ("reader" says which one was used).
    """
    from .gguf import GGUFReader

    path = os.fspath(path)
    try:
        r = GGUFReader(path)
    except ValueError as e:
        if "not supported by kquant" not in str(e):
            raise
        try:
            return _gguf_py_info(path)
        except ImportError:
            raise ValueError(f"{e} (install gguf-py, pip install gguf, to list such files)") from None
    with r:
        tensors = [(t.name, t.qtype.name, list(t.shape), t.nbytes, t.n_elements, t.offset) for t in r.tensors]
        return _assemble(path, "kquant", r.version, r.alignment, r.metadata, r.metadata_types, tensors)


_GGUF_PY_KINDS = {
    "UINT8": "u8", "INT8": "i8", "UINT16": "u16", "INT16": "i16", "UINT32": "u32", "INT32": "i32",
    "FLOAT32": "f32", "BOOL": "bool", "STRING": "str", "UINT64": "u64", "INT64": "i64", "FLOAT64": "f64",
}  # fmt: skip


def _gguf_py_info(path: str) -> Dict[str, Any]:
    """The same data from gguf-py's reader (slower), for types kquant's reader lacks."""
    import gguf

    r = gguf.GGUFReader(path)
    md: Dict[str, Any] = {}
    kinds: Dict[str, str] = {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):  # gguf-py's pseudo-fields for the header
            continue
        names = [_GGUF_PY_KINDS.get(t.name, t.name.lower()) for t in f.types]
        kinds[key] = f"arr[{names[1] if len(names) > 1 else '?'}]" if f.types[0].name == "ARRAY" else names[0]
        v = f.contents()
        md[key] = v.tolist() if hasattr(v, "tolist") else v
    version = int(r.fields["GGUF.version"].parts[-1][0]) if "GGUF.version" in r.fields else 0
    tensors = [
        (
            t.name,
            t.tensor_type.name,
            [int(d) for d in reversed(t.shape.tolist())],
            int(t.n_bytes),
            int(t.n_elements),
            int(t.data_offset),
        )
        for t in r.tensors
    ]
    return _assemble(path, "gguf-py", version, int(r.alignment), md, kinds, tensors)


def _assemble(
    path: str,
    reader: str,
    version: int,
    alignment: int,
    md: Dict[str, Any],
    kinds: Dict[str, str],
    rows: List[tuple],
) -> Dict[str, Any]:
    arch = md.get("general.architecture")
    ft = md.get("general.file_type")
    tensors: List[Dict[str, Any]] = []
    per_type: Dict[str, Dict[str, int]] = {}
    for name, tname, shape, nbytes, n, offset in rows:
        tensors.append({"name": name, "type": tname, "shape": shape, "bytes": nbytes, "parameters": n, "offset": offset})
        agg = per_type.setdefault(tname, {"tensors": 0, "parameters": 0, "bytes": 0})
        agg["tensors"] += 1
        agg["parameters"] += n
        agg["bytes"] += nbytes
    params = sum(t["parameters"] for t in tensors)
    nbytes = sum(t["bytes"] for t in tensors)
    tokens = md.get("tokenizer.ggml.tokens")
    return {
        "path": path,
        "reader": reader,
        "file_bytes": os.path.getsize(path),
        "version": version,
        "alignment": alignment,
        "architecture": arch,
        "name": md.get("general.name"),
        "file_type": _FILE_TYPES.get(ft, f"id {ft}") if isinstance(ft, int) else ft,
        "vocab_size": len(tokens) if isinstance(tokens, list) else None,
        "parameters": params,
        "bytes": nbytes,
        "bits_per_weight": nbytes * 8 / params if params else None,
        "types": dict(sorted(per_type.items(), key=lambda kv: -kv[1]["bytes"])),
        "metadata": {k: _value(v, kinds[k]) for k, v in md.items()},
        "metadata_types": dict(kinds),
        "tensors": tensors,
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def _count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _short(v: Any, kind: str, width: int = 72) -> str:
    if isinstance(v, dict) and "count" in v:
        return f"[{v['count']} x {kind[4:-1]}]"
    s = json.dumps(v, ensure_ascii=False) if isinstance(v, (list, str)) else str(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def _print_text(info: Dict[str, Any], out: TextIO, all_metadata: bool) -> None:
    md, kinds = info["metadata"], info["metadata_types"]
    w = out.write
    w(f"{info['path']}: GGUF v{info['version']}, {_size(info['file_bytes'])}, "
      f"{len(info['tensors'])} tensors, {len(md)} metadata keys\n\n")  # fmt: skip
    arch = info["architecture"]
    rows = [
        ("architecture", arch),
        ("name", info["name"]),
        ("file type", info["file_type"]),
        ("parameters", f"{_count(info['parameters'])} ({info['parameters']:,})"),
        ("tensor data", f"{_size(info['bytes'])} ({info['bytes']:,} bytes)"),
        ("bits per weight", None if info["bits_per_weight"] is None else f"{info['bits_per_weight']:.3f}"),
        ("vocabulary", info["vocab_size"]),
    ]
    for k, v in rows:
        if v is not None:
            w(f"  {k:16} {v}\n")
    w("\nMetadata:\n" if all_metadata else "\nKey metadata (--all-metadata for every key):\n")
    keys = list(md) if all_metadata else [
        k for k in _GENERAL_KEYS + [f"{arch}.{s}" for s in _ARCH_KEYS] + ["tokenizer.ggml.model"] if k in md
    ]  # fmt: skip
    kw = max((len(k) for k in keys), default=0)
    for k in keys:
        w(f"  {k:{kw}}  {kinds[k]:9} {_short(md[k], kinds[k])}\n")

    w("\nPer type:\n")
    w(f"  {'type':8} {'tensors':>8} {'parameters':>16} {'bytes':>12} {'share':>7} {'bits/w':>7}\n")
    total = info["bytes"] or 1
    for tname, a in info["types"].items():
        bpw = a["bytes"] * 8 / a["parameters"] if a["parameters"] else 0.0
        w(f"  {tname:8} {a['tensors']:8} {a['parameters']:16,} {_size(a['bytes']):>12} "
          f"{100 * a['bytes'] / total:6.1f}% {bpw:7.3f}\n")  # fmt: skip

    w("\nTensors (shape in NumPy order: ggml's ne reversed, rows last):\n")
    nw = max([4] + [len(t["name"]) for t in info["tensors"]])
    w(f"  {'name':{nw}} {'type':8} {'shape':>20} {'parameters':>14} {'bytes':>12}\n")
    for t in info["tensors"]:
        shape = "x".join(str(d) for d in t["shape"])
        w(f"  {t['name']:{nw}} {t['type']:8} {shape:>20} {t['parameters']:14,} {_size(t['bytes']):>12}\n")


def run(args: argparse.Namespace) -> int:
    info = gguf_info(args.file)
    try:
        if args.json:
            json.dump(info, sys.stdout, indent=1 if args.indent else None, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            _print_text(info, sys.stdout, args.all_metadata)
        sys.stdout.flush()
    except BrokenPipeError:  # `kquant info big.gguf | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="show what is inside a GGUF file: metadata, tensors, types, parameters, bits per weight",
        description="Show a GGUF file's architecture and key metadata, every tensor (name, type, shape, "
        "size), totals per type, the parameter count and bits per weight.",
    )
    p.add_argument("file", help="a GGUF file")
    p.add_argument("--json", action="store_true", help="print the same as JSON (tensors under \"tensors\")")
    p.add_argument("--indent", action="store_true", help="with --json: indent the output")
    p.add_argument("--all-metadata", action="store_true", help="list every metadata key, not just the key ones")
    p.set_defaults(func=run)
