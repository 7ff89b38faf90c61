"""The `kquant` command line."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from . import _demo

    _demo.run()
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .model import quantize_model
    from .recipes import load_tensor_type_file

    quantize_model = getattr(args, "quantize_fn", None) or quantize_model  # kquant variants

    tensor_types: List = list(args.tensor_type or [])
    for f in args.tensor_type_file or []:
        tensor_types.extend(load_tensor_type_file(f))
    if args.type is None and args.target_bpw is None and args.target_size is None:
        raise ValueError("a file TYPE (e.g. Q4_K_M) or --target-bpw / --target-size is required")
    report = quantize_model(
        args.input,
        None if args.dry_run else args.output,
        args.type,
        target_bpw=args.target_bpw,
        target_size=args.target_size,
        tensor_type_out=args.tensor_type_out,
        nthreads=args.nthreads,
        imatrix=args.imatrix,
        tensor_types=tensor_types,
        output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type,
        leave_output_tensor=args.leave_output_tensor,
        pure=args.pure,
        allow_requantize=args.allow_requantize,
        include_weights=args.include_weights or (),
        exclude_weights=args.exclude_weights or (),
        override_kv=args.override_kv or (),
        dry_run=args.dry_run,
        log=lambda s: print(s, file=sys.stderr),
        executor=args.executor,
        keep_split=args.keep_split,
        split_max_size=args.split_max_size,
        **_low_bit_options(args),
    )
    if args.dry_run:
        for t in report.tensors:
            shape = "x".join(str(d) for d in t.shape)
            print(f"{t.name:48} {shape:>20} {t.source_type.name:>7} -> {t.target_type.name:7} "
                  f"{t.bytes_before / 2**20:10.2f} MiB -> {t.bytes_after / 2**20:10.2f} MiB")
    print(report.summary())
    return 0


def _low_bit_options(args: argparse.Namespace) -> dict:
    """--missing-imatrix / --prune-layers, passed only when given (kquant variants shares this)."""
    from .recipes import parse_prune_layers

    out: dict = {}
    if getattr(args, "missing_imatrix", None):
        out["missing_imatrix"] = args.missing_imatrix
    if getattr(args, "prune_layers", None):
        out["prune_layers"] = parse_prune_layers(args.prune_layers)
    return out


def _add_quantize(sub) -> None:
    q = sub.add_parser(
        "quantize",
        help="quantize a GGUF model with llama-quantize's recipes",
        description="Quantize a GGUF model like llama-quantize: kquant quantize IN OUT TYPE [nthreads].",
    )
    q.add_argument("input", help="input GGUF file, or a diffusion model's safetensors checkpoint (ComfyUI: flux, "
                   "sd1, sdxl, sd3, aura, ltxv, hyvid, wan, hidream, cosmos, lumina2)")
    q.add_argument("output", help="output GGUF file (written atomically)")
    q.add_argument("type", nargs="?", help="file type: Q4_K_M, Q5_K_S, Q8_0, IQ4_XS, IQ2_M, IQ3_XXS, TQ1_0, MXFP4_MOE, F16, COPY, ...")
    q.add_argument("nthreads", nargs="?", type=int, help="threads (default: every core)")
    q.add_argument("--imatrix", help="importance matrix (llama.cpp .dat or GGUF imatrix)")
    q.add_argument("--include-weights", action="append", metavar="NAME", help="use the imatrix only for these")
    q.add_argument("--exclude-weights", action="append", metavar="NAME", help="do not use the imatrix for these")
    q.add_argument("--tensor-type", action="append", metavar="REGEX=TYPE", help="per-tensor type; first match wins")
    q.add_argument("--tensor-type-file", action="append", metavar="FILE", help="a file of REGEX=TYPE lines")
    q.add_argument("--output-tensor-type", metavar="TYPE")
    q.add_argument("--token-embedding-type", metavar="TYPE")
    q.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight unquantized")
    q.add_argument("--pure", action="store_true", help="no mix upgrades: every tensor gets the default type")
    q.add_argument("--allow-requantize", action="store_true", help="allow quantizing already quantized tensors")
    q.add_argument("--override-kv", action="append", metavar="KEY=TYPE:VALUE", help="set a metadata value")
    q.add_argument("--dry-run", action="store_true", help="print per-tensor and total sizes; write nothing")
    q.add_argument("--target-bpw", type=float, help="choose types per tensor for this many bits per weight")
    q.add_argument("--target-size", help="choose types per tensor to fit this size (e.g. 3.2GB, 800MiB)")
    q.add_argument("--tensor-type-out", metavar="FILE", help="with a target: write the chosen recipe here")
    q.add_argument("--executor", metavar="ADDRESS",
                   help="run the per-tensor work on a Dask scheduler (tcp://host:8786) or local:N worker processes")
    q.add_argument("--keep-split", action="store_true", help="write a split input as a split set like it")
    q.add_argument("--split-max-size", metavar="SIZE", help="split the output into parts of at most SIZE (e.g. 4GB)")
    q.add_argument("--missing-imatrix", metavar="TYPE",
                   help="give the tensors that need an importance entry but have none (IQ1/IQ2/IQ3_XXS types) "
                        "this type instead of stopping, e.g. Q4_K")
    q.add_argument("--prune-layers", metavar="L0,L1,...",
                   help="drop these layers; the rest and their importance entries are renumbered")
    q.set_defaults(func=_quantize)


def _add_tradeoffs(sub) -> None:
    from .tradeoffs import add_parser

    add_parser(sub)


def _add_evaluate(sub) -> None:
    from .evaluation.cli import add_parser

    add_parser(sub)


def _add_info(sub) -> None:
    from .info import add_parser

    add_parser(sub)


def _add_variants(sub) -> None:
    from .variants import add_parser

    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kquant", description="GGML / llama.cpp block quantization, byte-exact with ggml.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="quantize a built-in sample with every format; print size and error")
    d.set_defaults(func=_demo)
    _add_tradeoffs(sub)
    _add_quantize(sub)
    _add_evaluate(sub)
    _add_info(sub)
    _add_variants(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("kquant: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, KeyError) as e:
        print(f"kquant: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
