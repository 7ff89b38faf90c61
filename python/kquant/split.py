"""Split GGUF sets: llama.cpp's gguf-split layout, read as one model and written part by part.

A large model is published as ``name-00001-of-00004.gguf`` ... ``name-00004-of-00004.gguf``.
Every part is a complete GGUF file holding some of the tensors; each carries ``split.no``
(u16, 0-based), ``split.count`` (u16) and ``split.tensors.count`` (i32, the whole model's
tensor count). The first part also holds all the model's metadata; the others hold only
the split keys. llama.cpp finds the other parts by name, so the names matter.

Reading: :class:`kquant.GGUFReader` given the first part calls :func:`join_parts`.
Writing: :func:`assign_parts` decides which output part each tensor goes to (like the input,
or by a size limit) and :func:`part_paths` names the parts.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

SPLIT_NO = "split.no"
SPLIT_COUNT = "split.count"
SPLIT_TENSORS_COUNT = "split.tensors.count"
SPLIT_KEYS = (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT)

_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

__all__ = ["SPLIT_KEYS", "assign_parts", "join_parts", "parse_split_name", "part_paths", "split_name", "split_prefix"]


def split_name(prefix: str, index: int, count: int) -> str:
    """llama.cpp's name of part `index` (0-based) of `count`: ``PREFIX-0000k-of-0000n.gguf``."""
    return f"{prefix}-{index + 1:05d}-of-{count:05d}.gguf"


def parse_split_name(path: str) -> Optional[Tuple[str, int, int]]:
    """(prefix, 0-based part, count) when `path` is named like a part of a split set."""
    m = _NAME.match(os.fspath(path))
    if not m:
        return None
    return m.group("prefix"), int(m.group("no")) - 1, int(m.group("count"))


def split_prefix(path: str) -> str:
    """The name a set is known by: the path without ``-0000k-of-0000n.gguf`` or ``.gguf``."""
    p = os.fspath(path)
    parsed = parse_split_name(p)
    if parsed is not None:
        return parsed[0]
    return p[: -len(".gguf")] if p.endswith(".gguf") else p


def _int_key(meta: Dict[str, Any], key: str, path: str) -> Optional[int]:
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{path}: {key} must be an integer, not {v!r}")
    return v


def join_parts(reader: Any) -> None:
    """Makes `reader` (opened on the first part of a split set) read the whole set: opens
    the other parts and appends their tensors. ValueError for a missing or mismatched part."""
    from .gguf import GGUFReader

    first = reader.path
    meta = reader.metadata
    count = _int_key(meta, SPLIT_COUNT, first)
    no = _int_key(meta, SPLIT_NO, first)
    total = _int_key(meta, SPLIT_TENSORS_COUNT, first)
    if count is None or count < 1:
        raise ValueError(f"{first}: {SPLIT_COUNT} is {count!r}; a split set has at least one part")
    if no is None:
        raise ValueError(f"{first}: has {SPLIT_COUNT} but no {SPLIT_NO}; not a valid split part")
    parsed = parse_split_name(first)
    if no != 0:
        hint = f" ({split_name(parsed[0], 0, count)})" if parsed else ""
        raise ValueError(
            f"{first} is part {no + 1} of {count} of a split model: open the first part{hint} to read the whole "
            "model, or pass join_split=False to GGUFReader to read this part alone"
        )
    if count > 1:
        if parsed is None:
            raise ValueError(
                f"{first} is the first of {count} parts, but its name does not end in -00001-of-{count:05d}.gguf, "
                "so the other parts cannot be found"
            )
        prefix, _, named_count = parsed
        if named_count != count:
            raise ValueError(f"{first}: named as one of {named_count} parts, but {SPLIT_COUNT} says {count}")
        for k in range(1, count):
            path = split_name(prefix, k, count)
            if not os.path.exists(path):
                raise ValueError(f"{first}: part {k + 1} of {count} of the split model is missing: {path}")
            part = GGUFReader(path, join_split=False)
            reader._parts.append(part)
            reader.paths.append(path)
            pm = part.metadata
            got = (_int_key(pm, SPLIT_NO, path), _int_key(pm, SPLIT_COUNT, path))
            if got != (k, count):
                raise ValueError(
                    f"{path}: expected part {k + 1} of {count} of {first}, but its split keys say "
                    f"{SPLIT_NO}={got[0]}, {SPLIT_COUNT}={got[1]}: a part of another set?"
                )
            part_total = _int_key(pm, SPLIT_TENSORS_COUNT, path)
            if part_total != total:
                raise ValueError(
                    f"{path}: {SPLIT_TENSORS_COUNT} is {part_total}, but {first} says {total}: a part of another set?"
                )
            for t in part.tensors:
                if t.name in reader._index:
                    raise ValueError(f"{path}: tensor {t.name!r} is also in an earlier part of the split model")
                reader._index[t.name] = len(reader.tensors)
                reader.tensors.append(_with_part(t, k))
    if total is not None and total != len(reader.tensors):
        raise ValueError(
            f"{first}: the split model should have {total} tensors ({SPLIT_TENSORS_COUNT}), "
            f"its {count} part(s) hold {len(reader.tensors)}"
        )


def _with_part(info: Any, part: int) -> Any:
    import dataclasses

    return dataclasses.replace(info, part=part)


def assign_parts(
    nbytes: Sequence[int],
    *,
    input_parts: Optional[Sequence[int]] = None,
    max_size: Optional[int] = None,
    alignment: int = 32,
) -> List[int]:
    """The output part of each tensor, in file order.

    ``input_parts``: keep each tensor in the part it came from (``--keep-split``).
    ``max_size``: start a new part when the next tensor's data (padded to the alignment)
    would take the current part's tensor data beyond ``max_size`` bytes, as gguf-split
    ``--split-max-size`` does; metadata is not counted, and a tensor larger than the limit
    gets a part of its own.
    """
    if input_parts is not None:
        return list(input_parts)
    if max_size is None:
        return [0] * len(nbytes)
    if max_size < 1:
        raise ValueError(f"the split size must be positive, got {max_size}")
    out: List[int] = []
    part, used = 0, 0
    for n in nbytes:
        padded = -(-int(n) // alignment) * alignment
        if used and used + padded > max_size:
            part, used = part + 1, 0
        used += padded
        out.append(part)
    return out


def part_paths(output: str, count: int) -> List[str]:
    """Where the parts of an output go: `output` itself for one part, else llama.cpp's names
    built from `output` without ``.gguf`` (or without an ``-00001-of-0000n.gguf`` it has)."""
    if count <= 1:
        return [os.fspath(output)]
    prefix = split_prefix(output)
    return [split_name(prefix, k, count) for k in range(count)]
