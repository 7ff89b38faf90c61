"""Size against error for each quantization type, measured on a model's own weights.

For every candidate type, :func:`measure` quantizes each quantizable tensor (the ones
llama-quantize would convert, see :mod:`kquant.recipes`) and dequantizes it again, then
reports what the model would weigh if every quantizable tensor used that type and how far the
weights moved:

* size: tensor data bytes (the GGUF file adds its header and alignment padding). Where the row
  length is not a multiple of the type's block size, llama-quantize's row-length fallback type is
  used (Q4_K -> Q5_0, Q6_K -> Q8_0, ...; F16 when that does not fit either). Tensors that are
  not quantized (norms, biases, position embeddings, 1-D tensors) keep their stored bytes.
* bits per weight: size * 8 / all parameters of the model (quantized or not), as llama.cpp
  reports it.
* relative RMSE = sqrt(||W - Q(W)||^2 / ||W||^2), SNR = -20 log10(relative RMSE) dB and the
  largest absolute error. With an importance matrix (llama.cpp imatrix: per-column importance
  w_j) the tensors are quantized with it, as llama-quantize does, and both norms weight column j
  by w_j; the largest absolute error stays unweighted.
* whole model: relative MSEs averaged with each tensor's parameter count as weight, i.e. the
  model's relative RMSE is sqrt(sum_t n_t r_t / sum_t n_t), the same total that
  :mod:`kquant.budget` minimizes.

Sampling. A tensor with more rows than ``sample_rows`` (default :data:`DEFAULT_SAMPLE_ROWS`) is
measured on that many rows drawn without replacement by a generator seeded with ``seed`` and
the tensor's name, so a run is reproducible and independent of tensor order. The relative errors
are then estimates; sizes are always exact. ``exact=True`` measures every row. The input of a
quantized GGUF tensor is its dequantized value, so errors are relative to that, not to the
original float weights.

Types and file types. By default every weight type kquant implements is measured but F32
(:data:`DEFAULT_TYPES`, 1.1 to 16 bits per weight: the lattice IQ1/IQ2/IQ3 types, TQ1_0/TQ2_0,
Q1_0/Q2_0, MXFP4, NVFP4, the k-quants, the legacy types, IQ4, F16 and BF16). ggml will not
quantize IQ1_S, IQ2_XXS and IQ2_XS without an importance matrix
(:attr:`QuantType.requires_imatrix`): without one, or where it has no entry for a tensor, they
are listed as skipped, with the reason, instead of failing the run. ``file_types`` adds llama.cpp file types
(Q4_K_M, IQ2_M, ...): each gets the size and error its recipe gives on this model (the per-tensor
types, fallbacks and importance-matrix rules of :func:`kquant.recipes.plan_quantization`), summed
from the per-tensor measurements of the types it uses, with no quantization pass of its own. A
file type that needs an importance matrix this run does not have is skipped with llama-quantize's
reason. :func:`recommend` and ``kquant tradeoffs`` report every file type, and the budget
solver's frontier (:func:`kquant.budget.frontier`: the least error it finds for each size, solved
at a spread of sizes and at each file type's size) beside them.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._api import dequantize, get_num_threads, quantize
from ._types import QTypeLike, QuantType, row_size
from .recipes import _FALLBACK, FileType, ModelFacts, QuantizeError, TensorSpec, plan_quantization
from .tensors import TensorInfo, TensorSource, open_source

__all__ = [
    "ALL_FILE_TYPES",
    "ALL_TYPES",
    "DEFAULT_TYPES",
    "DEFAULT_SAMPLE_ROWS",
    "Measurement",
    "TensorMeasurement",
    "RecipePlan",
    "Recommendation",
    "effective_type",
    "format_file_type_table",
    "format_frontier",
    "format_table",
    "load_imatrix_arg",
    "measure",
    "parse_file_types",
    "parse_types",
    "plan_file_types",
    "plot",
    "recommend",
]

Q = QuantType

#: Every weight type kquant can quantize to and write into a GGUF file, by bits per weight
#: (the activation formats Q8_1 and Q8_K are not weight types).
ALL_TYPES: Tuple[QuantType, ...] = tuple(
    sorted(
        (t for t in QuantType if t.is_implemented and t not in (Q.Q8_1, Q.Q8_K)),
        key=lambda t: (t.bits_per_weight, t.value),
    )
)

#: What ``kquant tradeoffs`` and :func:`recommend` measure, and the budget solver may choose from,
#: unless told otherwise: every format but F32 (which only copies a float input: no error to
#: trade, twice F16's size).
DEFAULT_TYPES: Tuple[QuantType, ...] = tuple(t for t in ALL_TYPES if t != Q.F32)

#: Every llama.cpp file type kquant can write (COPY keeps the input's types, so it has no row).
ALL_FILE_TYPES: Tuple[FileType, ...] = tuple(f for f in FileType if f != FileType.COPY)

#: Rows measured per tensor unless ``exact``: enough for a relative MSE good to a few percent
#: (rows of one tensor err alike), few enough to sample a 7B model in minutes on a laptop.
DEFAULT_SAMPLE_ROWS = 128

# bounds the float32 copies held per quantize call on an exact run over a huge embedding
_CHUNK_VALUES = 1 << 22

ImatrixLike = Union[None, str, "os.PathLike[str]", Mapping[str, Any]]


def effective_type(qtype: QTypeLike, row_length: int) -> QuantType:
    """The type llama-quantize actually writes for ``qtype`` on rows of ``row_length`` values.

    Follows llama.cpp's row-length fallback (:mod:`kquant.recipes`); F16 where the fallback does
    not divide the row either or the type has none (llama-quantize stops there for a type without
    a fallback; measuring F16 keeps the comparison going).
    """
    t = QuantType.parse(qtype)
    if row_length % t.block_size == 0:
        return t
    alt = _FALLBACK.get(t)
    if alt is not None and row_length % alt.block_size == 0:
        return alt
    return Q.F16


def parse_types(items: Optional[Iterable[Union[str, QTypeLike]]]) -> List[QuantType]:
    """Types from names, ids or QuantTypes; strings may hold several separated by commas."""
    if items is None:
        return list(DEFAULT_TYPES)
    out: List[QuantType] = []
    for it in items:
        parts = [p for p in it.replace(",", " ").split()] if isinstance(it, str) else [it]
        for p in parts:
            t = QuantType.parse(p)
            if t in (Q.Q8_1, Q.Q8_K):
                raise ValueError(f"{t.name} is an activation format, not a weight type")
            if t not in out:
                out.append(t)
    if not out:
        raise ValueError("no types given")
    return out


def parse_file_types(items: Optional[Iterable[Union[str, FileType, int]]]) -> List[FileType]:
    """File types from names, ids or FileTypes (strings may hold several separated by commas);
    None for every file type (:data:`ALL_FILE_TYPES`), "none" for no file type at all."""
    if items is None:
        return list(ALL_FILE_TYPES)
    out: List[FileType] = []
    for it in items:
        parts = [p for p in it.replace(",", " ").split()] if isinstance(it, str) else [it]
        for p in parts:
            if isinstance(p, str) and p.strip().lower() == "none":
                continue
            f = FileType.parse(p)
            if f == FileType.COPY:
                raise ValueError("COPY keeps the input's types; it has no size or error of its own to report")
            if f not in out:
                out.append(f)
    return out


def load_imatrix_arg(imatrix: ImatrixLike) -> Optional[Dict[str, np.ndarray]]:
    """An importance matrix as a dict of float32 arrays, from a mapping or a file path."""
    if imatrix is None:
        return None
    if isinstance(imatrix, (str, os.PathLike)):
        try:
            from .imatrix import load_imatrix
        except ImportError:  # pragma: no cover - until the reader lands
            raise ValueError("reading imatrix files needs kquant.load_imatrix, which this build lacks") from None
        imatrix = load_imatrix(imatrix)
    out = {}
    for k, v in imatrix.items():
        a = np.asarray(v, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"imatrix entry {k!r} has negative or non-finite values")
        out[str(k)] = a
    return out


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------


@dataclass
class TypeStats:
    """Sums over the measured rows for one type: weighted squared error, largest |error|, seconds."""

    se: float
    max_abs: float
    seconds: float


@dataclass
class TensorMeasurement:
    """One quantizable tensor's errors, by the type actually written (after fallbacks)."""

    info: TensorInfo
    rows_measured: int
    sx: float  # weighted sum of squares of the measured rows
    weighted: bool
    stats: Dict[QuantType, TypeStats] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def params(self) -> int:
        return self.info.params

    def effective(self, qtype: QTypeLike) -> QuantType:
        return effective_type(qtype, self.info.row_length)

    def nbytes(self, qtype: QTypeLike) -> int:
        """Bytes of the whole tensor in ``qtype`` (after the row-length fallback)."""
        return self.info.n_rows * row_size(self.effective(qtype), self.info.row_length)

    def rel_mse(self, qtype: QTypeLike) -> float:
        """||W - Q(W)||^2 / ||W||^2 over the measured rows (importance-weighted when measured so)."""
        s = self.stats[self.effective(qtype)]
        if self.sx == 0:
            return 0.0 if s.se == 0 else math.inf
        return s.se / self.sx

    def error(self, qtype: QTypeLike) -> float:
        """The budget solver's cost: params * relative MSE."""
        return self.params * self.rel_mse(qtype)

    def row(self, qtype: QTypeLike) -> Dict[str, Any]:
        e = self.effective(qtype)
        r = self.rel_mse(e)
        return {
            "type_used": e.name,
            "bytes": self.nbytes(e),
            "rel_rmse": math.sqrt(r),
            "snr_db": _snr(r),
            "max_abs_err": self.stats[e].max_abs,
        }


def _snr(rel_mse: float) -> float:
    if rel_mse == 0:
        return math.inf
    return -10 * math.log10(rel_mse)


@dataclass
class Measurement:
    """Everything measured on one model: quantizable tensors and the fixed (kept) ones."""

    description: str
    facts: ModelFacts
    tensors: List[TensorMeasurement]
    fixed: List[Tuple[TensorInfo, int]]  # (tensor, bytes it keeps)
    imatrix: bool
    sample_rows: Optional[int]  # None: exact
    seed: int
    seconds: float
    threads: int
    measured_types: List[QuantType]
    #: type name -> why it was not measured (an importance matrix it needs and this run lacks)
    skipped: Dict[str, str] = field(default_factory=dict)
    #: the file types asked for, and per file type its plan: tensor -> type, or why it is skipped
    file_types: List[FileType] = field(default_factory=list)
    recipe_plans: Dict[FileType, Union["RecipePlan", str]] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        return sum(t.params for t in self.tensors) + sum(i.params for i, _ in self.fixed)

    @property
    def quantizable_params(self) -> int:
        return sum(t.params for t in self.tensors)

    @property
    def fixed_bytes(self) -> int:
        return sum(b for _, b in self.fixed)

    @property
    def sampled(self) -> bool:
        return any(t.rows_measured < t.info.n_rows for t in self.tensors)

    def tensor(self, name: str) -> TensorMeasurement:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def summarize(self, assignment: Mapping[str, QTypeLike]) -> Dict[str, Any]:
        """Size and whole-model error when tensor ``name`` uses ``assignment[name]``."""
        nbytes = self.fixed_bytes
        weighted = 0.0
        max_abs = 0.0
        for t in self.tensors:
            q = assignment[t.name]
            nbytes += t.nbytes(q)
            weighted += t.error(q)
            max_abs = max(max_abs, t.stats[t.effective(q)].max_abs)
        qp = self.quantizable_params
        r = weighted / qp if qp else 0.0
        return {
            "bytes": nbytes,
            "bits_per_weight": nbytes * 8 / self.total_params if self.total_params else 0.0,
            "error": weighted,
            "rel_rmse": math.sqrt(r),
            "snr_db": _snr(r),
            "max_abs_err": max_abs,
        }

    def type_row(self, qtype: QTypeLike) -> Dict[str, Any]:
        """The table row for every quantizable tensor in ``qtype``."""
        t = QuantType.parse(qtype)
        s = self.summarize({m.name: t for m in self.tensors})
        fallbacks: Dict[str, int] = {}
        seconds = 0.0
        for m in self.tensors:
            e = m.effective(t)
            if e != t:
                fallbacks[e.name] = fallbacks.get(e.name, 0) + 1
            seconds += m.stats[e].seconds
        qbytes = s["bytes"] - self.fixed_bytes
        return {
            "type": t.name,
            "bits_per_weight": s["bits_per_weight"],
            "bytes": s["bytes"],
            "rel_rmse": s["rel_rmse"],
            "snr_db": s["snr_db"],
            "max_abs_err": s["max_abs_err"],
            "quantized_bits_per_weight": qbytes * 8 / self.quantizable_params if self.quantizable_params else 0.0,
            "fallbacks": fallbacks,
            "seconds": seconds,
        }

    def table(self, types: Optional[Sequence[QTypeLike]] = None) -> List[Dict[str, Any]]:
        """One row per measured type (the skipped ones are in :attr:`skipped`)."""
        ts = parse_types(types) if types is not None else self.measured_types
        return [self.type_row(t) for t in ts if t.name not in self.skipped]

    def file_type_row(self, ftype: Union[str, FileType]) -> Dict[str, Any]:
        """Size and error of the llama.cpp file type ``ftype`` on this model: its recipe's
        per-tensor types (mix rules, row-length fallbacks, importance-matrix rules) summed from
        the per-tensor measurements. ValueError with the reason when it was skipped or not planned.
        """
        ft = FileType.parse(ftype)
        plan = self.recipe_plans.get(ft)
        if plan is None:
            raise ValueError(f"file type {ft.name} was not planned in this measurement (measure(file_types=...))")
        if isinstance(plan, str):
            raise ValueError(f"{ft.name}: {plan}")
        s = self.summarize(plan.types)
        counts: Dict[str, int] = {}
        for t in self.tensors:
            q = t.effective(plan.types[t.name])
            counts[q.name] = counts.get(q.name, 0) + 1
        qbytes = s["bytes"] - self.fixed_bytes
        return {
            "file_type": ft.name,
            "bits_per_weight": s["bits_per_weight"],
            "bytes": s["bytes"],
            "rel_rmse": s["rel_rmse"],
            "snr_db": s["snr_db"],
            "max_abs_err": s["max_abs_err"],
            "error": s["error"],
            "quantized_bits_per_weight": qbytes * 8 / self.quantizable_params if self.quantizable_params else 0.0,
            "tensor_types": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "fallbacks": plan.fallbacks,
            "imatrix": plan.imatrix,
        }

    def file_type_table(self) -> List[Dict[str, Any]]:
        """One row per planned file type that could be made on this model, smallest first."""
        rows = [self.file_type_row(ft) for ft in self.file_types if not isinstance(self.recipe_plans.get(ft), str)]
        return sorted(rows, key=lambda r: (r["bytes"], r["error"]))

    @property
    def skipped_file_types(self) -> Dict[str, str]:
        """File type name -> why it has no row (e.g. it needs an importance matrix)."""
        return {ft.name: p for ft in self.file_types for p in [self.recipe_plans.get(ft)] if isinstance(p, str)}

    def to_json(self, types: Optional[Sequence[QTypeLike]] = None) -> Dict[str, Any]:
        ts = parse_types(types) if types is not None else self.measured_types
        ts = [t for t in ts if t.name not in self.skipped]
        return {
            "model": self.description,
            "params": self.total_params,
            "quantizable_params": self.quantizable_params,
            "fixed_bytes": self.fixed_bytes,
            "imatrix": self.imatrix,
            "exact": self.sample_rows is None,
            "sample_rows": self.sample_rows,
            "seed": self.seed,
            "threads": self.threads,
            "seconds": self.seconds,
            "types": self.table(ts),
            "skipped_types": [{"type": k, "reason": v} for k, v in self.skipped.items()],
            "file_types": self.file_type_table(),
            "skipped_file_types": [{"file_type": k, "reason": v} for k, v in self.skipped_file_types.items()],
            "tensors": [
                {
                    "name": m.name,
                    "shape": list(m.info.shape),
                    "params": m.params,
                    "rows_measured": m.rows_measured,
                    "errors": {t.name: m.row(t) for t in ts},
                }
                for m in self.tensors
            ],
            "fixed_tensors": [
                {"name": i.name, "shape": list(i.shape), "type": i.type.name, "bytes": b} for i, b in self.fixed
            ],
        }


@dataclass(frozen=True)
class RecipePlan:
    """A file type's choice for the quantizable tensors: name -> type (after fallbacks)."""

    types: Dict[str, QuantType]
    fallbacks: int  # tensors whose type the row-length fallback changed
    imatrix: bool  # the recipe was planned with an importance matrix


def plan_file_types(
    infos: Sequence[TensorInfo],
    facts: ModelFacts,
    quant_names: Iterable[str],
    file_types: Sequence[FileType],
    imatrix_names: Iterable[str] = (),
) -> Dict[FileType, Union[RecipePlan, str]]:
    """Each file type's per-tensor types on a model, or why llama-quantize would refuse it.

    ``infos``: every tensor of the model; ``quant_names``: the quantizable ones (the only ones
    whose types are returned); ``imatrix_names``: the tensors with an importance entry (none: no
    importance matrix). Tensors are planned as float inputs, since a quantized input is
    dequantized before it is measured.
    """
    specs = [TensorSpec.from_numpy(i.name, i.shape) for i in infos]
    names = list(quant_names)
    entries = set(imatrix_names)
    out: Dict[FileType, Union[RecipePlan, str]] = {}
    for ft in file_types:
        try:
            plan = plan_quantization(specs, facts, ft, imatrix=entries or False, allow_requantize=True, dry_run=True)
        except (QuantizeError, ValueError) as e:
            out[ft] = str(e)
            continue
        if plan.imatrix_error is not None:
            lacking = plan.lacking_imatrix
            types = ", ".join(sorted({plan[n].target_type.name for n in lacking}))
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            if not entries:
                out[ft] = (f"needs an importance matrix: it puts {len(lacking)} tensor(s) in {types}, which "
                           f"llama.cpp will not make without one; pass --imatrix FILE (imatrix= in Python)")
            else:
                out[ft] = (f"the importance matrix has no entry for {len(lacking)} tensor(s) it puts in {types} "
                           f"({shown})")
            continue
        if plan.errors:
            out[ft] = plan.errors[0]
            continue
        bad = sorted({plan[n].target_type.name for n in names if not plan[n].target_type.is_implemented})
        if bad:
            out[ft] = f"kquant cannot make {', '.join(bad)}"
            continue
        out[ft] = RecipePlan(
            types={n: plan[n].target_type for n in names},
            fallbacks=sum(1 for n in names if plan[n].fallback),
            imatrix=plan.has_imatrix,
        )
    return out


def _imatrix_skip_reason(t: QuantType, lacking: Sequence[str], have_imatrix: bool) -> str:
    if not have_imatrix:
        return (f"ggml will not quantize {t.name} without an importance matrix; "
                f"pass --imatrix FILE (imatrix= in Python) to measure it")
    shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
    return f"ggml will not quantize {t.name} without an importance matrix, which has no entry for {shown}"


def split_tensors(
    src: TensorSource, nonquantized_type: Optional[QTypeLike] = None
) -> Tuple[List[TensorInfo], List[Tuple[TensorInfo, int]]]:
    """(quantizable tensors, [(kept tensor, its bytes)]) by llama-quantize's rules.

    ``nonquantized_type``: a float type (or float FileType) the kept tensors are stored in; None
    keeps their type.
    """
    if isinstance(nonquantized_type, FileType):
        nonquantized_type = nonquantized_type.default_type
    keep_as = None if nonquantized_type is None else QuantType.parse(nonquantized_type)
    if keep_as is not None and not keep_as.is_float:
        raise ValueError(f"tensors that are not quantized are stored as F32, F16 or BF16, not {keep_as.name}")
    specs = [TensorSpec.from_numpy(i.name, i.shape, i.type) for i in src.tensors]
    # F16 as file type: no mix rules, no fallbacks, only llama.cpp's "may it be quantized" test
    plan = plan_quantization(specs, src.model_facts(), FileType.F16, allow_requantize=True, dry_run=True)
    quant, fixed = [], []
    for i in src.tensors:
        if plan[i.name].allowed:
            quant.append(i)
        else:
            fixed.append((i, i.nbytes if keep_as is None else i.params * keep_as.type_size))
    return quant, fixed


def _sample_index(name: str, n_rows: int, sample_rows: Optional[int], seed: int) -> Optional[np.ndarray]:
    if sample_rows is None or n_rows <= sample_rows:
        return None
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])
    return np.sort(rng.choice(n_rows, size=sample_rows, replace=False))


def _importance(imatrix: Optional[Mapping[str, np.ndarray]], info: TensorInfo) -> Optional[np.ndarray]:
    """Per-row-group importance as (groups, n): one group, or one per expert of a 3-D tensor."""
    if imatrix is None or info.name not in imatrix:
        return None
    w = imatrix[info.name]
    n = info.row_length
    if w.size == n:
        return w.reshape(1, n)
    if len(info.shape) == 3 and w.size == info.shape[0] * n:
        return w.reshape(info.shape[0], n)
    raise ValueError(f"imatrix entry for {info.name} has {w.size} values; expected {n} (the row length)")


def _measure_tensor(
    src: TensorSource,
    info: TensorInfo,
    types: Sequence[QuantType],
    imat: Optional[np.ndarray],
    sample_rows: Optional[int],
    seed: int,
) -> TensorMeasurement:
    n, n_rows = info.row_length, info.n_rows
    index = _sample_index(info.name, n_rows, sample_rows, seed)
    rows_idx = np.arange(n_rows) if index is None else index
    rows_per_group = n_rows // imat.shape[0] if imat is not None else n_rows
    stats = {t: TypeStats(0.0, 0.0, 0.0) for t in types}
    sx = 0.0
    step = max(1, _CHUNK_VALUES // max(n, 1))
    for start in range(0, len(rows_idx), step):
        sel = rows_idx[start:start + step]
        x = src.rows(info.name, slice(int(sel[0]), int(sel[-1]) + 1) if index is None else sel)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{info.name}: the weights hold NaN or Inf")
        # one importance vector per run of rows sharing it (per expert in a 3-D tensor)
        groups = sel // rows_per_group if imat is not None else np.zeros(len(sel), dtype=np.int64)
        cuts = np.flatnonzero(np.diff(groups)) + 1
        bounds = [0, *cuts.tolist(), len(sel)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            xs = x[a:b]
            w = None if imat is None else imat[int(groups[a])]
            col_x = np.einsum("ij,ij->j", xs, xs, dtype=np.float64)
            sx += float(col_x.sum() if w is None else col_x @ w)
            for t in types:
                t0 = time.perf_counter()
                y = dequantize(quantize(xs, t, imatrix=w), t)
                stats[t].seconds += time.perf_counter() - t0
                d = y - xs
                col = np.einsum("ij,ij->j", d, d, dtype=np.float64)
                stats[t].se += float(col.sum() if w is None else col @ w)
                if d.size:
                    stats[t].max_abs = max(stats[t].max_abs, float(np.abs(d).max()))
    return TensorMeasurement(info, len(rows_idx), sx, imat is not None, stats)


def measure_one(
    src: TensorSource,
    info: TensorInfo,
    types: Sequence[QuantType],
    imat: Optional[np.ndarray],
    sample_rows: Optional[int],
    seed: int,
) -> TensorMeasurement:
    """One tensor's measurement; errors name the tensor."""
    try:
        return _measure_tensor(src, info, types, imat, sample_rows, seed)
    except ValueError as e:
        if str(e).startswith(info.name):
            raise
        raise ValueError(f"{info.name}: {e}") from None


def measure(
    model: Any = None,
    types: Optional[Sequence[QTypeLike]] = None,
    *,
    imatrix: ImatrixLike = None,
    sample_rows: Optional[int] = DEFAULT_SAMPLE_ROWS,
    seed: int = 0,
    exact: bool = False,
    extra_types: Optional[Mapping[str, Iterable[QTypeLike]]] = None,
    nonquantized_type: Optional[QTypeLike] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    executor: Any = None,
    file_types: Optional[Sequence[Union[str, FileType, int]]] = (),
) -> Measurement:
    """Quantize every quantizable tensor of ``model`` with each type and measure the error.

    ``model``: None (the built-in sample), a GGUF or safetensors path, a mapping of GGUF-style
    names to arrays, or a :class:`~kquant.tensors.TensorSource`. ``extra_types`` adds types for
    single tensors (the budget solver's pins and recipe comparisons). ``progress(i, n, name)`` is
    called before each tensor (as its result arrives, with an executor).

    ``executor``: a ``concurrent.futures.Executor``, a Dask ``Client``, ``"local:N"`` or a Dask
    scheduler address; each tensor is measured there (:mod:`kquant.executors`), with the same
    results as here.

    Types ggml will not quantize without an importance matrix (IQ1_S, IQ2_XXS, IQ2_XS) are
    skipped, with the reason in :attr:`Measurement.skipped`, when ``imatrix`` is None or lacks
    an entry for a tensor that would get them. ``file_types``: llama.cpp file types to report
    (None: all of :data:`ALL_FILE_TYPES`; the default, none); the types their recipes use are
    measured too, per tensor.
    """
    t_start = time.perf_counter()
    src = open_source(model)
    ts = parse_types(types)
    if exact:
        sample_rows = None
    elif sample_rows is not None and sample_rows < 1:
        raise ValueError("sample_rows must be at least 1")
    imat = load_imatrix_arg(imatrix)
    quant, fixed = split_tensors(src, nonquantized_type)
    extra = {k: [QuantType.parse(t) for t in v] for k, v in (extra_types or {}).items()}
    weights = {info.name: _importance(imat, info) for info in quant}
    fts = parse_file_types(file_types) if file_types is None or len(file_types) else []
    plans: Dict[FileType, Union[RecipePlan, str]] = {}
    if fts:
        plans = plan_file_types(src.tensors, src.model_facts(), weights,
                                fts, [n for n, w in weights.items() if w is not None])
        for p in plans.values():
            if isinstance(p, RecipePlan):
                for name, t in p.types.items():
                    extra.setdefault(name, []).append(t)
    lacking: Dict[QuantType, List[str]] = {}
    jobs = []
    for info in quant:
        need: List[QuantType] = []
        for t in [*ts, *extra.get(info.name, ())]:
            e = effective_type(t, info.row_length)
            if e.requires_imatrix and weights[info.name] is None:
                if t in ts:
                    lacking.setdefault(t, []).append(info.name)
                continue
            if e not in need:
                need.append(e)
        jobs.append((info, need))
    skipped = {t.name: _imatrix_skip_reason(t, names, imat is not None) for t, names in lacking.items()}
    if executor is not None:
        from .executors import measure_tensors

        out = measure_tensors(executor, src, jobs, imat, sample_rows, seed, progress)
    else:
        out = []
        for i, (info, need) in enumerate(jobs):
            if progress is not None:
                progress(i, len(quant), info.name)
            out.append(measure_one(src, info, need, weights[info.name], sample_rows, seed))
    for ft, p in list(plans.items()):
        if isinstance(p, RecipePlan):
            missing = [(t.name, q) for t in out for q in [t.effective(p.types[t.name])] if q not in t.stats]
            if missing:
                name, t = missing[0]
                plans[ft] = f"{name} would be {t.name}, which ggml will not make without an importance entry"
    return Measurement(
        description=src.description,
        facts=src.model_facts(),
        tensors=out,
        fixed=fixed,
        imatrix=imat is not None,
        sample_rows=sample_rows,
        seed=seed,
        seconds=time.perf_counter() - t_start,
        threads=get_num_threads(),
        measured_types=[t for t in ts if t.name not in skipped],
        skipped=skipped,
        file_types=fts,
        recipe_plans=plans,
    )


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The types table as aligned text."""
    head = f"{'type':8} {'bits/w':>7} {'size':>11} {'rel RMSE':>9} {'SNR dB':>7} {'max |err|':>10} {'s':>6}"
    lines = [head + "  fallbacks"]
    for r in rows:
        fb = ", ".join(f"{v}x {k}" for k, v in r.get("fallbacks", {}).items())
        lines.append(
            f"{r['type']:8} {r['bits_per_weight']:7.3f} {human_bytes(r['bytes']):>11} {r['rel_rmse']:9.5f} "
            f"{r['snr_db']:7.2f} {r['max_abs_err']:10.3g} {r.get('seconds', 0.0):6.2f}  {fb}"
        )
    return "\n".join(lines)


def format_file_type_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The llama.cpp file types table as aligned text (the tensor types each recipe uses)."""
    head = f"{'file type':10} {'bits/w':>7} {'size':>11} {'rel RMSE':>9} {'SNR dB':>7}  tensor types"
    lines = [head]
    for r in rows:
        mix = ", ".join(f"{v} {k}" for k, v in r.get("tensor_types", {}).items())
        lines.append(
            f"{r['file_type']:10} {r['bits_per_weight']:7.3f} {human_bytes(r['bytes']):>11} {r['rel_rmse']:9.5f} "
            f"{r['snr_db']:7.2f}  {mix}"
        )
    return "\n".join(lines)


def format_frontier(points: Sequence[Any]) -> str:
    """The budget solver's frontier (:func:`kquant.budget.frontier`) as aligned text."""
    lines = [f"{'bits/w':>7} {'size':>11} {'rel RMSE':>9}  tensor types"]
    for p in points:
        mix = ", ".join(f"{v} {k}" for k, v in sorted(p.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"{p.bpw:7.3f} {human_bytes(p.total_bytes):>11} {p.rel_rmse:9.5f}  {mix}")
    return "\n".join(lines)


def _skipped_text(m: Measurement) -> str:
    lines = []
    if m.skipped:
        lines.append("skipped types:")
        lines += [f"  {k}: {v}" for k, v in m.skipped.items()]
    sk = m.skipped_file_types
    if sk:
        lines.append("skipped file types:")
        lines += [f"  {k}: {v}" for k, v in sk.items()]
    return "\n".join(lines)


def _header(m: Measurement) -> str:
    how = "every row" if m.sample_rows is None else f"up to {m.sample_rows} rows per tensor (seed {m.seed})"
    w = ", importance-weighted (imatrix)" if m.imatrix else ""
    return (
        f"{m.description}: {len(m.tensors)} quantizable tensors ({m.quantizable_params:,} parameters), "
        f"{len(m.fixed)} kept ({human_bytes(m.fixed_bytes)}); measured on {how}{w}; "
        f"{m.seconds:.1f} s on {m.threads} threads"
    )


def plot(
    rows: Sequence[Mapping[str, Any]],
    path: Union[str, "os.PathLike[str]"],
    title: str = "",
    extra_points: Sequence[Mapping[str, Any]] = (),
    file_type_rows: Sequence[Mapping[str, Any]] = (),
    frontier: Sequence[Any] = (),
) -> None:
    """A PNG of bits per weight against relative RMSE (log scale): one labelled point per type
    (circles), per llama.cpp file type (``file_type_rows``, squares) and the budget solver's
    frontier (``frontier``: :class:`kquant.budget.FrontierPoint` objects or dicts with
    ``bits_per_weight`` and ``rel_rmse``) as a line.

    The float types (F16, BF16, F32) and error-free points are left out: they sit far to the
    right of the 1-8-bit range and at zero error, which a log scale cannot show (they stay in
    the table); the frontier is cut at the largest point shown. ``extra_points``: more labelled
    points (``label``, ``bits_per_weight`` or ``bytes``, ``rel_rmse``), e.g. a budget choice.
    Needs matplotlib.
    """
    plt = _pyplot()
    scale = None  # bits per weight per byte, for extra points given in bytes
    for r in [*rows, *file_type_rows]:
        if r["bytes"]:
            scale = r["bits_per_weight"] / r["bytes"]
            break

    def bpw(p: Mapping[str, Any]) -> float:
        if "bits_per_weight" in p:
            return float(p["bits_per_weight"])
        return float(p["bytes"]) * (scale or 0.0)

    floats = {"F16", "BF16", "F32"}
    pts = [(r["type"], r["bits_per_weight"], r["rel_rmse"], "tab:blue", "o") for r in rows
           if r["type"] not in floats and r["rel_rmse"] > 0]
    # a file type that is one type throughout (Q8_0, Q4_0 on most models) lands on that type's
    # point: one label there is enough
    same = {(p[0], round(p[1], 6), round(p[2], 9)) for p in pts}
    pts += [("" if (r["file_type"], round(r["bits_per_weight"], 6), round(r["rel_rmse"], 9)) in same
             else r["file_type"], r["bits_per_weight"], r["rel_rmse"], "tab:green", "s") for r in file_type_rows
            if r["file_type"] not in floats and r["rel_rmse"] > 0]
    pts += [(p["label"], bpw(p), p["rel_rmse"], "tab:red", "*") for p in extra_points if p["rel_rmse"] > 0]
    fig, ax = plt.subplots(figsize=(10, 6.5) if file_type_rows or frontier else (7, 4.5), dpi=120)
    x_max = max((p[1] for p in pts), default=math.inf)
    curve = []
    for p in frontier:
        x, y = (p.bpw, p.rel_rmse) if hasattr(p, "bpw") else (p["bits_per_weight"], p["rel_rmse"])
        if y > 0 and x <= x_max * 1.0001:
            curve.append((x, y))
    if curve:
        curve.sort()
        ax.plot([c[0] for c in curve], [c[1] for c in curve], color="tab:orange", lw=1.5, marker=".", ms=4,
                zorder=2, label="budget solver: least error for each size")
    for _, x, y, color, marker in pts:
        ax.scatter([x], [y], color=color, marker=marker, s=140 if marker == "*" else 30, zorder=3)
    if file_type_rows or curve:
        handles = [
            plt.Line2D([], [], color="tab:blue", marker="o", ls="", label="one type for every tensor"),
            plt.Line2D([], [], color="tab:green", marker="s", ls="", label="llama.cpp file type (recipe)"),
        ]
        if curve:
            handles.append(plt.Line2D([], [], color="tab:orange", marker=".", label="budget solver frontier"))
        ax.legend(handles=handles, loc="upper right", fontsize=8)
    if pts or curve:
        ax.set_yscale("log")
    ax.set_xlabel("bits per weight (whole model)")
    ax.set_ylabel("relative RMSE (parameter-weighted)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.08, y=0.1)
    fig.tight_layout()
    _place_labels(fig, ax, pts)
    fig.savefig(os.fspath(path))
    plt.close(fig)


def _place_labels(fig: Any, ax: Any, pts: Sequence[Tuple[str, float, float, str, str]]) -> None:
    # types of equal size (Q4_0 and IQ4_NL) sit on top of each other: try positions around each
    # point, right then left, near then far, and take the first that covers no label or point
    fig.canvas.draw()
    xy = [ax.transData.transform((x, y)) for _, x, y, _, _ in pts]
    taken: List[Tuple[float, float, float, float]] = [(px - 5, py - 5, px + 5, py + 5) for px, py in xy]
    h = 11.0
    order = sorted(range(len(pts)), key=lambda i: (pts[i][1], -pts[i][2]))
    for i in order:
        label, x, y, color, _ = pts[i]
        if not label:
            continue
        px, py = xy[i]
        w = 5.5 * len(label) + 4
        tries = [(dx, dy) for k in range(8) for dy in (4 + k * (h + 1), -h - 4 - k * (h + 1))
                 for dx in (6, -w - 6)]
        for dx, dy in tries:
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                break
        else:
            dx, dy = tries[0]
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
        taken.append(box)
        far = abs(dy) > h + 5
        ax.annotate(label, (x, y), textcoords="offset pixels", xytext=(dx, dy), fontsize=8, color=color,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color=color, alpha=0.6) if far else None)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plotting needs matplotlib, an optional extra: pip install "kquant[plot]"') from None
    return plt


# --------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------


@dataclass
class Recommendation:
    """What :func:`recommend` found: the types table and, given a budget, the per-tensor choice."""

    measurement: Measurement
    types: List[QuantType]
    choice: Any = None  # kquant.budget.BudgetChoice
    #: the budget solver's least error for each size (kquant.budget.FrontierPoint), smallest first
    frontier: List[Any] = field(default_factory=list)

    @property
    def table(self) -> List[Dict[str, Any]]:
        """One row per measured type, as in the JSON output (skipped types have none)."""
        return self.measurement.table(self.types)

    @property
    def file_types(self) -> List[Dict[str, Any]]:
        """One row per llama.cpp file type that could be made on this model, smallest first."""
        return self.measurement.file_type_table()

    @property
    def skipped(self) -> Dict[str, str]:
        """Type or file type name -> why it has no row."""
        return {**self.measurement.skipped, **self.measurement.skipped_file_types}

    def to_json(self) -> Dict[str, Any]:
        d = self.measurement.to_json(self.types)
        d["frontier"] = [p.to_json() for p in self.frontier]
        if self.choice is not None:
            d["choice"] = self.choice.to_json()
        return d

    def plot(self, path: Union[str, "os.PathLike[str]"], title: Optional[str] = None) -> None:
        """The types, file types, frontier and budget choice as a PNG (see :func:`plot`)."""
        m = self.measurement
        pts = []
        if self.choice is not None:
            pts.append({"label": f"budget ({self.choice.bpw:.2f} bpw)", "bits_per_weight": self.choice.bpw,
                        "rel_rmse": self.choice.predicted_rel_rmse})
        if title is None:
            how = "exact" if m.sample_rows is None else f"{m.sample_rows} rows per tensor sampled"
            title = f"{m.description}\n({how}{', imatrix-weighted' if m.imatrix else ''})"
        plot(self.table, path, title=title, extra_points=pts, file_type_rows=self.file_types,
             frontier=self.frontier)

    def best_within(self, max_bytes: int) -> Optional[Dict[str, Any]]:
        """The single type with the lowest error whose model fits in ``max_bytes``."""
        fit = [r for r in self.table if r["bytes"] <= max_bytes]
        return min(fit, key=lambda r: r["rel_rmse"]) if fit else None

    def __repr__(self) -> str:
        s = _header(self.measurement) + "\n" + format_table(self.table)
        if self.file_types:
            s += "\n\n" + format_file_type_table(self.file_types)
        skipped = _skipped_text(self.measurement)
        if skipped:
            s += "\n\n" + skipped
        if self.frontier:
            lo, hi = self.frontier[0], self.frontier[-1]
            s += (f"\n\nbudget solver frontier: {len(self.frontier)} sizes from {lo.bpw:.3f} to {hi.bpw:.3f} "
                  f"bits/weight (--json, --plot; kquant.budget.frontier)")
        if self.choice is not None:
            s += "\n\n" + self.choice.summary()
        return s

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{h}</th>" for h in ("type", "bits/w", "size", "rel RMSE", "SNR dB", "max |err|"))
        body = "".join(
            f"<tr><td>{e(r['type'])}</td><td>{r['bits_per_weight']:.3f}</td><td>{e(human_bytes(r['bytes']))}</td>"
            f"<td>{r['rel_rmse']:.5f}</td><td>{r['snr_db']:.2f}</td><td>{r['max_abs_err']:.3g}</td></tr>"
            for r in self.table
        )
        out = f"<p>{e(_header(self.measurement))}</p><table><tr>{head}</tr>{body}</table>"
        if self.file_types:
            cols = ("file type", "bits/w", "size", "rel RMSE", "SNR dB", "tensor types")
            fhead = "".join(f"<th>{h}</th>" for h in cols)
            fbody = "".join(
                f"<tr><td>{e(r['file_type'])}</td><td>{r['bits_per_weight']:.3f}</td>"
                f"<td>{e(human_bytes(r['bytes']))}</td><td>{r['rel_rmse']:.5f}</td><td>{r['snr_db']:.2f}</td>"
                f"<td>{e(', '.join(f'{v} {k}' for k, v in r['tensor_types'].items()))}</td></tr>"
                for r in self.file_types
            )
            out += f"<table><tr>{fhead}</tr>{fbody}</table>"
        skipped = _skipped_text(self.measurement)
        if skipped:
            out += f"<pre>{e(skipped)}</pre>"
        if self.choice is not None:
            out += self.choice._repr_html_()
        return out


def recommend(
    model: Any = None,
    *,
    target_bpw: Optional[float] = None,
    target_size: Union[None, int, str] = None,
    types: Optional[Sequence[QTypeLike]] = None,
    imatrix: ImatrixLike = None,
    exact: bool = False,
    pins: Sequence[Any] = (),
    sample_rows: Optional[int] = DEFAULT_SAMPLE_ROWS,
    seed: int = 0,
    executor: Any = None,
    file_types: Optional[Sequence[Union[str, FileType, int]]] = None,
    frontier_points: int = 24,
) -> Recommendation:
    """Measure size against error for each type on ``model`` and, given a budget
    (``target_bpw`` bits per weight or ``target_size`` bytes / "3.2GB" / "800MiB"), choose a type
    per tensor that minimizes the model's error within it (:mod:`kquant.budget`).

    ``model``: None for the built-in sample, a GGUF or safetensors path, a mapping of names to
    arrays or a TensorSource. The result prints as a table (and as HTML in a notebook).
    ``executor``: where to measure each tensor, as for :func:`measure`.

    ``types`` (default :data:`DEFAULT_TYPES`, every format but F32) get a row each, except those
    that need an importance matrix this run lacks (listed in ``skipped`` with the reason).
    ``file_types`` (default: every llama.cpp file type, ``()`` for none) get a row each with the
    size and error of their recipe on this model, from the same measurements.
    ``frontier_points``: budgets the solver is run at (besides each file type's size) for
    :attr:`Recommendation.frontier`, the least error for each size; 0 for none.
    """
    from . import budget

    src = open_source(model)
    ts = parse_types(types)
    imat = load_imatrix_arg(imatrix)
    extra: Dict[str, List[QuantType]] = {}
    want_choice = target_bpw is not None or target_size is not None
    if want_choice:
        extra = budget.types_to_measure(src, target_bpw=target_bpw, target_size=target_size, pins=pins,
                                        imatrix_names=None if imat is None else list(imat))
    m = measure(src, ts, imatrix=imat, sample_rows=sample_rows, seed=seed, exact=exact, extra_types=extra,
                executor=executor, file_types=file_types)
    choice = None
    if want_choice:
        choice = budget.choose_from_measurement(
            m, target_bpw=target_bpw, target_size=target_size, candidate_types=ts, pins=pins
        )
    return Recommendation(m, ts, choice, _frontier(m, ts, pins if want_choice else (), frontier_points))


def _frontier(m: Measurement, ts: Sequence[QuantType], pins: Any, points: int) -> List[Any]:
    """The solver's frontier over ``ts`` and at every file type's size; [] when ``points`` is 0."""
    from . import budget

    if points <= 0:
        return []
    return budget.frontier(m, candidate_types=ts, pins=pins, points=points,
                           sizes=[r["bytes"] for r in m.file_type_table()])


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Register ``kquant tradeoffs`` on an argparse subparsers object."""
    p = sub.add_parser(
        "tradeoffs",
        help="size against error for each quantization type on a model (or a built-in sample)",
        description=(
            "For each type: the model's size if every quantizable tensor used it (row-length fallbacks "
            "applied), bits per weight and the error of the quantized weights, per tensor and for the "
            "whole model. With --target-bpw / --target-size also choose a type per tensor within that "
            "budget. Without MODEL: a built-in sample of real all-MiniLM-L6-v2 weights."
        ),
    )
    p.add_argument("model", nargs="?", help="a GGUF file (any kquant type) or a safetensors file or folder")
    p.add_argument("--types", action="append", metavar="TYPES",
                   help="candidate types, comma-separated; may repeat (default: the list below)")
    p.add_argument("--json", metavar="FILE", help="write the table and per-tensor errors as JSON")
    p.add_argument("--plot", metavar="FILE.png", help='write a PNG of size against error (needs matplotlib: pip install "kquant[plot]")')
    p.add_argument("--imatrix", metavar="FILE",
                   help="llama.cpp importance matrix: quantize with it, weight errors by it")
    p.add_argument("--exact", action="store_true", help="measure every row (default: a sample of rows per tensor)")
    p.add_argument("--sample-rows", type=int, default=DEFAULT_SAMPLE_ROWS, metavar="N",
                   help="rows measured per tensor when not --exact (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="row sampling seed (default: %(default)s)")
    p.add_argument("--target-bpw", type=float, metavar="B", help="choose a type per tensor for B bits per weight")
    p.add_argument("--target-size", metavar="SIZE", help="choose a type per tensor for a size such as 3.2GB or 800MiB")
    p.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=TYPE",
                   help="pin tensors matching PATTERN to TYPE in the budget choice (as llama-quantize)")
    p.add_argument("--tensor-type-out", metavar="FILE",
                   help="write the budget choice as a llama-quantize --tensor-type-file")
    p.add_argument("--file-types", action="append", metavar="FTYPES",
                   help="llama.cpp file types to report, comma-separated, may repeat (default: every one kquant "
                        "writes; 'none' for none): each gets the size and error its recipe gives on this model")
    p.add_argument("--frontier-points", type=int, default=24, metavar="N",
                   help="budgets the solver's least-error-for-each-size curve is solved at, besides each file "
                        "type's size (default: %(default)s; 0: no curve)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--executor", metavar="ADDRESS",
                   help="measure on a Dask scheduler (tcp://host:8786) or local:N worker processes")
    p.set_defaults(func=run_cli)
    p.epilog = f"Default types: {' '.join(t.name for t in DEFAULT_TYPES)}."


def run_cli(args: Any) -> int:
    import sys

    if args.plot:
        try:
            _pyplot()
        except ImportError as e:
            print(f"kquant: error: {e}", file=sys.stderr)
            return 2
    if args.tensor_type_out and args.target_bpw is None and args.target_size is None:
        print("kquant: error: --tensor-type-out needs --target-bpw or --target-size", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty() and not args.quiet

    def progress(i: int, n: int, name: str) -> None:
        print(f"\r[{i + 1}/{n}] {name[:60]:60}", end="", file=sys.stderr, flush=True)

    from . import budget

    src = open_source(args.model)
    ts = parse_types(args.types)
    imat = load_imatrix_arg(args.imatrix)
    want_choice = args.target_bpw is not None or args.target_size is not None
    extra = {}
    if want_choice:
        extra = budget.types_to_measure(src, target_bpw=args.target_bpw, target_size=args.target_size,
                                        pins=args.tensor_type, imatrix_names=None if imat is None else list(imat))
    m = measure(src, ts, imatrix=imat, sample_rows=args.sample_rows, seed=args.seed, exact=args.exact,
                extra_types=extra, progress=progress if tty else None, executor=args.executor,
                file_types=args.file_types)
    if tty:
        print("\r" + " " * 72 + "\r", end="", file=sys.stderr)
    rec = Recommendation(m, ts, frontier=_frontier(m, ts, args.tensor_type if want_choice else (),
                                                      args.frontier_points))
    if want_choice:
        rec.choice = budget.choose_from_measurement(m, target_bpw=args.target_bpw, target_size=args.target_size,
                                                    candidate_types=ts, pins=args.tensor_type)
    print(repr(rec))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(_json_safe(rec.to_json()), f, indent=1)
    if args.tensor_type_out:
        with open(args.tensor_type_out, "w", encoding="utf-8") as f:
            f.write(rec.choice.to_tensor_type_file())
    if args.plot:
        rec.plot(args.plot)
    return 0


def _json_safe(x: Any) -> Any:
    """JSON has no Infinity: an exact (lossless) result's SNR becomes null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x
