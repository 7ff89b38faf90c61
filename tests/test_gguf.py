"""GGUFReader / GGUFWriter: round trips with gguf-py (llama.cpp's own Python package) in
both directions, atomic writes, clear errors for bad files, and a fast header parse."""

import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import kquant
from kquant import GGUFReader, GGUFWriter, QuantType
from kquant.gguf import GGUFTensorInfo, PlainType

gguf = pytest.importorskip("gguf")
VT = gguf.GGUFValueType
GT = gguf.GGMLQuantizationType

# gguf-py's value types by kquant's names for them.
TYPE_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32", VT.INT32: "i32",
    VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "str", VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64",
}  # fmt: skip

# (key, value, type) covering every scalar type at its extremes, and every array type.
METADATA = [
    ("t.u8", 255, "u8"),
    ("t.i8", -128, "i8"),
    ("t.u16", 65535, "u16"),
    ("t.i16", -32768, "i16"),
    ("t.u32", 2**32 - 1, "u32"),
    ("t.i32", -(2**31), "i32"),
    ("t.f32", -1.5, "f32"),
    ("t.bool", True, "bool"),
    ("t.str", "héllo ✓ \U0001f600", "str"),
    ("t.empty_str", "", "str"),
    ("t.u64", 2**64 - 1, "u64"),
    ("t.i64", -(2**63), "i64"),
    ("t.f64", 1e300, "f64"),
    ("a.u8", [0, 1, 255], "arr[u8]"),
    ("a.i8", [-128, 0, 127], "arr[i8]"),
    ("a.u16", [0, 65535], "arr[u16]"),
    ("a.i16", [-32768, 32767], "arr[i16]"),
    ("a.u32", [0, 2**32 - 1], "arr[u32]"),
    ("a.i32", [-(2**31), 2**31 - 1], "arr[i32]"),
    ("a.f32", [0.5, -2.25, 1e30], "arr[f32]"),
    ("a.bool", [True, False, True], "arr[bool]"),
    ("a.str", ["a", "", "ü", "tokens ▁with spaces"], "arr[str]"),
    ("a.u64", [2**64 - 1, 0], "arr[u64]"),
    ("a.i64", [-(2**63), 2**63 - 1], "arr[i64]"),
    ("a.f64", [1e-300, -0.0], "arr[f64]"),
]


def rng(seed=0):
    return np.random.default_rng(seed)


def tensors_spec():
    """(name, NumPy shape, type, values to write) covering every kind of storage."""
    g = rng(1)
    x = g.standard_normal((4, 256)).astype(np.float32)
    experts = g.standard_normal((2, 3, 64)).astype(np.float32)
    return [
        ("blk.0.attn_q.weight", (4, 256), QuantType.Q4_K, kquant.quantize(x, "q4_k")),
        ("blk.0.ffn_up_exps.weight", (2, 3, 64), QuantType.Q8_0, kquant.quantize(experts, "q8_0")),
        ("norm.f32", (256,), QuantType.F32, x[0]),
        ("emb.f16", (4, 256), QuantType.F16, x),
        ("emb.bf16", (2, 4, 8), QuantType.BF16, g.standard_normal((2, 4, 8)).astype(np.float32)),
        ("q.q4_0", (1, 1, 2, 32), QuantType.Q4_0, kquant.quantize(x[:2, :32].reshape(1, 1, 2, 32), "q4_0")),
        ("ids.i8", (5,), PlainType.I8, np.array([-128, -1, 0, 1, 127], np.int8)),
        ("ids.i16", (2, 2), PlainType.I16, np.array([[-32768, 1], [2, 32767]], np.int16)),
        ("ids.i32", (3,), PlainType.I32, np.array([7, -8, 9], np.int32)),
        ("ids.i64", (2,), PlainType.I64, np.array([-(2**63), 2**63 - 1], np.int64)),
        ("vals.f64", (3,), PlainType.F64, np.array([0.1, -2.0, 1e300])),
        ("empty.f32", (0, 8), QuantType.F32, np.zeros((0, 8), np.float32)),
    ]


def expected_bytes(t, values):
    """What the writer must store, computed independently of it."""
    if values.dtype == np.uint8:
        return values.tobytes()
    if t == QuantType.F32:
        return values.astype("<f4").tobytes()
    if t in (QuantType.F16, QuantType.BF16):
        return kquant.quantize(values, t).tobytes()  # ggml's conversion, byte-exact
    return values.astype(t.dtype).tobytes()


def write_kquant(path, alignment=32):
    with GGUFWriter(path, alignment=alignment) as w:
        w.add_metadata("general.architecture", "llama")
        for k, v, t in METADATA:
            w.add_metadata(k, v, type=t)
        for name, shape, t, _ in tensors_spec():
            w.add_tensor_info(name, shape, t)
        for name, _, _, values in tensors_spec():
            w.write_tensor(name, values)


def gguf_py_value(field):
    return field.contents()


@pytest.mark.parametrize("alignment", [32, 64, 1])
def test_kquant_file_reads_identically_in_gguf_py(tmp_path, alignment):
    p = tmp_path / "k.gguf"
    write_kquant(p, alignment)
    r = gguf.GGUFReader(p)
    assert r.alignment == alignment
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    want_keys = ["general.architecture"] + (["general.alignment"] if alignment != 32 else [])
    want_keys += [k for k, _, _ in METADATA]
    assert sorted(keys) == sorted(want_keys)
    for k, v, t in METADATA:
        f = r.fields[k]
        got_type = TYPE_NAMES[f.types[0]] if f.types[0] != VT.ARRAY else f"arr[{TYPE_NAMES[f.types[-1]]}]"
        assert got_type == t, k
        got = gguf_py_value(f)
        if t == "f32":
            assert got == np.float32(v)
        elif t == "arr[f32]":
            assert got == [float(np.float32(x)) for x in v]
        else:
            assert got == v, k
    spec = tensors_spec()
    assert [t.name for t in r.tensors] == [s[0] for s in spec]
    for rt, (name, shape, t, values) in zip(r.tensors, spec):
        assert int(rt.tensor_type) == int(t), name
        assert tuple(int(d) for d in rt.shape) == tuple(reversed(shape)), name
        assert rt.data_offset % alignment == 0
        assert np.asarray(rt.data).tobytes() == expected_bytes(t, values), name


def gguf_py_file(path, alignment=None):
    """A model file written by gguf-py, with every kind of value and tensor."""
    w = gguf.GGUFWriter(path, "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    sub = {v: k for k, v in TYPE_NAMES.items()}
    for k, v, t in METADATA:
        # add_key_value rather than add_string & co, which skip empty values
        if t.startswith("arr["):
            w.add_key_value(k, v, VT.ARRAY, sub_type=sub[t[4:-1]])
        else:
            w.add_key_value(k, v, sub[t])
    for name, shape, t, values in tensors_spec():
        if values.dtype == np.uint8:
            w.add_tensor(name, values, raw_shape=None, raw_dtype=GT(int(t)))
        elif t == QuantType.BF16:
            raw = np.frombuffer(expected_bytes(t, values), np.uint8).reshape(shape[:-1] + (shape[-1] * 2,))
            w.add_tensor(name, raw, raw_dtype=GT.BF16)
        elif t == QuantType.F16:
            w.add_tensor(name, values.astype(np.float16))
        else:
            w.add_tensor(name, values.astype(t.dtype if isinstance(t, PlainType) else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("alignment", [None, 64])
def test_gguf_py_file_reads_identically_in_kquant(tmp_path, alignment):
    p = tmp_path / "g.gguf"
    gguf_py_file(p, alignment)
    g = gguf.GGUFReader(p)
    with GGUFReader(p) as r:
        assert r.version == 3
        assert r.alignment == (alignment or 32)
        assert list(r.metadata)[0] == "general.architecture"
        assert r.metadata["general.architecture"] == "llama"
        for k, v, t in METADATA:
            assert r.metadata_type(k) == t, k
            f = g.fields[k]
            assert r.metadata[k] == gguf_py_value(f), k
        spec = tensors_spec()
        assert [t.name for t in r.tensors] == [t.name for t in g.tensors]
        for info, gt, (name, shape, t, values) in zip(r.tensors, g.tensors, spec):
            assert isinstance(info, GGUFTensorInfo)
            assert info.name == gt.name == name
            assert info.shape == shape
            assert info.qtype is t
            assert info.nbytes == gt.n_bytes
            assert info.offset == gt.data_offset
            assert info.n_elements == gt.n_elements == int(np.prod(shape))
            raw = r.raw(name)
            assert raw.dtype == np.uint8 and not raw.flags.writeable
            assert raw.tobytes() == np.asarray(gt.data).tobytes() == expected_bytes(t, values)
            deq = r.dequantize(name)
            assert deq.dtype == np.float32 and deq.shape == shape
            if isinstance(t, PlainType):
                with np.errstate(over="ignore"):
                    np.testing.assert_array_equal(deq, values.astype(np.float32))
            elif t.is_float:
                ref = gguf.quants.dequantize(np.asarray(gt.data), GT(int(t))).astype(np.float32).reshape(shape)
                np.testing.assert_array_equal(deq, ref)
            else:
                np.testing.assert_array_equal(deq, kquant.dequantize(values, t).reshape(shape))


def test_copy_through_kquant_is_byte_identical_to_gguf_py(tmp_path):
    src, dst = tmp_path / "g.gguf", tmp_path / "copy.gguf"
    gguf_py_file(src, 64)
    # general.alignment is copied like any key, in its place, and sets the alignment
    with GGUFReader(src) as r, GGUFWriter(dst) as w:
        for k, v in r.metadata.items():
            w.add_metadata(k, v, type=r.metadata_type(k))
        assert w.alignment == 64
        for t in r.tensors:
            w.add_tensor_info(t.name, t.shape, t.qtype)
        for t in r.tensors:
            w.write_tensor(t.name, r.raw(t.name))
    assert dst.read_bytes() == src.read_bytes()


def test_same_file_as_gguf_py_writes(tmp_path):
    # gguf-py writes general.architecture first; written in the same order, the files match.
    a, b = tmp_path / "k.gguf", tmp_path / "g.gguf"
    write_kquant(a)
    gguf_py_file(b)
    assert a.read_bytes() == b.read_bytes()


def test_gguf_py_value_type_enum_is_accepted(tmp_path):
    p = tmp_path / "e.gguf"
    with GGUFWriter(p) as w:
        w.add_metadata("x", 7, type=VT.UINT8)
        w.add_metadata("y", [1, 2], type=VT.INT16)
        w.add_metadata("z", [1.5], type=VT.ARRAY)
    with GGUFReader(p) as r:
        assert r.metadata_types == {"x": "u8", "y": "arr[i16]", "z": "arr[f32]"}


# -- type inference -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, want",
    [
        (True, "bool"),
        (0, "u32"),
        (2**32 - 1, "u32"),
        (-1, "i32"),
        (-(2**31), "i32"),
        (-(2**31) - 1, "i64"),
        (2**32, "u64"),
        (2**64 - 1, "u64"),
        (np.int64(5), "u32"),
        (np.uint8(5), "u32"),
        (0.5, "f32"),
        (np.float64(0.5), "f32"),
        ("s", "str"),
        ([1, 2], "arr[u32]"),
        ([1, -2], "arr[i32]"),
        ([1, -(2**40)], "arr[i64]"),
        ([1, 2**63], "arr[u64]"),
        ([0.5, 1], "arr[f32]"),
        ([True, False], "arr[bool]"),
        (["a", "b"], "arr[str]"),
        (("a",), "arr[str]"),
        (np.array([1, 2], np.int8), "arr[i8]"),
        (np.array([1, 2], np.uint64), "arr[u64]"),
        (np.array([0.5], np.float64), "arr[f64]"),
        (np.array([0.5], np.float32), "arr[f32]"),
        (np.array([True]), "arr[bool]"),
    ],
)
def test_inferred_types(tmp_path, value, want):
    p = tmp_path / "i.gguf"
    with GGUFWriter(p) as w:
        w.add_metadata("k", value)
    with GGUFReader(p) as r:
        assert r.metadata_type("k") == want
        got = r.metadata["k"]
        expect = value.tolist() if isinstance(value, np.ndarray) else list(value) if isinstance(value, tuple) else value
        assert got == expect
    types = gguf.GGUFReader(p).fields["k"].types
    if want.startswith("arr["):
        assert types[0] == VT.ARRAY and TYPE_NAMES[types[-1]] == want[4:-1]
    else:
        assert TYPE_NAMES[types[0]] == want


@pytest.mark.parametrize(
    "value, type, err",
    [
        (256, "u8", ValueError),
        (-1, "u32", ValueError),
        (2**64, None, ValueError),
        (-(2**63) - 1, None, ValueError),
        (1.5, "i32", TypeError),
        (True, "i32", TypeError),
        (1, "bool", TypeError),
        ("1", "u32", TypeError),
        (1, "str", TypeError),
        (1e39, "f32", ValueError),
        ([1e39], None, ValueError),
        ([], None, ValueError),
        ([1, "a"], None, TypeError),
        ([[1]], None, TypeError),
        ([1, 2], "arr[arr[u8]]", ValueError),
        (1, "arr[u8]", TypeError),
        (1, "u128", ValueError),
        (1, 99, ValueError),
        (b"bytes", None, TypeError),
        (None, None, TypeError),
        ({"a": 1}, None, TypeError),
        ("\udc80", None, ValueError),
        (["ok", "\udc80"], None, ValueError),
        (np.zeros((2, 2)), None, ValueError),
    ],
)
def test_bad_metadata_values(tmp_path, value, type, err):
    with GGUFWriter(tmp_path / "b.gguf") as w:
        with pytest.raises(err):
            w.add_metadata("k", value, type=type)
    # the failed call left nothing behind: the key is still free
    with GGUFReader(tmp_path / "b.gguf") as r:
        assert r.metadata == {}


def test_explicit_types_and_empty_arrays(tmp_path):
    p = tmp_path / "x.gguf"
    with GGUFWriter(p) as w:
        w.add_metadata("empty", [], type="arr[i32]")
        w.add_metadata("f64", 0.1, type="float64")
        w.add_metadata("ints_as_f32", [1, 2], type="f32")
        w.add_metadata("big_f32", 3.4028235e38, type="f32")
    with GGUFReader(p) as r:
        big = float(np.float32(3.4028235e38))
        assert r.metadata == {"empty": [], "f64": 0.1, "ints_as_f32": [1.0, 2.0], "big_f32": big}
        assert r.metadata_types == {"empty": "arr[i32]", "f64": "f64", "ints_as_f32": "arr[f32]", "big_f32": "f32"}


def test_metadata_and_tensor_name_rules(tmp_path):
    with GGUFWriter(tmp_path / "n.gguf") as w:
        w.add_metadata("k", 1)
        with pytest.raises(ValueError, match="duplicate"):
            w.add_metadata("k", 2)
        with pytest.raises(ValueError, match="empty"):
            w.add_metadata("", 2)
        with pytest.raises(ValueError, match="NUL"):
            w.add_metadata("a\0b", 2)
        with pytest.raises(ValueError, match="general.alignment"):
            w.add_metadata("general.alignment", 48, type="u32")
        with pytest.raises(ValueError, match="127"):
            w.add_tensor_info("x" * 128, (32,), "f32")
        with pytest.raises(ValueError, match="block"):
            w.add_tensor_info("t", (2, 100), "q4_k")
        with pytest.raises(ValueError, match="1 to 8 axes"):
            w.add_tensor_info("t", (1,) * 8 + (32,), "q8_0")
        with pytest.raises(ValueError, match="1 to 8 axes"):
            w.add_tensor_info("t", (), "f32")
        with pytest.raises(ValueError, match="unknown"):
            w.add_tensor_info("t", (32,), "q9_9")
        w.add_tensor_info("t", (32,), "f32")
        with pytest.raises(ValueError, match="duplicate"):
            w.add_tensor_info("t", (32,), "f32")
        w.write_tensor("t", np.zeros(32, np.float32))


# -- the writer's tensor data -----------------------------------------------------------


def test_float_conversions_match_ggml(tmp_path):
    x = rng(3).standard_normal((3, 64)).astype(np.float32) * 1000
    p = tmp_path / "f.gguf"
    with GGUFWriter(p) as w:
        for t in ("f32", "f16", "bf16"):
            w.add_tensor_info(t, x.shape, t)
        w.add_tensor_info("f16_from_f64", x.shape, "f16")
        for t in ("f32", "f16", "bf16"):
            w.write_tensor(t, x)
        w.write_tensor("f16_from_f64", x.astype(np.float64))
    with GGUFReader(p) as r:
        for t in ("f32", "f16", "bf16"):
            assert r.raw(t).tobytes() == kquant.quantize(x, t).tobytes()
        assert r.raw("f16_from_f64").tobytes() == x.astype(np.float64).astype(np.float16).tobytes()


def test_non_finite_floats_are_stored(tmp_path):
    x = np.array([np.nan, np.inf, -np.inf, 1e10], np.float32)
    p = tmp_path / "nf.gguf"
    with GGUFWriter(p) as w:
        for t in ("f32", "f16", "bf16"):
            w.add_tensor_info(t, (4,), t)
        for t in ("f32", "f16", "bf16"):
            w.write_tensor(t, x)
    with GGUFReader(p) as r:
        for t in ("f32", "f16", "bf16"):
            y = r.dequantize(t)
            assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf
        assert r.raw("bf16").view("<u2")[0] & 0x40  # NaN made quiet, as ggml does


def test_write_tensor_checks(tmp_path):
    p = tmp_path / "c.gguf"
    with GGUFWriter(p) as w:
        w.add_tensor_info("a", (2, 256), "q4_k")
        w.add_tensor_info("b", (3, 4), "i32")
        w.add_tensor_info("c", (2, 3, 32), "q8_0")
        q = kquant.quantize(rng().standard_normal((2, 256)).astype(np.float32), "q4_k")
        with pytest.raises(ValueError, match="not declared"):
            w.write_tensor("zz", q)
        with pytest.raises(ValueError, match="out of order"):
            w.write_tensor("b", np.zeros((3, 4), np.int32))
        with pytest.raises(ValueError, match="uint8"):
            w.write_tensor("a", q[:1])
        with pytest.raises(ValueError, match="uint8"):
            w.write_tensor("a", q.reshape(4, 72))
        with pytest.raises(TypeError, match="kquant.quantize"):
            w.write_tensor("a", np.zeros((2, 256), np.float32))
        w.write_tensor("a", q)
        with pytest.raises(ValueError, match="already written"):
            w.write_tensor("a", q)
        with pytest.raises(ValueError, match="header was already written"):
            w.add_metadata("late", 1)
        with pytest.raises(ValueError, match="header was already written"):
            w.add_tensor_info("late", (32,), "f32")
        with pytest.raises(ValueError, match="do not fit"):
            w.write_tensor("b", np.full((3, 4), 2**40, np.int64))
        with pytest.raises(TypeError, match="integers"):
            w.write_tensor("b", np.zeros((3, 4), np.float32))
        with pytest.raises(ValueError, match="shape"):
            w.write_tensor("b", np.zeros((4, 3), np.int64))
        w.write_tensor("b", np.arange(12, dtype=np.int64).reshape(3, 4))
        # a 3-D tensor also takes its quantized rows flattened to (rows, row_bytes)
        w.write_tensor("c", kquant.quantize(np.ones((6, 32), np.float32), "q8_0"))
    with GGUFReader(p) as r:
        np.testing.assert_array_equal(r.dequantize("b"), np.arange(12, dtype=np.float32).reshape(3, 4))
        assert r.raw("c").shape == (2, 3, 34)
        np.testing.assert_allclose(r.dequantize("c"), np.ones((2, 3, 32), np.float32), rtol=1e-3)


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    x = rng(5).standard_normal((8, 64)).astype(">f4")[::2]
    q = kquant.quantize(x.astype(np.float32), "q8_0")
    qq = np.zeros((4, 136), np.uint8)
    qq[:, ::2] = q
    p = tmp_path / "nc.gguf"
    with GGUFWriter(p) as w:
        w.add_tensor_info("x", x.shape, "f32")
        w.add_tensor_info("q", x.shape, "q8_0")
        w.write_tensor("x", x)
        w.write_tensor("q", qq[:, ::2])
    with GGUFReader(p) as r:
        np.testing.assert_array_equal(r.dequantize("x"), x.astype(np.float32))
        assert r.raw("q").tobytes() == q.tobytes()


# -- atomicity ---------------------------------------------------------------------------


def test_exception_in_with_leaves_no_file(tmp_path):
    p = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError, match="boom"):
        with GGUFWriter(p) as w:
            w.add_metadata("k", 1)
            w.add_tensor_info("a", (32,), "f32")
            w.add_tensor_info("b", (32,), "f32")
            w.write_tensor("a", np.zeros(32, np.float32))
            # no target yet; at most a named temporary file (none with Linux's O_TMPFILE)
            assert not p.exists() and len(os.listdir(tmp_path)) <= 1
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_missing_tensors_leave_target_untouched(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"previous contents")
    w = GGUFWriter(p)
    w.add_tensor_info("a", (32,), "f32")
    w.add_tensor_info("b", (32,), "f32")
    w.add_tensor_info("c", (32,), "f32")
    w.write_tensor("a", np.zeros(32, np.float32))
    with pytest.raises(ValueError, match=r"'b' and 1 more declared but never written"):
        w.close()
    assert p.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["model.gguf"]
    w.close()  # closing again is a no-op
    with pytest.raises(ValueError, match="closed"):
        w.write_tensor("b", np.zeros(32, np.float32))


def test_with_block_missing_tensor_raises(tmp_path):
    p = tmp_path / "m.gguf"
    with pytest.raises(ValueError, match="never written"):
        with GGUFWriter(p) as w:
            w.add_tensor_info("a", (32,), "f32")
    assert os.listdir(tmp_path) == []


def test_success_replaces_target_and_leaves_no_temp(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"old")
    with GGUFWriter(p) as w:
        w.add_metadata("k", "new")
    assert os.listdir(tmp_path) == ["m.gguf"]
    with GGUFReader(p) as r:
        assert r.metadata == {"k": "new"} and r.tensors == []


def test_abort_and_unclosed_writer(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.abort()
    assert os.listdir(tmp_path) == []
    w = GGUFWriter(tmp_path / "b.gguf")
    with pytest.warns(ResourceWarning):
        del w
        import gc

        gc.collect()
    assert os.listdir(tmp_path) == []


def test_writer_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        GGUFWriter(tmp_path / "no" / "such" / "dir.gguf")
    with pytest.raises(IsADirectoryError):
        GGUFWriter(tmp_path)


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE")
def test_disk_full_is_an_os_error_and_leaves_nothing(tmp_path):
    # A file-size limit makes writes fail with EFBIG, as a full disk fails with ENOSPC.
    script = textwrap.dedent(
        f"""
        import os, resource, signal, numpy as np, kquant
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        p = {str(tmp_path / "big.gguf")!r}
        try:
            with kquant.GGUFWriter(p) as w:
                w.add_tensor_info("t", (1024, 1024), "f32")
                w.write_tensor("t", np.zeros((1024, 1024), np.float32))
        except OSError as e:
            print("OSError", e.errno, "big.gguf" in str(e))
        print(sorted(os.listdir({str(tmp_path)!r})))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "OSError 27 True", out.stdout
    assert lines[1] == "[]"


# -- the reader ---------------------------------------------------------------------------


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        GGUFReader(tmp_path / "missing.gguf")
    with pytest.raises(IsADirectoryError):
        GGUFReader(tmp_path)


def small_file(tmp_path):
    p = tmp_path / "s.gguf"
    with GGUFWriter(p) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("tokens", ["a", "b", "c"])
        w.add_tensor_info("w", (2, 32), "q8_0")
        w.write_tensor("w", kquant.quantize(np.ones((2, 32), np.float32), "q8_0"))
    return p


def expect_invalid(tmp_path, data, match):
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=match) as e:
        GGUFReader(p)
    assert str(e.value).startswith(str(p) + ": ")


def test_malformed_files_name_the_path(tmp_path):
    good = small_file(tmp_path).read_bytes()
    expect_invalid(tmp_path, b"", "truncated")
    expect_invalid(tmp_path, b"GGML" + good[4:], "bad magic")
    expect_invalid(tmp_path, good[:4] + struct.pack("<I", 1) + good[8:], "version 1")
    expect_invalid(tmp_path, good[:4] + struct.pack(">I", 3) + good[8:], "big-endian")
    expect_invalid(tmp_path, good[:8] + struct.pack("<Q", 2**40) + good[16:], "header claims")
    for cut in (7, 20, 40, len(good) // 2, len(good) - 40):
        expect_invalid(tmp_path, good[:cut], "truncated|past the end|header claims")


def test_every_truncation_is_a_value_error(tmp_path):
    good = small_file(tmp_path).read_bytes()
    with GGUFReader(tmp_path / "s.gguf") as r:
        end = r.tensors[-1].offset + r.tensors[-1].nbytes
    p = tmp_path / "cut.gguf"
    for cut in range(end):
        p.write_bytes(good[:cut])
        with pytest.raises(ValueError):
            GGUFReader(p)


def test_tensor_lookup_and_views(tmp_path):
    p = small_file(tmp_path)
    r = GGUFReader(p)
    assert "w" in r and "x" not in r and [t.name for t in r] == ["w"]
    with pytest.raises(KeyError, match=r"no tensor named 'W' .*did you mean 'w'"):
        r.tensor("W")
    with pytest.raises(KeyError, match="tokens"):
        r.metadata_type("token")
    info = r.tensor("w")
    raw = r.raw("w")
    assert raw.shape == info.raw_shape == (2, 34)
    assert raw.tobytes() == p.read_bytes()[info.offset : info.offset + info.nbytes]
    # zero-copy: two views share the mapping
    assert np.shares_memory(raw, r.raw("w"))
    with pytest.raises(ValueError):
        raw[0, 0] = 1
    r.close()
    assert r.closed
    # views taken before closing stay valid; new ones are refused
    assert raw.tobytes() == p.read_bytes()[info.offset : info.offset + info.nbytes]
    with pytest.raises(ValueError, match="closed"):
        r.raw("w")
    assert r.metadata["tokens"] == ["a", "b", "c"]


def test_reader_releases_the_file(tmp_path):
    p = small_file(tmp_path)
    with GGUFReader(p) as r:
        r.dequantize("w")
    os.replace(tmp_path / "s.gguf", tmp_path / "t.gguf")  # would fail on Windows if still mapped
    with pytest.raises(ValueError):
        r.raw("w")


def test_reading_a_big_vocabulary_is_fast(tmp_path):
    # A 270M-parameter model (Gemma 3) has a 262144-token vocabulary: the header, not the
    # weights, dominates opening it. gguf-py takes many seconds on such a header.
    n = 262144
    tokens = [f"tok{i}" for i in range(n)]
    p = tmp_path / "vocab.gguf"
    with GGUFWriter(p) as w:
        w.add_metadata("general.architecture", "gemma3")
        w.add_metadata("tokenizer.ggml.tokens", tokens)
        w.add_metadata("tokenizer.ggml.scores", np.linspace(-1, 0, n, dtype=np.float32))
        w.add_metadata("tokenizer.ggml.token_type", np.ones(n, np.int32))
        for i in range(200):
            w.add_tensor_info(f"blk.{i}.w", (4, 256), "q4_k")
        for i in range(200):
            w.write_tensor(f"blk.{i}.w", np.zeros((4, 144), np.uint8))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        with GGUFReader(p) as r:
            assert len(r.metadata["tokenizer.ggml.tokens"]) == n
        best = min(best, time.perf_counter() - t0)
    assert r.metadata["tokenizer.ggml.tokens"][-1] == f"tok{n - 1}"
    assert r.metadata_type("tokenizer.ggml.token_type") == "arr[i32]"
    assert best < 1.0, f"opening took {best:.3f} s"


def test_plain_type_parsing():
    from kquant.gguf import _tensor_type

    assert _tensor_type("i32") is PlainType.I32
    assert _tensor_type(28) is PlainType.F64
    assert _tensor_type("q4_k") is QuantType.Q4_K
    assert _tensor_type(QuantType.F16) is QuantType.F16
    assert PlainType.I16.dtype == np.dtype("<i2") and PlainType.I16.type_size == 2
    with pytest.raises(ValueError):
        _tensor_type(31)  # Q4_0_4_4: removed from ggml
    with pytest.raises(TypeError):
        _tensor_type(1.0)
