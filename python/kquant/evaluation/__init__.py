"""Evaluate quantization candidates on your own use case: :func:`evaluate` hands a metric the
weights each candidate would really have. :mod:`kquant.evaluation.minilm` is a built-in example
(sentence embeddings with all-MiniLM-L6-v2)."""

from .core import (
    STANDARD_FILE_TYPES,
    Candidate,
    Evaluation,
    QuantizedWeights,
    default_candidates,
    evaluate,
    load_metric,
)

__all__ = [
    "Candidate",
    "Evaluation",
    "QuantizedWeights",
    "STANDARD_FILE_TYPES",
    "default_candidates",
    "evaluate",
    "load_metric",
]
