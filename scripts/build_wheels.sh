#!/usr/bin/env bash
# Builds kquant's abi3 wheels (cp39-abi3: one wheel per platform for every CPython >= 3.9)
# into dist/, checks them (scripts/check_wheel.py) and tests what this machine can run.
#
#   scripts/build_wheels.sh [TARGET|GROUP ...] [--no-test]        (default: all)
#
# TARGET            wheel platform tag               Rust target
# x86_64            manylinux2014_x86_64 (glibc 2.17) x86_64-unknown-linux-gnu
# aarch64           manylinux2014_aarch64             aarch64-unknown-linux-gnu
# musl-x86_64       musllinux_1_2_x86_64 (Alpine)     x86_64-unknown-linux-musl
# musl-aarch64      musllinux_1_2_aarch64             aarch64-unknown-linux-musl
# macos-arm64       macosx_11_0_arm64 (Apple silicon) aarch64-apple-darwin
# macos-x86_64      macosx_10_12_x86_64 (Intel Macs)  x86_64-apple-darwin
# windows           win_amd64 (links python3.dll)     x86_64-pc-windows-gnu
# GROUP: all (every target), linux (manylinux + musllinux), manylinux, musl, macos.
#
# On an x86_64 Debian 12 machine, as root, from nothing but apt, PyPI and crates.io:
# - maturin builds with `--zig`: zig (PyPI's ziglang) is the linker and brings the libc
#   stubs of every target: glibc 2.17 (so the Linux extension needs nothing newer than
#   GLIBC_2.17 although the machine has 2.36), musl, macOS's libSystem, MinGW-w64;
# - x86_64 uses the cargo on PATH (rustup's); aarch64 uses it too if it has the aarch64
#   standard library, else Debian's rustc-web/cargo-web with libstd-rust-web-dev:arm64;
#   the musl, macOS and Windows targets use the cargo on PATH if it has their standard
#   library, else Debian's rustc-web builds it from rust-web-src (`-Zbuild-std`, allowed
#   by RUSTC_BOOTSTRAP=1): no SDK or toolchain comes from anywhere else;
# - macOS: MACOSX_DEPLOYMENT_TARGET 11.0 (arm64) / 10.12 (x86_64, Rust's own minimum);
#   zig's linker signs the arm64 extension ad hoc, as Apple silicon requires;
# - Windows: PyO3's generate-import-lib writes python3.dll's import library, so the
#   extension links the stable ABI's python3.dll, and no Windows Python is needed;
# - the SIMD kernels (AVX2, NEON) are runtime-dispatched: RUSTFLAGS are cleared, never
#   target-cpu=native; check_wheel.py verifies the kernels are in and nothing else uses
#   AVX / SDOT (SDOT is baseline on Apple silicon);
# - symbols are kept (ELF debug info stripped) so profilers and check_wheel.py see names.
# Tests (skipped with --no-test): x86_64 in a fresh venv (KQUANT_ISA default and scalar,
# compared); aarch64 under qemu-user (scripts/test_aarch64_wheel.sh); windows under wine
# with python.org's CPython (scripts/test_windows_wheel.sh). The macOS and musllinux
# wheels get the static checks only: no macOS and no musl CPython can run here.
#
# Environment: KQUANT_WHEEL_OUT (default <repo>/dist), CARGO_TARGET_DIR (default
# <repo>/target/wheels), KQUANT_WHEEL_TOOLS (tool venv, default /tmp/kquant-wheel-tools),
# KQUANT_SMOKE_VENV (default /tmp/kquant-wheel-smoke).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL_TARGETS=(x86_64 aarch64 musl-x86_64 musl-aarch64 macos-arm64 macos-x86_64 windows)
TARGETS=()
TEST=1
usage() {
    local IFS='|'
    echo "usage: $0 [${ALL_TARGETS[*]}|all|linux|manylinux|musl|macos ...] [--no-test]" >&2
}
for a in "$@"; do
    case "$a" in
    x86_64 | aarch64 | musl-x86_64 | musl-aarch64 | macos-arm64 | macos-x86_64 | windows) TARGETS+=("$a") ;;
    all) TARGETS+=("${ALL_TARGETS[@]}") ;;
    linux) TARGETS+=(x86_64 aarch64 musl-x86_64 musl-aarch64) ;;
    manylinux) TARGETS+=(x86_64 aarch64) ;;
    musl) TARGETS+=(musl-x86_64 musl-aarch64) ;;
    macos) TARGETS+=(macos-arm64 macos-x86_64) ;;
    --no-test) TEST=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        usage
        exit 2
        ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
# each once, in the order of ALL_TARGETS
sel=" ${TARGETS[*]} "
TARGETS=()
for t in "${ALL_TARGETS[@]}"; do [[ "$sel" == *" $t "* ]] && TARGETS+=("$t"); done
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

# target -> Rust target triple, maturin options, ELF architecture (for objcopy), test
triple_of() {
    case $1 in
    x86_64) echo x86_64-unknown-linux-gnu ;;
    aarch64) echo aarch64-unknown-linux-gnu ;;
    musl-x86_64) echo x86_64-unknown-linux-musl ;;
    musl-aarch64) echo aarch64-unknown-linux-musl ;;
    macos-arm64) echo aarch64-apple-darwin ;;
    macos-x86_64) echo x86_64-apple-darwin ;;
    windows) echo x86_64-pc-windows-gnu ;;
    esac
}

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
if has aarch64 || has musl-aarch64; then
    need_pkgs+=(binutils-aarch64-linux-gnu) # objdump / objcopy for aarch64 ELF
fi
if has aarch64 && [ "$TEST" = 1 ]; then
    need_pkgs+=(qemu-user-static)
fi
if has macos-arm64 || has macos-x86_64; then
    need_pkgs+=(llvm-22) # llvm-objdump: GNU binutils read no Mach-O (same LLVM as rustc-web)
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
for v in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS $(compgen -e | grep '^CARGO_TARGET_.*_RUSTFLAGS$' || true); do
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

# A cargo/rustc pair for `target`: PATH's if it has the target's std, else Debian's:
# with the prebuilt arm64 std for aarch64-unknown-linux-gnu, else building std from
# rust-web-src (BUILD_STD=1).
debian_rust() {
    local what=$1 p missing=()
    shift
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "apt-get install Debian's Rust $what (${missing[*]})"
        export DEBIAN_FRONTEND=noninteractive
        [[ " ${missing[*]} " == *":arm64 "* ]] && dpkg --add-architecture arm64
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        done_step
    fi
    # a directory whose cargo and rustc are Debian's, to put first on PATH
    RUST_BIN=$TOOLS/debian-rust
    mkdir -p "$RUST_BIN"
    ln -sf /usr/bin/cargo "$RUST_BIN/cargo"
    ln -sf /usr/bin/rustc "$RUST_BIN/rustc"
    RUSTC_EXE=/usr/bin/rustc
}
rust_for() {
    local target=$1 libdir
    BUILD_STD=0
    if command -v rustc >/dev/null && libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null) &&
        ls "$libdir"/libstd-*.rlib >/dev/null 2>&1; then
        RUST_BIN=$(dirname "$(command -v cargo)")
        RUSTC_EXE=$(command -v rustc)
        return
    fi
    if [ "$target" = aarch64-unknown-linux-gnu ]; then
        debian_rust "with the arm64 std" rustc-web cargo-web libstd-rust-web-dev:arm64
        return
    fi
    # rustup's other standard libraries cannot be downloaded here; Debian's rustc builds
    # one from the standard library's source (its dependencies come from crates.io)
    debian_rust "and the standard library's source" rustc-web cargo-web rust-web-src
    BUILD_STD=1
}

# Drops the debug sections of an ELF extension, keeps .symtab, and repacks with a fresh
# RECORD. (The macOS and Windows extensions carry no DWARF: std is built here without it,
# and rewriting the Mach-O would break its code signature.)
strip_debug() {
    local whl=$1 target=$2 objcopy tmp
    objcopy=objcopy
    [[ "$target" == aarch64-* ]] && objcopy=aarch64-linux-gnu-objcopy
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
for t in "${TARGETS[@]}"; do
    target=$(triple_of "$t")
    rust_for "$target"
    opts=(--zig)
    envs=()
    case $t in
    x86_64 | aarch64) opts+=(--compatibility manylinux2014) ;;
    musl-*) opts+=(--compatibility musllinux_1_2) ;;
    macos-arm64) envs+=(MACOSX_DEPLOYMENT_TARGET=11.0) ;;
    macos-x86_64) envs+=(MACOSX_DEPLOYMENT_TARGET=10.12) ;;
    esac
    if [ "$t" = windows ]; then
        # Debian's rustc asks MinGW for -lssp_nonshared -lssp (its own MinGW builds with the
        # stack protector; Rust code never calls it), which zig's MinGW does not have:
        # empty archives stand in for them.
        mkdir -p "$TOOLS/mingw-stubs"
        for lib in ssp ssp_nonshared; do [ -f "$TOOLS/mingw-stubs/lib$lib.a" ] || ar rc "$TOOLS/mingw-stubs/lib$lib.a"; done
        # maturin (1.16) writes a .def that exports PyInit_<dotted module-name>, i.e.
        # PyInit_kquant._kquant, a symbol that does not exist, and the link fails; a folder
        # in its place makes maturin skip it (a warning), and this .def exports the real
        # PyInit__kquant alone (without one, the linker would export every global symbol).
        mkdir -p "$CARGO_TARGET_DIR/maturin"
        rm -rf "$CARGO_TARGET_DIR/maturin/kquant._kquant.def"
        mkdir -p "$CARGO_TARGET_DIR/maturin/kquant._kquant.def"
        printf 'EXPORTS\n    PyInit__kquant\n' >"$TOOLS/mingw-stubs/kquant-exports.def"
        envs+=(RUSTFLAGS="-L native=$TOOLS/mingw-stubs -C link-arg=$TOOLS/mingw-stubs/kquant-exports.def")
    fi
    std=""
    if [ "$BUILD_STD" = 1 ]; then
        envs+=(RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort)
        std=", std built from source"
    fi
    step "build $t wheel ($target, $("$RUSTC_EXE" --version)$std, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    stage=$(mktemp -d)
    (
        cd "$ROOT"
        export PATH="$RUST_BIN:$TOOLS/bin:$PATH" RUSTC=$RUSTC_EXE
        env "${envs[@]}" maturin build --release --locked --target "$target" "${opts[@]}" --out "$stage"
    )
    whl=$(ls "$stage"/kquant-*.whl)
    case $t in x86_64 | aarch64 | musl-*) strip_debug "$whl" "$target" ;; esac
    whl=$(ls "$stage"/kquant-*.whl)
    plat=${whl##*-abi3-} # the platform tag(s) and .whl: replace an older wheel for the same
    rm -f "$OUT"/kquant-*-abi3-"$plat"
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
        *manylinux*_x86_64.whl)
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
        *manylinux*_aarch64.whl)
            step "qemu test $(basename "$whl")"
            bash "$ROOT/scripts/test_aarch64_wheel.sh" "$whl"
            done_step
            ;;
        *win_amd64.whl)
            step "wine test $(basename "$whl")"
            bash "$ROOT/scripts/test_windows_wheel.sh" "$whl"
            done_step
            ;;
        *)
            echo "== $(basename "$whl"): static checks only (no $(case $whl in *macosx*) echo macOS ;; *) echo "musl CPython" ;; esac) to run it here)"
            ;;
        esac
    done
fi
echo "== [$((SECONDS - T0))s] done: ${built[*]}"
