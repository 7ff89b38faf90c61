"""kquant: GGML / llama.cpp block quantization for NumPy, byte-exact with ggml."""

from ._api import dequantize, get_num_threads, matmul, quantize, set_num_threads, vec_dot
from ._kquant import __version__
from ._types import QuantType, row_size, vec_dot_type

__all__ = [
    "QuantType",
    "__version__",
    "dequantize",
    "get_num_threads",
    "matmul",
    "quantize",
    "row_size",
    "set_num_threads",
    "vec_dot",
    "vec_dot_type",
]
