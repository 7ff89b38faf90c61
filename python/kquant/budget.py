"""Choose a quantization type per tensor to minimize the model's error within a size budget.

The problem. Tensor t may take any candidate type k (after llama-quantize's row-length
fallback), costing b_tk bytes and error e_tk = n_t * ||W_t - Q_k(W_t)||^2 / ||W_t||^2 (n_t its
parameter count; the norms importance-weighted when an imatrix is given), measured by
:func:`kquant.tradeoffs.measure`. Minimize sum_t e_t,k(t) subject to
sum_t b_t,k(t) <= budget - fixed bytes, where pinned tensors (``--tensor-type`` patterns) have one
option and tensors llama-quantize does not quantize keep their bytes. This is a multiple-choice
knapsack; minimizing the parameter-weighted sum of relative MSEs is minimizing the model's
relative RMSE as :mod:`kquant.tradeoffs` reports it.

The method (:func:`solve`), three steps, the best result kept:

1. Lagrangian relaxation: per tensor, drop dominated options (more bytes and no less error) and
   take the lower convex hull of (bytes, error). Starting from every tensor's smallest option,
   apply hull steps in order of error saved per byte while they fit. This is the optimum of the
   relaxation (every multiplier lambda picks, per tensor, the hull point minimizing
   e + lambda b), less the one step that did not fit.
2. Dynamic programming over bytes: after subtracting each tensor's smallest option, the extra
   bytes of every option are counted in units of their greatest common divisor, or, when that
   grid would be too fine (over 2^17 cells, or 2^25 entries in the table of choices), in equal
   units rounded up, so every DP solution fits the true budget. With the exact grid the DP is optimal; with the
   rounded one it loses at most one unit per tensor of budget.
3. Repair and fill with true byte counts: move single tensors to the option that saves the most
   error within the bytes left, until no move helps. Known feasible choices (``starts``: the
   llama.cpp recipes that fit the budget) are improved the same way, so the result is never worse
   than a recipe of at most its size.

The candidates are, by default, every type kquant can write into a GGUF file but F32
(:data:`kquant.tradeoffs.DEFAULT_TYPES`, 1.1 to 16 bits per weight), i.e. anything a
``--tensor-type`` file can give a tensor; a tensor without an importance entry is not offered the
types llama-quantize will not make without one (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS; the
token embedding and output are exempt for the types ggml itself can make without one).
:func:`frontier` solves a range of budgets on one measurement: the least error for each size
(on a coarser byte grid than a single solve, and never above a recipe of at most that size).

Real models have few tensor shapes, so the exact grid is usual and the result optimal.

:func:`choose_for_budget` runs the measurement and the solver and returns a :class:`BudgetChoice`,
which writes the choice as a llama-quantize ``--tensor-type-file`` (one ``^name$=TYPE`` per line)
and compares it with the fixed llama.cpp file type (recipe) nearest in size, whose error is
predicted from the same measurements.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Dict, List, Mapping, Optional, Pattern, Sequence, Tuple, Union

import numpy as np

from ._types import QTypeLike, QuantType
from .recipes import (
    _FALLBACK,
    _TOKEN_EMBD_NAMES,
    IMATRIX_TYPES,
    FileType,
    QuantizeError,
    TensorSpec,
    parse_tensor_type,
    parse_tensor_type_text,
    plan_quantization,
)
from .tensors import TensorSource, open_source
from .tradeoffs import (
    ALL_FILE_TYPES,
    DEFAULT_SAMPLE_ROWS,
    DEFAULT_TYPES,
    ImatrixLike,
    Measurement,
    human_bytes,
    load_imatrix_arg,
    measure,
    parse_types,
    split_tensors,
)

__all__ = [
    "BudgetChoice",
    "BudgetError",
    "FrontierPoint",
    "Option",
    "RecipeComparison",
    "choose_for_budget",
    "choose_from_measurement",
    "frontier",
    "parse_size",
    "solve",
    "tensor_type_pattern",
]

# llama.cpp file types the choice is compared with: every one kquant writes
COMPARED_FILE_TYPES = ALL_FILE_TYPES

_DP_MAX_CELLS = 1 << 17
_DP_MAX_TABLE = 1 << 25
# the frontier solves dozens of budgets: a coarser grid there keeps a large model's curve to seconds
_FRONTIER_CELLS = 1 << 14


class BudgetError(ValueError):
    """The budget cannot be met: even the smallest allowed types are too large."""


# --------------------------------------------------------------------------
# sizes and patterns
# --------------------------------------------------------------------------

_UNITS = {
    "": 1, "B": 1,
    "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def parse_size(size: Union[int, float, str]) -> int:
    """Bytes from an int or a string: "3.2GB" / "3.2G" (10^9), "800MiB" (2^20), "123456"."""
    if isinstance(size, bool):
        raise TypeError("size must be a number of bytes or a string such as '3.2GB'")
    if isinstance(size, (int, np.integer)):
        n = int(size)
    elif isinstance(size, float):
        n = int(size)
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*", size)
        unit = m.group(2).upper() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(f"cannot read size {size!r}; expected e.g. 3.2GB, 800MiB or a number of bytes")
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise TypeError(f"size must be a number of bytes or a string such as '3.2GB', not {type(size).__name__}")
    if n <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return n


def tensor_type_pattern(name: str) -> str:
    """A ``--tensor-type`` pattern matching exactly ``name``.

    llama-quantize lowercases patterns before compiling them, so upper-case letters are written
    as ``\\xHH`` escapes (which lowercasing leaves alone and both std::regex and Python read).
    """
    out = []
    for ch in re.escape(name):
        out.append(f"\\x{ord(ch):02x}" if ch.isupper() and ord(ch) < 128 else ch)
    return "^" + "".join(out) + "$"


Pins = Sequence[Union[str, Tuple[Union[str, Pattern[str]], QTypeLike]]]


def _parse_pins(pins: Union[str, Pins]) -> List[Tuple[Pattern[str], QuantType]]:
    if isinstance(pins, str):
        items: List[Tuple[Any, QuantType]] = list(parse_tensor_type_text(pins))
    else:
        items = [parse_tensor_type(p) if isinstance(p, str) else (p[0], QuantType.parse(p[1])) for p in pins]
    return [(p if isinstance(p, re.Pattern) else re.compile(p), t) for p, t in items]


def _pinned_type(pins: List[Tuple[Pattern[str], QuantType]], name: str) -> Optional[QuantType]:
    for pat, t in pins:
        if pat.search(name):
            return t
    return None


# --------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One way to store one tensor."""

    qtype: QuantType
    nbytes: int
    error: float


def _pareto(opts: Sequence[Option]) -> List[int]:
    """Indices of the undominated options, by bytes ascending (so error descending)."""
    order = sorted(range(len(opts)), key=lambda k: (opts[k].nbytes, opts[k].error))
    keep: List[int] = []
    for k in order:
        if not keep or opts[k].error < opts[keep[-1]].error:
            if keep and opts[k].nbytes == opts[keep[-1]].nbytes:
                keep[-1] = k
            else:
                keep.append(k)
    return keep


def _hull(opts: Sequence[Option], front: List[int]) -> List[int]:
    """The lower convex hull of a Pareto front (a subsequence of it)."""
    h: List[int] = []
    for k in front:
        while len(h) >= 2:
            a, b = opts[h[-2]], opts[h[-1]]
            c = opts[k]
            # b lies on or above the segment a-c: drop it
            if (b.error - a.error) * (c.nbytes - a.nbytes) >= (c.error - a.error) * (b.nbytes - a.nbytes):
                h.pop()
            else:
                break
        h.append(k)
    return h


def _cost(items: Sequence[Sequence[Option]], choice: Sequence[int]) -> Tuple[int, float]:
    return sum(items[i][k].nbytes for i, k in enumerate(choice)), sum(items[i][k].error for i, k in enumerate(choice))


def _greedy(items: Sequence[Sequence[Option]], fronts: List[List[int]], capacity: int) -> List[int]:
    choice = [f[0] for f in fronts]
    used = sum(items[i][f[0]].nbytes for i, f in enumerate(fronts))
    steps = []
    for i, f in enumerate(fronts):
        h = _hull(items[i], f)
        for a, b in zip(h[:-1], h[1:]):
            db = items[i][b].nbytes - items[i][a].nbytes
            de = items[i][a].error - items[i][b].error
            steps.append((-de / db, i, a, b, db))
    steps.sort(key=lambda s: s[0])
    blocked = set()
    for _, i, a, b, db in steps:
        if i in blocked or choice[i] != a:
            continue
        if used + db <= capacity:
            choice[i] = b
            used += db
        else:
            blocked.add(i)
    return choice


def _dp(
    items: Sequence[Sequence[Option]], fronts: List[List[int]], capacity: int, cell_limit: int = _DP_MAX_CELLS
) -> Optional[List[int]]:
    base = [items[i][f[0]].nbytes for i, f in enumerate(fronts)]
    slack = capacity - sum(base)
    var = [i for i, f in enumerate(fronts) if len(f) > 1]
    choice = [f[0] for f in fronts]
    if not var or slack <= 0:
        return choice
    extra = {i: [items[i][k].nbytes - base[i] for k in fronts[i]] for i in var}
    g = reduce(math.gcd, (c for i in var for c in extra[i]), 0)
    max_cells = max(1, min(cell_limit, _DP_MAX_TABLE // len(var)))
    unit = g if slack // g <= max_cells else -(-slack // max_cells)
    cells = slack // unit
    if cells < 1:
        return choice
    dp = np.full(cells + 1, np.inf)
    dp[0] = 0.0
    table = np.zeros((len(var), cells + 1), dtype=np.int8)
    for row, i in enumerate(var):
        f = fronts[i]
        new = np.full(cells + 1, np.inf)
        arg = table[row]
        for j, k in enumerate(f):
            c = -(-extra[i][j] // unit)
            if c > cells:
                break
            cand = dp[: cells + 1 - c] + items[i][k].error
            better = cand < new[c:]
            new[c:][better] = cand[better]
            arg[c:][better] = j
        dp = new
    g_best = int(np.argmin(dp))
    if not np.isfinite(dp[g_best]):
        return None
    for row in range(len(var) - 1, -1, -1):
        i = var[row]
        j = int(table[row, g_best])
        choice[i] = fronts[i][j]
        g_best -= -(-extra[i][j] // unit)
    return choice


def _improve(items: Sequence[Sequence[Option]], fronts: List[List[int]], choice: List[int], capacity: int) -> List[int]:
    choice = list(choice)
    used, _ = _cost(items, choice)
    for _ in range(10 * len(items) + 10):
        best = None
        for i, f in enumerate(fronts):
            cur = items[i][choice[i]]
            for k in f:
                o = items[i][k]
                gain = cur.error - o.error
                if gain > 0 and used - cur.nbytes + o.nbytes <= capacity and (best is None or gain > best[0]):
                    best = (gain, i, k)
        if best is None:
            break
        _, i, k = best
        used += items[i][k].nbytes - items[i][choice[i]].nbytes
        choice[i] = k
    return choice


def solve(
    items: Sequence[Sequence[Option]],
    capacity: int,
    starts: Sequence[Sequence[int]] = (),
    cell_limit: int = _DP_MAX_CELLS,
) -> List[int]:
    """For each item the index of its chosen option, minimizing the summed error with the summed
    bytes at most ``capacity`` (see the module docstring for the method). ``starts``: known
    choices (an option index per item) to improve on; those over ``capacity`` are ignored.
    ``cell_limit``: the most cells of the dynamic programme's byte grid (step 2; fewer is faster
    and rounds more). Raises :class:`BudgetError` when the smallest options do not fit."""
    if any(len(opts) == 0 for opts in items):
        raise ValueError("every item needs at least one option")
    fronts = [_pareto(opts) for opts in items]
    smallest = sum(items[i][f[0]].nbytes for i, f in enumerate(fronts))
    if smallest > capacity:
        raise BudgetError(f"the budget is {smallest - capacity} bytes short of the smallest choice ({smallest} bytes)")
    cands = [_greedy(items, fronts, capacity)]
    d = _dp(items, fronts, capacity, cell_limit)
    if d is not None:
        cands.append(d)
    # the best start that fits is enough: improving it only lowers its error
    fit = [list(st) for st in starts if len(st) == len(items) and _cost(items, st)[0] <= capacity]
    if fit:
        cands.append(min(fit, key=lambda c: (_cost(items, c)[1], _cost(items, c)[0])))
    cands = [_improve(items, fronts, c, capacity) for c in cands]
    return min(cands, key=lambda c: (_cost(items, c)[1], _cost(items, c)[0]))


# --------------------------------------------------------------------------
# the choice
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeComparison:
    """A fixed llama.cpp file type on the same model, its error predicted from the same measurements."""

    file_type: FileType
    total_bytes: int
    bpw: float
    predicted_error: float
    predicted_rel_rmse: float
    tensor_types: Dict[str, QuantType] = field(repr=False, default_factory=dict)


@dataclass
class BudgetChoice:
    """A type per quantizable tensor within a byte budget.

    ``total_bytes`` counts all tensor data (kept tensors included); ``bpw`` is it in bits per
    parameter of the whole model. ``predicted_error`` is sum_t n_t * relative MSE_t over the
    quantizable tensors, the solver's objective, as measured (on sampled rows unless exact);
    ``predicted_rel_rmse`` is sqrt(predicted_error / quantizable parameters), comparable with the
    ``rel_rmse`` column of the tradeoffs table.
    """

    tensor_types: Dict[str, QuantType]
    total_bytes: int
    bpw: float
    budget_bytes: int
    fixed_bytes: int
    params: int
    predicted_error: float
    predicted_rel_rmse: float
    tensor_bytes: Dict[str, int] = field(default_factory=dict, repr=False)
    tensor_errors: Dict[str, float] = field(default_factory=dict, repr=False)
    pinned: List[str] = field(default_factory=list, repr=False)
    recipe: Optional[RecipeComparison] = None
    imatrix: bool = False
    sampled: bool = False

    def counts(self) -> Dict[str, int]:
        """How many tensors use each type."""
        out: Dict[str, int] = {}
        for t in self.tensor_types.values():
            out[t.name] = out.get(t.name, 0) + 1
        return dict(sorted(out.items()))

    def to_tensor_type_file(self) -> str:
        """The choice as llama-quantize ``--tensor-type-file`` text: ``^name$=TYPE`` per line.

        Every quantizable tensor is named, so llama-quantize's mix rules change nothing whatever
        base file type it is given; the types are those written after row-length fallbacks.
        """
        return "".join(f"{tensor_type_pattern(n)}={t.name}\n" for n, t in self.tensor_types.items())

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "total_bytes": self.total_bytes,
            "bits_per_weight": self.bpw,
            "budget_bytes": self.budget_bytes,
            "predicted_error": self.predicted_error,
            "predicted_rel_rmse": self.predicted_rel_rmse,
            "counts": self.counts(),
            "tensor_types": {n: t.name for n, t in self.tensor_types.items()},
            "pinned": list(self.pinned),
        }
        if self.recipe is not None:
            r = self.recipe
            d["recipe"] = {
                "file_type": r.file_type.name, "total_bytes": r.total_bytes, "bits_per_weight": r.bpw,
                "predicted_error": r.predicted_error, "predicted_rel_rmse": r.predicted_rel_rmse,
            }
        return d

    def summary(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        lines = [
            f"budget {human_bytes(self.budget_bytes)}: chose {human_bytes(self.total_bytes)} "
            f"({self.bpw:.3f} bits/weight), predicted rel RMSE {self.predicted_rel_rmse:.5f} "
            f"({_db(self.predicted_rel_rmse)} dB); {counts}"
            + (f"; {len(self.pinned)} pinned" if self.pinned else "")
        ]
        r = self.recipe
        if r is not None:
            verdict = ""
            if r.predicted_error > 0:
                verdict = f"; error x{self.predicted_error / r.predicted_error:.3f}"
            lines.append(
                f"nearest fixed recipe {r.file_type.name}: {human_bytes(r.total_bytes)} ({r.bpw:.3f} bits/weight), "
                f"predicted rel RMSE {r.predicted_rel_rmse:.5f}{verdict}, size x{self.total_bytes / r.total_bytes:.3f}"
            )
        if self.sampled:
            lines.append("(errors estimated on sampled rows; --exact measures every row)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{t.name}</td><td>{self.tensor_bytes.get(n, 0)}</td>"
            f"<td>{math.sqrt(self.tensor_errors.get(n, 0.0)):.5f}</td></tr>"
            for n, t in self.tensor_types.items()
        )
        summary = html.escape(self.summary()).replace("\n", "<br>")
        return (
            f"<p>{summary}</p><details><summary>per tensor</summary><table>"
            f"<tr><th>tensor</th><th>type</th><th>bytes</th><th>rel RMSE</th></tr>{rows}</table></details>"
        )


def _db(rel_rmse: float) -> str:
    return "inf" if rel_rmse == 0 else f"{-20 * math.log10(rel_rmse):.2f}"


def _budget_bytes(target_bpw: Optional[float], target_size: Union[None, int, str], params: int) -> int:
    if (target_bpw is None) == (target_size is None):
        raise ValueError("give exactly one of target_bpw and target_size")
    if target_bpw is not None:
        if not (isinstance(target_bpw, (int, float)) and math.isfinite(target_bpw) and target_bpw > 0):
            raise ValueError(f"target_bpw must be a positive number, got {target_bpw!r}")
        return int(math.floor(target_bpw * params / 8))
    return parse_size(target_size)  # type: ignore[arg-type]


def _recipe_plans(
    src_specs: List[TensorSpec],
    facts: Any,
    pins: List[Tuple[Pattern[str], QuantType]],
    quant_names: set,
    imatrix_names: Optional[set] = None,
) -> Dict[FileType, Dict[str, QuantType]]:
    """The compared file types llama-quantize would make here (with the user's pins and, given
    ``imatrix_names``, the importance-matrix rules): file type -> tensor -> type."""
    entries = set(imatrix_names or ())
    plans = {}
    for ft in COMPARED_FILE_TYPES:
        try:
            plan = plan_quantization(
                src_specs, facts, ft, tensor_types=[(p, t) for p, t in pins], allow_requantize=True, dry_run=True,
                imatrix=entries or False,
            )
        except (QuantizeError, ValueError):
            continue
        if plan.imatrix_error is not None or plan.errors:
            continue
        plans[ft] = {e.name: e.target_type for e in plan if e.name in quant_names}
    return plans


def _specs(src: TensorSource) -> List[TensorSpec]:
    # planned as float tensors: a quantized input is dequantized before it is measured
    return [TensorSpec.from_numpy(i.name, i.shape, QuantType.F32) for i in src.tensors]


def _nearest_recipe(
    plans: Mapping[FileType, Dict[str, QuantType]], sizes: Mapping[str, Tuple[int, int]], fixed: int, budget: int
) -> Optional[FileType]:
    best = None
    for ft, types in plans.items():
        total = fixed + sum(rows * _row_bytes(t, n) for name, t in types.items() for rows, n in [sizes[name]])
        key = abs(total - budget)
        if best is None or key < best[0]:
            best = (key, ft)
    return None if best is None else best[1]


def _row_bytes(t: QuantType, n: int) -> int:
    return n // t.block_size * t.type_size


def types_to_measure(
    source: Any,
    *,
    target_bpw: Optional[float] = None,
    target_size: Union[None, int, str] = None,
    pins: Union[str, Pins] = (),
    ftype_for_nonquantized: Optional[QTypeLike] = None,
    compare: bool = True,
    imatrix_names: Optional[Any] = None,
) -> Dict[str, List[QuantType]]:
    """The types to measure per tensor beyond the candidates: pinned types and (``compare``) the
    types of the file type nearest to the budget. Pass to ``measure(extra_types=)``.
    ``imatrix_names``: the tensors the importance matrix has entries for (None: no imatrix), so
    that file types needing one are compared only when it is there."""
    src = open_source(source)
    pin_list = _parse_pins(pins)
    quant, fixed = split_tensors(src, ftype_for_nonquantized)
    names = {i.name for i in quant}
    extra: Dict[str, List[QuantType]] = {}
    for i in quant:
        p = _pinned_type(pin_list, i.name)
        if p is not None:
            extra.setdefault(i.name, []).append(p)
    params = sum(i.params for i in src.tensors)
    budget = _budget_bytes(target_bpw, target_size, params)
    if not compare:
        return extra
    plans = _recipe_plans(_specs(src), src.model_facts(), pin_list, names,
                          None if imatrix_names is None else set(imatrix_names) & names)
    sizes = {i.name: (i.n_rows, i.row_length) for i in quant}
    ft = _nearest_recipe(plans, sizes, sum(b for _, b in fixed), budget)
    if ft is not None:
        for name, t in plans[ft].items():
            extra.setdefault(name, []).append(t)
    return extra


def choose_from_measurement(
    m: Measurement,
    *,
    target_bpw: Optional[float] = None,
    target_size: Union[None, int, str] = None,
    candidate_types: Sequence[QTypeLike] = DEFAULT_TYPES,
    pins: Union[str, Pins] = (),
    compare: bool = True,
) -> BudgetChoice:
    """Solve the budget problem on an existing measurement (which must hold the candidate and
    pinned types; the recipe comparison is left out when its types were not measured)."""
    ts = parse_types(candidate_types)
    pin_list = _parse_pins(pins)
    budget = _budget_bytes(target_bpw, target_size, m.total_params)
    capacity = budget - m.fixed_bytes
    items, pinned = _options(m, ts, pin_list)
    try:
        choice = solve(items, capacity, _recipe_starts(m, items, pin_list))
    except BudgetError as e:
        smallest = m.fixed_bytes + sum(min(o.nbytes for o in opts) for opts in items)
        raise BudgetError(
            f"a budget of {budget} bytes ({budget * 8 / m.total_params:.3f} bits/weight) is below the smallest "
            f"model these types allow: {smallest} bytes ({smallest * 8 / m.total_params:.3f} bits/weight)"
        ) from e
    tensor_types = {t.name: items[i][k].qtype for i, (t, k) in enumerate(zip(m.tensors, choice))}
    tensor_bytes = {t.name: items[i][k].nbytes for i, (t, k) in enumerate(zip(m.tensors, choice))}
    tensor_errors = {t.name: t.rel_mse(items[i][k].qtype) for i, (t, k) in enumerate(zip(m.tensors, choice))}
    s = m.summarize(tensor_types)
    recipe = _compare(m, pin_list, budget) if compare else None
    return BudgetChoice(
        tensor_types=tensor_types,
        total_bytes=s["bytes"],
        bpw=s["bits_per_weight"],
        budget_bytes=budget,
        fixed_bytes=m.fixed_bytes,
        params=m.total_params,
        predicted_error=s["error"],
        predicted_rel_rmse=s["rel_rmse"],
        tensor_bytes=tensor_bytes,
        tensor_errors=tensor_errors,
        pinned=pinned,
        recipe=recipe,
        imatrix=m.imatrix,
        sampled=m.sampled,
    )


def _may_use_without_entry(name: str, q: QuantType) -> bool:
    """Whether llama-quantize makes a ``q`` tensor that has no importance entry."""
    if q.requires_imatrix:
        return False  # ggml itself will not
    if name in _TOKEN_EMBD_NAMES or name == "output.weight":
        return True
    return q not in IMATRIX_TYPES


def _options(
    m: Measurement,
    ts: Sequence[QuantType],
    pin_list: List[Tuple[Pattern[str], QuantType]],
    skip_unmeasured: bool = False,
) -> Tuple[List[List[Option]], List[str]]:
    """Each quantizable tensor's options (its pinned type, or the candidates it may take), and
    the pinned tensors' names. ``skip_unmeasured``: a candidate not measured on a tensor is not
    offered to it (else ValueError)."""
    items: List[List[Option]] = []
    pinned: List[str] = []
    for t in m.tensors:
        p = _pinned_type(pin_list, t.name)
        opts: List[Option] = []
        if p is not None:
            if t.info.row_length % p.block_size and p not in _FALLBACK:
                raise QuantizeError(
                    f"{t.name}: pinned to {p.name}, but row length {t.info.row_length} is not a multiple of "
                    f"{p.block_size} and {p.name} has no usable fallback"
                )
            e = t.effective(p)
            if e not in t.stats:
                need = " (it needs an importance matrix, and this tensor has no entry)" if e.requires_imatrix else ""
                raise ValueError(f"{t.name}: pinned to {e.name}, which was not measured{need}")
            opts.append(Option(e, t.nbytes(e), t.error(e)))
            pinned.append(t.name)
        else:
            for q in ts:
                e = t.effective(q)
                if not t.weighted and not _may_use_without_entry(t.name, e):
                    continue
                if e not in t.stats:
                    if skip_unmeasured:
                        continue
                    raise ValueError(f"{t.name}: {e.name} was not measured")
                if all(o.qtype != e for o in opts):
                    opts.append(Option(e, t.nbytes(e), t.error(e)))
            if not opts:
                raise ValueError(
                    f"{t.name}: none of the candidate types ({', '.join(q.name for q in ts)}) can be made "
                    f"without an importance entry for it"
                )
        items.append(opts)
    return items, pinned


def _specs_of(m: Measurement) -> List[TensorSpec]:
    specs = [TensorSpec.from_numpy(t.name, t.info.shape) for t in m.tensors]
    return specs + [TensorSpec.from_numpy(i.name, i.shape) for i, _ in m.fixed]


def _imatrix_names(m: Measurement) -> Optional[set]:
    return {t.name for t in m.tensors if t.weighted} if m.imatrix else None


def _recipe_starts(
    m: Measurement, items: Sequence[Sequence[Option]], pins: List[Tuple[Pattern[str], QuantType]]
) -> List[List[int]]:
    """The llama.cpp recipes as choices among ``items``' options (those a tensor's options allow)."""
    names = {t.name for t in m.tensors}
    starts = []
    for types in _recipe_plans(_specs_of(m), m.facts, pins, names, _imatrix_names(m)).values():
        start = []
        for t, opts in zip(m.tensors, items):
            e = t.effective(types[t.name])
            k = next((j for j, o in enumerate(opts) if o.qtype == e), None)
            if k is None:
                break
            start.append(k)
        else:
            starts.append(start)
    return starts


def _compare(m: Measurement, pins: List[Tuple[Pattern[str], QuantType]], budget: int) -> Optional[RecipeComparison]:
    specs = _specs_of(m)
    names = {t.name for t in m.tensors}
    plans = _recipe_plans(specs, m.facts, pins, names, _imatrix_names(m))
    # only recipes whose every type was measured can be compared
    plans = {ft: p for ft, p in plans.items() if all(p[t.name] in t.stats for t in m.tensors)}
    sizes = {t.name: (t.info.n_rows, t.info.row_length) for t in m.tensors}
    ft = _nearest_recipe(plans, sizes, m.fixed_bytes, budget)
    if ft is None:
        return None
    s = m.summarize(plans[ft])
    return RecipeComparison(ft, s["bytes"], s["bits_per_weight"], s["error"], s["rel_rmse"], plans[ft])


@dataclass(frozen=True)
class FrontierPoint:
    """The budget solver's choice for one budget: the least error found for that size."""

    budget_bytes: int
    total_bytes: int
    bpw: float
    error: float
    rel_rmse: float
    counts: Dict[str, int] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes, "bytes": self.total_bytes, "bits_per_weight": self.bpw,
            "error": self.error, "rel_rmse": self.rel_rmse, "counts": dict(self.counts),
        }


def frontier(
    m: Measurement,
    *,
    candidate_types: Optional[Sequence[QTypeLike]] = None,
    pins: Union[str, Pins] = (),
    points: int = 24,
    sizes: Sequence[int] = (),
) -> List[FrontierPoint]:
    """The least error the budget solver finds for each size: solved at ``points`` budgets spread
    evenly in log scale from the smallest model the candidates allow to the largest, and at each
    of ``sizes`` (bytes, e.g. the file types' sizes) in that range.

    ``candidate_types``: None for every type measured on each tensor (so every file type's
    types are among them). The result is sorted by size, and only points with less error than
    every smaller one are kept, so the error falls as the size grows. A choice made for a
    smaller budget fits a larger one too; so that the curve never rises, each budget also
    starts from the best choice found for the budgets below it, and from every llama.cpp recipe
    that fits it (whose types are candidates), so no such recipe of at most a point's size has
    less error. The dynamic programme runs on a coarser byte grid than :func:`choose_from_measurement`'s
    (2^14 cells), which keeps a few hundred tensors to seconds.
    """
    pin_list = _parse_pins(pins)
    if candidate_types is None:
        # the union; _options offers each tensor the ones measured on it
        seen: List[QuantType] = []
        for t in m.tensors:
            for q in t.stats:
                if q not in seen:
                    seen.append(q)
        ts = seen
    else:
        ts = parse_types(candidate_types)
    items, _ = _options(m, ts, pin_list, skip_unmeasured=True)
    if not items:
        return []
    lo = sum(min(o.nbytes for o in opts) for opts in items)
    hi = sum(max(o.nbytes for o in opts) for opts in items)
    caps = set()
    if points > 0:
        n = max(points, 2)
        caps |= {int(round(lo * (hi / lo) ** (k / (n - 1)))) if lo > 0 else int(hi * k / (n - 1)) for k in range(n)}
    caps |= {int(b) - m.fixed_bytes for b in sizes if lo <= int(b) - m.fixed_bytes <= hi}
    starts = _recipe_starts(m, items, pin_list)
    out: List[FrontierPoint] = []
    best: Optional[List[int]] = None
    for cap in sorted(c for c in caps if c >= lo):
        choice = solve(items, cap, starts + ([best] if best is not None else []), cell_limit=_FRONTIER_CELLS)
        best = choice
        types = {t.name: items[i][k].qtype for i, (t, k) in enumerate(zip(m.tensors, choice))}
        s = m.summarize(types)
        counts: Dict[str, int] = {}
        for q in types.values():
            counts[q.name] = counts.get(q.name, 0) + 1
        out.append(FrontierPoint(cap + m.fixed_bytes, s["bytes"], s["bits_per_weight"], s["error"], s["rel_rmse"],
                                 dict(sorted(counts.items()))))
    out.sort(key=lambda p: (p.total_bytes, p.error))
    kept: List[FrontierPoint] = []
    for p in out:
        if not kept or p.error < kept[-1].error:
            kept.append(p)
    return kept


def choose_for_budget(
    source: Any,
    target_bpw: Optional[float] = None,
    target_size: Union[None, int, str] = None,
    candidate_types: Sequence[QTypeLike] = DEFAULT_TYPES,
    imatrix: ImatrixLike = None,
    pins: Union[str, Pins] = (),
    ftype_for_nonquantized: Optional[QTypeLike] = None,
    sample_rows: Optional[int] = DEFAULT_SAMPLE_ROWS,
    exact: bool = False,
    seed: int = 0,
    compare: bool = True,
    executor: Any = None,
) -> BudgetChoice:
    """Measure ``source`` and choose a type per quantizable tensor within the budget.

    ``source``: a GGUF or safetensors path, a mapping of GGUF-style names to arrays, a
    TensorSource, or None for the built-in sample. Exactly one of ``target_bpw`` (bits per weight
    of the whole model) and ``target_size`` (bytes, or "3.2GB" / "800MiB") is required.
    ``candidate_types`` are the types a tensor may get (each through the row-length fallback).
    ``pins``: ``--tensor-type`` items ("pattern=type" strings, (pattern, type) pairs, or a
    ``--tensor-type-file``'s text); a matching tensor gets that type, first match wins.
    ``ftype_for_nonquantized``: F32/F16/BF16 to store the tensors llama-quantize does not quantize
    in, None to keep their current type. Raises :class:`BudgetError` when the budget is too small.
    ``executor``: where to measure, as for :func:`kquant.tradeoffs.measure`.
    """
    src = open_source(source)
    ts = parse_types(candidate_types)
    imat = load_imatrix_arg(imatrix)
    extra = types_to_measure(
        src, target_bpw=target_bpw, target_size=target_size, pins=pins,
        ftype_for_nonquantized=ftype_for_nonquantized, compare=compare,
        imatrix_names=None if imat is None else list(imat),
    )
    m = measure(
        src, ts, imatrix=imat, sample_rows=sample_rows, seed=seed, exact=exact, extra_types=extra,
        nonquantized_type=ftype_for_nonquantized, executor=executor,
    )
    return choose_from_measurement(
        m, target_bpw=target_bpw, target_size=target_size, candidate_types=ts, pins=pins, compare=compare
    )
