#!/usr/bin/env bash
# Imports and smoke-tests kquant's aarch64 wheel on an x86_64 Debian 12 machine, under
# qemu-user, with Debian's arm64 CPython 3.11 and NumPy unpacked into a sysroot.
#
#   scripts/test_aarch64_wheel.sh [WHEEL]    (default: the aarch64 wheel in dist/)
#
# - the sysroot: apt resolves python3.11, python3-numpy (and gguf-py's dependencies
#   python3-yaml, -tqdm, -requests) as if arm64 were the native architecture, with its
#   own package lists and an empty status file, downloads them and `dpkg -x` unpacks
#   them (no maintainer scripts run, so the BLAS alternatives are linked by hand);
# - gguf-py (a pure-Python wheel from PyPI) is put on PYTHONPATH when pip can fetch it;
# - the smoke test (scripts/check_wheel.py --smoke) runs three times: KQUANT_ISA=scalar,
#   then the best path on qemu's default CPU ("max": NEON with SDOT) and on a Cortex-A53
#   (NEON without SDOT), each compared with the scalar run: quantized bytes and
#   dequantized floats identical, dots within 1e-4 of sum |w*x|;
# - single-threaded: a second thread hangs under qemu-user on these machines, so
#   KQUANT_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1.
#
# Environment: KQUANT_ARM64_DIR (work folder, default /tmp/kquant-arm64).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHL=${1:-}
if [ -z "$WHL" ]; then
    WHL=$(ls -t "$ROOT"/dist/kquant-*_aarch64.whl 2>/dev/null | head -1 || true)
    [ -n "$WHL" ] || { echo "no dist/kquant-*_aarch64.whl; build one: scripts/build_wheels.sh aarch64" >&2; exit 2; }
fi
WHL=$(realpath "$WHL")
W=${KQUANT_ARM64_DIR:-/tmp/kquant-arm64}
SYSROOT=$W/sysroot
T0=$SECONDS
step() { echo "== [$((SECONDS - T0))s] $*"; }

if [ "$(uname -m)" != x86_64 ] || ! command -v apt-get >/dev/null; then
    echo "test_aarch64_wheel.sh: written for an x86_64 Debian machine with apt" >&2
    exit 1
fi
if ! command -v qemu-aarch64-static >/dev/null; then
    step "apt-get install qemu-user-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi
qemu-aarch64-static --version | head -1

# -- the arm64 sysroot -----------------------------------------------------------------
PKGS=(python3.11 python3-numpy python3-yaml python3-tqdm python3-requests)
if [ ! -x "$SYSROOT/usr/bin/python3.11" ] || [ "$(cat "$W/packages" 2>/dev/null)" != "${PKGS[*]}" ]; then
    step "arm64 sysroot in $SYSROOT: ${PKGS[*]} and their dependencies"
    apt_dir=$W/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    : >"$apt_dir/status"
    A=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::State::status=$apt_dir/status" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1)
    apt-get "${A[@]}" update -qq
    apt-get "${A[@]}" install -y -qq --download-only --no-install-recommends "${PKGS[@]}" >/dev/null
    rm -rf "$SYSROOT"
    mkdir -p "$SYSROOT"
    n=0
    for deb in "$apt_dir"/cache/archives/*.deb; do
        dpkg -x "$deb" "$SYSROOT"
        n=$((n + 1))
    done
    # what update-alternatives would have done for libblas3 / liblapack3
    for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
        [ -e "$SYSROOT/usr/lib/aarch64-linux-gnu/$lib" ] &&
            ln -sf "$lib" "$SYSROOT/usr/lib/aarch64-linux-gnu/$(basename "$lib")"
    done
    echo "${PKGS[*]}" >"$W/packages"
    echo "   $n packages unpacked, $(du -sh "$SYSROOT" | cut -f1)"
fi

# -- the wheel and gguf-py -------------------------------------------------------------
step "unpack $(basename "$WHL")"
rm -rf "$W/wheel"
mkdir -p "$W/wheel"
python3 -m zipfile -e "$WHL" "$W/wheel"
file "$W/wheel/kquant/_kquant.abi3.so" 2>/dev/null || true
PYPATH=$W/wheel
if [ ! -d "$W/gguf-py" ]; then
    mkdir -p "$W/dl"
    if python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.11 -d "$W/dl" "gguf>=0.17" 2>/dev/null; then
        mkdir -p "$W/gguf-py"
        python3 -m zipfile -e "$W"/dl/gguf-*.whl "$W/gguf-py"
    else
        echo "   (pip could not fetch gguf-py: the smoke test skips the gguf-py cross-check)"
    fi
fi
[ -d "$W/gguf-py" ] && PYPATH=$PYPATH:$W/gguf-py

# -- run -------------------------------------------------------------------------------
export KQUANT_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=$PYPATH PYTHONDONTWRITEBYTECODE=1
cp "$ROOT/scripts/check_wheel.py" "$W/check_wheel.py"
cd "$W"
run() { # run CPU [ENV=VALUE...] -- ARGS...
    local cpu=$1
    shift
    local envs=()
    while [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    local t=$SECONDS
    env "${envs[@]}" timeout 900 qemu-aarch64-static -cpu "$cpu" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" "$@"
    echo "   ($((SECONDS - t))s under qemu)"
}
step "import: qemu-aarch64-static -L $SYSROOT $SYSROOT/usr/bin/python3.11"
run max -- -c 'import kquant, platform, numpy; print("import kquant", kquant.__version__, "on", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__)'
step "smoke test, KQUANT_ISA=scalar (qemu -cpu max)"
run max KQUANT_ISA=scalar -- check_wheel.py --smoke --save scalar.npz
step "smoke test, best ISA on qemu -cpu max (NEON + SDOT), compared with scalar"
run max -- check_wheel.py --smoke --compare scalar.npz
step "smoke test, best ISA on qemu -cpu cortex-a53 (NEON, no SDOT), compared with scalar"
run cortex-a53 -- check_wheel.py --smoke --compare scalar.npz
step "aarch64 wheel passed"
