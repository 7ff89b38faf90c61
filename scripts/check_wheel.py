#!/usr/bin/env python3
"""Checks kquant's binary wheels, and smoke-tests an installed kquant.

    scripts/check_wheel.py WHEEL...                      static checks of each wheel
    scripts/check_wheel.py --smoke [--save F.npz] [--compare F.npz]

Static checks (exit 1 on any failure, each named on a FAIL line); docs/wheels.md has
the full list:

- tags: the file name and the WHEEL metadata both say cp39-abi3 and one platform:
  manylinux2014_<arch> / manylinux_2_17_<arch>, musllinux_1_2_<arch>, macosx_11_0_arm64
  (or older) / macosx_10_12_x86_64 (or older), win_amd64; RECORD's hashes and sizes
  match every file;
- Linux: one kquant/_kquant.abi3.so, ELF64 little-endian shared object whose e_machine
  is the tag's architecture, exporting PyInit__kquant, needing no libpython and only
  libraries manylinux2014 (musllinux) allows; symbol versions: GLIBC_* at most 2.17
  (GCC_*, GLIBCXX_*, CXXABI_* within manylinux2014 too; none at all for musl), read
  from .gnu.version_r with pyelftools; `auditwheel show` must agree when auditwheel is
  installed (not for musllinux on a glibc machine);
- macOS: a thin Mach-O dylib of the tag's CPU, minimum macOS not above the tag's,
  linking system libraries only, Python symbols bound by flat lookup (dynamic_lookup),
  exporting _PyInit__kquant, with a code signature whose page hashes match (required
  on arm64);
- Windows: kquant/_kquant.pyd, a PE32+ AMD64 DLL exporting PyInit__kquant, importing
  python3.dll (never python3X.dll) and otherwise system DLLs only;
- instruction sets, from objdump's disassembly (llvm-objdump for Mach-O): x86_64 has
  AVX2 kernels (ymm vpmaddubsw, vfmadd*, vcvtph2ps) and no VEX/EVEX code outside
  runtime-dispatched functions (so not built for the build machine's CPU); aarch64 has
  NEON kernels (kquant_core::arch::aarch64::neon::* on v-registers) including SDOT
  ones, with SDOT (except on Apple silicon, where it is baseline) and SVE nowhere else.

--smoke runs quantize / dequantize / vec_dot / matmul for every type and a GGUF write
and read with the kquant importable here (no pyelftools needed). --save writes the
results to an .npz; --compare checks them against another run's .npz (e.g. one with
KQUANT_ISA=scalar): quantized bytes and dequantized floats must be identical, dots
equal within 1e-4 of sum |w*x| per row.
"""

from __future__ import annotations

import argparse
import base64
import csv
import email.parser
import gc
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Tuple

ARCHES = ("x86_64", "aarch64")
E_MACHINE = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
EXTENSION = "kquant/_kquant.abi3.so"
EXTENSION_WINDOWS = "kquant/_kquant.pyd"
PLATFORM_KINDS = ("manylinux", "musllinux", "macos", "windows")
# platform tag suffix -> architecture (macOS says arm64, Windows amd64)
TAG_ARCH = (("_x86_64", "x86_64"), ("_aarch64", "aarch64"), ("_arm64", "aarch64"), ("win_amd64", "x86_64"))
# The newest macOS deployment target a wheel may ask for: every Apple-silicon Mac runs
# macOS 11, and Rust itself needs 10.12 on Intel Macs (which run 10.12 ... 15).
MACOS_NEWEST_TAG = {"aarch64": (11, 0), "x86_64": (10, 12)}

# manylinux2014 (PEP 599): the libraries an extension may need from the system and the
# newest symbol versions it may use (auditwheel's policy for manylinux_2_17).
ALLOWED_LIBS = {
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libc.so.6",
    "libnsl.so.1",
    "libutil.so.1",
    "libpthread.so.0",
    "libresolv.so.2",
    "libX11.so.6",
    "libXext.so.6",
    "libXrender.so.1",
    "libICE.so.6",
    "libSM.so.6",
    "libGL.so.1",
    "libgobject-2.0.so.0",
    "libgthread-2.0.so.0",
    "libglib-2.0.so.0",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}
# musllinux (PEP 656): musl's libc (its loader answers to libc.so) and libz, as auditwheel allows
MUSLLINUX_LIBS = {"libc.so", "libz.so.1"}
MAX_VERSIONS = {"GLIBC": (2, 17), "GLIBCXX": (3, 4, 19), "CXXABI": (1, 3, 7), "GCC": (4, 8, 0)}


class Checker:
    def __init__(self, wheel: str):
        self.wheel = wheel
        self.name = os.path.basename(wheel)
        self.failures: List[str] = []
        self.notes: List[str] = []

    def fail(self, msg: str) -> None:
        self.failures.append(msg)
        print(f"  FAIL {msg}")

    def ok(self, msg: str) -> None:
        print(f"  ok   {msg}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"  note {msg}")


# -- tags ------------------------------------------------------------------------------

WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def platform_of(plats: List[str]) -> Tuple[Optional[str], Optional[str], str]:
    """(kind, arch, why) for a wheel's platform tags: kind manylinux / musllinux / macos /
    windows, arch x86_64 / aarch64; (None, None, why) when the tags fit no kind."""
    kinds = set()
    arches = set()
    for p in plats:
        if p.startswith("manylinux"):
            kinds.add("manylinux")
        elif p.startswith("musllinux_"):
            kinds.add("musllinux")
        elif p.startswith("macosx_"):
            kinds.add("macos")
        elif p.startswith("win"):
            kinds.add("windows")
        else:
            kinds.add(p)
        arches.add(next((a for suffix, a in TAG_ARCH if p.endswith(suffix)), p))
    if len(kinds) != 1 or next(iter(kinds)) not in PLATFORM_KINDS:
        return None, None, f"platform tags {plats} are not all of one kind among {PLATFORM_KINDS}"
    if len(arches) != 1 or next(iter(arches)) not in ARCHES:
        return None, None, f"platform tags {plats} do not name exactly one of {ARCHES}"
    return next(iter(kinds)), next(iter(arches)), ""


def allowed_platform_tags(kind: str, arch: str, plats: List[str]) -> Tuple[set, str]:
    """The platform tags a kquant wheel of this kind and architecture may carry, and their name."""
    if kind == "manylinux":
        return {f"manylinux2014_{arch}", f"manylinux_2_17_{arch}"}, "manylinux2014 / manylinux_2_17"
    if kind == "musllinux":
        return {f"musllinux_1_{m}_{arch}" for m in (1, 2)}, "musllinux_1_1 / musllinux_1_2"
    if kind == "windows":
        return ({"win_amd64"} if arch == "x86_64" else set()), "win_amd64"
    # macOS: the deployment target may be older than the newest one below (then it covers
    # more machines), never newer, or current laptops would be left out.
    macarch = "arm64" if arch == "aarch64" else "x86_64"
    ok = set()
    for p in plats:
        m = re.match(rf"^macosx_(\d+)_(\d+)_{macarch}$", p)
        if m and (int(m[1]), int(m[2])) <= MACOS_NEWEST_TAG[arch]:
            ok.add(p)
    newest = "_".join(map(str, MACOS_NEWEST_TAG[arch]))
    return ok, f"macosx_<= {newest}_{macarch}"


def check_tags(c: Checker, zf: zipfile.ZipFile) -> Tuple[Optional[str], Optional[str]]:
    """Checks file name and WHEEL tags; returns (platform kind, architecture), or Nones."""
    m = WHEEL_NAME.match(c.name)
    if not m:
        c.fail(f"file name {c.name!r} is not name-version-python-abi-platform.whl")
        return None, None
    py, abi, plats = m["py"], m["abi"], m["plat"].split(".")
    if m["name"] != "kquant":
        c.fail(f"distribution name in the file name is {m['name']!r}, expected 'kquant'")
    if py != "cp39" or abi != "abi3":
        c.fail(f"python/abi tags are {py}-{abi}, expected cp39-abi3 (pyo3 abi3-py39)")
    kind, arch, why = platform_of(plats)
    if kind is None or arch is None:
        c.fail(why)
        return None, None
    allowed, what = allowed_platform_tags(kind, arch, plats)
    bad = [p for p in plats if p not in allowed]
    if bad:
        c.fail(f"platform tags {bad} are not {what} ({sorted(allowed) or 'none for ' + arch})")
    want = {f"{py}-{abi}-{p}" for p in plats}

    dist_info = [n for n in zf.namelist() if re.match(r"^kquant-[^/]+\.dist-info/WHEEL$", n)]
    if len(dist_info) != 1:
        c.fail(f"expected one kquant-*.dist-info/WHEEL, found {dist_info}")
        return kind, arch
    meta = email.parser.Parser().parsestr(zf.read(dist_info[0]).decode())
    tags = set(meta.get_all("Tag") or [])
    if tags != want:
        c.fail(f"WHEEL Tag lines {sorted(tags)} differ from the file name's {sorted(want)}")
    if (meta.get("Root-Is-Purelib") or "").strip().lower() != "false":
        c.fail(f"WHEEL Root-Is-Purelib is {meta.get('Root-Is-Purelib')!r}, expected false")
    if not bad and tags == want and py == "cp39" and abi == "abi3":
        c.ok(f"tags: {'.'.join(sorted(tags))} (file name and WHEEL agree)")

    md = [n for n in zf.namelist() if re.match(r"^kquant-[^/]+\.dist-info/METADATA$", n)]
    if md:
        m2 = email.parser.Parser().parsestr(zf.read(md[0]).decode(errors="replace"))
        if m2.get("Requires-Python", "").replace(" ", "") != ">=3.9":
            c.fail(f"METADATA Requires-Python is {m2.get('Requires-Python')!r}, expected >=3.9")
    else:
        c.fail("no METADATA in the wheel")
    return kind, arch


def check_record(c: Checker, zf: zipfile.ZipFile) -> None:
    rec = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if len(rec) != 1:
        c.fail(f"expected one RECORD, found {rec}")
        return
    listed = {}
    for row in csv.reader(io.StringIO(zf.read(rec[0]).decode())):
        if row:
            listed[row[0]] = row[1:]
    files = [n for n in zf.namelist() if not n.endswith("/")]
    bad = []
    for n in files:
        if n == rec[0]:
            continue
        if n not in listed:
            bad.append(f"{n} not in RECORD")
            continue
        h, size = listed[n][0], listed[n][1]
        data = zf.read(n)
        digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if h != digest or (size and int(size) != len(data)):
            bad.append(f"{n}: RECORD says {h} {size}, file is {digest} {len(data)}")
    missing = [n for n in listed if n not in files]
    if missing:
        bad.append(f"RECORD lists missing files {missing}")
    if bad:
        for b in bad:
            c.fail(f"RECORD: {b}")
    else:
        c.ok(f"RECORD: {len(files) - 1} files, hashes and sizes match")


# -- ELF -------------------------------------------------------------------------------


def version_tuple(s: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", s))


def check_elf(c: Checker, path: str, arch: str, kind: str = "manylinux") -> None:
    try:
        from elftools.elf.dynamic import DynamicSection
        from elftools.elf.elffile import ELFFile
        from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection
    except ImportError:
        c.fail("pyelftools is not installed (pip install pyelftools): cannot check the ELF file")
        return
    with open(path, "rb") as f:
        elf = ELFFile(f)
        hdr = elf.header
        what = f"{hdr['e_ident']['EI_CLASS']} {hdr['e_ident']['EI_DATA']} {hdr['e_type']} {hdr['e_machine']}"
        if (
            hdr["e_ident"]["EI_CLASS"] != "ELFCLASS64"
            or hdr["e_ident"]["EI_DATA"] != "ELFDATA2LSB"
            or hdr["e_type"] != "ET_DYN"
            or hdr["e_machine"] != E_MACHINE[arch]
        ):
            c.fail(f"ELF header is {what}, expected ELFCLASS64 ELFDATA2LSB ET_DYN {E_MACHINE[arch]} for a {arch} wheel")
        else:
            c.ok(f"ELF: {what}")

        needed: List[str] = []
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        allowed = MUSLLINUX_LIBS if kind == "musllinux" else ALLOWED_LIBS
        badlibs = [n for n in needed if n not in allowed]
        pylibs = [n for n in needed if n.startswith("libpython")]
        if pylibs:
            c.fail(f"links {pylibs}: an abi3 extension must not need libpython")
        if badlibs:
            c.fail(f"needs libraries outside {'musllinux' if kind == 'musllinux' else 'manylinux2014'}'s list: {badlibs}")
        if not badlibs and not pylibs:
            c.ok(f"DT_NEEDED: {', '.join(needed)}")

        dynsym = elf.get_section_by_name(".dynsym")
        exported = set()
        if dynsym is not None:
            for s in dynsym.iter_symbols():
                if s["st_shndx"] != "SHN_UNDEF" and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK"):
                    exported.add(s.name)
        if "PyInit__kquant" in exported:
            c.ok("exports PyInit__kquant")
        else:
            c.fail("PyInit__kquant is not exported")

        # Version needs: index -> (library, version name); then which symbols use which.
        index: Dict[int, Tuple[str, str]] = {}
        versym = None
        for sec in elf.iter_sections():
            if isinstance(sec, GNUVerNeedSection):
                for verneed, auxs in sec.iter_versions():
                    for aux in auxs:
                        index[aux["vna_other"]] = (verneed.name, aux.name)
            elif isinstance(sec, GNUVerSymSection):
                versym = sec
        users: Dict[str, List[str]] = defaultdict(list)
        if versym is not None and dynsym is not None:
            for i, s in enumerate(dynsym.iter_symbols()):
                ndx = versym.get_symbol(i)["ndx"]
                if isinstance(ndx, int) and ndx in index:
                    users[index[ndx][1]].append(s.name)
        versions = sorted({v for _, v in index.values()}, key=lambda v: (v.split("_")[0], version_tuple(v)))
        c.has_symtab = elf.get_section_by_name(".symtab") is not None  # type: ignore[attr-defined]
        if kind == "musllinux":
            # musl has no symbol versions: any requirement means glibc was linked in
            if versions:
                c.fail(f"symbol version requirements {versions} in a musl extension: linked against glibc?")
            else:
                c.ok("no symbol version requirements (musl libc)")
            return
        if not versions:
            c.fail("no symbol version requirements found (.gnu.version_r); is this a glibc-linked ELF?")
            return
        glibc = [v for v in versions if v.startswith("GLIBC_") and not v.startswith("GLIBC_PRIVATE")]
        top = max(glibc, key=version_tuple) if glibc else None
        over = []
        for v in versions:
            base = v.split("_", 1)[0]
            if v == "GLIBC_PRIVATE" or (base in MAX_VERSIONS and version_tuple(v) > MAX_VERSIONS[base]):
                over.append(f"{v} (used by {sorted(users[v])[:5]})")
        if over:
            c.fail(f"symbol versions newer than manylinux2014 allows: {'; '.join(over)}")
        else:
            tops = ", ".join(f"{k}: {sorted(set(users[top]))[:3]}" for k in [top] if top)
            c.ok(f"symbol versions: max {top} (<= GLIBC_2.17; {tops}); all: {' '.join(versions)}")
        c.glibc_max = top  # type: ignore[attr-defined]


def check_auditwheel(c: Checker, arch: str, kind: str = "manylinux") -> None:
    import platform

    if kind == "musllinux" and platform.libc_ver()[0] == "glibc":
        # it resolves DT_NEEDED on this machine: on a glibc one, libc.so is glibc's linker
        # script, and auditwheel stops with "Magic number does not match"
        c.note("auditwheel show skipped: it needs a musl machine for a musllinux wheel (the checks above apply its policy)")
        return
    exe = shutil.which("auditwheel") or (
        os.path.join(os.path.dirname(sys.executable), "auditwheel")
        if os.path.exists(os.path.join(os.path.dirname(sys.executable), "auditwheel"))
        else None
    )
    if exe is None:
        c.note("auditwheel not installed: skipped `auditwheel show` (pip install auditwheel)")
        return
    p = subprocess.run([exe, "show", c.wheel], capture_output=True, text=True, check=False)
    text = " ".join((p.stdout + p.stderr).split())
    m = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    if p.returncode != 0 or not m:
        c.fail(f"auditwheel show failed (rc {p.returncode}): {text[:400]}")
        return
    tag = m.group(1)
    if kind == "musllinux":
        mm = re.match(r"musllinux_(\d+)_(\d+)_(.+)$", tag)
        if not mm or mm.group(3) != arch or (int(mm.group(1)), int(mm.group(2))) > (1, 2):
            c.fail(f"auditwheel show: wheel is consistent with {tag}, not musllinux_1_2_{arch} or older")
        else:
            c.ok(f"auditwheel show: consistent with {tag}")
        return
    mm = re.match(r"manylinux_(\d+)_(\d+)_(.+)$", tag) or re.match(r"manylinux2014_(.+)$", tag)
    if tag.startswith("manylinux2014_"):
        ver, tarch = (2, 17), tag[len("manylinux2014_") :]
    elif mm:
        ver, tarch = (int(mm.group(1)), int(mm.group(2))), mm.group(3)
    else:
        c.fail(f"auditwheel show: unexpected tag {tag!r}")
        return
    if tarch != arch or ver > (2, 17):
        c.fail(f"auditwheel show: wheel is consistent with {tag}, not manylinux_2_17_{arch} or older")
    else:
        c.ok(f"auditwheel show: consistent with {tag}")


# -- Mach-O (macOS) --------------------------------------------------------------------

MH_MAGIC_64 = 0xFEEDFACF
MACHO_CPU = {"aarch64": 0x0100000C, "x86_64": 0x01000007}  # CPU_TYPE_ARM64, CPU_TYPE_X86_64
MH_FILETYPES = {6: "MH_DYLIB", 8: "MH_BUNDLE"}
LC_SYMTAB, LC_CODE_SIGNATURE, LC_VERSION_MIN_MACOSX, LC_BUILD_VERSION = 0x2, 0x1D, 0x24, 0x32
LC_DYLD_INFO, LC_DYLD_INFO_ONLY, LC_DYLD_CHAINED_FIXUPS = 0x22, 0x80000022, 0x80000034
LC_DYLIBS = {0xC: "LC_LOAD_DYLIB", 0x80000018: "LC_LOAD_WEAK_DYLIB", 0x8000001F: "LC_REEXPORT_DYLIB",
             0x20: "LC_LAZY_LOAD_DYLIB", 0x80000023: "LC_LOAD_UPWARD_DYLIB"}
# What every macOS has: the system libraries and frameworks, never a Python.
MACOS_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/Frameworks/")
FLAT_LOOKUP_ORDINAL = -2  # BIND_SPECIAL_DYLIB_FLAT_LOOKUP: `-undefined dynamic_lookup`


def macos_version(v: int) -> Tuple[int, int, int]:
    return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def check_macho_signature(c: Checker, data: bytes, off: int, size: int) -> None:
    """Verifies the code directory's page hashes: Apple silicon refuses to map code whose
    signature (ad-hoc is enough) is missing or no longer matches the file."""
    be = struct.Struct(">II")
    blob = data[off : off + size]
    if len(blob) < 12 or be.unpack_from(blob, 0)[0] != 0xFADE0CC0:
        c.fail("LC_CODE_SIGNATURE does not point at an embedded signature SuperBlob")
        return
    count = struct.unpack_from(">I", blob, 8)[0]
    cds = []
    for i in range(count):
        typ, boff = be.unpack_from(blob, 12 + 8 * i)
        if struct.unpack_from(">I", blob, boff)[0] == 0xFADE0C02 and typ in (0, 0x1000):
            cds.append(boff)
    if not cds:
        c.fail("the code signature has no CodeDirectory")
        return
    cd = cds[0]
    (_, _, version, flags, hash_off, _, _, n_code, code_limit) = struct.unpack_from(">9I", blob, cd)
    hash_size, hash_type, _, page_shift = struct.unpack_from(">4B", blob, cd + 36)
    algo = {1: "sha1", 2: "sha256"}.get(hash_type)
    if algo is None:
        c.fail(f"CodeDirectory hash type {hash_type} unknown")
        return
    page = 1 << page_shift if page_shift else code_limit
    bad = 0
    for i in range(n_code):
        chunk = data[i * page : min((i + 1) * page, code_limit)]
        want = blob[cd + hash_off + i * hash_size : cd + hash_off + (i + 1) * hash_size]
        if hashlib.new(algo, chunk).digest()[:hash_size] != want:
            bad += 1
    kind = "ad-hoc" if flags & 0x2 else "signed"
    if n_code * page < code_limit:
        c.fail(f"the code signature covers {n_code} pages of {page} bytes, less than its code limit {code_limit}")
    elif bad:
        c.fail(f"code signature: {bad} of {n_code} page hashes do not match (file changed after signing)")
    else:
        c.ok(f"code signature: {kind}{' linker-signed' if flags & 0x20000 else ''}, {n_code} pages "
             f"({algo}), all hashes match")


def uleb(data: bytes, i: int) -> Tuple[int, int]:
    v = shift = 0
    while True:
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def macho_binds(data: bytes, dyld_info: Optional[Tuple[int, ...]], chained: Optional[Tuple[int, int]]) -> Dict[str, int]:
    """{imported symbol: library ordinal} as dyld binds them (-2: flat lookup in every image
    loaded, what `-undefined dynamic_lookup` asks for; 1...: the n-th LC_LOAD_DYLIB), from
    the bind opcodes of LC_DYLD_INFO or the imports of LC_DYLD_CHAINED_FIXUPS."""
    binds: Dict[str, int] = {}
    if dyld_info is not None:
        for off, size in ((dyld_info[2], dyld_info[3]), (dyld_info[4], dyld_info[5]), (dyld_info[6], dyld_info[7])):
            i, end, ordinal, name = off, off + size, 0, ""
            while i < end:
                op, imm = data[i] & 0xF0, data[i] & 0x0F
                i += 1
                if op == 0x10:
                    ordinal = imm
                elif op == 0x20:
                    ordinal, i = uleb(data, i)
                elif op == 0x30:
                    ordinal = imm - 16 if imm else 0
                elif op == 0x40:
                    j = data.index(b"\0", i)
                    name, i = data[i:j].decode(errors="replace"), j + 1
                elif op in (0x60, 0x70, 0x80, 0xA0):
                    _, i = uleb(data, i)
                elif op == 0xC0:
                    _, i = uleb(data, i)
                    _, i = uleb(data, i)
                elif op == 0xD0 and imm == 0:
                    _, i = uleb(data, i)
                if op in (0x90, 0xA0, 0xB0, 0xC0) and name:
                    binds[name] = ordinal
    if chained is not None:
        base = chained[0]
        _, _, imports_off, symbols_off, count, fmt, _ = struct.unpack_from("<7I", data, base)
        for k in range(count):
            if fmt == 3:
                v = struct.unpack_from("<Q", data, base + imports_off + 16 * k)[0]
                ordinal, name_off = v & 0xFFFF, v >> 32
                ordinal = ordinal - 0x10000 if ordinal >= 0xFFF0 else ordinal
            else:
                v = struct.unpack_from("<I", data, base + imports_off + (4 if fmt == 1 else 8) * k)[0]
                ordinal, name_off = v & 0xFF, v >> 9
                ordinal = ordinal - 0x100 if ordinal >= 0xF0 else ordinal
            j = base + symbols_off + name_off
            binds[data[j : data.index(b"\0", j)].decode(errors="replace")] = ordinal
    return binds


def check_macho(c: Checker, path: str, arch: str, tag_version: Optional[Tuple[int, int]]) -> None:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 32 or struct.unpack_from("<I", data, 0)[0] != MH_MAGIC_64:
        c.fail(f"not a 64-bit little-endian Mach-O file (magic {data[:4].hex()}); fat files are not expected")
        return
    _, cputype, _, filetype, ncmds, _, flags, _ = struct.unpack_from("<8I", data, 0)
    want_cpu = MACHO_CPU[arch]
    cpu_name = {v: k for k, v in MACHO_CPU.items()}.get(cputype, hex(cputype))
    if cputype != want_cpu or filetype not in MH_FILETYPES:
        c.fail(f"Mach-O cputype {cpu_name} filetype {filetype}, expected {arch} MH_DYLIB/MH_BUNDLE")
    else:
        c.ok(f"Mach-O: 64-bit {MH_FILETYPES[filetype]} for {'arm64' if arch == 'aarch64' else arch}")
    dylibs: List[Tuple[str, str]] = []
    minos = None
    symtab = sig = dyld_info = chained = None
    at = 32
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", data, at)
        if cmd in LC_DYLIBS:
            noff = struct.unpack_from("<I", data, at + 8)[0]
            name = data[at + noff : at + size].split(b"\0", 1)[0].decode()
            dylibs.append((LC_DYLIBS[cmd], name))
        elif cmd == LC_BUILD_VERSION:
            platform, v = struct.unpack_from("<II", data, at + 8)
            if platform != 1:  # PLATFORM_MACOS
                c.fail(f"LC_BUILD_VERSION platform {platform}, expected 1 (macOS)")
            minos = macos_version(v)
        elif cmd == LC_VERSION_MIN_MACOSX:
            minos = macos_version(struct.unpack_from("<I", data, at + 8)[0])
        elif cmd == LC_SYMTAB:
            symtab = struct.unpack_from("<4I", data, at + 8)
        elif cmd == LC_CODE_SIGNATURE:
            sig = struct.unpack_from("<II", data, at + 8)
        elif cmd in (LC_DYLD_INFO, LC_DYLD_INFO_ONLY):
            dyld_info = struct.unpack_from("<10I", data, at + 8)
        elif cmd == LC_DYLD_CHAINED_FIXUPS:
            chained = struct.unpack_from("<II", data, at + 8)
        at += size

    if minos is None:
        c.fail("no LC_BUILD_VERSION / LC_VERSION_MIN_MACOSX: the minimum macOS version is unknown")
    elif tag_version is not None and minos[:2] > tag_version:
        c.fail(f"the binary needs macOS {'.'.join(map(str, minos))}, newer than the tag's {tag_version[0]}.{tag_version[1]}")
    else:
        c.ok(f"minimum macOS {'.'.join(map(str, minos))} (tag {'.'.join(map(str, tag_version or ()))})")

    bad = [n for _, n in dylibs if not n.startswith(MACOS_SYSTEM_PREFIXES)]
    py = [n for _, n in dylibs if "python" in n.lower()]
    if py:
        c.fail(f"links {py}: an abi3 extension must take Python's symbols from the interpreter that loads it")
    if bad:
        c.fail(f"links libraries that are not part of macOS: {bad}")
    if not dylibs:
        c.fail("links no library at all (expected /usr/lib/libSystem.B.dylib)")
    elif not bad and not py:
        c.ok(f"links only system libraries: {', '.join(n for _, n in dylibs)}")

    exported, py_undef, py_bound, local_funcs = set(), [], [], 0
    if symtab is None:
        c.fail("no LC_SYMTAB")
    else:
        symoff, nsyms, stroff, strsize = symtab
        for i in range(nsyms):
            strx, ntype, _, _, _ = struct.unpack_from("<IBBHQ", data, symoff + 16 * i)
            if ntype & 0xE0:  # debugging (stab) entry
                continue
            name = data[stroff + strx : stroff + strsize].split(b"\0", 1)[0].decode(errors="replace")
            t = ntype & 0x0E
            if t == 0x0E and ntype & 0x01:
                exported.add(name)
            elif t == 0x0E:
                local_funcs += 1
        for name, ordinal in macho_binds(data, dyld_info, chained).items():
            if name.startswith("_Py"):
                (py_undef if ordinal == FLAT_LOOKUP_ORDINAL else py_bound).append(f"{name} ({ordinal})")
    if "_PyInit__kquant" in exported:
        c.ok("exports PyInit__kquant")
    else:
        c.fail(f"PyInit__kquant is not exported (exported: {sorted(exported)[:5]})")
    if py_bound:
        c.fail(f"Python symbols bound to a library instead of looked up at load time: {py_bound[:5]}")
    elif not py_undef:
        c.fail("no _Py* symbols bound: not a Python extension, or bind information not found?")
    else:
        c.ok(f"{len(py_undef)} Python C-API symbols, all bound by flat lookup in the loading interpreter "
             "(-undefined dynamic_lookup)")
    c.has_symtab = local_funcs > 0  # type: ignore[attr-defined]

    if sig is None:
        if arch == "aarch64":
            c.fail("no code signature: macOS on Apple silicon refuses to load unsigned arm64 code")
        else:
            c.note("no code signature (not required on Intel Macs)")
    else:
        check_macho_signature(c, data, sig[0], sig[1])


# -- PE (Windows) ----------------------------------------------------------------------

PE_MACHINE = {"x86_64": 0x8664, "aarch64": 0xAA64}
# DLLs every Windows has (and the VC runtime that python.org's CPython ships beside python.exe).
WINDOWS_SYSTEM_DLLS = {
    "kernel32.dll", "ntdll.dll", "advapi32.dll", "bcrypt.dll", "bcryptprimitives.dll", "ws2_32.dll",
    "userenv.dll", "msvcrt.dll", "ucrtbase.dll", "vcruntime140.dll", "shell32.dll", "ole32.dll",
    "oleaut32.dll", "user32.dll", "secur32.dll", "crypt32.dll", "synchronization.dll",
}


def check_pe(c: Checker, path: str, arch: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"MZ":
        c.fail("not a PE file (no MZ header)")
        return
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe : pe + 4] != b"PE\0\0":
        c.fail("no PE signature")
        return
    machine, nsect, _, symptr, nsyms, opt_size, chars = struct.unpack_from("<HHIIIHH", data, pe + 4)
    opt = pe + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    mname = {v: k for k, v in PE_MACHINE.items()}.get(machine, hex(machine))
    if machine != PE_MACHINE[arch] or magic != 0x20B or not chars & 0x2000:
        c.fail(f"PE machine {mname}, optional header magic {magic:#x}, DLL flag {bool(chars & 0x2000)}: "
               f"expected a PE32+ DLL for {arch} (AMD64)")
    else:
        c.ok("PE: PE32+ DLL, machine AMD64" if arch == "x86_64" else f"PE: PE32+ DLL, machine {mname}")
    ndirs = struct.unpack_from("<I", data, opt + 108)[0]
    dirs = [struct.unpack_from("<II", data, opt + 112 + 8 * i) for i in range(min(ndirs, 16))]
    sections = []
    for i in range(nsect):
        s = opt + opt_size + 40 * i
        vsize, va, rsize, roff = struct.unpack_from("<IIII", data, s + 8)
        sections.append((va, max(vsize, rsize), roff))

    def off(rva: int) -> int:
        for va, size, roff in sections:
            if va <= rva < va + size:
                return rva - va + roff
        raise ValueError(f"RVA {rva:#x} is in no section")

    def cstr(rva: int) -> str:
        o = off(rva)
        return data[o : data.index(b"\0", o)].decode(errors="replace")

    exported = set()
    if len(dirs) > 0 and dirs[0][0]:
        e = off(dirs[0][0])
        nnames, names_rva = struct.unpack_from("<I", data, e + 24)[0], struct.unpack_from("<I", data, e + 32)[0]
        for i in range(nnames):
            exported.add(cstr(struct.unpack_from("<I", data, off(names_rva) + 4 * i)[0]))
    if exported == {"PyInit__kquant"}:
        c.ok("exports PyInit__kquant, and nothing else")
    elif "PyInit__kquant" in exported:
        c.note(f"exports PyInit__kquant and {len(exported) - 1} other symbols (the linker exported every global)")
    else:
        c.fail(f"PyInit__kquant is not exported (exports: {sorted(exported)[:5]})")

    dlls = []
    for d, size in ((1, 20), (13, 32)):  # import table, delay-load import table
        if len(dirs) > d and dirs[d][0]:
            o = off(dirs[d][0])
            while True:
                name_rva = struct.unpack_from("<I", data, o + (12 if d == 1 else 4))[0]
                if not name_rva:
                    break
                dlls.append(cstr(name_rva))
                o += size
    low = [d.lower() for d in dlls]
    versioned = [d for d in dlls if re.fullmatch(r"python3\d+\.dll", d.lower())]
    other = [d for d in dlls if d.lower() not in WINDOWS_SYSTEM_DLLS and d.lower() != "python3.dll"
             and not d.lower().startswith(("api-ms-win-", "ext-ms-win-"))]
    if versioned:
        c.fail(f"imports {versioned}: one CPython version only; an abi3 wheel must link python3.dll")
    if "python3.dll" not in low:
        c.fail(f"does not import python3.dll (imports {dlls})")
    if other and not versioned:
        c.fail(f"imports DLLs that Windows does not have (MinGW runtime?): {other}")
    if not versioned and not other and "python3.dll" in low:
        c.ok(f"imports python3.dll (the stable ABI) and system DLLs only: {', '.join(dlls)}")
    c.has_symtab = bool(symptr and nsyms)  # type: ignore[attr-defined]


# -- instruction sets ------------------------------------------------------------------


def find_objdump(arch: str, fmt: str = "elf") -> Optional[List[str]]:
    """An objdump that disassembles `arch` in files of format `fmt` (elf, macho, pe)."""
    if fmt == "macho":  # GNU objdump reads no Mach-O: LLVM's (Debian's llvm-22 or llvm-14)
        for cand in ("llvm-objdump-22", "llvm-objdump", "llvm-objdump-14"):
            exe = shutil.which(cand) or (f"/usr/lib/llvm-22/bin/{cand}" if os.path.exists(f"/usr/lib/llvm-22/bin/{cand}") else None)
            if exe:
                return [exe] + (["--mattr=+dotprod"] if arch == "aarch64" else [])
        return None
    cands = ["objdump"] if arch == "x86_64" and os.uname().machine == "x86_64" else []
    cands += [f"{arch}-linux-gnu-objdump", "llvm-objdump"]
    if arch == os.uname().machine:
        cands.append("objdump")
    cands.append("objdump")
    for cand in dict.fromkeys(cands):
        exe = shutil.which(cand)
        if not exe:
            continue
        if cand == "objdump" and arch != os.uname().machine:
            p = subprocess.run([exe, "-i"], capture_output=True, text=True, check=False)
            if arch not in p.stdout:
                continue
        return [exe]
    return None


def disassemble(c: Checker, path: str, arch: str, fmt: str = "elf") -> Optional[Dict[str, List[Tuple[str, str]]]]:
    """{function name: [(mnemonic, operands)]} from objdump -d -C."""
    od = find_objdump(arch, fmt)
    if od is None:
        pkg = "llvm-22" if fmt == "macho" else "binutils" if arch == "x86_64" else "binutils-aarch64-linux-gnu"
        c.fail(f"no objdump for {arch} found (apt-get install {pkg}): cannot check the instruction sets")
        return None
    p = subprocess.run(od + ["-d", "-C", "--no-show-raw-insn", path], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        c.fail(f"{' '.join(od)} -d failed: {p.stderr.strip()[:300]}")
        return None
    funcs: Dict[str, List[Tuple[str, str]]] = defaultdict(list)
    fn = "?"
    head = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    ins = re.compile(r"^\s+[0-9a-f]+:\s+(\S+)\s*(.*)$")
    for line in p.stdout.splitlines():
        m = head.match(line)
        if m:
            fn = m.group(1)
            continue
        m = ins.match(line)
        if m:
            mn, ops = m.group(1), m.group(2)
            if fmt == "macho" and arch == "aarch64" and "." in mn and not mn.startswith("b."):
                # Apple's syntax puts the arrangement on the mnemonic (sdot.4s v6, v4, v5);
                # spell it the generic way (sdot v6.4s, v4.4s, v5.4s) for the checks
                mn, arr = mn.split(".", 1)
                ops = re.sub(r"\bv(\d+)\b(?!\.)", rf"v\1.{arr}", ops)
            funcs[fn].append((mn, ops))
    return funcs


def summarize(names: List[str], k: int = 4) -> str:
    short = [n if len(n) < 90 else n[:87] + "..." for n in sorted(names)[:k]]
    return ", ".join(short) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def check_x86(c: Checker, funcs: Dict[str, List[Tuple[str, str]]], has_symtab: bool) -> None:
    def is_vex(mn: str, ops: str) -> bool:
        # AVX/AVX2/FMA/F16C/AVX-512 mnemonics start with 'v' (verr/verw and the VMX ones excepted).
        return (
            (
                mn.startswith("v")
                and not mn.startswith(
                    (
                        "verr",
                        "verw",
                        "vmcall",
                        "vmlaunch",
                        "vmresume",
                        "vmxoff",
                        "vmxon",
                        "vmread",
                        "vmwrite",
                        "vmptr",
                        "vmclear",
                        "vmfunc",
                        "vmrun",
                        "vmload",
                        "vmsave",
                        "vmmcall",
                    )
                )
            )
            or "%ymm" in ops
            or "%zmm" in ops
        )

    total = Counter()
    vex_funcs, ymm_funcs = [], []
    for fn, insns in funcs.items():
        v = y = 0
        for mn, ops in insns:
            if "%ymm" in ops:
                y += 1
                if mn == "vpmaddubsw":
                    total["vpmaddubsw ymm"] += 1
                if mn in ("vpmaddwd", "vpshufb", "vpsignb", "vpabsb"):
                    total[f"{mn} ymm"] += 1
            if mn.startswith(("vfmadd", "vfnmadd", "vfmsub")):
                total["vfmadd*"] += 1
            if mn == "vcvtph2ps":
                total["vcvtph2ps"] += 1
            if "%zmm" in ops or re.search(r"%k[0-7]\b", ops):
                total["avx512 (zmm/k regs)"] += 1
            if is_vex(mn, ops):
                v += 1
        if v:
            vex_funcs.append(fn)
        if y:
            ymm_funcs.append(fn)
    print(
        f"  info x86_64 disassembly: {len(funcs)} functions, {len(vex_funcs)} with VEX code; "
        + ", ".join(f"{k} x{n}" for k, n in sorted(total.items()))
    )
    for need in ("vpmaddubsw ymm", "vfmadd*", "vcvtph2ps"):
        if total[need] == 0:
            c.fail(f"no {need} instruction: the AVX2/FMA/F16C kernels are not in this wheel")
    if total["avx512 (zmm/k regs)"]:
        c.fail("AVX-512 instructions found: built for a specific CPU (target-cpu=native?)")
    if not has_symtab:
        c.note("no .symtab (stripped): per-function checks skipped, only instruction counts checked")
        if total["vpmaddubsw ymm"]:
            c.ok("AVX2 code present (counts above)")
        return
    avx2_mod = [f for f in funcs if "arch::x86_64::avx2" in f]
    avx2_ymm = [f for f in avx2_mod if f in ymm_funcs]
    if len(avx2_ymm) < 5:
        c.fail(f"only {len(avx2_ymm)} kquant_core::arch::x86_64::avx2 functions use ymm registers: {avx2_ymm}")
    else:
        c.ok(
            f"AVX2 kernels: {len(avx2_ymm)} kquant_core::arch::x86_64::avx2 functions on ymm registers "
            f"({summarize(avx2_ymm, 3)})"
        )
    # Outside runtime-dispatched functions (named for the feature they enable) there must
    # be no VEX code: otherwise the crate was compiled for the build machine's CPU.
    allowed = re.compile(r"avx|f16c|fma", re.IGNORECASE)
    stray = [f for f in vex_funcs if not allowed.search(f)]
    if stray:
        c.fail(
            f"VEX (AVX) code in {len(stray)} functions outside the runtime-dispatched kernels, so the "
            f"wheel would crash on CPUs without AVX (built with target-cpu/target-feature?): {summarize(stray)}"
        )
    else:
        c.ok(f"baseline x86-64 elsewhere: VEX code only in the {len(vex_funcs)} runtime-dispatched avx2/f16c functions")


def check_aarch64(
    c: Checker, funcs: Dict[str, List[Tuple[str, str]]], has_symtab: bool, sdot_baseline: bool = False
) -> None:
    """sdot_baseline: the target's baseline CPU has SDOT (aarch64-apple-darwin: apple-m1,
    as every Apple-silicon Mac), so the compiler may use it anywhere."""
    vreg = re.compile(r"\bv\d+\.(?:16b|8b|8h|4h|4s|2s|2d|1d|b|h|s|d)\b|\bq\d+\b")
    sve = re.compile(r"\bz\d+\.[bhsdq]\b|\bp\d+/[zm]\b")
    total = Counter()
    sdot_funcs, vec_funcs, sve_funcs = [], [], []
    for fn, insns in funcs.items():
        s = vv = z = 0
        for mn, ops in insns:
            if mn in ("sdot", "udot"):
                s += 1
                total[mn] += 1
            if vreg.search(ops):
                vv += 1
                if mn in (
                    "smull",
                    "smull2",
                    "smlal",
                    "smlal2",
                    "fmla",
                    "tbl",
                    "ld1",
                    "addv",
                    "saddlp",
                    "sadalp",
                    "fcvtl",
                    "fcvtl2",
                    "fcvtn",
                    "ushr",
                    "and",
                ):
                    total[mn] += 1
            if sve.search(ops):
                z += 1
        if s:
            sdot_funcs.append(fn)
        if vv:
            vec_funcs.append(fn)
        if z:
            sve_funcs.append(fn)
    print(
        f"  info aarch64 disassembly: {len(funcs)} functions, {len(vec_funcs)} use NEON v-registers; "
        + ", ".join(f"{k} x{n}" for k, n in sorted(total.items()))
    )
    if total["sdot"] == 0:
        c.fail("no SDOT instruction: the NEON dotprod kernels are not in this wheel")
    if sve_funcs:
        c.fail(f"SVE instructions in {summarize(sve_funcs)}: built for a specific CPU?")
    if not has_symtab:
        c.note("no .symtab (stripped): per-function checks skipped, only instruction counts checked")
        return
    neon_mod = [f for f in funcs if "arch::aarch64::neon" in f]
    neon_vec = [f for f in neon_mod if f in vec_funcs]
    neon_sdot = [f for f in neon_mod if f in sdot_funcs]
    if len(neon_vec) < 5:
        c.fail(f"only {len(neon_vec)} kquant_core::arch::aarch64::neon functions use NEON registers: {neon_vec}")
    else:
        c.ok(
            f"NEON kernels: {len(neon_vec)} kquant_core::arch::aarch64::neon functions on v-registers "
            f"({summarize(neon_vec, 3)})"
        )
    if not neon_sdot:
        c.fail("no kquant_core::arch::aarch64::neon function contains SDOT")
    else:
        c.ok(f"SDOT kernels: {len(neon_sdot)} neon functions use sdot ({summarize(neon_sdot, 3)})")
    allowed = re.compile(r"neon|sdot|dotprod", re.IGNORECASE)
    stray = [f for f in sdot_funcs if not allowed.search(f)]
    if stray and sdot_baseline:
        c.ok(f"SDOT also in {len(stray)} other functions: allowed, every Apple-silicon Mac has it ({summarize(stray, 2)})")
    elif stray:
        c.fail(f"SDOT outside the runtime-dispatched kernels (built with target-feature=+dotprod?): {summarize(stray)}")
    else:
        c.ok("baseline aarch64 elsewhere: SDOT only in runtime-dispatched neon functions")


def check_wheel(path: str) -> Checker:
    c = Checker(path)
    print(f"{c.name}")
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        c.fail(f"cannot open as a zip file: {e}")
        return c
    with zf, tempfile.TemporaryDirectory(prefix="kquant-check-") as tmp:
        kind, arch = check_tags(c, zf)
        check_record(c, zf)
        ext = EXTENSION_WINDOWS if kind == "windows" else EXTENSION
        sos = [n for n in zf.namelist() if re.search(r"\.(so|pyd|dylib|dll)(\.|$)", os.path.basename(n))]
        if sos != [ext]:
            c.fail(f"shared objects in the wheel are {sos}, expected exactly [{ext!r}]")
        if kind is None or arch is None or ext not in zf.namelist():
            return c
        so = zf.extract(ext, tmp)
        print(f"  info {ext}: {os.path.getsize(so)} bytes")
        fmt = {"macos": "macho", "windows": "pe"}.get(kind, "elf")
        if kind == "macos":
            m = re.search(r"macosx_(\d+)_(\d+)_", c.name)
            check_macho(c, so, arch, (int(m[1]), int(m[2])) if m else None)
        elif kind == "windows":
            check_pe(c, so, arch)
        else:
            check_elf(c, so, arch, kind)
            check_auditwheel(c, arch, kind)
        funcs = disassemble(c, so, arch, fmt)
        if funcs is not None:
            has_symtab = getattr(c, "has_symtab", False)
            if arch == "x86_64":
                check_x86(c, funcs, has_symtab)
            else:
                check_aarch64(c, funcs, has_symtab, sdot_baseline=kind == "macos")
    return c


# -- smoke test ------------------------------------------------------------------------


def machine() -> str:
    """platform.machine(), except on Windows: there CPython >= 3.12 asks WMI, which wine
    8.0 cannot answer (it aborts the process); the environment says the same."""
    import platform

    if os.name == "nt":
        return os.environ.get("PROCESSOR_ARCHITECTURE", "?")
    return platform.machine()


def cpu_features() -> str:
    """What this CPU offers the SIMD paths (as the dispatcher would detect it)."""
    m = machine()
    try:
        if m == "aarch64":
            import ctypes

            libc = ctypes.CDLL(None)
            libc.getauxval.restype = ctypes.c_ulong
            hw = libc.getauxval(16)  # AT_HWCAP
            return f"aarch64 HWCAP asimd={'yes' if hw & (1 << 1) else 'no'} asimddp={'yes' if hw & (1 << 20) else 'no'}"
        if m in ("x86_64", "AMD64"):
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
            return "x86_64 " + " ".join(f"{k}={'yes' if k in flags else 'no'}" for k in ("avx2", "fma", "f16c"))
    except (OSError, AttributeError, StopIteration):
        pass
    return m


def smoke(save: Optional[str], compare: Optional[str]) -> int:
    import platform

    import numpy as np

    t0 = time.perf_counter()
    import kquant

    kq = kquant.QuantType
    isa = getattr(kquant, "isa", None)
    print(f"kquant {getattr(kquant, '__version__', '?')} from {os.path.dirname(kquant.__file__)}")
    print(
        f"python {platform.python_version()} {machine()}, numpy {np.__version__}, "
        f"isa {isa() if callable(isa) else isa if isa else '(no kquant.isa)'}, "
        f"KQUANT_ISA={os.environ.get('KQUANT_ISA', '')!r}, threads {kquant.get_num_threads()}"
    )
    print(f"cpu: {cpu_features()}")
    rng = np.random.default_rng(20240607)
    rows, n = 8, 512
    w = rng.standard_normal((rows, n), dtype=np.float32)
    w[3] *= 1e-3
    w[5, ::7] += 4.0
    x = rng.standard_normal((3, n), dtype=np.float32)
    results: Dict[str, np.ndarray] = {}
    failures: List[str] = []
    # rough bounds on RMS error / RMS value of a Gaussian row (ggml's own error levels with margin)
    bound = {
        "F32": 0,
        "F16": 1e-3,
        "BF16": 8e-3,
        "Q8_0": 0.01,
        "Q8_1": 0.01,
        "Q8_K": 0.01,
        "Q6_K": 0.03,
        "Q5_0": 0.06,
        "Q5_1": 0.06,
        "Q5_K": 0.06,
        "Q4_0": 0.12,
        "Q4_1": 0.12,
        "Q4_K": 0.12,
        "IQ4_NL": 0.12,
        "IQ4_XS": 0.12,
        "Q3_K": 0.25,
        "Q2_K": 0.45,
    }
    for t in kq:
        q = kquant.quantize(w, t)
        assert q.dtype == np.uint8 and q.shape == (rows, kquant.row_size(t, n)), (t, q.shape)
        d = kquant.dequantize(q, t)
        assert d.dtype == np.float32 and d.shape == w.shape
        err = float(np.sqrt(np.mean((d - w)[[0, 1, 2, 4, 6, 7]] ** 2)))
        results[f"q/{t.name}"] = q
        results[f"d/{t.name}"] = d
        line = f"{t.name:7s} {q.shape[1]:4d} B/row  rms err {err:.4f}"
        if err > bound.get(t.name, 0.5):
            failures.append(f"{t.name}: rms error {err} above {bound.get(t.name)}")
        p = kquant.vec_dot_type(t)
        try:
            xq = kquant.quantize(x, p)
            pairs = kquant.vec_dot(np.repeat(q[None], 3, 0).reshape(3 * rows, -1), np.repeat(xq, rows, 0), t)
        except (ValueError, TypeError) as e:  # an activation-only type: no dot of its own
            print(f"{line}  (no vec_dot: {e})")
            continue
        mm = kquant.matmul(q, x, t)
        assert mm.shape == (3, rows), mm.shape
        ref = x @ d.T  # float reference with the dequantized weights
        scale = np.abs(x) @ np.abs(d).T
        rel = float(np.max(np.abs(mm - ref) / scale))
        same = bool(np.array_equal(pairs.reshape(3, rows), mm))
        results[f"mm/{t.name}"] = mm
        results[f"scale/{t.name}"] = scale.astype(np.float32)
        print(f"{line}  matmul vs float: {rel:.2e} of sum|w*x|; vec_dot == matmul: {same}")
        if rel > 0.05:
            failures.append(f"{t.name}: matmul differs from the float product by {rel} of sum|w*x|")
        if not same:
            failures.append(f"{t.name}: vec_dot on quantized x differs from matmul")

    # GGUF: kquant writes, kquant reads; gguf-py reads kquant's file and writes one kquant reads.
    with tempfile.TemporaryDirectory(prefix="kquant-smoke-") as tmp:
        if hasattr(kquant, "GGUFWriter") and hasattr(kquant, "GGUFReader"):
            path = os.path.join(tmp, "kq.gguf")
            types = ["q4_k", "q8_0", "iq4_nl", "f16"]
            with kquant.GGUFWriter(path) as gw:
                gw.add_metadata("general.architecture", "smoke")
                gw.add_metadata("smoke.rows", rows)
                for tn in types:
                    gw.add_tensor_info(f"w.{tn}", (rows, n), tn)
                gw.add_tensor_info("norm", (n,), "f32")
                for tn in types:
                    gw.write_tensor(f"w.{tn}", results[f"q/{kq.parse(tn).name}"])
                gw.write_tensor("norm", w[0])
            with kquant.GGUFReader(path) as r:
                ok = r.metadata.get("general.architecture") == "smoke" and r.metadata.get("smoke.rows") == rows
                for tn in types:
                    ti = r.tensor(f"w.{tn}")
                    ok &= ti.shape == (rows, n)
                    ok &= np.array_equal(r.raw(f"w.{tn}"), results[f"q/{kq.parse(tn).name}"])
                    ok &= np.array_equal(r.dequantize(f"w.{tn}"), results[f"d/{kq.parse(tn).name}"])
                ok &= np.array_equal(r.dequantize("norm"), w[0])
                print(
                    f"GGUF    kquant write -> kquant read: {len(r.tensors)} tensors, "
                    f"{len(r.metadata)} metadata keys, {os.path.getsize(path)} bytes: {'ok' if ok else 'MISMATCH'}"
                )
            if not ok:
                failures.append("GGUF round trip through kquant.GGUFWriter / GGUFReader differs")
        else:
            path = None
            print("GGUF    kquant.GGUFReader / GGUFWriter not in this kquant: skipped the kquant round trip")
        try:
            import gguf  # gguf-py, the reference Python implementation
        except ImportError:
            print("GGUF    gguf-py not importable: skipped the cross-check")
        else:
            if not path and not hasattr(kquant, "GGUFReader"):
                print("GGUF    gguf-py importable, but nothing of kquant's to cross-check it with")
            if path:
                gr = gguf.GGUFReader(path)
                ok = all(
                    np.array_equal(
                        np.asarray(t.data).reshape(-1).view(np.uint8),
                        results[f"q/{kq.parse(t.name[2:]).name}"].reshape(-1),
                    )
                    for t in gr.tensors
                    if t.name.startswith("w.")
                )
                print(f"GGUF    gguf-py reads kquant's file: {len(gr.tensors)} tensors, {'ok' if ok else 'MISMATCH'}")
                if not ok:
                    failures.append("gguf-py reads other tensor bytes than kquant wrote")
                # gguf-py's reader keeps the file memory-mapped until it is collected, and
                # Windows cannot delete a mapped file (the temporary folder's cleanup)
                del gr
                gc.collect()
            if hasattr(kquant, "GGUFReader"):
                p2 = os.path.join(tmp, "gguf-py.gguf")
                gw2 = gguf.GGUFWriter(p2, "smoke")
                gw2.add_uint32("smoke.rows", rows)
                q6 = results["q/Q6_K"]
                gw2.add_tensor("w.q6_k", q6, raw_dtype=gguf.GGMLQuantizationType.Q6_K)
                gw2.write_header_to_file()
                gw2.write_kv_data_to_file()
                gw2.write_tensors_to_file()
                gw2.close()
                with kquant.GGUFReader(p2) as r:
                    ok = r.metadata.get("smoke.rows") == rows and np.array_equal(
                        r.dequantize("w.q6_k"), results["d/Q6_K"]
                    )
                print(f"GGUF    gguf-py write -> kquant read: {'ok' if ok else 'MISMATCH'}")
                if not ok:
                    failures.append("kquant reads a gguf-py file wrongly")

    if save:
        np.savez(save, **results)
    if compare:
        other = np.load(compare)
        diffs, dots_identical, dots = [], 0, 0
        for k, v in results.items():
            if k not in other:
                diffs.append(f"{k} missing in {compare}")
            elif k.startswith(("q/", "d/")):
                if not np.array_equal(v, other[k]):
                    diffs.append(f"{k} differs")
            elif k.startswith("mm/"):
                dots += 1
                o = other[k]
                if np.array_equal(v, o):
                    dots_identical += 1
                else:
                    rel = float(np.max(np.abs(v - o) / results["scale/" + k[3:]]))
                    if rel > 1e-4:
                        diffs.append(f"{k}: dots differ by {rel:.2e} of sum|w*x|")
        print(
            f"compare with {compare}: quantize/dequantize bytes "
            f"{'identical' if not any(d[:2] in ('q/', 'd/') for d in diffs) else 'DIFFER'}, "
            f"dots bit-identical {dots_identical}/{dots}, others within 1e-4 of sum|w*x|"
            if not diffs
            else f"compare with {compare}: {len(diffs)} differences"
        )
        failures += [f"compare: {d}" for d in diffs]
    dt = time.perf_counter() - t0
    for f in failures:
        print(f"FAIL {f}")
    print(f"smoke: {'FAILED' if failures else 'passed'} ({len(failures)} failures) in {dt:.1f}s")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", nargs="*", help="wheel files to check")
    ap.add_argument("--smoke", action="store_true", help="smoke-test the importable kquant instead")
    ap.add_argument("--save", help="--smoke: save results to this .npz")
    ap.add_argument("--compare", help="--smoke: compare results with this .npz from another run")
    a = ap.parse_args()
    if a.smoke:
        return smoke(a.save, a.compare)
    if not a.wheels:
        ap.error("give wheel files, or --smoke")
    bad = 0
    for w in a.wheels:
        c = check_wheel(w)
        status = "FAILED" if c.failures else "passed"
        print(f"  => {status}" + (f" ({len(c.failures)} failures)" if c.failures else ""))
        bad += bool(c.failures)
    print(f"check_wheel: {len(a.wheels) - bad}/{len(a.wheels)} wheels passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
