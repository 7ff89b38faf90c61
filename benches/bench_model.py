"""Whole-model benchmark: `kquant quantize` against a Python loop of libgguf's quantizer
over the same tensors and types, both with the same thread count, in the same run.

    python benches/bench_model.py [--model PATH] [--type Q4_K_M[,IQ2_XS,...]] [--threads 2]
        [--imatrix PATH|synthetic] [--goal 5] [--title TITLE] [--markdown FILE]

Without --model it writes the synthetic Llama of benches/make_llama.py to
benches/.cache/llama-0.5b-f32.gguf (about 2 GB) once. Peak anonymous memory (RssAnon,
which leaves out the memory-mapped input) is sampled every 20 ms from /proc.

`--imatrix synthetic` writes (once) a llama.cpp legacy-format importance matrix with a
heavy-tailed entry for every weight of the model to benches/.cache, and both sides use it:
`kquant quantize --imatrix` and the libgguf loop, which passes each tensor's entry to
libgguf. After each pair of runs every tensor's bytes are compared. `--goal R` says whether
kquant took at most 1/R of the loop's time. `--breakdown` instead quantizes in this process
and prints, per tensor type of the recipe, the seconds kquant and libgguf spend quantizing
(reading and writing left out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

LIBGGUF_LOOP = r"""
import sys, numpy as np, libgguf, kquant
from kquant.model import plan_model
from kquant.recipes import QuantizeOptions
src, dst, ftype = sys.argv[1:4]
imat = kquant.load_imatrix(sys.argv[4]) if len(sys.argv) > 4 else None
with kquant.GGUFReader(src) as r, open(dst, "wb") as out:
    plan = plan_model(r, ftype, QuantizeOptions(imatrix=set(imat) if imat is not None else False))
    for p in plan:
        if p.quantize:
            x = r.dequantize(p.name)
            w = imat.for_tensor(p.name, x.shape) if imat is not None and p.use_imatrix else None
            if w is not None and w.ndim == 2:  # one importance row per expert, as llama-quantize does
                mats = x.reshape(w.shape[0], -1, x.shape[-1])
                q = np.concatenate([libgguf.quantize_rows(m, int(p.target_type), imatrix=w[e])
                                    for e, m in enumerate(mats)])
            else:
                q = libgguf.quantize_rows(x.reshape(-1, x.shape[-1]), int(p.target_type), imatrix=w)
            out.write(memoryview(np.ascontiguousarray(q)).cast("B"))
        else:
            out.write(memoryview(r.raw(p.name)).cast("B"))
"""


def synthetic_imatrix(model: Path, path: Path) -> Path:
    """A legacy .dat importance matrix (llama-imatrix's old layout: sums over ncall calls)
    with a heavy-tailed entry for every 2-D and 3-D weight of `model`."""
    import struct

    import numpy as np

    import kquant

    if path.exists():
        return path
    rng = np.random.default_rng(11)
    ncall = 4
    tmp = path.with_suffix(".tmp")
    with kquant.GGUFReader(model) as r, open(tmp, "wb") as f:
        weights = [t for t in r.tensors if len(t.shape) >= 2]
        f.write(struct.pack("<i", len(weights)))
        for t in weights:
            n = int(t.shape[-1]) * (int(t.shape[0]) if len(t.shape) == 3 else 1)
            b = t.name.encode()
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, n))
            f.write((rng.lognormal(0.0, 1.0, n).astype(np.float32) * ncall).tobytes())
        f.write(struct.pack("<i", 100))
        ds = b"synthetic"
        f.write(struct.pack("<i", len(ds)) + ds)
    tmp.replace(path)
    return path


def same_bytes(gguf_path: Path, raw_path: Path) -> bool:
    """Whether the GGUF file's tensor data, tensor by tensor, is the raw loop output."""
    import numpy as np

    import kquant

    raw = np.memmap(raw_path, dtype=np.uint8, mode="r")
    off = 0
    with kquant.GGUFReader(gguf_path) as r:
        for t in r.tensors:
            data = np.asarray(r.raw(t.name)).view(np.uint8).reshape(-1)
            if not np.array_equal(data, raw[off:off + data.size]):
                print(f"bytes differ: {t.name}", file=sys.stderr)
                return False
            off += data.size
    return off == raw.size


def run_measured(cmd, env) -> tuple[float, int]:
    """Wall seconds and peak RssAnon bytes of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0

    def sample():
        nonlocal peak
        path = f"/proc/{p.pid}/status"
        while p.poll() is None:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak = max(peak, int(line.split()[1]) * 1024)
            except OSError:
                break
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = p.communicate()
    dt = time.perf_counter() - t0
    th.join()
    if p.returncode:
        raise RuntimeError(f"{cmd[:4]} failed ({p.returncode}):\n{err[-2000:]}")
    return dt, peak


def breakdown(model: Path, ftype: str, imatrix, threads: int) -> list:
    """Per target type: values, kquant seconds, libgguf seconds (quantization only)."""
    from collections import defaultdict

    import numpy as np
    import libgguf

    import kquant
    from kquant.model import plan_model, quantize_model
    from kquant.recipes import QuantizeOptions

    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        rep = quantize_model(model, Path(tmp) / "out.gguf", ftype, imatrix=imatrix, nthreads=threads)
    kq, n, lg = defaultdict(float), defaultdict(int), defaultdict(float)
    for t in rep.tensors:
        if t.target_type != t.source_type:
            kq[t.target_type.name] += t.seconds
            n[t.target_type.name] += int(np.prod(t.shape))
    imat = kquant.load_imatrix(imatrix) if imatrix else None
    with kquant.GGUFReader(model) as r:
        plan = plan_model(r, ftype, QuantizeOptions(imatrix=set(imat) if imat is not None else False))
        for p in plan:
            if not p.quantize:
                continue
            x = r.dequantize(p.name)
            w = imat.for_tensor(p.name, x.shape) if imat is not None and p.use_imatrix else None
            t0 = time.perf_counter()
            libgguf.quantize_rows(x.reshape(-1, x.shape[-1]), int(p.target_type), imatrix=w)
            lg[p.target_type.name] += time.perf_counter() - t0
    return [(k, n[k], kq[k], lg[k]) for k in sorted(kq, key=lambda k: -lg[k])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--markdown", help="append the result table to this file")
    ap.add_argument("--imatrix", help="importance matrix for both sides; 'synthetic' writes one for the model")
    ap.add_argument("--goal", type=float, help="say whether kquant took at most 1/GOAL of the loop's time")
    ap.add_argument("--title", default="Whole model", help="the markdown section's title")
    ap.add_argument("--breakdown", action="store_true", help="per tensor type quantization seconds, in process")
    a = ap.parse_args(argv)
    if a.breakdown:  # before kquant or libgguf is imported here
        os.environ.update(KQUANT_NUM_THREADS=str(a.threads), LIBGGUF_NUM_THREADS=str(a.threads))

    model = Path(a.model) if a.model else HERE / ".cache" / "llama-0.5b-f32.gguf"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {model} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "make_llama.py"), str(model)], check=True)

    env = dict(os.environ, KQUANT_NUM_THREADS=str(a.threads), LIBGGUF_NUM_THREADS=str(a.threads))
    imatrix = None
    if a.imatrix == "synthetic":
        imatrix = synthetic_imatrix(model, model.with_name(model.stem + "-imatrix.dat"))
    elif a.imatrix:
        imatrix = Path(a.imatrix)
    if a.breakdown:
        for ftype in a.type.split(","):
            print(f"{ftype}: tensor type | values | kquant | libgguf | ratio")
            for k, n, s_kq, s_lg in breakdown(model, ftype, imatrix, a.threads):
                print(f"| {k} | {n / 1e6:.1f} M | {s_kq:.1f} s | {s_lg:.1f} s | {s_lg / max(s_kq, 1e-9):.2f}x |")
        return 0
    size = model.stat().st_size
    lines = [f"Model: {model.name} ({size / 2**30:.2f} GiB F32), {a.threads} threads"
             + (f", importance matrix {imatrix.name}" if imatrix else ""), "",
             "| file type | kquant quantize | libgguf loop | ratio | peak anonymous memory (kquant / loop) "
             "| output | same bytes |" + (" goal |" if a.goal else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if a.goal else "")]
    for ftype in a.type.split(","):
        rows = []
        with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
            out = Path(tmp) / "out.gguf"
            extra = ["--imatrix", str(imatrix)] if imatrix else []
            same = True
            for _ in range(a.repeat):
                kq = run_measured([sys.executable, "-m", "kquant", "quantize", str(model), str(out), ftype,
                                   str(a.threads)] + extra, env)
                out_size = out.stat().st_size
                raw = Path(str(out) + ".raw")
                lg = run_measured([sys.executable, "-c", LIBGGUF_LOOP, str(model), str(raw), ftype]
                                  + ([str(imatrix)] if imatrix else []), env)
                same = same and same_bytes(out, raw)
                raw.unlink()
                rows.append((kq, lg, out_size))
        best_kq = min((r[0] for r in rows), key=lambda t: t[0])
        best_lg = min((r[1] for r in rows), key=lambda t: t[0])
        ratio = best_lg[0] / best_kq[0]
        goal = ""
        if a.goal:
            goal = f" {'met' if ratio >= a.goal and same else 'missed'} (needs {a.goal:g}x) |"
        lines.append(
            f"| {ftype} | {best_kq[0]:.1f} s | {best_lg[0]:.1f} s | {ratio:.2f}x | "
            f"{best_kq[1] / 2**20:.0f} / {best_lg[1] / 2**20:.0f} MiB | {rows[0][2] / 2**20:.1f} MiB | "
            f"{'yes' if same else 'NO'} |" + goal
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(f"\n## {a.title}\n\nCommand: `python benches/bench_model.py " + " ".join(argv or sys.argv[1:])
                    + "`\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
