# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Nearest-neighbour search on numpy arrays: exact kNN, recall, and funnel (Matryoshka) search.

Functions take and return numpy arrays with the faiss-contrib names: ``xb`` database vectors,
``xq`` queries, ``k`` neighbours, ``d`` a prefix size, ``D`` scores and ``I`` ids (-1: no result).
With the ``cos`` metric (the default) vectors are L2-normalized, so inner product is cosine
similarity; with ``dot`` the raw prefixes are compared.
"""

from __future__ import annotations

import faiss
import numpy as np

from distill.index.precision import Metric, index_search
from distill.vectors import normalize

_RERANK_CHUNK = 256  # queries per re-ranking step: bounds the (q, shortlist, d) gather in memory


def normalize_prefix(x: np.ndarray, d: int | None = None) -> np.ndarray:
    """The first ``d`` dims of each row, re-normalized to unit length: (N, d) float32."""
    return normalize(np.ascontiguousarray(x[:, :d], dtype=np.float32))


def prefix(x: np.ndarray, d: int | None, metric: Metric | str = Metric.COS) -> np.ndarray:
    """The ``d``-dim prefixes of ``x`` as an index of ``metric`` compares them: (N, d) float32."""
    if Metric(metric) is Metric.COS:
        return normalize_prefix(x, d)
    return np.ascontiguousarray(np.asarray(x)[:, :d], dtype=np.float32)


def knn(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product kNN of ``xq`` in ``xb`` (IndexFlatIP): D, I of shape (nq, k)."""
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype=np.float32))
    return index.search(np.ascontiguousarray(xq, dtype=np.float32), k)


def knn_blocks(xq: np.ndarray, xb, k: int, block: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` over a database read ``block`` rows at a time (a memory map, chunked vectors): never all in RAM."""
    from faiss.contrib.exhaustive_search import knn_ground_truth

    blocks = (np.ascontiguousarray(xb[s:s + block], dtype=np.float32) for s in range(0, len(xb), block))
    return knn_ground_truth(np.ascontiguousarray(xq, dtype=np.float32), blocks, k, faiss.METRIC_INNER_PRODUCT,
                            ngpu=0)


def self_knn(xb: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other rows of each row of ``xb`` (itself excluded): I of shape (N, k)."""
    _, I = knn(xb, xb, k + 1)
    return drop_self(I, k)


def drop_self(I: np.ndarray, k: int) -> np.ndarray:
    """From the k + 1 neighbours ``I`` (N, k + 1) of each database row searched for itself, the k others."""
    rows = np.arange(len(I))[:, None]
    # the row itself is usually first, but ties (duplicates) can put it elsewhere or push it out
    keep = I != rows
    out = np.empty((len(I), k), dtype=np.int64)
    for i in range(len(I)):
        out[i] = I[i][keep[i]][:k]
    return out


def recall_at_k(I_true: np.ndarray, I: np.ndarray, k: int | None = None) -> float:
    """Mean fraction of the true top-k ids found in the top-k of ``I`` (order ignored)."""
    k = k or I_true.shape[1]
    hits = (I[:, :k, None] == I_true[:, None, :k]) & (I_true[:, None, :k] >= 0)
    return float(hits.any(axis=2).sum() / (len(I_true) * k))


def rerank(xq: np.ndarray, xb: np.ndarray, I0: np.ndarray, k: int, d: int, metric: Metric | str = Metric.COS
           ) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ids ``I0`` (nq, s) with the ``d``-dim prefixes of ``xb`` and keep the best k.

    :param xq: queries of at least ``d`` dims (re-normalized at ``d`` here for ``cos``).
    :param xb: database vectors of at least ``d`` dims, as stored (any array-like indexable by rows).
    """
    cos = Metric(metric) is Metric.COS
    nq, s = I0.shape
    k_out = min(k, s)
    D = np.full((nq, k), -np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    q = prefix(xq, d, metric)
    for start in range(0, nq, _RERANK_CHUNK):
        cand = I0[start:start + _RERANK_CHUNK]  # (c, s)
        valid = cand >= 0
        xc = np.asarray(xb[np.where(valid, cand, 0).ravel(), :d], dtype=np.float32).reshape(*cand.shape, d)
        scores = np.einsum("csd,cd->cs", xc, q[start:start + _RERANK_CHUNK])  # (c, s)
        if cos and d < xb.shape[1]:  # stored rows are unit length at full width only: re-normalize their prefixes
            scores /= np.sqrt(np.maximum(np.einsum("csd,csd->cs", xc, xc), 1e-24))
        scores[~valid] = -np.inf
        if k_out < s:
            top = np.argpartition(-scores, k_out - 1, axis=1)[:, :k_out]
        else:
            top = np.tile(np.arange(s), (len(cand), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        D[start:start + len(cand), :k_out] = np.take_along_axis(scores, top, axis=1)
        ids = np.take_along_axis(cand, top, axis=1)
        I[start:start + len(cand), :k_out] = np.where(np.isfinite(D[start:start + len(cand), :k_out]), ids, -1)
    return D, I


def funnel_search(index_small: faiss.Index, xb: np.ndarray, xq: np.ndarray, k: int, d_small: int, d_large: int,
                  shortlist: int, metric: Metric | str = Metric.COS) -> tuple[np.ndarray, np.ndarray]:
    """Matryoshka retrieval: shortlist with the ``d_small`` prefix index, re-rank at ``d_large`` dims.

    :param index_small: a faiss index (any precision) over the ``d_small``-dim prefixes of ``xb``.
    :param xb: the stored database vectors, at least ``d_large`` dims wide.
    :param xq: queries, at least ``d_large`` dims wide.
    :param shortlist: how many candidates the small prefix keeps (at least ``k``).
    """
    shortlist = max(shortlist, k)
    _, I0 = index_search(index_small, prefix(xq, d_small, metric), shortlist)
    return rerank(xq, xb, I0, k, d_large, metric)
