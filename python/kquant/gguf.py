"""Reading and writing GGUF files (llama.cpp's model format).

``GGUFReader`` memory-maps the file and parses the header in Rust with the GIL released;
tensor data is never read until asked for, and ``raw`` returns zero-copy views into the
mapping. ``GGUFWriter`` streams: declare the metadata and every tensor, then write the
tensors one at a time in declared order. The file appears at its path only once it is
complete.

Tensor types are ``kquant.QuantType`` members, except ggml's plain integer and f64 types,
which kquant can carry through a file but not quantize: those are ``PlainType`` members.
Both are ``IntEnum``s whose value is ggml's type id, with ``block_size`` and ``type_size``.

Metadata value types are named as ggml names them: ``u8 i8 u16 i16 u32 i32 f32 bool str
u64 i64 f64``, and ``arr[T]`` for an array of T.
"""

from __future__ import annotations

import difflib
import enum
import errno
import math
import mmap
import operator
import os
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _kquant
from ._api import dequantize as _dequantize
from ._types import QuantType

__all__ = ["GGUFReader", "GGUFWriter", "GGUFTensorInfo", "PlainType", "TensorType"]

PathLike = Union[str, "os.PathLike[str]"]


class PlainType(enum.IntEnum):
    """ggml's plain storage types that are not quantization formats (value: ggml type id)."""

    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28

    @property
    def dtype(self) -> np.dtype:
        """The little-endian NumPy dtype of one element."""
        return np.dtype(_PLAIN_DTYPES[self])

    @property
    def block_size(self) -> int:
        return 1

    @property
    def type_size(self) -> int:
        return self.dtype.itemsize

    def __str__(self) -> str:
        return self.name


_PLAIN_DTYPES = {
    PlainType.I8: "<i1",
    PlainType.I16: "<i2",
    PlainType.I32: "<i4",
    PlainType.I64: "<i8",
    PlainType.F64: "<f8",
}

TensorType = Union[QuantType, PlainType]


def _tensor_type(t: Union[QuantType, PlainType, int, str]) -> TensorType:
    """A tensor type from a member, a ggml id or a name in any case."""
    if isinstance(t, (QuantType, PlainType)):
        return t
    if isinstance(t, str):
        key = t.strip().upper()
        if key in PlainType.__members__:
            return PlainType[key]
        return QuantType.parse(t)
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise TypeError(
            f"a tensor type must be a QuantType, a PlainType, a ggml type id or a name, not {type(t).__name__}"
        )
    i = int(t)
    if i in PlainType._value2member_map_:
        return PlainType(i)
    return QuantType.parse(i)


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor of a GGUF file.

    ``shape`` is in NumPy order (ggml's ``ne`` reversed: the last axis is the row).
    ``offset`` is the absolute file offset of the data; ``nbytes`` its size without padding.
    """

    name: str
    shape: Tuple[int, ...]
    qtype: TensorType
    nbytes: int
    offset: int
    n_elements: int
    part: int = 0  # index into GGUFReader.paths: the file of a split set holding the data

    @property
    def raw_shape(self) -> Tuple[int, ...]:
        """Shape of the raw bytes: the leading axes, then the bytes of one row."""
        t = self.qtype
        return self.shape[:-1] + (self.shape[-1] // t.block_size * t.type_size,)


# Metadata value types: name -> GGUF id, plus spellings from gguf-py and NumPy.
_VALUE_TYPES = {
    "u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6,
    "bool": 7, "str": 8, "arr": 9, "u64": 10, "i64": 11, "f64": 12,
}  # fmt: skip
_ALIASES = {
    "uint8": "u8", "int8": "i8", "uint16": "u16", "int16": "i16", "uint32": "u32", "int32": "i32",
    "float32": "f32", "float": "f32", "string": "str", "array": "arr", "uint64": "u64", "int64": "i64",
    "float64": "f64", "double": "f64",
}  # fmt: skip
_TYPE_NAMES = {v: k for k, v in _VALUE_TYPES.items()}
_INT_RANGES = {
    "u8": (0, 2**8 - 1), "i8": (-(2**7), 2**7 - 1), "u16": (0, 2**16 - 1), "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1), "i32": (-(2**31), 2**31 - 1), "u64": (0, 2**64 - 1), "i64": (-(2**63), 2**63 - 1),
}  # fmt: skip
_NUMPY_TYPES = {
    np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8", np.dtype(np.uint16): "u16", np.dtype(np.int16): "i16",
    np.dtype(np.uint32): "u32", np.dtype(np.int32): "i32", np.dtype(np.float32): "f32", np.dtype(np.bool_): "bool",
    np.dtype(np.uint64): "u64", np.dtype(np.int64): "i64", np.dtype(np.float64): "f64",
}  # fmt: skip


def _parse_value_type(t: Union[str, int]) -> Tuple[str, Optional[str]]:
    """(type, element type or None) from "u32", "arr[str]", "arr", a GGUF id or an IntEnum
    such as gguf-py's GGUFValueType."""
    if isinstance(t, str):
        s = t.strip().lower()
        for prefix in ("arr[", "array["):
            if s.startswith(prefix) and s.endswith("]"):
                elem, _ = _parse_value_type(s[len(prefix) : -1])
                if elem == "arr":
                    raise ValueError(f"GGUF arrays cannot contain arrays: {t!r}")
                return "arr", elem
        s = _ALIASES.get(s, s)
        if s in _VALUE_TYPES:
            return s, None
        raise ValueError(f"unknown GGUF value type {t!r}; expected one of {', '.join(_VALUE_TYPES)} or arr[T]")
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        if int(t) in _TYPE_NAMES:
            return _TYPE_NAMES[int(t)], None
        raise ValueError(f"unknown GGUF value type id {int(t)}")
    raise TypeError(f"a GGUF value type must be a name such as 'u32' or a GGUF type id, not {type(t).__name__}")


def _infer_scalar(v: Any) -> str:
    # NumPy scalars are inferred like Python numbers: they often come out of arithmetic
    # by accident, and llama.cpp checks the types of the keys it reads (u32, f32, ...).
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        v = int(v)
        if 0 <= v < 2**32:
            return "u32"
        if -(2**31) <= v < 0:
            return "i32"
        if -(2**63) <= v < 0:
            return "i64"
        if 0 <= v < 2**64:
            return "u64"
        raise ValueError(f"integer {v} does not fit any GGUF integer type")
    if isinstance(v, (float, np.floating)):
        return "f32"
    if isinstance(v, str):
        return "str"
    raise TypeError(f"cannot store a {type(v).__name__} as GGUF metadata (expected bool, int, float, str or a list)")


def _infer_elements(values: List[Any]) -> str:
    if not values:
        raise ValueError("cannot infer the element type of an empty list; pass type='arr[T]', e.g. 'arr[i32]'")
    kinds = {_infer_scalar(v) for v in values}
    if len(kinds) == 1:
        return kinds.pop()
    ints = {"u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"}
    if kinds <= ints | {"f32"} and "f32" in kinds:
        return "f32"
    if kinds <= ints:
        # Mixed widths: the narrowest of u32, i32, i64, u64 that holds every value.
        lo, hi = min(values), max(values)
        for t in ("u32", "i32", "i64", "u64"):
            if _INT_RANGES[t][0] <= lo and hi <= _INT_RANGES[t][1]:
                return t
        raise ValueError(f"integers from {lo} to {hi} do not fit one GGUF integer type")
    raise TypeError(f"a GGUF array holds one kind of value, got a mix of {', '.join(sorted(kinds))}")


def _convert(v: Any, t: str, what: str) -> Any:
    """`v` as the plain Python value the extension stores as type `t`."""
    if t in _INT_RANGES:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{what}: expected an integer for type {t}, got a bool")
        try:
            i = operator.index(v)
        except TypeError:
            raise TypeError(f"{what}: expected an integer for type {t}, got {type(v).__name__}") from None
        lo, hi = _INT_RANGES[t]
        if not lo <= i <= hi:
            raise ValueError(f"{what}: {i} does not fit {t} ({lo} to {hi})")
        return i
    if t in ("f32", "f64"):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{what}: expected a number for type {t}, got {type(v).__name__}")
        f = float(v)
        if t == "f32" and math.isfinite(f):
            with np.errstate(over="ignore"):
                if np.isinf(np.float32(f)):
                    raise ValueError(f"{what}: {f} is too large for f32")
        return f
    if t == "bool":
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        raise TypeError(f"{what}: expected a bool for type bool, got {type(v).__name__}")
    if t == "str":
        if not isinstance(v, str):
            raise TypeError(f"{what}: expected a str for type str, got {type(v).__name__}")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{what}: the string cannot be encoded as UTF-8 ({e.reason})") from None
        return v
    raise ValueError(f"{what}: unsupported type {t}")  # pragma: no cover - types are parsed first


def _convert_array(items: List[Any], t: str, key: str) -> List[Any]:
    """`items` as plain Python values of type `t`, checked in bulk where that is faster:
    vocabularies run to hundreds of thousands of entries."""
    what = f"metadata {key!r}"
    if t in ("f32", "f64"):
        numbers = (int, float, np.integer, np.floating)
        if not all(isinstance(x, numbers) and not isinstance(x, (bool, np.bool_)) for x in items):
            return [_convert(x, t, f"{what}[{i}]") for i, x in enumerate(items)]
        src = np.asarray(items, dtype=np.float64)
        if t == "f32":
            with np.errstate(over="ignore"):
                bad = np.isfinite(src) & ~np.isfinite(src.astype(np.float32))
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"{what}[{i}]: {src[i]} is too large for f32")
        return src.tolist()
    if t in _INT_RANGES and items and all(type(x) is int for x in items):
        lo, hi = _INT_RANGES[t]
        if lo <= min(items) and max(items) <= hi:
            return items
    if t == "str" and all(type(x) is str for x in items):
        try:
            "".join(items).encode("utf-8")
            return items
        except UnicodeEncodeError:
            pass  # find the culprit below
    return [_convert(x, t, f"{what}[{i}]") for i, x in enumerate(items)]


def _encode_value(key: str, value: Any, type: Union[str, int, None]) -> Tuple[str, Optional[str], Any]:
    """(GGUF type, element type, plain value) for `value`, inferred or as `type` says."""
    is_seq = isinstance(value, (list, tuple, np.ndarray))
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise ValueError(f"metadata {key!r}: arrays must be 1-D, got shape {value.shape}")
    t, elem = _parse_value_type(type) if type is not None else (None, None)
    if t is not None and t != "arr" and is_seq:
        t, elem = "arr", t  # type="i32" with a list means an array of i32
    if t == "arr" or (t is None and is_seq):
        if not is_seq:
            raise TypeError(f"metadata {key!r}: type {type!r} needs a list, got {value.__class__.__name__}")
        items = value.tolist() if isinstance(value, np.ndarray) else list(value)
        if elem is None:
            if isinstance(value, np.ndarray) and value.dtype in _NUMPY_TYPES:
                elem = _NUMPY_TYPES[value.dtype]
            else:
                elem = _infer_elements(items)
        return "arr", elem, _convert_array(items, elem, key)
    if t is None:
        t = _infer_scalar(value)
    return t, None, _convert(value, t, f"metadata {key!r}")


def _check_name(name: Any, what: str, limit: int) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a {what} must be a str, not {type(name).__name__}")
    try:
        n = len(name.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {name!r} cannot be encoded as UTF-8 ({e.reason})") from None
    if "\0" in name:
        raise ValueError(f"{what} {name!r} contains a NUL character")
    if n > limit:
        raise ValueError(f"{what} {name!r} is {n} bytes long in UTF-8, the limit is {limit}")
    return name


def _open_bytes(path: str) -> Tuple[Optional[mmap.mmap], np.ndarray]:
    """The file's bytes, memory-mapped read-only (an empty array for an empty file, which
    mmap refuses). OSError for anything the OS refuses."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None, np.empty(0, np.uint8)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, np.frombuffer(mm, dtype=np.uint8)


def _release(mm: Optional[mmap.mmap]) -> None:
    if mm is None:
        return
    try:
        mm.close()
    except BufferError:
        # Arrays from raw() still point into the mapping; it is unmapped with the last one.
        pass


class GGUFReader:
    """A GGUF file, memory-mapped.

    ``metadata`` maps keys to Python values (int, float, bool, str, or lists of them) in
    file order; ``metadata_type(key)`` gives the stored type ("u32", "arr[str]", ...).
    ``tensors`` lists ``GGUFTensorInfo`` in file order.

    The first file of a split set (``name-00001-of-00004.gguf``, llama.cpp's gguf-split)
    reads the whole model: ``tensors`` lists every part's tensors, ``paths`` the files
    (``GGUFTensorInfo.part`` indexes it) and ``metadata`` is the first file's. A missing or
    mismatched part, or a later part opened alone, is a ValueError; ``join_split=False``
    reads just the one file.

    Raises OSError when the file cannot be opened or mapped and ValueError, naming the
    path and what is wrong, when it is not a valid GGUF file. Use as a context manager
    or call ``close()``; arrays returned by ``raw`` stay valid after closing (they keep
    the mapping alive).
    """

    def __init__(self, path: PathLike, *, join_split: bool = True):
        self.path = os.fspath(path)
        self.paths: List[str] = [self.path]
        self._parts: List[GGUFReader] = []
        self._mm: Optional[mmap.mmap] = None
        self._buf: Optional[np.ndarray] = None
        mm, buf = _open_bytes(self.path)
        try:
            version, alignment, data_offset, md, tensors = _kquant.gguf_parse(buf)
        except ValueError as e:
            del buf
            _release(mm)
            raise ValueError(f"{self.path}: {e}") from None
        except BaseException:
            del buf
            _release(mm)
            raise
        self._mm, self._buf = mm, buf
        self.version: int = version
        self.alignment: int = alignment
        self.data_offset: int = data_offset
        self.metadata: Dict[str, Any] = {k: v for k, _, v in md}
        self._types: Dict[str, str] = {k: t for k, t, _ in md}
        self.tensors: List[GGUFTensorInfo] = [
            GGUFTensorInfo(
                name=name,
                shape=tuple(reversed(dims)),
                qtype=_tensor_type(type_id),
                nbytes=nbytes,
                offset=offset,
                n_elements=math.prod(dims),
            )
            for name, dims, type_id, offset, nbytes in tensors
        ]
        self._index = {t.name: i for i, t in enumerate(self.tensors)}
        if join_split and "split.count" in self.metadata:
            from .split import join_parts

            try:
                join_parts(self)
            except BaseException:
                self.close()
                raise

    def metadata_type(self, key: str) -> str:
        """The stored type of metadata `key`: "u32", "str", "arr[i32]", ... (KeyError if absent)."""
        try:
            return self._types[key]
        except KeyError:
            raise KeyError(f"no metadata key {key!r} in {self.path}{_suggest(key, self._types)}") from None

    @property
    def metadata_types(self) -> Dict[str, str]:
        """Every key's stored type, in file order."""
        return dict(self._types)

    def tensor(self, name: str) -> GGUFTensorInfo:
        """The tensor called `name` (KeyError naming close matches if there is none)."""
        i = self._index.get(name)
        if i is None:
            raise KeyError(
                f"no tensor named {name!r} in {self.path} ({len(self.tensors)} tensors){_suggest(name, self._index)}"
            )
        return self.tensors[i]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[GGUFTensorInfo]:
        return iter(self.tensors)

    @property
    def closed(self) -> bool:
        return self._buf is None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view into the mapping (no copy).

        The shape is the tensor's leading axes followed by the bytes of one row:
        ``(rows, row_bytes)`` for a matrix, ``(row_bytes,)`` for a vector, the same as
        ``kquant.quantize`` returns for the tensor's values.
        """
        info = self.tensor(name)
        if self._buf is None:
            raise ValueError(f"{self.path}: the reader is closed")
        buf = self._buf if info.part == 0 else self._parts[info.part - 1]._buf
        view = buf[info.offset : info.offset + info.nbytes]
        return view.reshape(info.raw_shape)

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor's values as a new float32 array of its NumPy shape.

        Quantized and float types go through ``kquant.dequantize`` (bit-exact with ggml);
        integer and F64 tensors are converted with NumPy.
        """
        info = self.tensor(name)
        raw = self.raw(name)
        if info.n_elements == 0:
            return np.zeros(info.shape, np.float32)
        if isinstance(info.qtype, PlainType):
            with np.errstate(over="ignore"):  # F64 beyond float32's range becomes inf
                return raw.view(info.qtype.dtype).astype(np.float32).reshape(info.shape)
        return _dequantize(raw, info.qtype).reshape(info.shape)

    def close(self) -> None:
        """Unmaps the file (once no array from ``raw`` refers to it any more)."""
        mm = self._mm
        self._mm = self._buf = None
        _release(mm)
        for part in self._parts:
            part.close()

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.metadata)} metadata, {len(self.tensors)} tensors"
        return f"GGUFReader({self.path!r}, v{self.version}, {state})"


def _suggest(name: str, choices: Any) -> str:
    # Matched without case: a wrongly capitalised name is the commonest slip.
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lower), n=3)
    return f"; did you mean {', '.join(repr(lower[c]) for c in close)}?" if close else ""


@dataclass
class _Declared:
    name: str
    shape: Tuple[int, ...]
    qtype: TensorType
    nbytes: int


def _to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """ggml's float -> bf16: round to nearest even, NaNs kept NaN (made quiet)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype("<u2")
    return np.where(nan, ((u >> 16) | 64).astype("<u2"), rounded)


class GGUFWriter:
    """Writes a GGUF file, streaming one tensor at a time.

    ::

        with GGUFWriter("model.gguf") as w:
            w.add_metadata("general.architecture", "llama")
            w.add_metadata("llama.context_length", 4096)           # u32
            w.add_metadata("tokenizer.ggml.scores", scores)         # arr[f32]
            w.add_tensor_info("tok_embd.weight", (32000, 4096), "q4_k")
            w.add_tensor_info("output_norm.weight", (4096,), "f32")
            w.write_tensor("tok_embd.weight", kquant.quantize(emb, "q4_k"))
            w.write_tensor("output_norm.weight", norm)

    Metadata types are inferred unless ``type`` is given: bool -> bool, int -> u32 when it
    fits (i32 if negative, else i64 or u64), float -> f32, str -> str (NumPy scalars like
    Python numbers), 1-D NumPy arrays -> arrays of their dtype, lists and tuples -> arrays
    of one inferred type (an empty one needs ``type``). ``type`` takes a
    name ("u8", "i64", "arr[i32]", "string", ...) or a GGUF type id, e.g. gguf-py's
    ``GGUFValueType``; with a list, a scalar type names the element type.

    Declare every tensor with ``add_tensor_info`` (NumPy shape, last axis the row), then
    write each with ``write_tensor`` in the same order: uint8 arrays are raw bytes whose
    last axis is one row's bytes; F32, F16 and BF16 tensors also take float arrays
    (converted as ggml converts), integer and F64 tensors arrays of their kind.

    The file is written to a temporary file in the target's directory and renamed onto
    ``path`` by ``close()`` only when every tensor was written. If the ``with`` block raises,
    or ``close()`` finds tensors missing, the temporary file is removed and ``path`` is
    left untouched.
    """

    def __init__(self, path: PathLike, *, alignment: int = 32):
        self.path = os.fspath(path)
        if isinstance(alignment, bool) or not isinstance(alignment, (int, np.integer)):
            raise TypeError(f"alignment must be an int, not {type(alignment).__name__}")
        alignment = int(alignment)
        if alignment < 1 or alignment & (alignment - 1) or alignment > 1 << 24:
            raise ValueError(f"alignment must be a power of two from 1 to 2**24, got {alignment}")
        if os.path.isdir(self.path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.path)
        self._closed = True
        self._header = False
        self._keys: Dict[str, None] = {}
        self._declared: List[_Declared] = []
        self._names: Dict[str, int] = {}
        self._next = 0
        directory, base = os.path.split(os.path.abspath(self.path))
        self._fd: Optional[int] = _open_unnamed(directory)
        if self._fd is not None:
            # An unnamed file disappears by itself if the process is killed mid-write.
            tmp = f"/proc/self/fd/{self._fd}"
            try:
                self._w = _kquant.GgufFileWriter(tmp, self.path, self._fd)
            except BaseException:
                os.close(self._fd)
                raise
        else:
            tmp = self._create_named(directory, base)
        self._tmp, self._dir, self._base = tmp, directory, base
        self._closed = False
        self.alignment = alignment
        if alignment != 32:
            self.add_metadata("general.alignment", alignment, type="u32")

    def _create_named(self, directory: str, base: str) -> str:
        for _ in range(100):
            tmp = _free_name(directory, base)
            try:
                self._w = _kquant.GgufFileWriter(tmp, self.path)
                return tmp
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "cannot find a free temporary file name", directory)  # pragma: no cover

    # -- declarations ---------------------------------------------------------------

    def _check_declaring(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._header:
            raise ValueError(
                f"{self.path}: the header was already written; "
                "add all metadata and tensor infos before the first tensor"
            )

    def add_metadata(self, key: str, value: Any, type: Union[str, int, None] = None) -> None:
        """Adds metadata entry `key`; see the class docs for how the type is chosen."""
        self._check_declaring()
        _check_name(key, "metadata key", 65535)
        if not key:
            raise ValueError("metadata key is empty")
        if key in self._keys:
            raise ValueError(f"duplicate metadata key {key!r}")
        t, elem, v = _encode_value(key, value, type)
        if key == "general.alignment":
            if t != "u32":
                raise ValueError(f"general.alignment must be of type u32, not {t}")
            if v < 1 or v & (v - 1) or v > 1 << 24:
                raise ValueError(f"general.alignment must be a power of two from 1 to 2**24, got {v}")
            self.alignment = v
        self._w.add_metadata(key, _VALUE_TYPES[t], v, None if elem is None else _VALUE_TYPES[elem])
        self._keys[key] = None

    def add_tensor_info(self, name: str, shape: Sequence[int], qtype: Union[TensorType, int, str]) -> None:
        """Declares tensor `name` (up to 127 bytes) with NumPy `shape` (1 to 8 axes; ggml reads
        at most 63-byte names and 4 axes) and storage type `qtype`."""
        self._check_declaring()
        _check_name(name, "tensor name", 127)  # ComfyUI-GGUF's limit; ggml's is 63
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name!r}")
        t = _tensor_type(qtype)
        try:
            dims = tuple(operator.index(d) for d in shape)
        except TypeError:
            raise TypeError(f"tensor {name!r}: shape must be a sequence of ints, got {shape!r}") from None
        if not 1 <= len(dims) <= 8:  # ggml: 4; Wan / HunyuanVideo files carry 5-D tensors
            raise ValueError(f"tensor {name!r}: tensors have 1 to 8 axes, got shape {dims}")
        if any(d < 0 or d >= 2**63 for d in dims):
            raise ValueError(f"tensor {name!r}: axes must be from 0 to 2**63 - 1, got shape {dims}")
        if dims[-1] % t.block_size:
            raise ValueError(
                f"tensor {name!r}: rows of {dims[-1]} values are not a whole number of {t.name} blocks "
                f"({t.block_size} values each)"
            )
        n = 1
        for d in dims:
            n *= d
        if n >= 2**63:
            raise ValueError(f"tensor {name!r}: shape {dims} has 2**63 or more elements")
        self._w.add_tensor(name, list(reversed(dims)), int(t))
        self._names[name] = len(self._declared)
        self._declared.append(_Declared(name, dims, t, n // t.block_size * t.type_size))

    # -- tensor data ----------------------------------------------------------------

    def write_header(self) -> None:
        """Writes the header now (otherwise the first ``write_tensor`` or ``close`` does)."""
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        self._header = True
        self._w.write_header()

    def write_tensor(self, name: str, data: npt.ArrayLike) -> None:
        """Writes the next declared tensor, which must be `name`."""
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._next >= len(self._declared):
            detail = "was already written" if name in self._names else "was not declared"
            raise ValueError(f"tensor {name!r} {detail}, and every declared tensor has been written")
        d = self._declared[self._next]
        if name != d.name:
            if name not in self._names:
                raise ValueError(f"tensor {name!r} was not declared; {d.name!r} is next")
            if self._names[name] < self._next:
                raise ValueError(f"tensor {name!r} was already written; {d.name!r} is next")
            raise ValueError(f"tensor {name!r} written out of order; {d.name!r} is next (declaration order)")
        buf = self._tensor_bytes(d, data)
        self._header = True
        self._w.write_tensor(name, buf)
        self._next += 1

    @staticmethod
    def _tensor_bytes(d: _Declared, data: npt.ArrayLike) -> np.ndarray:
        a = np.asarray(data)
        t = d.qtype
        row_bytes = d.shape[-1] // t.block_size * t.type_size
        n = d.shape[-1]
        if a.dtype == np.uint8:
            if a.ndim == 0 or a.size != d.nbytes or (a.ndim > 1 and a.shape[-1] != row_bytes):
                raise ValueError(
                    f"tensor {d.name!r} ({t.name}, shape {d.shape}) takes {d.nbytes} bytes in rows of {row_bytes}, "
                    f"got a uint8 array of shape {a.shape}"
                )
            return np.ascontiguousarray(a).reshape(-1)
        if a.ndim == 0 or a.size != d.nbytes // t.type_size * t.block_size or a.shape[-1] != n:
            raise ValueError(f"tensor {d.name!r} has shape {d.shape}, got an array of shape {a.shape}")
        if t in (QuantType.F32, QuantType.F16, QuantType.BF16, PlainType.F64):
            if a.dtype.kind != "f":
                raise TypeError(f"tensor {d.name!r} ({t.name}) takes floats or raw uint8 bytes, got dtype {a.dtype}")
            with np.errstate(over="ignore", invalid="ignore"):
                if t == QuantType.F32:
                    out = a.astype("<f4")
                elif t == QuantType.F16:
                    out = a.astype("<f2")
                elif t == QuantType.BF16:
                    out = _to_bf16_bits(a)
                else:
                    out = a.astype("<f8")
            return np.ascontiguousarray(out).reshape(-1).view(np.uint8)
        if isinstance(t, PlainType):
            if a.dtype.kind not in "iu":
                raise TypeError(f"tensor {d.name!r} ({t.name}) takes integers or raw uint8 bytes, got dtype {a.dtype}")
            info = np.iinfo(t.dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise ValueError(f"tensor {d.name!r}: values from {a.min()} to {a.max()} do not fit {t.name}")
            return np.ascontiguousarray(a.astype(t.dtype)).reshape(-1).view(np.uint8)
        raise TypeError(
            f"tensor {d.name!r} is {t.name}: pass its quantized bytes (uint8), "
            f"e.g. kquant.quantize(x, {t.name!r}), not an array of {a.dtype}"
        )

    # -- completion -----------------------------------------------------------------

    def close(self) -> None:
        """Finishes the file and renames it onto ``path``.

        Raises ValueError (and removes the temporary file, leaving ``path`` untouched) if
        any declared tensor was not written.
        """
        if self._closed:
            return
        if self._next < len(self._declared):
            missing = [d.name for d in self._declared[self._next :]]
            self.abort()
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ValueError(
                f"{self.path}: tensor {missing[0]!r}{more} declared but never written; the file was not created"
            )
        try:
            self._w.finish()
            if self._fd is not None:
                # Link the whole file straight to the target name when it is free: no
                # other name ever exists, so a kill at any moment leaves nothing behind.
                # Replacing an existing file needs a named step beside it, then a rename.
                try:
                    _link_fd(self._fd, os.path.join(self._dir, self._base))
                except FileExistsError:
                    named = _free_name(self._dir, self._base)
                    _link_fd(self._fd, named)
                    try:
                        os.replace(named, self.path)
                    except BaseException:
                        os.unlink(named)
                        raise
                self._w.release()
            else:
                self._w.release()
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        _sync_dir(self._dir)

    def abort(self) -> None:
        """Abandons the file: removes the temporary file; ``path`` is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._w.abort()
        if self._fd is not None:
            return  # the unnamed file went away with its descriptor
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> GGUFWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"GGUFWriter for {self.path!r} was never closed; nothing was written", ResourceWarning)
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._next}/{len(self._declared)} tensors written"
        return f"GGUFWriter({self.path!r}, {state})"


def _free_name(directory: str, base: str) -> str:
    return os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _link_fd(fd: int, name: str) -> None:
    """linkat(2) of /proc/self/fd/N with AT_SYMLINK_FOLLOW: the documented way to give
    an O_TMPFILE file a name. Passing a directory fd makes Python use linkat rather than
    link(2), which would try to link the /proc symlink itself."""
    dfd = os.open(os.path.dirname(name) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.link(f"/proc/self/fd/{fd}", os.path.basename(name), dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def _open_unnamed(directory: str) -> Optional[int]:
    """An unnamed file in `directory` (Linux O_TMPFILE, linkable through /proc), or None
    where the platform, the filesystem or a missing /proc rules it out."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP):
            return None
        raise


def _sync_dir(directory: str) -> None:
    """Makes the rename durable where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
