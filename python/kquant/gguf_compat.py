"""A drop-in for gguf-py: ``gguf.dequantize`` and ``gguf.quants.quantize`` through kquant.

``patch_gguf()`` replaces gguf-py's module-level ``quantize`` and ``dequantize`` (in
``gguf.quants``, the ``gguf`` package, and any other loaded ``gguf.*`` module that
re-exports them) with versions that hand every type kquant has kernels for to kquant
and everything else to gguf-py's own functions, so code written for gguf-py (Hugging
Face transformers' GGUF loader, llama.cpp's converters) speeds up unchanged.

The replacements keep gguf-py's signatures, result shapes and dtypes, and its errors:
the row-length checks are gguf-py's own functions, raising its ``ValueError`` and
``QuantError`` messages. Results:

* dequantize: bit-identical to gguf-py's for every type both handle, since gguf-py
  0.19 reproduces ggml bit for bit (checked type by type in tests/test_gguf_compat.py
  against random block bytes as well as quantizer output). The one difference: where a
  block's float16 scale is NaN, gguf-py's IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S
  multiply by +-1.0 and so may give a NaN of another sign or payload than ggml's sign
  flip; and NumPy widens a signalling-NaN half (F16) to a signalling NaN where ggml
  gives a quiet one. kquant gives ggml's NaNs. Types gguf-py cannot dequantize (Q8_K, Q8_1 and any
  other kquant handles) now dequantize as ggml does instead of raising
  ``NotImplementedError``.
* quantize: the bytes of ggml's ``ggml_quantize_chunk`` without an importance matrix,
  which equal gguf-py's for every type gguf-py quantizes (BF16, Q4_0, Q4_1, Q5_0, Q5_1,
  Q8_0 and, where kquant has them, TQ1_0, TQ2_0, MXFP4). Types gguf-py cannot quantize
  (the k-quants, IQ4_NL, IQ4_XS, ...) are quantized as ggml does instead of raising
  ``NotImplementedError``. Input with NaN or Inf, which kquant refuses, goes to
  gguf-py's own code (where gguf-py lacks the type, kquant's ValueError is raised).

Row lengths are checked with kquant's block sizes where gguf-py's table disagrees with
ggml's (gguf-py 0.19 gives Q8_1 40-byte blocks; ggml's are 36 bytes).

Left to gguf-py on purpose: F32 (``dequantize`` is a zero-copy view there, ``quantize``
a cast) and F16 ``quantize`` (a NumPy cast returning float16, not bytes); lazy tensors
(``gguf.LazyNumpyTensor``) are wrapped lazily and computed by kquant when realised;
inputs of other than one-byte element type to ``dequantize``, 0-d and empty arrays,
and any type id kquant does not know.

Only attribute look-ups at call time see the patch: code that ran
``from gguf.quants import dequantize`` before ``patch_gguf()`` keeps gguf-py's function
(transformers imports it inside ``load_gguf_checkpoint``, at call time, so it is
patched). Nothing is patched on ``import kquant``.
"""

from __future__ import annotations

import functools
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _api
from ._types import _TABLE, QuantType

__all__ = ["patch_gguf", "unpatch_gguf", "is_gguf_patched"]

_LOCK = threading.RLock()
# gguf-py's own functions, saved by the first patch
_ORIGINAL: Dict[str, Callable[..., Any]] = {}
# (module, attribute name) pairs replaced, to put back on unpatch
_PATCHED: List[Tuple[ModuleType, str]] = []

# kept with gguf-py: see the module docstring
_DEQUANTIZE_OWN = frozenset({QuantType.F32})
_QUANTIZE_OWN = frozenset({QuantType.F32, QuantType.F16})


def _kquant_type(qtype: Any) -> Optional[QuantType]:
    """The QuantType for gguf-py's `qtype` when kquant has kernels for it, else None."""
    try:
        if isinstance(qtype, bool):
            return None
        i = int(qtype)
    except (TypeError, ValueError, OverflowError):
        return None
    row = _TABLE.get(i)
    if row is None or not row[5]:  # unknown id, or no kernels yet
        return None
    try:
        return QuantType(i)
    except ValueError:
        return None


def _quants() -> ModuleType:
    try:
        import gguf.quants as q
    except ImportError:
        raise ImportError("kquant.patch_gguf needs gguf-py: pip install gguf") from None
    return q


def _gguf_has(qtype: Any, quantize: bool) -> bool:
    """Whether gguf-py's own code handles `qtype` (instead of raising NotImplementedError)."""
    try:
        if int(qtype) in (0, 1):  # F32, F16: NumPy casts in gguf-py
            return True
    except (TypeError, ValueError, OverflowError):
        return False
    cls = _quants()._type_traits.get(qtype)
    if cls is None:
        return False
    # gguf-py's base class leaves quantize_blocks abstract; a type without its own
    # raises NotImplementedError
    return not quantize or "quantize_blocks" in vars(cls)


def _gguf_type(qtype: Any, t: QuantType) -> Any:
    """gguf-py's enum member for `qtype` (its error messages use ``.name``), else `t`."""
    try:
        return _quants().GGMLQuantizationType(int(qtype))
    except ValueError:
        return t


def _is_lazy(data: Any) -> bool:
    lazy = getattr(sys.modules.get("gguf.lazy"), "LazyNumpyTensor", None)
    return lazy is not None and isinstance(data, lazy)


def _lazy(data: Any, fn: Callable[[np.ndarray], np.ndarray], dtype: Any, shape: Callable) -> Any:
    """`fn` applied to the lazy tensor when it is realised, the way gguf-py wraps its own."""
    from gguf.lazy import LazyNumpyTensor

    return LazyNumpyTensor._wrap_fn(fn, meta_noop=(dtype, shape))(data)


def dequantize(data: Any, qtype: Any) -> np.ndarray:
    """gguf-py's ``dequantize(data, qtype)``, through kquant for the types it handles."""
    own = _ORIGINAL["dequantize"]
    t = _kquant_type(qtype)
    if t is None or t in _DEQUANTIZE_OWN:
        return own(data, qtype)
    q = _quants()
    if _is_lazy(data):
        if t == QuantType.F16:  # a lazy float16 view and cast in gguf-py; its meta shape is not bytes
            return own(data, qtype)
        gt = _gguf_type(qtype, t)
        if q.GGML_QUANT_SIZES.get(gt) == (t.block_size, t.type_size):
            q.quant_shape_from_byte_shape(data.shape, gt)  # gguf-py's own check and ValueError
        bs, ts = t.block_size, t.type_size
        fn = functools.partial(dequantize, qtype=qtype)
        return _lazy(data, fn, np.float32, lambda s: (*s[:-1], s[-1] // ts * bs))
    if not isinstance(data, np.ndarray) or data.ndim == 0 or data.size == 0:
        return own(data, qtype)
    given = data
    if t == QuantType.F16:
        h = np.ascontiguousarray(data.view(np.float16))  # gguf-py's view first, with its errors
        data = h.view(np.uint8)
    elif data.dtype.itemsize != 1:
        return own(data, qtype)  # gguf-py views it as bytes and fails its own way
    else:
        gt = _gguf_type(qtype, t)
        if q.GGML_QUANT_SIZES.get(gt) == (t.block_size, t.type_size):
            q.quant_shape_from_byte_shape(data.shape, gt)  # gguf-py's own check and ValueError
    raw = data if data.dtype == np.uint8 else data.view(np.uint8)
    try:
        return _api.dequantize(raw, t)
    except ValueError:
        if _gguf_has(qtype, quantize=False):
            return own(given, qtype)
        raise


def quantize(data: Any, qtype: Any) -> np.ndarray:
    """gguf-py's ``quantize(data, qtype)``, through kquant for the types it handles."""
    own = _ORIGINAL["quantize"]
    t = _kquant_type(qtype)
    if t is None or t in _QUANTIZE_OWN:
        return own(data, qtype)
    q = _quants()
    lazy = _is_lazy(data)
    if not lazy and (not isinstance(data, np.ndarray) or data.ndim == 0 or data.size == 0):
        return own(data, qtype)
    if data.shape[-1] % t.block_size:  # gguf-py's can_quantize, with its QuantError
        raise q.QuantError(f"Can't quantize tensor with shape {data.shape} to {_gguf_type(qtype, t).name}")
    if lazy:
        bs, ts = t.block_size, t.type_size
        return _lazy(data, functools.partial(quantize, qtype=qtype), np.uint8, lambda s: (*s[:-1], s[-1] // bs * ts))
    x = data
    if x.dtype.kind != "f":
        try:
            x = x.astype(np.float32)
        except (TypeError, ValueError):
            return own(data, qtype)
    try:
        return _api.quantize(x, t)
    except ValueError:  # NaN or Inf, or a type that needs an importance matrix
        if _gguf_has(qtype, quantize=True):
            return own(data, qtype)
        raise


class _Patch:
    """What ``patch_gguf()`` returns: a context manager that undoes this call's patch."""

    def __init__(self, applied: bool):
        self._applied = applied

    def __enter__(self) -> "_Patch":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._applied:
            unpatch_gguf()
            self._applied = False

    def __repr__(self) -> str:
        return f"<kquant gguf-py patch {'active' if is_gguf_patched() else 'inactive'}>"


def _targets(originals: Dict[str, Callable[..., Any]]) -> List[Tuple[ModuleType, str]]:
    """Every loaded gguf module attribute that is one of gguf-py's functions."""
    found = []
    for mname, mod in list(sys.modules.items()):
        if mod is None or not (mname == "gguf" or mname.startswith("gguf.")):
            continue
        for attr, fn in originals.items():
            if getattr(mod, attr, None) is fn:
                found.append((mod, attr))
    return found


def patch_gguf() -> _Patch:
    """Routes gguf-py's ``quantize``/``dequantize`` through kquant; returns a context manager.

    ``kquant.patch_gguf()`` patches until ``kquant.unpatch_gguf()``; ``with
    kquant.patch_gguf(): ...`` patches for the block only (a block entered while already
    patched leaves the patch in place). Raises ImportError without gguf-py.
    """
    q = _quants()
    import gguf  # noqa: F401  - the package re-exports the functions; patch it too

    with _LOCK:
        if _PATCHED:
            return _Patch(False)
        _ORIGINAL["quantize"] = q.quantize
        _ORIGINAL["dequantize"] = q.dequantize
        replacement = {"quantize": quantize, "dequantize": dequantize}
        for mod, attr in _targets(dict(_ORIGINAL)):
            setattr(mod, attr, replacement[attr])
            _PATCHED.append((mod, attr))
        return _Patch(True)


def unpatch_gguf() -> None:
    """Restores gguf-py's own functions (nothing happens when not patched)."""
    with _LOCK:
        while _PATCHED:
            mod, attr = _PATCHED.pop()
            if getattr(mod, attr, None) in (quantize, dequantize):
                setattr(mod, attr, _ORIGINAL[attr])
        # gguf modules imported while patched may have copied the replacements by name
        ours = {"quantize": quantize, "dequantize": dequantize}
        if _ORIGINAL:
            for mod, attr in _targets(ours):
                setattr(mod, attr, _ORIGINAL[attr])


def is_gguf_patched() -> bool:
    with _LOCK:
        return bool(_PATCHED)
