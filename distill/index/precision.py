# ruff: noqa: E741  (faiss names: D scores, I ids)
"""How an index scores and stores vectors: the metric (cos or dot) and the precision of its codes.

- ``float32``: the prefixes as they are, 4 bytes a dim.
- ``int8``: FAISS scalar quantization (``QT_8bit``), one byte a dim. Its calibration, each dim's
  min and max over the indexed vectors, is trained on the vectors of the build and saved inside the
  FAISS file; an ``add`` keeps it (values outside the range are clipped). Queries stay float.
- ``binary``: one sign bit a dim (``x > 0``), Hamming search with FAISS binary indexes. FAISS packs
  bits by bytes, so a d-dim prefix takes ``ceil(d / 8)`` bytes: the padding bits are zero in every
  code and query, so they never count. Hamming distance ``h`` is reported as the sign agreement
  ``1 - 2 h / d`` (the cosine of the two sign vectors), so that higher is better at every precision.
"""

from __future__ import annotations

from enum import Enum

import faiss
import numpy as np

from distill.index.ivf import is_fastscan, search_unique


class Metric(str, Enum):
    COS = "cos"  # prefixes re-normalized to unit length, inner product: cosine similarity
    DOT = "dot"  # raw prefixes, inner product: for students whose norms carry meaning


class Precision(str, Enum):
    FLOAT32 = "float32"
    INT8 = "int8"  # per-dim min/max scalar quantization
    BINARY = "binary"  # sign bits, Hamming distance


def bytes_per_vector(d: int, precision: Precision | str) -> int:
    """Bytes of one stored code of a ``d``-dim prefix (graph links and ids not counted)."""
    precision = Precision(precision)
    return 4 * d if precision is Precision.FLOAT32 else d if precision is Precision.INT8 else -(-d // 8)


def binary_codes(x: np.ndarray) -> np.ndarray:
    """Sign bits of ``x`` (N, d) packed into (N, ceil(d / 8)) uint8, padded with zero bits."""
    bits = np.asarray(x) > 0  # (N, d)
    pad = -bits.shape[1] % 8
    if pad:
        bits = np.concatenate([bits, np.zeros((len(bits), pad), dtype=bool)], axis=1)
    return np.packbits(bits, axis=1)


def index_search(index: faiss.Index | faiss.IndexBinary, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search a float or binary index with float queries ``x`` (nq, d), prepared for its metric.

    Returns D (nq, k) scores, higher is better (binary: sign agreement), and I (nq, k) ids (-1: none).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if isinstance(index, faiss.IndexBinary):
        D, I = index.search(binary_codes(x), k)
        return (1.0 - 2.0 * D.astype(np.float32) / x.shape[1]).astype(np.float32), I
    if is_fastscan(index):  # ivfpq keeps a vector in two lists: each id once
        return search_unique(index, x, k)
    return index.search(x, k)
