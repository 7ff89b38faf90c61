"""Running kquant's per-tensor work on a ``concurrent.futures.Executor``: local worker
processes, a Dask cluster, or any other engine with that interface.

The unit of work is one tensor: read its stored bytes, convert them to float32 once and
quantize them to every type asked for (or, for ``measure``, measure every candidate type).
The driver (the process that called kquant) submits tensors in file order, keeps a bounded
number in flight, takes the results back in file order and writes the output file itself,
so the file is byte-identical to a run without an executor: the same functions compute the
same bytes wherever they run, and the order never depends on which worker finished first.

How a worker gets a tensor's bytes:

- **by path** (shared storage): the task names the input file, an offset and a length and
  the worker maps the file itself. The driver reads nothing but the header; each worker
  reads only its tensors. A worker checks that the file at that path is the driver's file
  (size and a hash of its first MiB and last 64 KiB, computed once per worker and file);
- **by value**: when a worker cannot open the path, or finds another file there, it says
  so and the driver resends that tensor, and every later one, with its bytes in the task.
  The driver then reads the whole input and sends it over the network once (the stored
  bytes: 2 bytes per weight for F16/BF16, less for a quantized input), on top of the
  quantized bytes every worker sends back. ``KQUANT_EXECUTOR_INPUT=bytes`` forces this,
  ``=path`` forbids it.

The driver keeps twice as many tasks in flight as there are worker threads, but no more
than ``KQUANT_EXECUTOR_MEMORY`` (default 4GiB) of their results and sent inputs, and always
at least one: that is the driver's memory beyond the header. Raise it to keep many workers
busy on a model whose tensors are large.

Failures: an exception raised by the work itself (NaN weights, a bad imatrix) ends the run
and is raised again here, naming the tensor; the caller's output is then abandoned. A worker
process that dies is the engine's business: Dask reschedules its tasks on the other workers;
``local:N`` (a ``ProcessPoolExecutor``) cannot, and the run ends with an error.

Process pools must not fork a process that has used kquant (its Rust thread pool does not
survive a fork): ``local:N`` spawns its workers; pass ``mp_context=multiprocessing.get_context(
"spawn")`` (or "forkserver") to a ``ProcessPoolExecutor`` of your own.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import mmap
import multiprocessing
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["open_executor", "quantize_task", "measure_task", "TensorTask", "ordered_results", "measure_tensors"]

_LOCAL = re.compile(r"^local:(\d+)$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d+$")

# In-flight limits: enough tasks to keep every worker busy while the driver writes, few
# enough that the results waiting on the driver (and the inputs it sent) stay within
# KQUANT_EXECUTOR_MEMORY.
_DEFAULT_MEMORY = 4 << 30


def _memory_limit() -> int:
    spec = os.environ.get("KQUANT_EXECUTOR_MEMORY")
    if not spec:
        return _DEFAULT_MEMORY
    from .budget import parse_size

    try:
        return max(1, parse_size(spec.strip()))
    except (TypeError, ValueError):
        raise ValueError(f"KQUANT_EXECUTOR_MEMORY must be a size such as 8GB or 4GiB, not {spec!r}") from None


# --------------------------------------------------------------------------
# choosing an executor
# --------------------------------------------------------------------------


def _local_init(threads: int) -> None:
    from ._api import set_num_threads

    set_num_threads(threads)


def open_executor(spec: Any) -> Tuple[Optional[cf.Executor], Callable[[], None], int]:
    """(executor, close, worker count) for ``spec``: None (run here), a
    ``concurrent.futures.Executor``, a Dask ``Client``, ``"local:N"`` or a Dask scheduler
    address such as ``"tcp://host:8786"``. ``close`` shuts down what kquant started and
    nothing else."""
    if spec is None:
        return None, lambda: None, 1
    if isinstance(spec, cf.Executor):
        return spec, lambda: None, _worker_count(spec)
    if hasattr(spec, "get_executor") and hasattr(spec, "scheduler_info"):  # a dask.distributed.Client
        ex = spec.get_executor(pure=False)
        return ex, lambda: None, _worker_count(ex)
    if not isinstance(spec, str):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, a Dask Client, 'local:N' or a scheduler address, "
            f"not {type(spec).__name__}"
        )
    s = spec.strip()
    m = _LOCAL.match(s)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ValueError(f"executor {spec!r}: local:N needs at least one worker process")
        threads = max(1, (os.cpu_count() or 1) // n)
        # spawn, not fork: a forked child inherits the Rust thread pool's locks without its
        # threads and can hang on its first kernel call
        ctx = multiprocessing.get_context("spawn")
        ex = cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_local_init, initargs=(threads,))
        return ex, lambda: ex.shutdown(wait=True, cancel_futures=True), n
    if "://" in s or _HOST_PORT.match(s):
        try:
            from distributed import Client
        except ImportError:
            raise ImportError(
                f"executor {spec!r} is a Dask scheduler address, which needs Dask: pip install 'kquant[distributed]'"
            ) from None
        try:
            client = Client(s, set_as_default=False, timeout=30)
        except (OSError, TimeoutError) as e:
            raise OSError(f"cannot reach the Dask scheduler at {s}: {e}") from None
        ex = client.get_executor(pure=False)
        return ex, client.close, _worker_count(ex)
    raise ValueError(f"executor {spec!r}: expected local:N or a Dask scheduler address such as tcp://host:8786")


def _worker_count(ex: Any) -> int:
    n = getattr(ex, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(ex, "_client", None)
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a count for pacing only
            pass
    return os.cpu_count() or 1


# --------------------------------------------------------------------------
# reading the input where the worker runs
# --------------------------------------------------------------------------


class NeedBytes:
    """A worker's answer when it cannot read the task's file: send the bytes instead."""

    def __init__(self, reason: str):
        self.reason = reason


def fingerprint(path: str) -> Tuple[int, str]:
    """(size, hash of the first MiB and the last 64 KiB): enough to tell a GGUF file from
    another one, whose headers (names, shapes, offsets) and ends differ."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f.read(1 << 20))
        if size > (1 << 20):
            f.seek(max(1 << 20, size - (1 << 16)))
            h.update(f.read())
    return size, h.hexdigest()


_FILES: Dict[str, Tuple[Tuple[int, int], Tuple[int, str], Optional[mmap.mmap], np.ndarray]] = {}
_FILES_LOCK = threading.Lock()


def _mapped(path: str, want: Tuple[int, str]) -> Optional[np.ndarray]:
    """The file at `path` as a read-only array when it is the driver's file, else None.
    Kept open per worker process; checked again when the file's size or time changes."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    stamp = (st.st_size, st.st_mtime_ns)
    with _FILES_LOCK:
        hit = _FILES.get(path)
        if hit is not None and hit[0] == stamp and hit[1] == want:
            return hit[3]
        try:
            fp = fingerprint(path)
        except OSError:
            return None
        if fp != want:
            return None
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if fp[0] else None
        buf = np.frombuffer(mm, np.uint8) if mm is not None else np.empty(0, np.uint8)
        _FILES[path] = (stamp, fp, mm, buf)
        return buf


def _input_mode() -> str:
    mode = os.environ.get("KQUANT_EXECUTOR_INPUT", "auto").strip().lower()
    if mode not in ("auto", "path", "bytes"):
        raise ValueError(f"KQUANT_EXECUTOR_INPUT must be auto, path or bytes, not {mode!r}")
    return mode


# --------------------------------------------------------------------------
# quantizing: one task per source tensor
# --------------------------------------------------------------------------


@dataclass
class TensorTask:
    """One source tensor and the types to quantize it to. ``data`` (its stored bytes) is
    None when the worker is to read ``path`` at ``offset`` itself."""

    name: str
    qtype: int  # ggml type id of the stored tensor
    shape: Tuple[int, ...]
    offset: int
    nbytes: int
    path: str
    fingerprint: Tuple[int, str]
    targets: List[Tuple[int, Optional[np.ndarray]]]  # (ggml type id, importance or None)
    data: Optional[np.ndarray] = None
    out_bytes: int = 0  # the results' size

    @property
    def cost(self) -> int:
        """Driver memory while in flight: the results, and the input if sent by value."""
        return self.nbytes + self.out_bytes


def dequantize_raw(raw: np.ndarray, qtype: Any, shape: Sequence[int]) -> np.ndarray:
    """A stored tensor's float32 values in its NumPy shape, as GGUFReader.dequantize gives them."""
    from ._api import dequantize
    from .gguf import GGUFTensorInfo, PlainType, _tensor_type

    t = _tensor_type(int(qtype))
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        return np.zeros(shape, np.float32)
    if isinstance(t, PlainType):
        with np.errstate(over="ignore"):
            return raw.view(t.dtype).astype(np.float32).reshape(shape)
    info = GGUFTensorInfo("", shape, t, raw.size, 0, n)
    return dequantize(raw.reshape(info.raw_shape), t).reshape(shape)


def quantize_task(task: TensorTask) -> Any:
    """Runs on a worker: the tensor quantized to each target type (uint8 arrays, in order),
    or NeedBytes when the file cannot be read here."""
    from ._types import QuantType
    from .model import _quantize_tensor

    raw = task.data
    if raw is None:
        buf = _mapped(task.path, task.fingerprint)
        if buf is None:
            return NeedBytes(f"{task.path} is not readable on this worker, or is another file")
        raw = buf[task.offset : task.offset + task.nbytes]
    try:
        x = dequantize_raw(raw, task.qtype, task.shape)
        return [_quantize_tensor(x, QuantType(t), w) for t, w in task.targets]
    except ValueError as e:
        raise ValueError(f"tensor {task.name!r}: {e}") from None


def ordered_results(
    executor: cf.Executor,
    fn: Callable[[Any], Any],
    tasks: Iterable[Any],
    embed: Callable[[Any], Any],
    *,
    workers: int,
    window: Optional[int] = None,
    max_bytes: Optional[int] = None,
) -> Iterator[Any]:
    """fn(task) for each task, run on `executor`, yielded in the tasks' order.

    At most `window` tasks (default twice the workers, at least 2) and `max_bytes` of task
    cost (``task.cost``; default KQUANT_EXECUTOR_MEMORY, 4 GiB) are in flight, but always one. A NeedBytes answer resends the
    task as ``embed(task)`` (its bytes included) and switches every later task to that too.
    """
    mode = _input_mode()
    window = window or max(2, 2 * workers)
    max_bytes = max_bytes or _memory_limit()
    pending: collections.deque = collections.deque()
    inflight = 0
    it = iter(tasks)
    head: Any = next(it, None)
    by_value = mode == "bytes"
    try:
        while True:
            while head is not None and len(pending) < window and (not pending or inflight + head.cost <= max_bytes):
                pending.append((head, executor.submit(fn, embed(head) if by_value else head)))
                inflight += head.cost
                head = next(it, None)
            if not pending:
                return
            task, fut = pending.popleft()
            inflight -= task.cost
            result = _result(fut)
            if isinstance(result, NeedBytes):
                if mode == "path":
                    raise OSError(f"a worker cannot read the input ({result.reason}) and KQUANT_EXECUTOR_INPUT=path")
                by_value = True
                result = _result(executor.submit(fn, embed(task)))
            yield result
    finally:
        for _, fut in pending:
            fut.cancel()


def _result(fut: cf.Future) -> Any:
    try:
        return fut.result()
    except cf.BrokenExecutor:
        raise OSError(
            "a local worker process died during the run (out of memory, or killed); "
            "a Dask cluster reschedules such work, local:N cannot"
        ) from None


# --------------------------------------------------------------------------
# measuring: one task per tensor
# --------------------------------------------------------------------------


_SOURCES: Dict[Tuple[str, Tuple[Any, ...]], Any] = {}


@dataclass
class MeasureTask:
    """One tensor to measure. ``source`` is a kind and path ("gguf"/"safetensors", path,
    fingerprints) for the worker to open, or an in-memory source holding just this tensor."""

    info: Any
    types: List[Any]
    imat: Optional[np.ndarray]
    sample_rows: Optional[int]
    seed: int
    source: Any
    cost: int = 0


def _open_by_path(ref: Tuple[str, str, Tuple[Any, ...]]) -> Any:
    kind, path, fps = ref
    key = (path, fps)
    with _FILES_LOCK:
        src = _SOURCES.get(key)
    if src is not None:
        return src
    from .tensors import GGUFSource, SafetensorsSource

    files = _source_files(kind, path)
    try:
        ok = tuple(fingerprint(f) for f in files) == fps
    except OSError:
        ok = False
    if not ok:
        return None
    src = GGUFSource(path) if kind == "gguf" else SafetensorsSource(path)
    with _FILES_LOCK:
        _SOURCES[key] = src
    return src


def _source_files(kind: str, path: str) -> List[str]:
    if kind == "gguf":
        from .gguf import GGUFReader

        with GGUFReader(path) as r:
            return list(r.paths)
    from pathlib import Path

    p = Path(path)
    return [str(f) for f in (sorted(p.glob("*.safetensors")) if p.is_dir() else [p])]


def measure_task(task: MeasureTask) -> Any:
    """Runs on a worker: the tensor's TensorMeasurement, or NeedBytes."""
    from .tradeoffs import measure_one

    src = task.source
    if isinstance(src, tuple):
        try:
            src = _open_by_path(src)
        except (OSError, ValueError):
            src = None
        if src is None:
            return NeedBytes(f"{task.source[1]} is not readable on this worker, or is another file")
    return measure_one(src, task.info, task.types, task.imat, task.sample_rows, task.seed)


class _OneRaw:
    """Stands in for a GGUFReader holding one tensor's stored bytes."""

    def __init__(self, raw: np.ndarray):
        self._raw = raw

    def raw(self, name: str) -> np.ndarray:
        return self._raw


def _embedded_source(src: Any, info: Any) -> Any:
    """A picklable source holding just `info`'s tensor: its stored bytes for GGUF, float32
    values otherwise."""
    from .tensors import ArraySource, GGUFSource, TensorSource

    if isinstance(src, GGUFSource):
        one = GGUFSource.__new__(GGUFSource)
        TensorSource.__init__(one)
        one.description = src.description
        one.skipped = []
        one.facts = None
        one.reader = _OneRaw(np.array(src.reader.raw(info.name)))
        one._add(info)
        return one
    return ArraySource({info.name: src.load(info.name)}, description=src.description)


def _path_ref(src: Any) -> Optional[Tuple[str, str, Tuple[Any, ...]]]:
    from .tensors import GGUFSource, SafetensorsSource

    if type(src) not in (GGUFSource, SafetensorsSource):
        return None  # in memory, or a subclass that may read differently from what a worker opens
    if isinstance(src, GGUFSource) and not isinstance(getattr(src, "reader", None), _OneRaw):
        kind, path = "gguf", os.path.abspath(src.reader.path)
        files = list(src.reader.paths)
    elif isinstance(src, SafetensorsSource):
        kind, path = "safetensors", os.path.abspath(str(src.path))
        files = _source_files(kind, path)
    else:
        return None
    return kind, path, tuple(fingerprint(f) for f in files)


def measure_tensors(
    executor: Any,
    src: Any,
    jobs: Sequence[Tuple[Any, List[Any]]],
    imat: Optional[Dict[str, np.ndarray]],
    sample_rows: Optional[int],
    seed: int,
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> List[Any]:
    """Each job's (tensor, types) measurement, run on `executor`, in order."""
    from .tradeoffs import _importance

    ex, close, workers = open_executor(executor)
    try:
        ref = _path_ref(src)

        def tasks() -> Iterator[MeasureTask]:
            for info, need in jobs:
                yield MeasureTask(info, list(need), _importance(imat, info), sample_rows, seed,
                                  ref if ref is not None else _embedded_source(src, info), int(info.nbytes))

        def embed(task: MeasureTask) -> MeasureTask:
            if not isinstance(task.source, tuple):
                return task
            return MeasureTask(task.info, task.types, task.imat, task.sample_rows, task.seed,
                               _embedded_source(src, task.info), task.cost)

        out = []
        for i, m in enumerate(ordered_results(ex, measure_task, tasks(), embed, workers=workers)):
            if progress is not None:
                progress(i, len(jobs), m.info.name)
            out.append(m)
        return out
    finally:
        close()
