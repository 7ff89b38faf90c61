"""load_imatrix: both of llama.cpp's importance-matrix formats, written here the way
llama-imatrix lays them out, read back as llama-quantize reads them; malformed files refused."""

import struct

import numpy as np
import pytest

import kquant
from kquant import GGUFReader, GGUFWriter, load_imatrix

CHUNK_SIZE = 512


def rng(seed=0):
    return np.random.default_rng(seed)


class Stats:
    """What llama-imatrix accumulates for one weight: sums of squared activations per
    column and matrix, and how many activations each matrix saw."""

    def __init__(self, sums, counts, in_sum=None):
        self.sums = np.asarray(sums, np.float32)  # (n_mat, n)
        self.counts = np.asarray(counts, np.int64)  # (n_mat,)
        self.in_sum = None if in_sum is None else np.asarray(in_sum, np.float32)


def sample_stats():
    g = rng(7)
    return {
        "blk.0.attn_q.weight": Stats(g.random((1, 64)) * 100, [1024]),
        "blk.0.ffn_down_exps.weight": Stats(g.random((4, 32)) * 10, [600, 0, 300, 1500], g.standard_normal((4, 32))),
        "output.weight": Stats(g.random((1, 32)), [2048]),
    }


def write_legacy(path, stats, last_chunk=None, dataset=None):
    """llama-imatrix's save_imatrix_legacy: names sorted, values stored as the average
    times ncall (so the reader divides by ncall), experts that saw nothing stored as 1."""
    out = bytearray(struct.pack("<i", len(stats)))
    for name in sorted(stats):
        s = stats[name]
        ncall = int((s.counts.max() + CHUNK_SIZE - 1) // CHUNK_SIZE)
        n = s.sums.shape[1]
        vals = np.empty_like(s.sums)
        for j, c in enumerate(s.counts):
            vals[j] = np.float32(1.0) if c == 0 else s.sums[j] / np.float32(c)
        vals = (vals * np.float32(ncall)).astype("<f4")
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, vals.size) + vals.tobytes()
        assert vals.size == n * len(s.counts)
    if last_chunk is not None:
        ds = dataset.encode()
        out += struct.pack("<ii", last_chunk, len(ds)) + ds
    path.write_bytes(bytes(out))


def legacy_expected(stats):
    want = {}
    for name, s in stats.items():
        ncall = np.float32((s.counts.max() + CHUNK_SIZE - 1) // CHUNK_SIZE)
        vals = np.where(s.counts[:, None] == 0, np.float32(1), s.sums / s.counts[:, None].clip(1).astype(np.float32))
        want[name] = ((vals.astype(np.float32) * ncall).astype(np.float32) / ncall).reshape(-1)
    return want


def write_gguf(path, stats, datasets=("calib.txt",), chunk_count=10, metadata=True):
    """llama-imatrix's save_imatrix: general.type, the three imatrix keys, then per weight
    in sorted order <name>.in_sum2 ([n, n_mat], 1-D when n_mat is 1 as ggml drops unit
    trailing dims), <name>.counts ([1, n_mat]) and, when collected, <name>.in_sum."""
    with GGUFWriter(path) as w:
        w.add_metadata("general.type", "imatrix")
        if metadata:
            w.add_metadata("imatrix.datasets", list(datasets), type="arr[str]")
            w.add_metadata("imatrix.chunk_count", chunk_count, type="u32")
            w.add_metadata("imatrix.chunk_size", CHUNK_SIZE, type="u32")
        data = []
        for name in sorted(stats):
            s = stats[name]
            n_mat, n = s.sums.shape
            shape = (n,) if n_mat == 1 else (n_mat, n)
            cshape = (1,) if n_mat == 1 else (n_mat, 1)
            w.add_tensor_info(f"{name}.in_sum2", shape, "f32")
            w.add_tensor_info(f"{name}.counts", cshape, "f32")
            data.append((f"{name}.in_sum2", s.sums.reshape(shape)))
            data.append((f"{name}.counts", s.counts.astype(np.float32).reshape(cshape)))
            if s.in_sum is not None:
                w.add_tensor_info(f"{name}.in_sum", shape, "f32")
                data.append((f"{name}.in_sum", s.in_sum.reshape(shape)))
        for name, a in data:
            w.write_tensor(name, a)


def gguf_expected(s):
    c = s.counts.astype(np.float32)[:, None]
    v = np.where(c > 0, s.sums / np.where(c > 0, c, 1), np.float32(1)).astype(np.float32)
    return v[0] if v.shape[0] == 1 else v


def test_legacy_format(tmp_path):
    stats = sample_stats()
    p = tmp_path / "imatrix.dat"
    write_legacy(p, stats, last_chunk=12, dataset="wiki.train.raw")
    m = load_imatrix(p)
    assert m.format == "dat"
    assert list(m) == sorted(stats) and len(m) == 3
    for name, want in legacy_expected(stats).items():
        assert m[name].dtype == np.float32 and m[name].shape == want.shape
        np.testing.assert_array_equal(m[name], want)
        assert m.counts[name].tolist() == [float((stats[name].counts.max() + CHUNK_SIZE - 1) // CHUNK_SIZE)]
    assert m.datasets == ["wiki.train.raw"]
    assert m.chunk_count == 12 and m.chunk_size is None
    assert m.activations == {}
    assert "nope" not in m
    with pytest.raises(KeyError, match="nope"):
        m["nope"]


def test_legacy_without_trailer(tmp_path):
    p = tmp_path / "old.dat"
    write_legacy(p, {"w": Stats([[2.0, 4.0]], [512])})
    m = load_imatrix(p)
    assert m.datasets == [] and m.chunk_count == 0
    np.testing.assert_array_equal(m["w"], [2 / 512, 4 / 512])


def test_gguf_format(tmp_path):
    stats = sample_stats()
    p = tmp_path / "imatrix.gguf"
    write_gguf(p, stats, datasets=("a.txt", "b.txt"), chunk_count=77)
    m = load_imatrix(p)
    assert m.format == "gguf"
    assert m.datasets == ["a.txt", "b.txt"]
    assert m.chunk_count == 77 and m.chunk_size == CHUNK_SIZE
    assert sorted(m) == sorted(stats)
    for name, s in stats.items():
        np.testing.assert_array_equal(m[name], gguf_expected(s))
        assert m.counts[name].tolist() == s.counts.astype(float).tolist()
    experts = m["blk.0.ffn_down_exps.weight"]
    assert experts.shape == (4, 32)
    assert (experts[1] == 1).all()  # the expert that saw no tokens
    act = m.activations["blk.0.ffn_down_exps.weight"]
    s = stats["blk.0.ffn_down_exps.weight"]
    np.testing.assert_array_equal(act[0], s.in_sum[0] / np.float32(600))
    assert (act[1] == 0).all()
    assert set(m.activations) == {"blk.0.ffn_down_exps.weight"}


def test_gguf_written_by_gguf_py(tmp_path):
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "imatrix.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["d.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    # (1, n) NumPy arrays become ggml [n, 1]: two dimensions where ggml itself writes one
    w.add_tensor("w.in_sum2", np.array([[3.0, 6.0, 9.0]], np.float32))
    w.add_tensor("w.counts", np.array([[3.0]], np.float32))
    w.add_tensor("unrelated.weight", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    m = load_imatrix(p)
    assert list(m) == ["w"]
    np.testing.assert_array_equal(m["w"], [1.0, 2.0, 3.0])


def test_for_tensor_shapes_like_llama_quantize(tmp_path):
    stats = sample_stats()
    for fmt, write in (("gguf", write_gguf), ("dat", write_legacy)):
        p = tmp_path / f"m.{fmt}"
        write(p, stats)
        m = load_imatrix(p)
        assert m.for_tensor("blk.0.attn_q.weight", (128, 64)).shape == (64,)
        e = m.for_tensor("blk.0.ffn_down_exps.weight", (4, 16, 32))
        assert e.shape == (4, 32)
        np.testing.assert_array_equal(e.reshape(-1), np.asarray(m["blk.0.ffn_down_exps.weight"]).reshape(-1))
        assert m.for_tensor("not.there", (8, 64)) is None
        with pytest.raises(ValueError, match="another model"):
            m.for_tensor("blk.0.attn_q.weight", (128, 128))
        with pytest.raises(ValueError, match="another model"):
            m.for_tensor("blk.0.ffn_down_exps.weight", (8, 16, 32))


def test_imatrix_drives_quantization(tmp_path):
    p = tmp_path / "m.gguf"
    stats = {"w": Stats(rng(1).random((1, 256)) * 50 + 1, [1000])}
    write_gguf(p, stats)
    m = load_imatrix(p)
    x = rng(2).standard_normal((4, 256)).astype(np.float32)
    imat = m.for_tensor("w", x.shape)
    assert kquant.quantize(x, "q4_k", imatrix=imat).tobytes() == kquant.quantize(x, "q4_k", imatrix=m["w"]).tobytes()


def test_quantize_metadata(tmp_path):
    p = tmp_path / "m.gguf"
    long_name = "é" * 100  # 200 UTF-8 bytes
    write_gguf(p, sample_stats(), datasets=(long_name, "second"), chunk_count=5)
    m = load_imatrix(p)
    md = m.quantize_metadata()
    assert [k for k, _, _ in md] == [
        "quantize.imatrix.file",
        "quantize.imatrix.dataset",
        "quantize.imatrix.entries_count",
        "quantize.imatrix.chunks_count",
    ]
    d = {k: (v, t) for k, v, t in md}
    assert d["quantize.imatrix.file"] == (str(p), "str")
    assert d["quantize.imatrix.dataset"] == ("é" * 63, "str")  # cut to 127 bytes at a character boundary
    assert d["quantize.imatrix.entries_count"] == (3, "u32")
    assert d["quantize.imatrix.chunks_count"] == (5, "u32")
    out = tmp_path / "model.gguf"
    with GGUFWriter(out) as w:
        for k, v, t in md:
            w.add_metadata(k, v, type=t)
    with GGUFReader(out) as r:
        assert r.metadata_type("quantize.imatrix.entries_count") == "u32"
        assert r.metadata["quantize.imatrix.dataset"] == "é" * 63

    q = tmp_path / "nochunks.dat"
    write_legacy(q, {"w": Stats([[1.0]], [1])})
    keys = [k for k, _, _ in load_imatrix(q).quantize_metadata()]
    assert keys == ["quantize.imatrix.file", "quantize.imatrix.entries_count"]


# -- malformed files ------------------------------------------------------------------


def expect_invalid(path, match):
    with pytest.raises(ValueError, match=match) as e:
        load_imatrix(path)
    assert str(e.value).startswith(f"{path}: ")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_imatrix(tmp_path / "missing.dat")
    with pytest.raises(IsADirectoryError):
        load_imatrix(tmp_path)


def test_malformed_legacy(tmp_path):
    p = tmp_path / "bad.dat"
    one = struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 1) + bytes(4)  # one valid entry
    cases = [
        (b"", "truncated"),
        (struct.pack("<i", 0), "entry count"),
        (struct.pack("<i", -1) + bytes(32), "entry count"),
        (struct.pack("<i", 2**31 - 1) + bytes(32), "entry count"),
        (struct.pack("<ii", 1, -5) + bytes(32), "entry name length"),
        (struct.pack("<ii", 1, 2**31 - 1) + bytes(32), "claims"),
        (struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", -1, 1) + bytes(4), "ncall"),
        (struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 0) + bytes(8), "value count"),
        (struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 2**30) + bytes(8), "truncated"),
        (struct.pack("<ii", 1, 1) + b"\0" + struct.pack("<ii", 1, 1) + bytes(4), "NUL"),
        (struct.pack("<ii", 1, 1) + b"\xff" + struct.pack("<ii", 1, 1) + bytes(4), "UTF-8"),
        (one + struct.pack("<ii", -3, 0), "chunk count"),
        (one + struct.pack("<ii", 3, 99), "dataset"),
        (one + struct.pack("<ii", 3, 0) + b"x", "unexpected"),
    ]
    for data, match in cases:
        p.write_bytes(data)
        expect_invalid(p, match)
    write_legacy(p, {"a": Stats([[1.0]], [1]), "b": Stats([[1.0]], [1])})
    p.write_bytes(p.read_bytes().replace(b"\x01\x00\x00\x00b", b"\x01\x00\x00\x00a"))
    expect_invalid(p, "duplicate")


def test_every_legacy_truncation_is_refused(tmp_path):
    full, cut = tmp_path / "full.dat", tmp_path / "cut.dat"
    write_legacy(full, sample_stats(), last_chunk=3, dataset="d")
    data = full.read_bytes()
    end_of_entries = len(data) - 4 - 4 - 1
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        if n == end_of_entries:
            assert len(load_imatrix(cut)) == 3
        else:
            with pytest.raises(ValueError):
                load_imatrix(cut)


def test_malformed_gguf(tmp_path):
    p = tmp_path / "bad.gguf"
    write_gguf(p, sample_stats(), metadata=False)
    expect_invalid(p, "imatrix.datasets.*missing")
    # a model file is not an imatrix
    with GGUFWriter(p) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_tensor_info("tok_embd.weight", (4, 32), "f32")
        w.write_tensor("tok_embd.weight", np.zeros((4, 32), np.float32))
    expect_invalid(p, "missing")
    # in_sum2 without its counts
    with GGUFWriter(p) as w:
        w.add_metadata("imatrix.datasets", ["d"])
        w.add_metadata("imatrix.chunk_count", 1, type="u32")
        w.add_metadata("imatrix.chunk_size", 1, type="u32")
        w.add_tensor_info("w.in_sum2", (8,), "f32")
        w.write_tensor("w.in_sum2", np.ones(8, np.float32))
    expect_invalid(p, "w.counts")
    # counts that do not match the number of matrices
    with GGUFWriter(p) as w:
        w.add_metadata("imatrix.datasets", ["d"])
        w.add_metadata("imatrix.chunk_count", 1, type="u32")
        w.add_metadata("imatrix.chunk_size", 1, type="u32")
        w.add_tensor_info("w.in_sum2", (2, 8), "f32")
        w.add_tensor_info("w.counts", (3, 1), "f32")
        w.write_tensor("w.in_sum2", np.ones((2, 8), np.float32))
        w.write_tensor("w.counts", np.ones((3, 1), np.float32))
    expect_invalid(p, "3 counts but .* has 2 rows")
    # chunk_count stored as i32 rather than u32
    with GGUFWriter(p) as w:
        w.add_metadata("imatrix.datasets", ["d"])
        w.add_metadata("imatrix.chunk_count", 1, type="i32")
        w.add_metadata("imatrix.chunk_size", 1, type="u32")
        w.add_tensor_info("w.in_sum2", (8,), "f32")
        w.add_tensor_info("w.counts", (1,), "f32")
        w.write_tensor("w.in_sum2", np.ones(8, np.float32))
        w.write_tensor("w.counts", np.ones(1, np.float32))
    expect_invalid(p, "u32")
    # truncated GGUF
    write_gguf(p, sample_stats())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    expect_invalid(p, "truncated|past the end")
    p.write_bytes(data[:3])
    expect_invalid(p, "legacy")  # too short to be recognised as GGUF
