"""The GGML tensor types, with ggml's numeric ids."""

from __future__ import annotations

import enum
import operator
from typing import Union

from . import _kquant

_TABLE = {row[0]: row for row in _kquant.type_table()}


class QuantType(enum.IntEnum):
    """A GGML tensor type. The value is ggml's type id (as stored in GGUF files)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42

    @property
    def block_size(self) -> int:
        """Values per block (1 for the float types)."""
        return int(_TABLE[self.value][2])

    @property
    def type_size(self) -> int:
        """Bytes per block."""
        return int(_TABLE[self.value][3])

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    @property
    def requires_imatrix(self) -> bool:
        """ggml refuses to quantize this type without an importance matrix."""
        return bool(_TABLE[self.value][6])

    @property
    def is_implemented(self) -> bool:
        """kquant has kernels (quantize, dequantize, dot) for this type."""
        return bool(_TABLE[self.value][5])

    @property
    def is_float(self) -> bool:
        return self in (QuantType.F32, QuantType.F16, QuantType.BF16)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, qtype: QTypeLike) -> QuantType:
        """A QuantType from a QuantType, a ggml id or a name in any letter case."""
        if isinstance(qtype, QuantType):
            return qtype
        if isinstance(qtype, str):
            hit = _NAME_CACHE.get(qtype)
            if hit is not None:
                return hit
            key = qtype.strip().upper()
            if key in cls.__members__:
                if len(_NAME_CACHE) < 256:  # names as callers spell them; bounded against junk
                    _NAME_CACHE[qtype] = cls[key]
                return cls[key]
            raise ValueError(f"unknown quantization type {qtype!r}; expected one of {', '.join(cls.__members__)}")
        try:
            if isinstance(qtype, bool):
                raise TypeError
            value = operator.index(qtype)  # ints and NumPy integers, not floats
        except TypeError:
            raise TypeError(f"qtype must be a QuantType, a ggml type id or a name, not {type(qtype).__name__}") from None
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown ggml type id {int(qtype)}") from None


QTypeLike = Union[QuantType, int, str]

_NAME_CACHE: dict = {}

# (block_size, type_size) per type, for the per-call hot paths
GEOMETRY = {t: (int(_TABLE[t.value][2]), int(_TABLE[t.value][3])) for t in QuantType}


def vec_dot_type(qtype: QTypeLike) -> QuantType:
    """The type ggml quantizes activations to for dot products with `qtype`."""
    t = QuantType.parse(qtype)
    return QuantType(_TABLE[t.value][4])


def row_size(qtype: QTypeLike, n: int) -> int:
    """Bytes of one row of `n` values; ValueError when n is not a whole number of blocks."""
    t = QuantType.parse(qtype)
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"row length must be an integer, not {type(n).__name__}") from None
    if n < 0 or n % t.block_size:
        raise ValueError(f"row length {n} is not a multiple of the {t.name} block size {t.block_size}")
    return n // t.block_size * t.type_size


def _check_table() -> None:
    missing = set(_TABLE) ^ {t.value for t in QuantType}
    if missing:  # pragma: no cover - a build mismatch between the stub and the extension
        raise ImportError(f"kquant: extension and Python type tables disagree on ids {sorted(missing)}")
    for t in QuantType:
        if _TABLE[t.value][1] != t.name:  # pragma: no cover
            raise ImportError(f"kquant: type {t.value} is {_TABLE[t.value][1]} in the extension, {t.name} here")


_check_table()
