"""``kquant evaluate``: the user's metric (or the built-in MiniLM example) for each candidate."""

from __future__ import annotations

import json
import sys
from typing import Any, List

EXAMPLES = ("minilm",)


def add_parser(sub: Any) -> None:
    """Register ``kquant evaluate`` on an argparse subparsers object."""
    p = sub.add_parser(
        "evaluate",
        help="a task metric for each quantization candidate, beside size and weight error",
        description=(
            "Call a metric on the weights each candidate would really have (what `kquant quantize` writes, "
            "dequantized), after the unquantized baseline, and print size, bits per weight, relative RMSE "
            "and the metric per candidate. `--example minilm`: sentence-embedding similarity of "
            "all-MiniLM-L6-v2 to its unquantized self. `--metric module:func`: your own function, called "
            "with a read-only mapping of tensor name to float32 array; it returns a number or a dict of numbers."
        ),
    )
    p.add_argument("model", nargs="?", help="a GGUF file, or a safetensors file or folder (default with --example: "
                                            "the example's model)")
    p.add_argument("--example", choices=EXAMPLES, help="a built-in use case")
    p.add_argument("--metric", metavar="MODULE:FUNC", help="your metric: an importable module (or a .py file) "
                                                            "and a function in it")
    p.add_argument("--candidates", action="append", metavar="LIST",
                   help="comma-separated candidates: file types (Q4_K_M), bpw=B, size=SIZE, a --tensor-type-file "
                        "(optionally TYPE:FILE); may repeat (default: Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K Q8_0 and the "
                        "low-bit file types the imatrix allows)")
    p.add_argument("--target-bpw", type=float, action="append", metavar="B", help="add a size-budget candidate")
    p.add_argument("--target-size", action="append", metavar="SIZE", help="add a size-budget candidate (800MiB)")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix used by every candidate")
    p.add_argument("--tensor-type", action="append", default=[], metavar="REGEX=TYPE",
                   help="per-tensor type for every candidate, as kquant quantize")
    p.add_argument("--include-weights", action="append", default=[], metavar="NAME")
    p.add_argument("--exclude-weights", action="append", default=[], metavar="NAME")
    p.add_argument("--allow-requantize", action="store_true")
    p.add_argument("--sentences", metavar="FILE", help="--example minilm: sentences to embed, one per line")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="candidates evaluated at once (threads)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.add_argument("--plot", metavar="FILE.png", help='plot the metric against size (needs pip install "kquant[plot]")')
    p.add_argument("--plot-key", metavar="KEY", help="which value of a dict metric to plot (default: the first)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run_cli)


def _candidates(items: Any) -> Any:
    if not items:
        return None
    out: List[str] = []
    for it in items:
        out.extend(s for s in it.split(",") if s.strip())
    return out


def run_cli(args: Any) -> int:
    try:
        return _run(args)
    except ImportError as e:  # an optional dependency: the message names the extra
        print(f"kquant: error: {e}", file=sys.stderr)
        return 2


def _run(args: Any) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from .core import _pyplot, evaluate, load_metric

    if (args.example is None) == (args.metric is None):
        raise ValueError("give either --example minilm or --metric MODULE:FUNC")
    if args.plot:
        _pyplot()  # fail before the work, not after
    if args.jobs < 1:
        raise ValueError("--jobs must be at least 1")
    if args.example == "minilm":
        from . import minilm

        model = args.model or minilm.model_path()
        sentences = minilm.load_sentences(args.sentences) if args.sentences else None
        metric: Any = minilm.EmbeddingSimilarity(model, sentences)
    else:
        if args.model is None:
            raise ValueError("--metric needs a MODEL")
        model = args.model
        metric = load_metric(args.metric)
    executor = ThreadPoolExecutor(args.jobs) if args.jobs > 1 else None
    try:
        ev = evaluate(
            model, metric, _candidates(args.candidates),
            imatrix=args.imatrix, target_bpw=args.target_bpw, target_size=args.target_size,
            tensor_types=args.tensor_type, include_weights=args.include_weights,
            exclude_weights=args.exclude_weights, allow_requantize=args.allow_requantize,
            executor=executor, progress=not args.quiet,
        )
    finally:
        if executor is not None:
            executor.shutdown()
    print(repr(ev))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(ev.to_json(), f, indent=1)
    if args.plot:
        title = None
        if args.example == "minilm":
            n = len(metric.sentences)
            title = (f"all-MiniLM-L6-v2 sentence embeddings ({n} sentences): "
                     f"{args.plot_key or 'mean_cos'} to the unquantized model")
        ev.plot(args.plot, key=args.plot_key, title=title)
    return 0

