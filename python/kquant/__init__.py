"""kquant: GGML / llama.cpp block quantization for NumPy, byte-exact with ggml."""

from ._api import available_isas, dequantize, get_num_threads, isa, matmul, quantize, set_num_threads, vec_dot
from ._kquant import __version__
from ._types import QuantType, row_size, vec_dot_type
from .gguf import GGUFReader, GGUFWriter
from .gguf_compat import is_gguf_patched, patch_gguf, unpatch_gguf
from .imatrix import load_imatrix
from .model import quantize_model
from .evaluation import evaluate
from .tradeoffs import recommend
from .variants import quantize_variants

__all__ = [
    "GGUFReader",
    "GGUFWriter",
    "QuantType",
    "__version__",
    "available_isas",
    "dequantize",
    "evaluate",
    "get_num_threads",
    "is_gguf_patched",
    "isa",
    "load_imatrix",
    "matmul",
    "patch_gguf",
    "quantize",
    "quantize_model",
    "quantize_variants",
    "recommend",
    "row_size",
    "set_num_threads",
    "unpatch_gguf",
    "vec_dot",
    "vec_dot_type",
]
