"""Run the user's own evaluation on the weights each quantization candidate would really have.

:func:`evaluate` calls ``metric(weights)`` once for the unquantized model (the baseline) and once
per candidate. ``weights`` is a read-only mapping from tensor name to a float32 array holding what
a runtime would load from the file ``kquant quantize`` writes for that candidate: every tensor is
planned by :mod:`kquant.recipes` exactly as :func:`kquant.quantize_model` plans it (recipe, mix
upgrades, row-length fallbacks, ``tensor_types`` overrides, importance matrix with
``include_weights`` / ``exclude_weights``), quantized with the same function and dequantized;
tensors the plan keeps are the stored values. A tensor is made when the metric first reads it and
cached until the metric returns, so memory stays near one copy of the model.

Safetensors input is treated as the F32/F16/BF16 GGUF llama.cpp's converter would make of it:
planning uses the GGUF names (``blk.0.attn_q.weight``), while the mapping handed to the metric
uses the names in the file.

The table reports, per candidate, the tensor data bytes of the file, bits per weight, the relative
RMSE of the quantizable tensors (the same parameter-weighted total as ``kquant tradeoffs``, here
measured on every row, importance-weighted when an imatrix is given) and the metric. Tensors the
metric never read are quantized after it returns, only to complete the error.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import sys
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .._api import dequantize
from .._types import QuantType, row_size
from ..recipes import FileType, QuantizeOptions, QuantPlan, TensorSpec, parse_tensor_type_text, plan_quantization

__all__ = [
    "Candidate",
    "Evaluation",
    "QuantizedWeights",
    "STANDARD_FILE_TYPES",
    "default_candidates",
    "evaluate",
    "load_metric",
]

PathLike = Union[str, "os.PathLike[str]"]
MetricValue = Union[float, Dict[str, float]]
Metric = Callable[[Mapping[str, np.ndarray]], Any]

#: The file types evaluated by default, besides the low-bit ones (see :func:`default_candidates`).
STANDARD_FILE_TYPES: Tuple[str, ...] = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")

# below Q3_K's bits per weight a file type counts as "low-bit" and joins the default list
_LOW_BIT_LIMIT = QuantType.Q3_K.bits_per_weight

# what quantize_model uses when a budget has no nearest llama.cpp recipe or a tensor type file
# names no base file type
_DEFAULT_BASE = FileType.Q4_K_M


# --------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One way to quantize the model, as ``kquant quantize`` would be told.

    ``ftype``: a llama.cpp file type (``"Q4_K_M"``). ``tensor_types``: per-tensor pins
    (``"pattern=TYPE"`` strings or ``(pattern, type)`` pairs, first match wins), e.g. the lines of a
    ``--tensor-type-file``. ``target_bpw`` / ``target_size``: a size budget, as
    ``kquant quantize --target-bpw`` (the chosen per-tensor types become pins and ``ftype``
    defaults to the nearest llama.cpp recipe). The remaining fields are llama-quantize's flags.
    """

    ftype: Optional[Union[str, FileType]] = None
    tensor_types: Tuple[Any, ...] = ()
    target_bpw: Optional[float] = None
    target_size: Optional[Union[int, str]] = None
    label: Optional[str] = None
    output_tensor_type: Optional[Any] = None
    token_embedding_type: Optional[Any] = None
    leave_output_tensor: bool = False
    pure: bool = False
    budget: Optional[str] = field(default=None, compare=False)  # what a chosen budget came to

    def __post_init__(self) -> None:
        if self.target_bpw is not None and self.target_size is not None:
            raise ValueError("a candidate takes target_bpw or target_size, not both")
        if self.ftype is None and self.target_bpw is None and self.target_size is None and not self.tensor_types:
            raise ValueError("a candidate needs a file type, tensor types or a size budget")
        if self.ftype is not None:
            object.__setattr__(self, "ftype", FileType.parse(self.ftype))
        object.__setattr__(self, "tensor_types", tuple(self.tensor_types))

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.target_bpw is not None:
            return f"{self.target_bpw:g} bpw budget"
        if self.target_size is not None:
            return f"{self.target_size} budget"
        base = self.ftype.name if self.ftype is not None else _DEFAULT_BASE.name
        return base + (f"+{len(self.tensor_types)} pins" if self.tensor_types else "")

    @classmethod
    def parse(cls, spec: Union[str, "Candidate", FileType]) -> "Candidate":
        """A candidate from a string.

        ``Q4_K_M`` (a file type), ``bpw=4.8`` (a budget in bits per weight), ``size=800MiB``
        (a budget in bytes), or a ``--tensor-type-file`` path, optionally preceded by its base
        file type: ``Q6_K:recipe.txt`` (without one the base is Q4_K_M).
        """
        if isinstance(spec, Candidate):
            return spec
        if isinstance(spec, FileType):
            return cls(ftype=spec)
        if not isinstance(spec, str):
            raise TypeError(f"a candidate is a Candidate, a FileType or a string, not {type(spec).__name__}")
        s = spec.strip()
        key, eq, value = s.partition("=")
        if eq and key.strip().lower() in ("bpw", "target_bpw", "target-bpw"):
            try:
                return cls(target_bpw=float(value))
            except ValueError:
                raise ValueError(f"candidate {spec!r}: {value!r} is not a number of bits per weight") from None
        if eq and key.strip().lower() in ("size", "target_size", "target-size"):
            return cls(target_size=value.strip())
        base, colon, rest = s.partition(":")
        path = rest if colon and _is_file_type(base) else s
        if os.path.isfile(path):
            from ..recipes import load_tensor_type_file

            pins = tuple(load_tensor_type_file(path))
            ft = FileType.parse(base) if path is rest else None
            return cls(ftype=ft, tensor_types=pins, label=(f"{ft.name}:" if ft else "") + Path(path).name)
        if eq:
            raise ValueError(f"candidate {spec!r}: expected bpw=B or size=SIZE")
        try:
            return cls(ftype=FileType.parse(s))
        except ValueError:
            raise ValueError(
                f"candidate {spec!r} is neither a file type (e.g. Q4_K_M), bpw=B, size=SIZE nor an existing "
                "--tensor-type-file"
            ) from None


def _is_file_type(s: str) -> bool:
    try:
        FileType.parse(s)
    except (ValueError, TypeError):
        return False
    return True


def _needs_imatrix(plan: QuantPlan) -> bool:
    return any(e.requires_imatrix and e.quantize for e in plan)


def default_candidates(model: Any = None, imatrix: Any = None) -> List[Candidate]:
    """The default candidate list: the low-bit file types (default tensor type below Q3_K's 3.44
    bits per weight) and Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0, in increasing size.

    The file types are read from :class:`kquant.recipes.FileType` when called, so new ones appear
    here by themselves. A file type whose recipe needs an importance matrix (llama-quantize refuses
    it without one) is listed only when ``imatrix`` is given; with ``model`` (a path) that is
    decided on the model's own plan, and file types whose plan fails on it are left out.
    """
    ctx = _Context.open(model, imatrix) if model is not None and not isinstance(model, _Context) else model
    imat = ctx.imat if ctx is not None else (_load_imatrix(imatrix) if imatrix is not None else None)
    low = [
        ft for ft in FileType
        if ft.name not in STANDARD_FILE_TYPES and ft.default_type is not None and not ft.default_type.is_float
        and ft.default_type.bits_per_weight < _LOW_BIT_LIMIT
    ]
    low.sort(key=lambda ft: (ft.default_type.bits_per_weight, ft.value))
    out: List[Candidate] = []
    for ft in [*low, *(FileType.parse(n) for n in STANDARD_FILE_TYPES)]:
        if ctx is not None:
            try:
                plan = ctx.plan(ft, QuantizeOptions(imatrix=ctx.imatrix_names(), dry_run=True))
            except ValueError:
                continue
            if _needs_imatrix(plan) and imat is None:
                continue
            if plan.errors and ft.name not in STANDARD_FILE_TYPES:
                continue
        elif imat is None and ft in low and _requires_imatrix_anywhere(ft):
            continue
        out.append(Candidate(ftype=ft))
    return out


def _requires_imatrix_anywhere(ft: FileType) -> bool:
    # without a model: plan one plain weight matrix; a recipe that refuses it without an imatrix
    # refuses real models too
    from ..recipes import ModelFacts

    spec = TensorSpec("blk.0.ffn_up.weight", (4096, 4096))
    plan = plan_quantization([spec], ModelFacts(n_layer=1), ft, dry_run=True)
    return _needs_imatrix(plan)


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------


def _load_imatrix(imatrix: Any) -> Any:
    """An :class:`kquant.imatrix.Imatrix` from a path, an Imatrix or a mapping of name -> array."""
    from ..imatrix import Imatrix, load_imatrix

    if imatrix is None or isinstance(imatrix, Imatrix):
        return imatrix
    if isinstance(imatrix, (str, os.PathLike)):
        return load_imatrix(imatrix)
    if isinstance(imatrix, Mapping):
        values = {}
        for k, v in imatrix.items():
            a = np.ascontiguousarray(v, dtype=np.float32)
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"imatrix entry {k!r} has negative or non-finite values")
            values[str(k)] = a
        return Imatrix("<mapping>", "mapping", values, {}, {}, [], 0, None)
    raise TypeError(f"imatrix must be a path, an Imatrix or a mapping of arrays, not {type(imatrix).__name__}")


class _Context:
    """An opened model: tensors, names and the importance matrix, shared by the candidates of one
    process."""

    def __init__(self, path: PathLike, imat: Any):
        from ..tensors import GGUFSource, open_source

        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"model must be a GGUF or safetensors path, not {type(path).__name__}")
        self.path = os.fspath(path)
        self.src = open_source(self.path)
        self.gguf = isinstance(self.src, GGUFSource)
        self.imat = imat
        # the metric sees the names in the file; planning uses the GGUF names
        self.keys: List[str] = [i.source_name or i.name for i in self.src.tensors]
        self.to_internal: Dict[str, str] = {i.source_name or i.name: i.name for i in self.src.tensors}
        self.infos = {i.name: i for i in self.src.tensors}
        self.total_params = sum(i.params for i in self.src.tensors)
        self.stored_bytes = sum(i.nbytes for i in self.src.tensors)

    @classmethod
    def open(cls, path: PathLike, imatrix: Any = None) -> "_Context":
        return cls(path, _load_imatrix(imatrix))

    def imatrix_names(self) -> Any:
        return set(self.imat.keys()) if self.imat is not None else False

    def load(self, name: str) -> np.ndarray:
        """The stored tensor as float32 in its NumPy shape, read as quantize_model reads it."""
        if self.gguf:
            return np.asarray(self.src.reader.dequantize(name), dtype=np.float32)
        return self.src.load(name)

    def plan(self, ftype: FileType, options: QuantizeOptions) -> QuantPlan:
        if self.gguf:
            from ..model import plan_model

            return plan_model(self.src.reader, ftype, options)
        specs = [TensorSpec.from_numpy(i.name, i.shape, i.type) for i in self.src.tensors]
        return plan_quantization(specs, self.src.model_facts(), ftype, options)


@dataclass(frozen=True)
class _Common:
    """Options every candidate shares (``kquant quantize`` flags given once)."""

    tensor_types: Tuple[Any, ...] = ()
    include_weights: Tuple[str, ...] = ()
    exclude_weights: Tuple[str, ...] = ()
    allow_requantize: bool = False


def _choose_budget(ctx: _Context, cand: Candidate, common: _Common) -> Candidate:
    """A budget candidate turned into the pins and file type ``kquant quantize --target-bpw`` uses.

    Mirrors :func:`kquant.quantize_model`: the budget is chosen on the model with the user's pins,
    its choice becomes pins ahead of them, and the file type defaults to the nearest recipe.
    """
    if cand.target_bpw is None and cand.target_size is None:
        return cand
    from ..budget import choose_for_budget

    user_pins = [*cand.tensor_types, *common.tensor_types]
    choice = choose_for_budget(
        ctx.src, target_bpw=cand.target_bpw, target_size=cand.target_size, imatrix=ctx.imat, pins=user_pins
    )
    pins = tuple(parse_tensor_type_text(choice.to_tensor_type_file())) + cand.tensor_types
    ftype = cand.ftype
    if ftype is None:
        ftype = choice.recipe.file_type if choice.recipe is not None else _DEFAULT_BASE
    return replace(cand, ftype=ftype, tensor_types=pins, target_bpw=None, target_size=None, label=cand.name,
                   budget=choice.summary())


def _resolve(ctx: _Context, cand: Candidate, common: _Common) -> QuantPlan:
    """The plan ``kquant quantize`` makes for this candidate (budgets already chosen)."""
    assert cand.target_bpw is None and cand.target_size is None
    options = QuantizeOptions(
        tensor_types=(*cand.tensor_types, *common.tensor_types),
        output_tensor_type=cand.output_tensor_type,
        token_embedding_type=cand.token_embedding_type,
        leave_output_tensor=cand.leave_output_tensor,
        pure=cand.pure,
        allow_requantize=common.allow_requantize,
        imatrix=ctx.imatrix_names(),
        include_weights=common.include_weights,
        exclude_weights=common.exclude_weights,
    )
    return ctx.plan(cand.ftype if cand.ftype is not None else _DEFAULT_BASE, options)


# --------------------------------------------------------------------------
# the weights handed to the metric
# --------------------------------------------------------------------------


class QuantizedWeights(Mapping):
    """Tensor name -> float32 array (read-only) of one candidate, made on first access.

    Names are those of the model file. Values are what a runtime loads from the file
    ``kquant quantize`` writes for the candidate; for the baseline, the stored values.
    Thread-safe; each tensor is made once per metric call.
    """

    def __init__(self, ctx: _Context, plan: Optional[QuantPlan]):
        self._ctx = ctx
        self._plan = plan
        self._cache: Dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        # name -> (params, weighted squared error, weighted squared norm) of quantizable tensors
        self.errors: Dict[str, Tuple[int, float, float]] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            name = self._ctx.to_internal[key]
        except KeyError:
            raise KeyError(f"no tensor {key!r} in {self._ctx.path}") from None
        with self._lock:
            a = self._cache.get(name)
            if a is None:
                a = self._cache[name] = self._make(name)
            return a

    def __iter__(self) -> Iterator[str]:
        return iter(self._ctx.keys)

    def __len__(self) -> int:
        return len(self._ctx.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._ctx.to_internal

    def __repr__(self) -> str:
        return f"<QuantizedWeights of {self._ctx.path}: {len(self)} tensors, {len(self._cache)} made>"

    def _make(self, name: str) -> np.ndarray:
        from ..model import _quantize_tensor

        x = self._ctx.load(name)
        p = self._plan[name] if self._plan is not None else None
        if p is not None and p.quantize:
            imat = self._ctx.imat
            w = imat.for_tensor(name, x.shape) if imat is not None and p.use_imatrix else None
            data = _quantize_tensor(x, p.target_type, w)
            y = dequantize(data, p.target_type).reshape(x.shape)
        else:
            y = np.array(x, dtype=np.float32, copy=True) if x.flags.writeable else x
        if p is not None and p.allowed:
            self.errors[name] = self._error(name, x, y)
        y.flags.writeable = False
        return y

    def _error(self, name: str, x: np.ndarray, y: np.ndarray) -> Tuple[int, float, float]:
        n = x.shape[-1] if x.ndim else 1
        d = (x.astype(np.float64) - y).reshape(-1, n)
        xx = x.astype(np.float64).reshape(-1, n)
        imat = self._ctx.imat
        w = imat.for_tensor(name, x.shape) if imat is not None and name in imat else None
        if w is None:
            return x.size, float(np.sum(d * d)), float(np.sum(xx * xx))
        w = np.asarray(w, dtype=np.float64)
        groups = w.reshape(-1, n)
        per = d.shape[0] // groups.shape[0]
        se = sx = 0.0
        for g in range(groups.shape[0]):
            rows = slice(g * per, (g + 1) * per)
            se += float(np.sum(d[rows] ** 2 * groups[g]))
            sx += float(np.sum(xx[rows] ** 2 * groups[g]))
        return x.size, se, sx

    def finish(self) -> float:
        """The relative RMSE over every quantizable tensor, making the ones the metric skipped."""
        if self._plan is None:
            return 0.0
        for p in self._plan:
            if p.allowed and p.name not in self.errors:
                self._make(p.name)  # not cached: only the error is wanted
        self._cache.clear()
        tot_n = sum(n for n, _, _ in self.errors.values())
        acc = 0.0
        for n, se, sx in self.errors.values():
            acc += n * (se / sx if sx > 0 else (0.0 if se == 0 else math.inf))
        return math.sqrt(acc / tot_n) if tot_n else 0.0


# --------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------


def _metric_value(v: Any) -> MetricValue:
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
                raise TypeError(f"metric returned {type(x).__name__} for {k!r}; expected a number")
            out[str(k)] = float(x)
        if not out:
            raise TypeError("metric returned an empty dict")
        return out
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)) and not (
        isinstance(v, np.ndarray) and v.ndim == 0
    ):
        raise TypeError(f"metric must return a number or a dict of numbers, not {type(v).__name__}")
    return float(v)


@dataclass(frozen=True)
class _Job:
    index: int
    model: str
    candidate: Optional[Candidate]  # None: the baseline
    metric: Metric
    imatrix: Any
    common: _Common


_CTX_LOCAL = threading.local()


def _context_for(job: _Job) -> _Context:
    # one opened model per worker thread or process, reused across its jobs
    cached = getattr(_CTX_LOCAL, "ctx", None)
    if cached is not None and cached[0] == (job.model, id(job.imatrix)):
        return cached[1]
    ctx = _Context(job.model, job.imatrix)
    _CTX_LOCAL.ctx = ((job.model, id(job.imatrix)), ctx)
    return ctx


def _run_job(job: _Job, ctx: Optional[_Context] = None) -> Dict[str, Any]:
    """One row of the table (module-level, so process pools can run it)."""
    t0 = time.perf_counter()
    ctx = ctx if ctx is not None else _context_for(job)
    if job.candidate is None:
        plan, note = None, None
        nbytes = ctx.stored_bytes
        types: Dict[str, int] = {}
        for i in ctx.src.tensors:
            types[i.type.name] = types.get(i.type.name, 0) + 1
        label, ftype = "baseline", None
    else:
        plan, note = _resolve(ctx, job.candidate, job.common), job.candidate.budget
        nbytes = 0
        types = {}
        for p in plan:
            info = ctx.infos[p.name]
            t = p.target_type if p.quantize else info.type
            nbytes += info.n_rows * row_size(t, info.row_length) if p.quantize else info.nbytes
            types[t.name] = types.get(t.name, 0) + 1
        label, ftype = job.candidate.name, plan.file_type.name
    weights = QuantizedWeights(ctx, plan)
    t1 = time.perf_counter()
    value = _metric_value(job.metric(weights))
    metric_seconds = time.perf_counter() - t1
    rel = weights.finish()
    row: Dict[str, Any] = {
        "candidate": label,
        "bytes": int(nbytes),
        "bits_per_weight": nbytes * 8 / ctx.total_params if ctx.total_params else 0.0,
        "rel_rmse": rel,
        "metric": value,
        "file_type": ftype,
        "types": dict(sorted(types.items())),
        "seconds": time.perf_counter() - t0,
        "metric_seconds": metric_seconds,
    }
    if note is not None:
        row["budget"] = note
    return row


def _check_picklable(metric: Metric, executor: Executor) -> None:
    if isinstance(executor, ThreadPoolExecutor):
        return
    try:
        pickle.dumps(metric)
    except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing here
        raise TypeError(
            f"the metric cannot be sent to {type(executor).__name__} ({type(e).__name__}: {e}); its workers "
            "receive it pickled, so define it at module level (or as an instance of a module-level class), "
            "or use a concurrent.futures.ThreadPoolExecutor, which shares it without pickling"
        ) from None


def evaluate(
    model: PathLike,
    metric: Metric,
    candidates: Optional[Sequence[Union[str, Candidate, FileType]]] = None,
    *,
    imatrix: Any = None,
    target_bpw: Union[None, float, Sequence[float]] = None,
    target_size: Union[None, int, str, Sequence[Union[int, str]]] = None,
    tensor_types: Sequence[Any] = (),
    include_weights: Sequence[str] = (),
    exclude_weights: Sequence[str] = (),
    allow_requantize: bool = False,
    executor: Optional[Executor] = None,
    progress: Union[None, bool, Callable[[int, int, Dict[str, Any]], None]] = None,
) -> "Evaluation":
    """Call ``metric(weights)`` for the unquantized ``model`` and for each candidate.

    ``model``: a GGUF file, or a safetensors file or folder. ``metric`` takes a read-only mapping
    of tensor name (as in the file) to float32 array and returns a number or a dict of numbers.
    ``candidates``: file types (``"Q4_K_M"``), :class:`Candidate` objects or strings that
    :meth:`Candidate.parse` reads (``"bpw=4.8"``, ``"size=800MiB"``, a ``--tensor-type-file``);
    None for :func:`default_candidates`. ``target_bpw`` / ``target_size`` (one value or several)
    add size-budget candidates. ``imatrix`` (path, :class:`~kquant.imatrix.Imatrix` or mapping),
    ``tensor_types``, ``include_weights``, ``exclude_weights`` and ``allow_requantize`` apply to
    every candidate as the ``kquant quantize`` flags of the same names.

    ``executor``: any :class:`concurrent.futures.Executor`; each candidate is one task (the model
    is opened once per worker). A process pool needs a picklable metric: a function or a
    module-level class instance; otherwise a TypeError says so before anything runs. A thread pool
    needs nothing pickled (kquant's kernels and NumPy release the GIL).

    ``progress``: True prints a line per finished candidate on stderr, a callable gets
    ``(done, total, row)``; None prints when stderr is a terminal.
    """
    t_start = time.perf_counter()
    imat = _load_imatrix(imatrix)
    ctx = _Context(model, imat)
    cands = [Candidate.parse(c) for c in candidates] if candidates is not None else None
    budgets: List[Candidate] = []
    for v in _as_list(target_bpw):
        budgets.append(Candidate(target_bpw=float(v)))
    for v in _as_list(target_size):
        budgets.append(Candidate(target_size=v))
    if cands is None:
        cands = default_candidates(ctx)
    cands = cands + budgets
    labels = [c.name for c in cands]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ValueError(f"candidates with the same label: {', '.join(sorted(dup))}; give them labels")
    common = _Common(tuple(tensor_types), tuple(include_weights), tuple(exclude_weights), bool(allow_requantize))
    # choose the budgets and plan every candidate here, so a bad one fails before any metric runs
    report = _progress_fn(progress)
    for i, c in enumerate(cands):
        if c.target_bpw is not None or c.target_size is not None:
            if report is not None and not callable(progress):
                print(f"kquant evaluate: choosing types for the {c.name}", file=sys.stderr, flush=True)
            cands[i] = _choose_budget(ctx, c, common)
        _resolve(ctx, cands[i], common)
    jobs = [_Job(0, ctx.path, None, metric, imat, common)]
    jobs += [_Job(i + 1, ctx.path, c, metric, imat, common) for i, c in enumerate(cands)]
    rows: List[Optional[Dict[str, Any]]] = [None] * len(jobs)
    if executor is None:
        for k, job in enumerate(jobs):
            rows[job.index] = _run_job(job, ctx)
            if report:
                report(k + 1, len(jobs), rows[job.index])
    else:
        _check_picklable(metric, executor)
        futures = {executor.submit(_run_job, job): job for job in jobs}
        done = 0
        for f in as_completed(futures):
            row = f.result()
            rows[futures[f].index] = row
            done += 1
            if report:
                report(done, len(jobs), row)
    return Evaluation(
        model=ctx.path,
        rows=[r for r in rows if r is not None],
        imatrix=imat is not None,
        params=ctx.total_params,
        seconds=time.perf_counter() - t_start,
    )


def _as_list(v: Any) -> List[Any]:
    if v is None:
        return []
    if isinstance(v, (str, bytes, numbers.Real)):
        return [v]
    return list(v)


def _progress_fn(progress: Any) -> Optional[Callable[[int, int, Dict[str, Any]], None]]:
    if callable(progress):
        return progress
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None

    def show(done: int, total: int, row: Dict[str, Any]) -> None:
        print(f"kquant evaluate: [{done}/{total}] {row['candidate']}: {row['bits_per_weight']:.3f} bpw, "
              f"rel RMSE {row['rel_rmse']:.5f}, metric {_fmt_metric(row['metric'])} ({row['seconds']:.1f} s)",
              file=sys.stderr, flush=True)

    return show


def _fmt_metric(v: MetricValue) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={x:.6g}" for k, x in v.items())
    return f"{v:.6g}"


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


@dataclass
class Evaluation:
    """The table :func:`evaluate` returns: the baseline row first, then one row per candidate.

    Each row has ``candidate``, ``bytes`` (tensor data), ``bits_per_weight``, ``rel_rmse``,
    ``metric`` (a number or a dict), ``file_type``, ``types`` (tensors per type) and ``seconds``.
    """

    model: str
    rows: List[Dict[str, Any]]
    imatrix: bool = False
    params: int = 0
    seconds: float = 0.0

    @property
    def baseline(self) -> Dict[str, Any]:
        return self.rows[0]

    @property
    def candidates(self) -> List[Dict[str, Any]]:
        return self.rows[1:]

    def metric_keys(self) -> List[str]:
        """The metric's keys when it returns dicts; ``["metric"]`` for numbers."""
        m = self.baseline["metric"]
        return list(m) if isinstance(m, dict) else ["metric"]

    def values(self, key: Optional[str] = None) -> List[float]:
        """One metric value per row (the first key of a dict metric unless ``key``)."""
        k = key or self.metric_keys()[0]
        return [r["metric"][k] if isinstance(r["metric"], dict) else r["metric"] for r in self.rows]

    def format_table(self) -> str:
        from ..tradeoffs import human_bytes

        keys = self.metric_keys()
        widths = [max(10, len(k)) for k in keys]
        name_w = max(9, *(len(r["candidate"]) for r in self.rows))
        head = f"{'candidate':{name_w}} {'bits/w':>7} {'size':>11} {'rel RMSE':>9} " + " ".join(
            f"{k:>{w}}" for k, w in zip(keys, widths))
        lines = [head]
        for r in self.rows:
            vals = [r["metric"][k] if isinstance(r["metric"], dict) else r["metric"] for k in keys]
            lines.append(
                f"{r['candidate']:{name_w}} {r['bits_per_weight']:7.3f} {human_bytes(r['bytes']):>11} "
                f"{r['rel_rmse']:9.5f} " + " ".join(f"{v:>{w}.6f}" for v, w in zip(vals, widths))
            )
        return "\n".join(lines)

    def header(self) -> str:
        w = ", imatrix" if self.imatrix else ""
        return (f"{self.model}: {self.params:,} parameters, {len(self.candidates)} candidates{w}; "
                f"{self.seconds:.1f} s")

    def __repr__(self) -> str:
        return self.header() + "\n" + self.format_table()

    def to_json(self) -> Dict[str, Any]:
        from ..tradeoffs import _json_safe

        return _json_safe({
            "model": self.model,
            "params": self.params,
            "imatrix": self.imatrix,
            "seconds": self.seconds,
            "metric_keys": self.metric_keys(),
            "rows": self.rows,
        })

    def plot(self, path: PathLike, key: Optional[str] = None, title: Optional[str] = None) -> None:
        """A PNG of the metric (``key``, default the first) against model size, one labelled
        point per candidate and a dashed line at the baseline. Needs matplotlib
        (``pip install "kquant[plot]"``)."""
        from ..tradeoffs import _place_labels

        plt = _pyplot()
        k = key or self.metric_keys()[0]
        vals = self.values(k)
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        pts = [(r["candidate"], r["bytes"] / 2**20, v, "tab:blue", "o") for r, v in zip(self.candidates, vals[1:])]
        for _, x, y, color, marker in pts:
            ax.scatter([x], [y], color=color, marker=marker, s=30, zorder=3)
        base = self.baseline
        # a line, not a point: the unquantized size would squeeze the candidates into a corner
        ax.axhline(vals[0], color="tab:gray", ls="--", lw=0.8, zorder=1)
        ax.annotate(f"baseline ({_fmt_types(base['types'])}, {base['bytes'] / 2**20:.1f} MiB)", (0.01, vals[0]),
                    xycoords=("axes fraction", "data"), textcoords="offset pixels", xytext=(0, 4),
                    fontsize=8, color="tab:gray")
        ax.set_xlabel("model size (MiB of tensor data)")
        ax.set_ylabel(k)
        ax.set_title(title if title is not None else f"{Path(self.model).name}: {k} against size", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(x=0.12, y=0.1)
        fig.tight_layout()
        _place_labels(fig, ax, pts)
        fig.savefig(os.fspath(path))
        plt.close(fig)


def _fmt_types(types: Mapping[str, int]) -> str:
    return "/".join(types) if types else "stored"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "kquant[plot]"') from None
    return plt


def load_metric(spec: str) -> Metric:
    """``module:function`` (or ``path/to/file.py:function``) -> the function."""
    import importlib
    import importlib.util

    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"--metric {spec!r}: expected module:function")
    if mod_name.endswith(".py") or os.sep in mod_name:
        p = Path(mod_name)
        if not p.is_file():
            raise FileNotFoundError(f"--metric {spec!r}: no such file {p}")
        modspec = importlib.util.spec_from_file_location(p.stem, p)
        if modspec is None or modspec.loader is None:
            raise ValueError(f"--metric {spec!r}: cannot load {p}")
        mod = importlib.util.module_from_spec(modspec)
        sys.modules.setdefault(p.stem, mod)
        modspec.loader.exec_module(mod)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"--metric {spec!r}: cannot import {mod_name!r}: {e}") from None
    try:
        fn = getattr(mod, attr)
    except AttributeError:
        raise ValueError(f"--metric {spec!r}: {mod_name} has no {attr!r}") from None
    if not callable(fn):
        raise ValueError(f"--metric {spec!r}: {attr!r} is not callable")
    return fn

