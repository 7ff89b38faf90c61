#!/usr/bin/env bash
# Builds kquant's abi3 manylinux2014 wheels (cp39-abi3, glibc >= 2.17) for x86_64 and
# aarch64 into dist/, checks them (scripts/check_wheel.py) and smoke-tests them.
#
#   scripts/build_wheels.sh [x86_64|aarch64|all] [--no-test]      (default: all)
#
# On an x86_64 Debian 12 machine, as root, from nothing but apt, PyPI and crates.io:
# - maturin builds with `--zig`: zig (PyPI's ziglang) links against glibc 2.17 stubs,
#   so the extension needs nothing newer than GLIBC_2.17 although the machine has 2.36;
# - x86_64 uses the cargo on PATH (rustup's); aarch64 uses it too if it has the aarch64
#   standard library, else Debian's rustc-web/cargo-web with libstd-rust-web-dev:arm64;
# - the SIMD kernels (AVX2, NEON) are runtime-dispatched: RUSTFLAGS are cleared, never
#   target-cpu=native; check_wheel.py verifies the kernels are in and nothing else uses
#   AVX / SDOT;
# - symbols are kept (debug info stripped) so profilers and check_wheel.py see names.
# Tests (skipped with --no-test): x86_64 in a fresh venv (KQUANT_ISA default and scalar,
# compared); aarch64 under qemu-user with scripts/test_aarch64_wheel.sh.
#
# Environment: KQUANT_WHEEL_OUT (default <repo>/dist), CARGO_TARGET_DIR (default
# <repo>/target/wheels), KQUANT_WHEEL_TOOLS (tool venv, default /tmp/kquant-wheel-tools),
# KQUANT_SMOKE_VENV (default /tmp/kquant-wheel-smoke).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=all
TEST=1
for a in "$@"; do
    case "$a" in
    x86_64 | aarch64 | all) ARCH=$a ;;
    --no-test) TEST=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [x86_64|aarch64|all] [--no-test]" >&2
        exit 2
        ;;
    esac
done
[ "$ARCH" = all ] && ARCHES=(x86_64 aarch64) || ARCHES=("$ARCH")

OUT=${KQUANT_WHEEL_OUT:-$ROOT/dist}
TOOLS=${KQUANT_WHEEL_TOOLS:-/tmp/kquant-wheel-tools}
SMOKE=${KQUANT_SMOKE_VENV:-/tmp/kquant-wheel-smoke}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/wheels}
# Tested versions; override to try others.
MATURIN_SPEC=${KQUANT_MATURIN_SPEC:-maturin==1.16.0}
ZIG_SPEC=${KQUANT_ZIG_SPEC:-ziglang==0.17.1}
TOOL_SPECS=("$MATURIN_SPEC" "$ZIG_SPEC" auditwheel==6.8.2 pyelftools==0.33 wheel==0.45.1)

T0=$SECONDS
step_t=$SECONDS
step() {
    echo "== [$((SECONDS - T0))s] $*"
    step_t=$SECONDS
}
done_step() { echo "   ($((SECONDS - step_t))s)"; }

# -- system packages -----------------------------------------------------------------
need_pkgs=(binutils)
if [[ " ${ARCHES[*]} " == *" aarch64 "* ]]; then
    need_pkgs+=(binutils-aarch64-linux-gnu)
    [ "$TEST" = 1 ] && need_pkgs+=(qemu-user-static)
fi
missing=()
for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$(uname -m)" != x86_64 ] || ! command -v apt-get >/dev/null; then
    echo "build_wheels.sh: written for an x86_64 Debian/Ubuntu machine (apt); this is $(uname -m)" >&2
    exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    done_step
fi

# -- tool venv: maturin, zig, auditwheel, pyelftools, wheel --------------------------
step "tools venv $TOOLS: ${TOOL_SPECS[*]}"
[ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --disable-pip-version-check "${TOOL_SPECS[@]}"
"$TOOLS/bin/maturin" --version
done_step

# Never build for this machine's CPU: the SIMD paths are chosen at run time.
for v in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS; do
    if [ -n "${!v:-}" ]; then echo "   ignoring $v=${!v}"; fi
    unset "$v"
done
for cfg in "$ROOT/.cargo/config.toml" "$ROOT/.cargo/config" "${CARGO_HOME:-$HOME/.cargo}/config.toml" \
    "${CARGO_HOME:-$HOME/.cargo}/config"; do
    if [ -f "$cfg" ] && grep -q "target-cpu\|target-feature" "$cfg"; then
        echo "build_wheels.sh: $cfg sets target-cpu/target-feature; refusing to build wheels with it" >&2
        exit 1
    fi
done
# Keep the symbol table (zig's linker drops it with Rust's default strip=debuginfo);
# the debug info is stripped below.
export CARGO_PROFILE_RELEASE_STRIP=none

mkdir -p "$OUT"

# A cargo/rustc pair for `target`: PATH's if it has the target's std, else Debian's.
rust_for() {
    local target=$1 libdir
    if command -v rustc >/dev/null && libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null) &&
        ls "$libdir"/libstd-*.rlib >/dev/null 2>&1; then
        RUST_BIN=$(dirname "$(command -v cargo)")
        RUSTC_EXE=$(command -v rustc)
        return
    fi
    if [ "$target" = aarch64-unknown-linux-gnu ]; then
        if ! ls /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib/libstd-*.rlib >/dev/null 2>&1 ||
            ! [ -x /usr/bin/cargo ]; then
            step "apt-get install Debian's Rust with the arm64 std (rustc-web, cargo-web, libstd-rust-web-dev:arm64)"
            export DEBIAN_FRONTEND=noninteractive
            dpkg --add-architecture arm64
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends rustc-web cargo-web libstd-rust-web-dev:arm64 >/dev/null
            done_step
        fi
        # a directory whose cargo and rustc are Debian's, to put first on PATH
        RUST_BIN=$TOOLS/debian-rust
        mkdir -p "$RUST_BIN"
        ln -sf /usr/bin/cargo "$RUST_BIN/cargo"
        ln -sf /usr/bin/rustc "$RUST_BIN/rustc"
        RUSTC_EXE=/usr/bin/rustc
        return
    fi
    echo "build_wheels.sh: no Rust toolchain with the $target standard library (install rustup's stable)" >&2
    exit 1
}

# Drops the debug sections, keeps .symtab, and repacks with a fresh RECORD.
strip_debug() {
    local whl=$1 arch=$2 objcopy tmp
    objcopy=objcopy
    [ "$arch" = aarch64 ] && objcopy=aarch64-linux-gnu-objcopy
    tmp=$(mktemp -d)
    "$TOOLS/bin/python" -m wheel unpack -d "$tmp" "$whl" >/dev/null
    local so
    so=$(echo "$tmp"/kquant-*/kquant/_kquant.abi3.so)
    "$objcopy" --strip-debug "$so"
    rm "$whl"
    "$TOOLS/bin/python" -m wheel pack -d "$(dirname "$whl")" "$tmp"/kquant-* >/dev/null
    rm -rf "$tmp"
}

built=()
for arch in "${ARCHES[@]}"; do
    target=$arch-unknown-linux-gnu
    rust_for "$target"
    step "build $arch wheel ($target, $("$RUSTC_EXE" --version), CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    stage=$(mktemp -d)
    (
        cd "$ROOT"
        export PATH="$RUST_BIN:$TOOLS/bin:$PATH" RUSTC=$RUSTC_EXE
        maturin build --release --locked --target "$target" --zig --compatibility manylinux2014 --out "$stage"
    )
    whl=$(ls "$stage"/kquant-*.whl)
    strip_debug "$whl" "$arch"
    whl=$(ls "$stage"/kquant-*.whl)
    rm -f "$OUT"/kquant-*"_$arch".whl
    mv "$whl" "$OUT/"
    rmdir "$stage"
    built+=("$OUT/$(basename "$whl")")
    ls -l "$OUT/$(basename "$whl")"
    done_step
done

step "check ${built[*]##*/}"
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/python" "$ROOT/scripts/check_wheel.py" "${built[@]}"
done_step

if [ "$TEST" = 1 ]; then
    for whl in "${built[@]}"; do
        case "$whl" in
        *_x86_64.whl)
            step "smoke test $(basename "$whl") in a fresh venv $SMOKE"
            rm -rf "$SMOKE"
            python3 -m venv "$SMOKE"
            "$SMOKE/bin/python" -m pip install -q --disable-pip-version-check "$whl" "gguf>=0.17"
            scratch=$(mktemp -d)
            (
                cd "$scratch" # away from the source tree
                echo "-- best ISA"
                "$SMOKE/bin/python" "$ROOT/scripts/check_wheel.py" --smoke --save best.npz
                echo "-- KQUANT_ISA=scalar, compared with the best ISA"
                KQUANT_ISA=scalar "$SMOKE/bin/python" "$ROOT/scripts/check_wheel.py" --smoke --compare best.npz
                echo "-- the kquant command"
                "$SMOKE/bin/kquant" --help >/dev/null && echo "kquant --help: ok"
            )
            rm -rf "$scratch"
            done_step
            ;;
        *_aarch64.whl)
            step "qemu test $(basename "$whl")"
            bash "$ROOT/scripts/test_aarch64_wheel.sh" "$whl"
            done_step
            ;;
        esac
    done
fi
echo "== [$((SECONDS - T0))s] done: ${built[*]}"
