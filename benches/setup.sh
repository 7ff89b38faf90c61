#!/usr/bin/env bash
# Installs the benchmark anchors into the active virtual environment: native ggml
# (ggml-python builds ggml from source with -march=native; about two minutes on 2
# cores), libgguf (ggml as a wheel) and gguf-py. Benchmark-only: kquant never needs them.
set -euo pipefail
python -m pip install -q ggml-python libgguf gguf numpy
python -c "from ggml import ggml as G; G.ggml_cpu_init(); print('ggml-python ready')"
