"""IVF-PQ for tens of millions of vectors: 4-bit fast-scan codes, spilled assignments, rescoring.

What the measurement on real student vectors showed (bench/index_scale.py, BENCHMARKS "Index past a
million"): the recall of an IVF index is capped by its partition, not by its codes. Text embeddings
are poorly clustered, so a vector's true neighbours often sit in lists the query does not probe (at
1M, nlist 4096, the probed lists held 0.905 of the true top-10 at nprobe 128). Three things fix it:

- **spilling** (SOAR, Sun et al. 2023): each vector is stored in a second list as well, the one that
  minimises ``||x - c||^2 + lam * <r, x - c>^2 / ||r||^2`` (``r`` its residual to the first centroid)
  among its nearest centroids, so the second list covers the directions the first one misses
  (coverage 0.967 at nprobe 128, plain second-nearest 0.955);
- **fast-scan PQ** (4-bit codes scanned in SIMD registers): scanning is several times faster than
  8-bit PQ, which pays for the doubled lists and a wider probe;
- **rescoring** the shortlist on the stored float vectors (memory-mapped, read where needed), so the
  coarse 4-bit distances only choose candidates and the returned scores are exact.

FAISS's fast-scan ``add_core`` does not accept precomputed assignments (it corrupts the heap in
faiss 1.15), so the lists are filled here: codes of every vector first, then each list written once
with codes packed in FAISS's block layout (:func:`fill_lists`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

BLOCK = 131_072  # vectors assigned and encoded at a time
SPILL_CANDIDATES = 8  # nearest centroids the second list is chosen among
SPILL_LAMBDA = 1.0  # SOAR's weight on the residual-parallel error


def default_nlist(n: int, per_list: int = 40) -> int:
    """Inverted lists for ``n`` vectors: 4 sqrt(n) rounded down to a power of two (2,048 at 1M, 8,192 at 10M), with
    at least ``per_list`` vectors per list to train k-means on. More lists scan less per query but cost more to
    build (every vector is compared with every centroid): 8,192 at 10M kept recall@10 0.987 at nprobe 64."""
    nlist = 2 ** math.floor(math.log2(max(4 * math.sqrt(n), 1)))
    while nlist > 1 and nlist * per_list > n:
        nlist //= 2
    return nlist


def fastscan_subquantizers(d: int) -> int:
    """4-bit sub-quantizers for ``d`` dims: one per 2 dims (d/2 bytes per code), an even count."""
    m = max(2, d // 2)
    return m + (m % 2)


def new_ivf(d: int, nlist: int, m: int) -> faiss.IndexIVFPQFastScan:
    """An untrained inner-product IVF index with ``m`` 4-bit fast-scan sub-quantizers, coding residuals."""
    index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(d), d, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
    index.by_residual = True  # codes of the residual to the list's centroid: recall@10 0.947 vs 0.908 raw (100k)
    return index


def spill_assign(quantizer: faiss.Index, centroids: np.ndarray, x: np.ndarray, lam: float = SPILL_LAMBDA,
                 piece: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest list and its SOAR second list: two (n,) int64 arrays (``piece`` rows at a time: the
    candidates' differences are (piece, candidates, d) floats)."""
    _, A = quantizer.search(x, min(SPILL_CANDIDATES, len(centroids)))
    first = A[:, 0]
    if A.shape[1] < 2:
        return first, first
    second = np.empty_like(first)
    for s in range(0, len(x), piece):
        xs, a = x[s:s + piece], A[s:s + piece]
        r = xs - centroids[a[:, 0]]
        r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
        diff = xs[:, None, :] - centroids[a[:, 1:]]  # (piece, c - 1, d)
        cost = np.einsum("ncd,ncd->nc", diff, diff) + lam * np.einsum("nd,ncd->nc", r, diff) ** 2
        second[s:s + piece] = a[np.arange(len(a)), 1 + cost.argmin(axis=1)]
    return first, second


def _pack(packer: faiss.CodePacker, codes: np.ndarray) -> np.ndarray:
    """Flat codes (n, code_size) in the block layout of an inverted list, zero-padded to whole blocks."""
    nvec, n = packer.nvec, len(codes)
    n_blocks = -(-n // nvec)
    flat = np.zeros((n_blocks * nvec, codes.shape[1]), dtype=np.uint8)
    flat[:n] = codes
    out = np.empty(n_blocks * packer.block_size, dtype=np.uint8)
    for b in range(n_blocks):
        packer.pack_all(faiss.swig_ptr(flat[b * nvec:]), faiss.swig_ptr(out[b * packer.block_size:]))
    return out


def fill_lists(index: faiss.IndexIVFPQFastScan, block: Callable[[int, int], np.ndarray], n: int,
               spill: bool = True, first_id: int = 0, progress: bool = False) -> None:
    """Fill an empty trained ``index`` with ``n`` vectors, ids ``first_id`` on.

    :param block: ``block(start, stop)`` -> rows start..stop-1 as the index compares them, float32.
    :param spill: store each vector in its SOAR second list too (2n entries).
    """
    from tqdm.auto import tqdm

    if index.ntotal:
        raise ValueError("fill_lists fills an empty index; extend one with add_with_ids")
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    spill = spill and index.nlist > 1
    k = 2 if spill else 1
    codes = np.empty((k, n, index.code_size), dtype=np.uint8)  # codes of residuals to each list's centroid
    lists = np.empty((k, n), dtype=np.int32)
    for start in tqdm(range(0, n, BLOCK), desc=f"assigning {index.d}-d", unit="block", disable=not progress):
        x = np.ascontiguousarray(block(start, min(start + BLOCK, n)), dtype=np.float32)
        assigned = spill_assign(index.quantizer, centroids, x) if spill else (index.quantizer.assign(x, 1)[:, 0],)
        for j, a in enumerate(assigned):
            lists[j, start:start + len(x)] = a
            codes[j, start:start + len(x)] = index.pq.compute_codes(x - centroids[a])
    entries, codes = lists.ravel(), codes.reshape(k * n, -1)  # entry e: row e % n in its list lists[e // n]
    order = np.argsort(entries, kind="stable")
    bounds = np.flatnonzero(np.diff(entries[order])) + 1
    packer = index.get_CodePacker()
    for group in np.split(order, bounds):
        ids = np.ascontiguousarray(group % n + first_id, dtype=np.int64)
        packed = _pack(packer, codes[group])
        # one add per list, into an empty list: the one path of BlockInvertedLists.add_entries that copies whole blocks
        index.invlists.add_entries(int(entries[group[0]]), len(group), faiss.swig_ptr(ids), faiss.swig_ptr(packed))
        index.ntotal += len(group)


def train_ivf(sample: np.ndarray, nlist: int, m: int, seed: int = 0) -> faiss.IndexIVFPQFastScan:
    """A trained, empty :func:`new_ivf` index: k-means lists and 4-bit codebooks on ``sample`` (n, d)."""
    index = new_ivf(sample.shape[1], nlist, m)
    index.cp.seed = seed
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def is_fastscan(index) -> bool:
    return isinstance(index, faiss.IndexIVFFastScan)


def holds(index, count: int) -> bool:
    """Whether ``index`` can hold ``count`` vectors: a spilled IVF index counts up to two entries per vector."""
    return count <= index.ntotal <= 2 * count if is_fastscan(index) else index.ntotal == count


def search_unique(index: faiss.IndexIVFFastScan, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` of a spilled index, each id once: 2k are asked for (a vector can come from both its
    lists), the first k distinct ones kept (-1 and -inf pad a row with fewer)."""
    D, I = index.search(x, 2 * k)
    order = np.argsort(I, axis=1, kind="stable")  # equal ids side by side, the better-ranked first
    sorted_ids = np.take_along_axis(I, order, axis=1)
    dup_sorted = np.zeros_like(I, dtype=bool)
    dup_sorted[:, 1:] = (sorted_ids[:, 1:] == sorted_ids[:, :-1]) | (sorted_ids[:, 1:] < 0)
    dup_sorted[:, 0] = sorted_ids[:, 0] < 0
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    keep = np.argsort(dup, axis=1, kind="stable")[:, :k]  # positions of the first k distinct ids, in rank order
    D, I, gone = (np.take_along_axis(a, keep, axis=1) for a in (D, I, dup))
    return np.where(gone, -np.inf, D).astype(np.float32), np.where(gone, -1, I)


def extend_index(index, x: np.ndarray, first_id: int) -> None:
    """Append ``x`` to any distill index under ids ``first_id`` on (an ``add``).

    A spilled IVF index counts entries, not vectors, in ``ntotal``: its new vectors get explicit ids
    (and one list each; spilling is a build-time choice).
    """
    if is_fastscan(index):
        index.add_with_ids(x, np.arange(first_id, first_id + len(x), dtype=np.int64))
    else:
        index.add(x)
