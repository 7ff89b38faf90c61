"""Many file types of one model in one pass, and the write path for executors and split output.

``quantize_variants(IN, OUTDIR, ["Q4_K_M", "Q5_K_M", "Q8_0"])`` plans every file type with
:func:`kquant.quantize_model`'s own planning (same recipes, flags and importance matrix),
then reads each source tensor and converts it to float32 once, quantizes it to each type
the plans ask for (once per distinct type: Q4_K_S and Q4_K_M share most of their tensors)
and streams it to every output. Each output is byte-identical to ``kquant quantize IN OUT
TYPE`` and appears atomically; memory stays at a few tensors' worth, whatever the number of
types.

:func:`run_jobs` is that pass; ``quantize_model`` uses it too when given an executor or a
split option.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .recipes import FileType, FileTypeLike

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["OutputJob", "quantize_variants", "run_jobs", "variant_path"]


@dataclass
class OutputJob:
    """One output file, as ``quantize_model`` planned it."""

    output: str
    ft: FileType
    plan: Any  # recipes.QuantPlan
    report: Any  # model.QuantizeReport
    imat: Any  # imatrix.Imatrix or None
    overrides: List[Tuple[str, str, Any]]


def variant_path(input: PathLike, outdir: PathLike, ftype: FileTypeLike) -> str:
    """``OUTDIR/<input stem>-<TYPE>.gguf``; the stem of a split set drops ``-00001-of-0000n``."""
    from .split import split_prefix

    stem = os.path.basename(split_prefix(os.fspath(input)))
    return os.path.join(os.fspath(outdir), f"{stem}-{FileType.parse(ftype).name}.gguf")


def quantize_variants(
    input: PathLike,
    outdir: Optional[PathLike],
    ftypes: Sequence[FileTypeLike],
    *,
    executor: Any = None,
    keep_split: bool = False,
    split_max_size: Union[None, int, str] = None,
    nthreads: Optional[int] = None,
    dry_run: bool = False,
    progress: Optional[bool] = None,
    log: Callable[[str], None] = lambda s: None,
    **options: Any,
) -> List[Any]:
    """Quantize `input` to every file type in `ftypes` in one pass; one
    :class:`~kquant.model.QuantizeReport` per type, in order.

    Outputs go to ``OUTDIR/<input stem>-<TYPE>.gguf`` (OUTDIR is created if missing).
    ``options`` are :func:`kquant.quantize_model`'s (``imatrix``, ``tensor_types``, ``pure``,
    ``allow_requantize``, ...) and apply to every type; budgets (``target_bpw``,
    ``target_size``) choose one recipe and belong to ``quantize_model``. ``executor``,
    ``keep_split`` and ``split_max_size`` as for ``quantize_model``. The reports' ``seconds``
    is the time of the whole pass.
    """
    from . import _api
    from .gguf import GGUFReader
    from .model import quantize_model

    for key in ("target_bpw", "target_size", "tensor_type_out"):
        if options.get(key) is not None:
            raise ValueError(f"{key} chooses one recipe for one output; use quantize_model (kquant quantize) for it")
        options.pop(key, None)
    if isinstance(ftypes, (str, int)):
        ftypes = [ftypes]
    if not ftypes:
        raise ValueError("at least one file type is required")
    fts = [FileType.parse(f) for f in ftypes]
    seen = set()
    for f in fts:
        if f in seen:
            raise ValueError(f"file type {f.name} is given twice")
        seen.add(f)
    if not dry_run and outdir is None:
        raise ValueError("an output directory is required unless dry_run is set")
    t0 = time.perf_counter()
    jobs: List[OutputJob] = []
    reports = []
    for ft in fts:
        out = None if dry_run else variant_path(input, outdir, ft)
        reports.append(
            quantize_model(input, out, ft, dry_run=dry_run, log=log, _collect=jobs.append, **options)
        )
    if dry_run:
        return reports
    os.makedirs(os.fspath(outdir), exist_ok=True)
    old_threads = _api.get_num_threads()
    if nthreads is not None:
        _api.set_num_threads(nthreads)
    try:
        with GGUFReader(input) as reader:
            run_jobs(reader, jobs, executor=executor, keep_split=keep_split, split_max_size=split_max_size,
                     progress=progress)
    finally:
        if nthreads is not None:
            _api.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0
    for r in reports:
        r.seconds = seconds
    return reports


# --------------------------------------------------------------------------
# the pass
# --------------------------------------------------------------------------


@dataclass
class _Layout:
    """Where one output's tensors go: part paths and, per tensor name, the part."""

    paths: List[str]
    part_of: Dict[str, int]


def _layout(reader: Any, job: OutputJob, order: List[str], keep_split: bool, max_size: Optional[int]) -> _Layout:
    from .split import assign_parts, part_paths

    by_name = {t.name: t for t in job.report.tensors}
    if keep_split:
        parts = [reader.tensor(n).part for n in order]
    else:
        parts = assign_parts([by_name[n].bytes_after for n in order], max_size=max_size, alignment=reader.alignment)
    count = max(parts) + 1 if parts else 1
    if keep_split:
        count = len(reader.paths)
    return _Layout(part_paths(job.output, count), dict(zip(order, parts)))


def _open_writers(reader: Any, job: OutputJob, layout: _Layout, order: List[str]) -> List[Any]:
    from .gguf import GGUFWriter
    from .model import _output_metadata
    from .split import SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT

    by_name = {t.name: t for t in job.report.tensors}
    count = len(layout.paths)
    writers: List[Any] = []
    try:
        for k, path in enumerate(layout.paths):
            w = GGUFWriter(path, alignment=reader.alignment)
            writers.append(w)
            if k == 0:
                for key, (value, kind) in _output_metadata(reader, job.ft, job.imat, job.overrides).items():
                    w.add_metadata(key, value, type=kind)
            if count > 1:
                # as llama-quantize --keep-split and gguf-split write them, after the rest
                w.add_metadata(SPLIT_NO, k, type="u16")
                w.add_metadata(SPLIT_COUNT, count, type="u16")
                w.add_metadata(SPLIT_TENSORS_COUNT, len(order), type="i32")
        for name in order:
            r = by_name[name]
            writers[layout.part_of[name]].add_tensor_info(name, r.shape, r.target_type)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return writers


def run_jobs(
    reader: Any,
    jobs: Sequence[OutputJob],
    *,
    executor: Any = None,
    keep_split: bool = False,
    split_max_size: Union[None, int, str] = None,
    progress: Optional[bool] = None,
) -> None:
    """Writes every job's output in one pass over `reader`'s tensors (see the module docs)."""
    from .budget import parse_size
    from .executors import TensorTask, fingerprint, open_executor, ordered_results, quantize_task
    from ._types import row_size
    from .model import _Progress, _quantize_tensor

    if not jobs:
        return
    if keep_split and split_max_size is not None:
        raise ValueError("--keep-split and --split-max-size exclude each other: keep the input's parts or choose a size")
    max_size = None if split_max_size is None else parse_size(split_max_size)
    if max_size is not None and max_size < 1:
        raise ValueError(f"the split size must be positive, got {split_max_size!r}")
    order = [p.name for p in jobs[0].plan]
    for job in jobs[1:]:
        if [p.name for p in job.plan] != order:  # pragma: no cover - plans of one reader agree
            raise ValueError("the plans of the file types list different tensors")
    if keep_split:
        # llama-quantize --keep-split writes each part's tensors in the input's order
        order.sort(key=lambda n: (reader.tensor(n).part, reader.tensor(n).offset))
    plans = [{p.name: p for p in job.plan} for job in jobs]
    results = [{t.name: t for t in job.report.tensors} for job in jobs]

    # what each tensor needs: distinct (type, with imatrix) conversions, shared by the jobs
    work: Dict[str, List[Tuple[Any, bool]]] = {}
    uses: Dict[str, List[Optional[int]]] = {}
    for name in order:
        targets: List[Tuple[Any, bool]] = []
        use: List[Optional[int]] = []
        for j, job in enumerate(jobs):
            p = plans[j][name]
            if not p.quantize:
                use.append(None)
                continue
            key = (results[j][name].target_type, bool(job.imat is not None and p.use_imatrix))
            if key not in targets:
                targets.append(key)
            use.append(targets.index(key))
        work[name], uses[name] = targets, use

    ex, close_executor, workers = open_executor(executor)
    imat = next((job.imat for job in jobs if job.imat is not None), None)
    layouts = [_layout(reader, job, order, keep_split, max_size) for job in jobs]
    for job, layout in zip(jobs, layouts):
        if len(layout.paths) > 1:
            job.report.output = layout.paths[0]  # the first part names the set
    writers: List[List[Any]] = []
    finished: List[str] = []
    stream = None
    bar = _Progress(sum(t.nbytes for t in reader.tensors), enabled=progress)
    try:
        for job, layout in zip(jobs, layouts):
            writers.append(_open_writers(reader, job, layout, order))

        def targets_of(name: str, shape: Tuple[int, ...]) -> List[Tuple[int, Optional[np.ndarray]]]:
            return [(int(t), imat.for_tensor(name, shape) if with_imat else None) for t, with_imat in work[name]]

        def computed():
            """(name, [data per target]) in order."""
            if ex is None:
                for name in order:
                    if not work[name]:
                        yield name, []
                        continue
                    x = reader.dequantize(name)
                    yield name, [_quantize_tensor(x, t, w) for t, w in targets_of(name, x.shape)]
                    del x
                return
            prints: Dict[int, Tuple[int, str]] = {}

            def tasks():
                for name in order:
                    if not work[name]:
                        continue
                    info = reader.tensor(name)
                    path = os.path.abspath(reader.paths[info.part])
                    if info.part not in prints:
                        prints[info.part] = fingerprint(path)
                    rows = info.n_elements // max(info.shape[-1], 1)
                    out_bytes = sum(rows * row_size(t, info.shape[-1]) for t, _ in work[name])
                    yield TensorTask(name, int(info.qtype), tuple(info.shape), info.offset, info.nbytes, path,
                                     prints[info.part], targets_of(name, tuple(info.shape)), out_bytes=out_bytes)

            def embed(task: TensorTask) -> TensorTask:
                task = TensorTask(**{**task.__dict__})
                task.data = np.array(reader.raw(task.name)).reshape(-1)
                return task

            remote = ordered_results(ex, quantize_task, tasks(), embed, workers=workers)
            try:
                for name in order:
                    yield name, next(remote) if work[name] else []
            finally:
                remote.close()  # cancels what is still in flight

        stream = computed()
        for name, data in stream:
            t1 = time.perf_counter()
            raw = None
            for j, job in enumerate(jobs):
                out = writers[j][layouts[j].part_of[name]]
                k = uses[name][j]
                if k is None:
                    if raw is None:
                        raw = reader.raw(name)
                    out.write_tensor(name, raw)
                else:
                    out.write_tensor(name, data[k])
                results[j][name].seconds = time.perf_counter() - t1
            del data, raw
            bar.update(reader.tensor(name).nbytes, name)
        for ws in writers:
            for w in ws:
                w.close()
                finished.append(w.path)
    except BaseException:
        if stream is not None:
            stream.close()
        for ws in writers:
            for w in ws:
                w.abort()
        # a set is whole or absent: parts already renamed into place go too
        for path in finished:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    finally:
        bar.close()
        close_executor()


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


class _CliReport:
    """What ``kquant variants`` prints, in the shape cli._quantize expects of a report."""

    def __init__(self, reports: List[Any], dry_run: bool):
        self.reports, self.dry_run = reports, dry_run
        self.tensors: List[Any] = []  # printed per type by summary()

    def summary(self) -> str:
        parts = []
        for r in self.reports:
            lines = [f"== {r.ftype.name}"]
            if self.dry_run:
                for t in r.tensors:
                    shape = "x".join(str(d) for d in t.shape)
                    lines.append(f"{t.name:48} {shape:>20} {t.source_type.name:>7} -> {t.target_type.name:7} "
                                 f"{t.bytes_after / 2**20:10.2f} MiB")
            lines.append(r.summary())
            parts.append("\n".join(lines))
        return "\n".join(parts)


def _cli_variants(input: Any, output: Any, ftypes: Any, **kw: Any) -> _CliReport:
    return _CliReport(quantize_variants(input, output, ftypes, **kw), bool(kw.get("dry_run")))


def add_parser(sub: Any) -> None:
    """``kquant variants IN OUTDIR TYPE [TYPE ...]``: the options of ``kquant quantize``
    (registered first) apply to every type."""
    from .cli import _quantize

    q = sub.choices["quantize"]
    v = sub.add_parser(
        "variants",
        help="quantize a GGUF model to several file types in one pass",
        description=(
            "Quantize IN to each TYPE in one pass: every tensor is read and converted once, then quantized to "
            "each type. Writes OUTDIR/<stem>-<TYPE>.gguf, each byte-identical to kquant quantize IN OUT TYPE. "
            "Takes the options of kquant quantize, applied to every type."
        ),
    )
    v.add_argument("input", help="input GGUF file (the first part of a split set reads the whole set)")
    v.add_argument("output", metavar="outdir", help="output directory (created if missing)")
    v.add_argument("type", nargs="+", help="file types: Q4_K_M Q5_K_M Q8_0 ...")
    v.add_argument("--nthreads", type=int, metavar="N", help="threads (default: every core)")
    for action in q._actions:
        if action.option_strings and action.dest not in ("help", "target_bpw", "target_size", "tensor_type_out"):
            v._add_action(action)
    v.set_defaults(func=_quantize, quantize_fn=_cli_variants, target_bpw=None, target_size=None,
                   tensor_type_out=None)

