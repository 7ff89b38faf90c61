"""Quantizing a whole GGUF model, tensor by tensor, with llama-quantize's recipes.

Memory stays at a few tensors' worth: the input is memory-mapped, each tensor is
dequantized (or viewed, for F32), quantized and streamed to the output before the next
one is touched. The output is written to a temporary file beside OUT and renamed only
when complete.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._api import quantize
from ._types import QuantType, row_size
from .recipes import (
    FileType,
    FileTypeLike,
    ModelFacts,
    QuantizeOptions,
    QuantPlan,
    TensorSpec,
    parse_prune_layers,
    plan_quantization,
)

PathLike = Union[str, "os.PathLike[str]"]

# metadata llama-quantize rewrites rather than copies
_REWRITTEN_KEYS = ("general.file_type", "general.quantization_version")
_IMATRIX_PREFIX = "quantize.imatrix."
QUANTIZATION_VERSION = 2


@dataclass
class TensorResult:
    name: str
    shape: Tuple[int, ...]
    source_type: QuantType
    target_type: QuantType
    bytes_before: int
    bytes_after: int
    seconds: float = 0.0
    reason: str = ""


@dataclass
class QuantizeReport:
    """What `quantize_model` did (or, for a dry run, would do)."""

    input: str
    output: Optional[str]
    ftype: FileType
    tensors: List[TensorResult] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    budget: Optional[str] = None
    notes: List[str] = field(default_factory=list)  # also passed to `log` before the run

    @property
    def bytes_before(self) -> int:
        return sum(t.bytes_before for t in self.tensors)

    @property
    def bytes_after(self) -> int:
        return sum(t.bytes_after for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(t.shape, dtype=np.int64)) for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return self.bytes_after * 8 / max(self.n_params, 1)

    def summary(self) -> str:
        mib = 1 << 20
        counts: Dict[str, int] = {}
        for t in self.tensors:
            counts[t.target_type.name] = counts.get(t.target_type.name, 0) + 1
        mix = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        verb = "would be" if self.dry_run else "written"
        return (
            f"{len(self.tensors)} tensors ({mix})\n"
            f"size before: {self.bytes_before / mib:.2f} MiB ({self.bytes_before * 8 / max(self.n_params, 1):.3f} bpw)\n"
            f"size after:  {self.bytes_after / mib:.2f} MiB ({self.bits_per_weight:.3f} bpw), {verb}"
            + ("" if self.dry_run else f" to {self.output}")
            + f"\ntime: {self.seconds:.2f} s"
        )


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total_bytes: int, stream=None, enabled: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total_bytes, 1)
        self.done = 0
        self.t0 = time.perf_counter()

    def update(self, nbytes: int, label: str) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        el = time.perf_counter() - self.t0
        # the low-bit types take minutes per GB: say how long is left, from the bytes so far
        eta = f"eta {el / frac - el:6.0f}s" if 0 < frac < 1 else " " * 10
        self.stream.write(f"\r[{bar}] {frac * 100:5.1f}% {el:6.1f}s {eta} {label[:40]:40}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def parse_override_kv(spec: str) -> Tuple[str, str, Any]:
    """llama-quantize's `--override-kv KEY=TYPE:VALUE` (TYPE int, float, bool or str)."""
    key, sep, rest = spec.partition("=")
    kind, sep2, value = rest.partition(":")
    if not sep or not sep2 or not key:
        raise ValueError(f"invalid --override-kv {spec!r}: expected KEY=TYPE:VALUE with TYPE int, float, bool or str")
    kind = kind.strip().lower()
    if kind == "int":
        return key, "i64", int(value)
    if kind == "float":
        return key, "f64", float(value)
    if kind == "bool":
        if value.lower() not in ("true", "false"):
            raise ValueError(f"invalid --override-kv {spec!r}: bool must be true or false")
        return key, "bool", value.lower() == "true"
    if kind == "str":
        return key, "str", value
    raise ValueError(f"invalid --override-kv {spec!r}: unknown TYPE {kind!r} (int, float, bool or str)")


def _quantize_tensor(x: np.ndarray, t: QuantType, w: Optional[np.ndarray]) -> np.ndarray:
    """x in NumPy shape; 3-D expert tensors take one importance row per expert."""
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    if w is None or w.ndim == 1:
        return quantize(rows, t, imatrix=w)
    groups = x.reshape(w.shape[0], -1, n)
    return np.concatenate([quantize(g, t, imatrix=w[i]) for i, g in enumerate(groups)], axis=0)


def plan_model(reader: Any, ftype: FileTypeLike, options: QuantizeOptions) -> QuantPlan:
    specs = [TensorSpec.from_numpy(t.name, t.shape, t.qtype) for t in reader.tensors]
    return plan_quantization(specs, ModelFacts.from_gguf_metadata(reader.metadata), ftype, options)


def quantize_model(
    input: PathLike,
    output: Optional[PathLike],
    ftype: Optional[FileTypeLike] = None,
    *,
    target_bpw: Optional[float] = None,
    target_size: Union[None, int, str] = None,
    tensor_type_out: Optional[PathLike] = None,
    nthreads: Optional[int] = None,
    imatrix: Optional[PathLike] = None,
    tensor_types: Sequence[Any] = (),
    output_tensor_type: Optional[Any] = None,
    token_embedding_type: Optional[Any] = None,
    leave_output_tensor: bool = False,
    pure: bool = False,
    allow_requantize: bool = False,
    include_weights: Sequence[str] = (),
    exclude_weights: Sequence[str] = (),
    override_kv: Sequence[Union[str, Tuple[str, str, Any]]] = (),
    dry_run: bool = False,
    progress: Optional[bool] = None,
    log: Callable[[str], None] = lambda s: None,
    executor: Any = None,
    keep_split: bool = False,
    split_max_size: Union[None, int, str] = None,
    missing_imatrix: Optional[Any] = None,
    prune_layers: Union[str, Sequence[int]] = (),
    _collect: Optional[Callable[[Any], None]] = None,
) -> QuantizeReport:
    """Quantize the GGUF model `input` to `output` with llama-quantize's recipe `ftype`.

    `input` may also be an image or video diffusion checkpoint for ComfyUI in safetensors
    (see :mod:`kquant.diffusion`); GGUF diffusion models get ComfyUI-GGUF's rules.

    Options mirror llama-quantize's flags. With `dry_run` nothing is written and the
    report lists every tensor's planned type and size.

    With `target_bpw` or `target_size` ("3.2GB", "800MiB", bytes) kquant measures each
    tensor's error under each candidate type and picks a type per tensor with the least
    total error within the budget (see `kquant.budget`); `tensor_types` pins stay fixed.
    The choice is applied as `--tensor-type` pins (written to `tensor_type_out` if given),
    and `ftype` defaults to the llama.cpp file type nearest in size.

    `executor`: a `concurrent.futures.Executor`, a Dask `Client`, "local:N" (N worker
    processes) or a Dask scheduler address ("tcp://host:8786") to run the per-tensor work
    on; the file is written here and is byte-identical whatever runs the work (see
    `kquant.executors`). `keep_split` writes a split input as a split set like it;
    `split_max_size` ("4GB", bytes) splits the output into parts of at most that much
    tensor data (`kquant.split`).

    The file types whose tensors need an importance matrix (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
    IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, Q2_K_S) refuse to run without `imatrix`; every tensor is
    checked before anything is written, and the error names all that lack an entry.
    `missing_imatrix` (a tensor type that needs none, e.g. "Q4_K") gives exactly those
    tensors that type instead. `prune_layers` (layer numbers, or "3,7") drops those layers
    and renumbers the rest and their importance entries as llama-quantize does, and sets
    `{arch}.block_count`; it does not combine with `executor`, `keep_split` or
    `split_max_size`.
    """
    from . import _api
    from .diffusion import missing_5d_note, open_model

    t0 = time.perf_counter()
    budget_note = None
    if target_bpw is not None or target_size is not None:
        from .budget import choose_for_budget
        from .recipes import parse_tensor_type_text

        choice = choose_for_budget(
            input, target_bpw=target_bpw, target_size=target_size, imatrix=imatrix, pins=list(tensor_types),
            executor=executor,
        )
        recipe_text = choice.to_tensor_type_file()
        if tensor_type_out is not None:
            with open(tensor_type_out, "w") as f:
                f.write(recipe_text)
        tensor_types = list(parse_tensor_type_text(recipe_text)) + list(tensor_types)
        if ftype is None:
            ftype = choice.recipe.file_type if choice.recipe is not None else FileType.Q4_K_M
        budget_note = choice.summary()
        log(budget_note)
    if ftype is None:
        raise ValueError("a file type (e.g. Q4_K_M) or a target_bpw / target_size budget is required")
    ft = FileType.parse(ftype)
    overrides = [parse_override_kv(o) if isinstance(o, str) else tuple(o) for o in override_kv]
    prune_layers = tuple(parse_prune_layers(prune_layers)) if isinstance(prune_layers, str) else tuple(prune_layers)
    if prune_layers and (_collect is not None or executor is not None or keep_split or split_max_size is not None):
        raise ValueError("prune_layers (--prune-layers) does not combine with executors, split outputs or variants yet")
    old_threads = _api.get_num_threads()
    if nthreads is not None:
        _api.set_num_threads(nthreads)
    try:
        imat = None
        if imatrix is not None:
            from .imatrix import load_imatrix

            imat = load_imatrix(imatrix)
            log(f"loaded imatrix with {len(imat)} entries from {os.fspath(imatrix)}")
        # a GGUF file, or a ComfyUI diffusion checkpoint in safetensors read as convert.py writes it
        with open_model(input) as reader:
            note = missing_5d_note(reader)
            if note:
                log(note)
            options = QuantizeOptions(
                tensor_types=tuple(tensor_types),
                output_tensor_type=output_tensor_type,
                token_embedding_type=token_embedding_type,
                leave_output_tensor=leave_output_tensor,
                pure=pure,
                allow_requantize=allow_requantize,
                imatrix=set(imat.keys()) if imat is not None else False,
                include_weights=tuple(include_weights),
                exclude_weights=tuple(exclude_weights),
                dry_run=dry_run,
                missing_imatrix=missing_imatrix,
                prune_layers=prune_layers,
            )
            plan = plan_model(reader, ft, options)
            if plan.block_count is not None:
                arch = reader.metadata.get("general.architecture")
                overrides.append((f"{arch}.block_count", "u32", plan.block_count))
            notes = _plan_notes(plan, options, dry_run)
            for n in notes:
                log(n)
            report = QuantizeReport(
                os.fspath(input), None if dry_run else os.fspath(output), ft, dry_run=dry_run, budget=budget_note,
                notes=notes,
            )
            infos = {t.name: t for t in reader.tensors}
            for p in plan:
                info = infos[p.input_name]
                n = info.shape[-1] if info.shape else 1
                rows = int(np.prod(info.shape[:-1], dtype=np.int64)) if len(info.shape) > 1 else 1
                after = rows * row_size(p.target_type, n) if p.quantize else info.nbytes
                report.tensors.append(
                    TensorResult(p.name, tuple(info.shape), info.qtype, p.target_type if p.quantize else info.qtype,
                                 info.nbytes, after, reason=p.reason)
                )
            if dry_run:
                report.seconds = time.perf_counter() - t0
                return report
            if imat is not None:
                _check_imatrix_sizes(plan, imat, infos)
            if output is None:
                raise ValueError("an output path is required unless dry_run is set")
            if _collect is not None or executor is not None or keep_split or split_max_size is not None:
                from .variants import OutputJob, run_jobs

                job = OutputJob(os.fspath(output), ft, plan, report, imat, overrides)
                if _collect is not None:
                    _collect(job)
                else:
                    run_jobs(reader, [job], executor=executor, keep_split=keep_split,
                             split_max_size=split_max_size, progress=progress)
            else:
                _write(reader, output, ft, plan, report, imat, overrides, progress)
    finally:
        if nthreads is not None:
            _api.set_num_threads(old_threads)
    report.seconds = time.perf_counter() - t0
    return report


def _output_metadata(reader, ft, imat, overrides) -> Dict[str, Tuple[Any, str]]:
    """The output's metadata: (value, type) by key, in order. A split input's split keys
    are dropped, as llama-quantize drops them (a split output gets its own)."""
    meta: Dict[str, Tuple[Any, str]] = {}
    for key, value in reader.metadata.items():
        if key in _REWRITTEN_KEYS or key.startswith(_IMATRIX_PREFIX) or key == "general.alignment":
            continue
        if key in ("split.no", "split.count", "split.tensors.count"):
            continue
        meta[key] = (value, reader.metadata_type(key))
    meta["general.quantization_version"] = (QUANTIZATION_VERSION, "u32")
    meta["general.file_type"] = (int(ft) if ft != FileType.COPY else _copy_file_type(reader), "u32")
    if imat is not None:
        for key, value, kind in imat.quantize_metadata():
            meta[key] = (value, kind)
    for key, kind, value in overrides:  # replace in place, or append
        meta[key] = (value, kind)
    return meta


def _write(reader, output, ft, plan, report, imat, overrides, progress) -> None:
    from .gguf import GGUFWriter

    by_name = {t.name: t for t in report.tensors}
    bar = _Progress(sum(t.bytes_before for t in report.tensors), enabled=progress)
    with GGUFWriter(output, alignment=reader.alignment) as w:
        meta = _output_metadata(reader, ft, imat, overrides)
        for key, (value, kind) in meta.items():
            w.add_metadata(key, value, type=kind)
        for p in plan:
            r = by_name[p.name]
            w.add_tensor_info(p.name, r.shape, r.target_type)
        for p in plan:
            r = by_name[p.name]
            t1 = time.perf_counter()
            if p.quantize:
                x = reader.dequantize(p.input_name)
                # a renumbered (pruned) tensor keeps its importance entry under its input name
                wts = imat.for_tensor(p.input_name, x.shape) if imat is not None and p.use_imatrix else None
                data = _quantize_tensor(x, r.target_type, wts)
                del x
            else:
                data = reader.raw(p.input_name)
            w.write_tensor(p.name, data)
            del data
            r.seconds = time.perf_counter() - t1
            bar.update(r.bytes_before, p.name)
    bar.close()


def _check_imatrix_sizes(plan: QuantPlan, imat: Any, infos: Dict[str, Any]) -> None:
    """Every importance entry the run will use fits its tensor, checked before anything is
    written (llama-quantize finds a misfit when it reaches the tensor). The token embedding
    is left to the writer, as llama-quantize tolerates a misfit there."""
    bad = []
    for p in plan:
        if not p.use_imatrix or p.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            continue
        try:
            imat.for_tensor(p.input_name, infos[p.input_name].shape)
        except ValueError:
            bad.append(p.input_name)
    if bad:
        raise ValueError(
            f"the importance matrix {imat.path} does not fit {len(bad)} tensor(s) of this model "
            f"(entry size is not row length x experts): {', '.join(bad)}; was it computed for another model?"
        )


def _plan_notes(plan: QuantPlan, options: QuantizeOptions, dry_run: bool) -> List[str]:
    """What the run prints besides the sizes: pruning, missing importance entries."""
    notes = []
    if plan.pruned:
        notes.append(
            f"pruned layers {', '.join(map(str, sorted(set(map(int, options.prune_layers)))))}: {len(plan.pruned)} tensors "
            f"dropped, block_count {plan.model.n_layer} -> {plan.block_count}"
        )
    if plan.lacking_imatrix and options.missing_imatrix is not None:
        t = QuantType.parse(options.missing_imatrix)
        names = plan.lacking_imatrix
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        notes.append(
            f"missing_imatrix: {len(names)} tensor(s) without an importance entry get {t.name}: "
            + ", ".join(names[:20]) + more
        )
    if dry_run and plan.imatrix_error:
        notes.append("warning: the dry run completed, but the quantization itself will stop: " + plan.imatrix_error)
    return notes


def _copy_file_type(reader) -> int:
    v = reader.metadata.get("general.file_type")
    return int(v) if isinstance(v, (int, np.integer)) else int(FileType.F32)
