"""scripts/check_wheel.py's checks of macOS (Mach-O) and Windows (PE) extensions and of
platform tags, on small binaries made here: each check must pass a good file and name
what is wrong with a bad one. (The real wheels are built and checked by
scripts/build_wheels.sh, which is too slow for the test suite.)"""

import hashlib
import importlib.util
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "scripts" / "check_wheel.py")
cw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cw)


def run(check, path, *args):
    c = cw.Checker(str(path))
    check(c, str(path), *args)
    return c


# -- platform tags -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "plats, kind, arch, ok",
    [
        (["manylinux2014_x86_64", "manylinux_2_17_x86_64"], "manylinux", "x86_64", True),
        (["manylinux_2_28_aarch64"], "manylinux", "aarch64", False),
        (["musllinux_1_2_aarch64"], "musllinux", "aarch64", True),
        (["macosx_11_0_arm64"], "macos", "aarch64", True),
        (["macosx_12_0_arm64"], "macos", "aarch64", False),  # leaves macOS 11 Macs out
        (["macosx_10_12_x86_64"], "macos", "x86_64", True),
        (["macosx_10_15_x86_64"], "macos", "x86_64", False),
        (["win_amd64"], "windows", "x86_64", True),
    ],
)
def test_platform_tags(plats, kind, arch, ok):
    k, a, why = cw.platform_of(plats)
    assert (k, a) == (kind, arch), why
    allowed, _ = cw.allowed_platform_tags(k, a, plats)
    assert all(p in allowed for p in plats) == ok


@pytest.mark.parametrize("plats", [["win32"], ["macosx_11_0_universal2"], ["linux_x86_64"], ["win_amd64", "macosx_11_0_arm64"]])
def test_platform_tags_refused(plats):
    assert cw.platform_of(plats)[0] is None


# -- PE ----------------------------------------------------------------------------------


def make_pe(path, dlls, exports, machine=0x8664):
    """A PE32+ DLL with one section holding the import and export tables."""
    rva0, off0 = 0x1000, 0x400
    sec = bytearray(20 * (len(dlls) + 1))  # import descriptors, zero-terminated
    for i, d in enumerate(dlls):
        struct.pack_into("<I", sec, 20 * i + 12, rva0 + len(sec))
        sec += d.encode() + b"\0"
    exp_at = len(sec)
    sec += bytes(40)
    names_at = len(sec)
    sec += bytes(4 * len(exports))
    for i, e in enumerate(exports):
        struct.pack_into("<I", sec, names_at + 4 * i, rva0 + len(sec))
        sec += e.encode() + b"\0"
    struct.pack_into("<I", sec, exp_at + 24, len(exports))
    struct.pack_into("<I", sec, exp_at + 32, rva0 + names_at)
    head = bytearray(off0)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", head, 0x84, machine, 1, 0, 0, 0, 240, 0x2022)
    opt = 0x98
    struct.pack_into("<H", head, opt, 0x20B)
    struct.pack_into("<I", head, opt + 108, 16)
    struct.pack_into("<II", head, opt + 112, rva0 + exp_at, 40)  # export table
    struct.pack_into("<II", head, opt + 120, rva0, 20 * (len(dlls) + 1))  # import table
    head[opt + 240 : opt + 248] = b".rdata\0\0"
    struct.pack_into("<IIII", head, opt + 248, len(sec), rva0, len(sec), off0)
    path.write_bytes(bytes(head) + bytes(sec))
    return path


def test_pe_good(tmp_path):
    c = run(cw.check_pe, make_pe(tmp_path / "a.pyd", ["python3.dll", "KERNEL32.dll", "api-ms-win-crt-heap-l1-1-0.dll"], ["PyInit__kquant"]), "x86_64")
    assert c.failures == [] and c.notes == []


@pytest.mark.parametrize(
    "dlls, exports, machine, says",
    [
        (["python313.dll", "kernel32.dll"], ["PyInit__kquant"], 0x8664, "python3.dll"),
        (["python3.dll", "libgcc_s_seh-1.dll"], ["PyInit__kquant"], 0x8664, "libgcc_s_seh-1.dll"),
        (["python3.dll"], ["PyInit_kquant"], 0x8664, "PyInit__kquant is not exported"),
        (["python3.dll"], ["PyInit__kquant"], 0xAA64, "machine"),
    ],
)
def test_pe_bad(tmp_path, dlls, exports, machine, says):
    c = run(cw.check_pe, make_pe(tmp_path / "a.pyd", dlls, exports, machine), "x86_64")
    assert any(says in f for f in c.failures), c.failures


# -- Mach-O ------------------------------------------------------------------------------


def make_macho(path, arch="aarch64", dylibs=("/usr/lib/libSystem.B.dylib",), minos=(11, 0), py_ordinal=-2,
               sign=True, tamper=False):
    """A 64-bit MH_DYLIB exporting _PyInit__kquant, importing _PyList_New (bound with
    py_ordinal), optionally with an ad-hoc code signature."""
    cmds = []
    v = minos[0] << 16 | minos[1] << 8
    cmds.append(struct.pack("<IIIIII", 0x32, 24, 1, v, v, 0))
    for d in dylibs:
        name = d.encode() + b"\0"
        name += bytes(-(24 + len(name)) % 8)
        cmds.append(struct.pack("<IIIIII", 0xC, 24 + len(name), 24, 2, 0x10000, 0x10000) + name)
    ncmds = len(cmds) + 2 + bool(sign)
    size = 32 + sum(map(len, cmds)) + 24 + 48 + (16 if sign else 0)
    data_at = (size + 15) // 16 * 16
    strtab = b"\0_PyInit__kquant\0_kernel\0"
    syms = struct.pack("<IBBHQ", 1, 0x0F, 1, 0, 0x1000) + struct.pack("<IBBHQ", 17, 0x0E, 1, 0, 0x1100)
    ordinal = (0x30 | (py_ordinal & 0xF)) if py_ordinal < 0 else (0x10 | py_ordinal)
    binds = bytes([ordinal, 0x40]) + b"_PyList_New\0" + bytes([0x51, 0x72, 0x00, 0x90, 0x00])
    body = syms + strtab + binds
    symoff, stroff, bindoff = data_at, data_at + len(syms), data_at + len(syms) + len(strtab)
    cmds.append(struct.pack("<IIIIII", 0x2, 24, symoff, 2, stroff, len(strtab)))
    cmds.append(struct.pack("<12I", 0x80000022, 48, 0, 0, bindoff, len(binds), 0, 0, 0, 0, 0, 0))
    sig_at = (data_at + len(body) + 15) // 16 * 16
    cpu = {"aarch64": 0x0100000C, "x86_64": 0x01000007}[arch]
    hdr = struct.pack("<8I", 0xFEEDFACF, cpu, 0, 6, ncmds, size - 32, 0x85, 0)
    if sign:
        ident = b"kquant\0"
        code_len = sig_at
        n_pages = (code_len + 4095) // 4096
        sig_len = 20 + 44 + len(ident) + 32 * n_pages
        cmds.append(struct.pack("<IIII", 0x1D, 16, sig_at, sig_len))
    blob = hdr + b"".join(cmds)
    blob += bytes(data_at - len(blob)) + body
    blob += bytes(sig_at - len(blob))
    if sign:
        hashes = b"".join(hashlib.sha256(blob[i * 4096 : min((i + 1) * 4096, code_len)]).digest() for i in range(n_pages))
        cd = struct.pack(">9I", 0xFADE0C02, 44 + len(ident) + len(hashes), 0x20400, 0x20002, 44 + len(ident), 44, 0, n_pages, code_len)
        cd += bytes([32, 2, 0, 12]) + bytes(4) + ident + hashes
        blob += struct.pack(">III", 0xFADE0CC0, 20 + len(cd), 1) + struct.pack(">II", 0, 20) + cd
    if tamper:
        blob = bytearray(blob)
        blob[stroff + len(strtab) - 2] ^= 1  # a signed byte changes after signing
        blob = bytes(blob)
    path.write_bytes(blob)
    return path


def test_macho_good(tmp_path):
    c = run(cw.check_macho, make_macho(tmp_path / "a.so"), "aarch64", (11, 0))
    assert c.failures == [], c.failures
    c = run(cw.check_macho, make_macho(tmp_path / "b.so", arch="x86_64", minos=(10, 12), sign=False), "x86_64", (10, 12))
    assert c.failures == [], c.failures


@pytest.mark.parametrize(
    "kw, arch, says",
    [
        (dict(dylibs=("/usr/lib/libSystem.B.dylib", "@rpath/libpython3.11.dylib")), "aarch64", "libpython"),
        (dict(dylibs=("/opt/homebrew/lib/libomp.dylib",)), "aarch64", "not part of macOS"),
        (dict(minos=(12, 0)), "aarch64", "newer than the tag"),
        (dict(py_ordinal=1), "aarch64", "bound to a library"),
        (dict(sign=False), "aarch64", "no code signature"),
        (dict(tamper=True), "aarch64", "do not match"),
        (dict(), "x86_64", "cputype"),
    ],
)
def test_macho_bad(tmp_path, kw, arch, says):
    c = run(cw.check_macho, make_macho(tmp_path / "a.so", **kw), arch, (11, 0))
    assert any(says in f for f in c.failures), c.failures
