"""Importance matrices from llama.cpp's ``llama-imatrix``, read as ``llama-quantize`` reads them.

Both file formats are supported: the GGUF one (``<weight>.in_sum2`` / ``<weight>.counts``
tensors) and the legacy binary ``.dat`` one. The parsers are in Rust and trust nothing in
the file; a malformed file raises ValueError naming the path and the problem.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _kquant
from .gguf import _open_bytes, _release

__all__ = ["Imatrix", "load_imatrix"]

PathLike = Union[str, "os.PathLike[str]"]

# llama-quantize copies strings into a 128-byte buffer with its NUL.
_MAX_STR_BYTES = 127


def _clip(s: str, limit: int = _MAX_STR_BYTES) -> str:
    """`s` cut to at most `limit` UTF-8 bytes, at a character boundary."""
    b = s.encode("utf-8")
    return s if len(b) <= limit else b[:limit].decode("utf-8", errors="ignore")


class Imatrix(Mapping[str, np.ndarray]):
    """Per-column importance of each weight tensor, keyed by tensor name.

    A value is what llama-quantize hands the quantizer: float32 ``(n,)`` for a dense
    weight of rows of ``n``, ``(n_expert, n)`` for a 3-D expert weight in the GGUF format
    (an expert the calibration never reached gets ones). The legacy format does not record
    how values split over experts, so its values are always 1-D; ``for_tensor`` shapes them
    for a given weight.

    Attributes: ``path``; ``format`` ("gguf" or "dat"); ``datasets`` (file names the matrix
    was computed from); ``chunk_count``; ``chunk_size`` (GGUF only, else None);
    ``counts`` (name -> float64 array: activations accumulated per matrix, or the legacy
    ncall); ``activations`` (name -> mean activation, same shapes as the values, for GGUF
    files that store ``<weight>.in_sum``).
    """

    def __init__(
        self,
        path: str,
        format: str,
        values: Dict[str, np.ndarray],
        counts: Dict[str, np.ndarray],
        activations: Dict[str, np.ndarray],
        datasets: List[str],
        chunk_count: int,
        chunk_size: Optional[int],
    ):
        self.path = path
        self.format = format
        self._values = values
        self.counts = counts
        self.activations = activations
        self.datasets = datasets
        self.chunk_count = chunk_count
        self.chunk_size = chunk_size

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"no imatrix entry for {name!r} in {self.path}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def for_tensor(self, name: str, shape: Sequence[int]) -> Optional[np.ndarray]:
        """The importance for weight `name` of NumPy `shape`, as llama-quantize applies it:
        ``(n,)`` for a 2-D weight, ``(n_expert, n)`` for a 3-D one; None when the matrix has
        no entry for `name` (llama-quantize then quantizes without one).

        Raises ValueError when the entry's size is not ``n * n_expert``, which llama-quantize
        treats as an error too (it means the imatrix belongs to another model).
        """
        v = self._values.get(name)
        if v is None:
            return None
        dims = tuple(int(d) for d in shape)
        if not dims:
            raise ValueError(f"tensor {name!r}: shape must have at least one axis")
        n = dims[-1]
        n_expert = dims[-3] if len(dims) >= 3 else 1
        if v.size != n * n_expert:
            raise ValueError(
                f"imatrix entry {name!r} in {self.path} has {v.size} values, but a tensor of shape {dims} needs "
                f"{n * n_expert} ({n} per row x {n_expert} matrices): was it computed for another model?"
            )
        return v.reshape((n_expert, n) if len(dims) >= 3 else (n,))

    def quantize_metadata(self) -> List[Tuple[str, Any, str]]:
        """(key, value, type) entries llama-quantize records in a model quantized with this
        matrix; pass each to ``GGUFWriter.add_metadata(key, value, type=type)``.

        Strings are cut to 127 UTF-8 bytes as llama-quantize cuts them; the chunk count is
        recorded only when positive, the dataset only when there is one.
        """
        out: List[Tuple[str, Any, str]] = [("quantize.imatrix.file", _clip(self.path), "str")]
        if self.datasets:
            out.append(("quantize.imatrix.dataset", _clip(self.datasets[0]), "str"))
        out.append(("quantize.imatrix.entries_count", len(self), "u32"))
        if self.chunk_count > 0:
            out.append(("quantize.imatrix.chunks_count", self.chunk_count, "u32"))
        return out

    def __repr__(self) -> str:
        return (
            f"Imatrix({self.path!r}, format={self.format!r}, {len(self)} entries, "
            f"chunk_count={self.chunk_count}, datasets={self.datasets!r})"
        )


def load_imatrix(path: PathLike) -> Imatrix:
    """Reads an importance matrix written by ``llama-imatrix`` in either format.

    Raises OSError when the file cannot be read and ValueError (with the path) when it is
    not a valid imatrix file.
    """
    p = os.fspath(path)
    mm, buf = _open_bytes(p)
    try:
        fmt, entries, datasets, chunk_count, chunk_size = _kquant.imatrix_parse(buf)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    finally:
        # The parse copied everything out, so the mapping can go at once.
        del buf
        _release(mm)
    values: Dict[str, np.ndarray] = {}
    counts: Dict[str, np.ndarray] = {}
    activations: Dict[str, np.ndarray] = {}
    for name, v, n_mat, n_per_row, c, act in entries:
        shape = (n_per_row,) if n_mat == 1 else (n_mat, n_per_row)
        values[name] = v.reshape(shape)
        counts[name] = np.asarray(c, dtype=np.float64)
        if act is not None:
            activations[name] = act.reshape(shape)
    return Imatrix(p, fmt, values, counts, activations, datasets, chunk_count, chunk_size)
