# ruff: noqa: E741  (faiss names: I ids)
"""Comparing two meaning spaces over the same texts, prefix size by prefix size.

Every metric takes two arrays of row-aligned, L2-normalized vectors ``xa`` (N, da) and ``xb`` (N, db)
(the widths may differ) and returns a float; 1.0 means the spaces agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from distill.errors import DistillError
from distill.index.build import IndexType, make_index
from distill.index.precision import Precision, bytes_per_vector, index_search
from distill.index.search import drop_self, normalize_prefix, self_knn


def neighbour_overlap(xa: np.ndarray, xb: np.ndarray, k: int = 10) -> float:
    """Mean |kNN_a(i) ∩ kNN_b(i)| / k over all rows, with exact search and each row itself excluded."""
    return _overlap(self_knn(xa, k), self_knn(xb, k))


def _overlap(Ia: np.ndarray, Ib: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(Ia, Ib, strict=True)]))


def mutual_knn(xa: np.ndarray, xb: np.ndarray, k: int = 10) -> float:
    """Jaccard similarity of the two mutual-kNN graphs.

    An edge (i, j) is mutual when each is among the other's k nearest neighbours; these pairs are the
    tight local structure (near-duplicates, paraphrases) that search and clustering rely on most.
    """
    return _mutual(self_knn(xa, k), self_knn(xb, k))


def _mutual(Ia: np.ndarray, Ib: np.ndarray) -> float:
    ea, eb = _mutual_edges(Ia), _mutual_edges(Ib)
    union = len(ea | eb)
    return float(len(ea & eb) / union) if union else 1.0


def _mutual_edges(I: np.ndarray) -> set[tuple[int, int]]:
    edges = {(i, int(j)) for i, row in enumerate(I) for j in row}
    return {(i, j) for i, j in edges if i < j and (j, i) in edges}


def pairwise_spearman(xa: np.ndarray, xb: np.ndarray, n_pairs: int = 20_000, seed: int = 0) -> float:
    """Spearman correlation of the cosine similarities of ``n_pairs`` random pairs (i != j) in both spaces."""
    from scipy.stats import spearmanr  # here: scipy.stats takes ~1 s to import, and searching needs none of it

    n = len(xa)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # never i itself
    sa = np.einsum("nd,nd->n", xa[i], xa[j])
    sb = np.einsum("nd,nd->n", xb[i], xb[j])
    rho = spearmanr(sa, sb).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def linear_cka(xa: np.ndarray, xb: np.ndarray) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019): invariant to rotation and scale."""
    xa = xa - xa.mean(axis=0)
    xb = xb - xb.mean(axis=0)
    xa, xb = xa.astype(np.float64), xb.astype(np.float64)
    cross = np.linalg.norm(xb.T @ xa) ** 2
    denom = np.linalg.norm(xa.T @ xa) * np.linalg.norm(xb.T @ xb)
    return float(cross / denom) if denom > 0 else 0.0


def lost_gained(xa: np.ndarray, xb: np.ndarray, rows: list[int], k: int = 10) -> list[dict]:
    """For each of ``rows``: the neighbours in ``xa`` missing from ``xb`` (lost) and new in ``xb`` (gained)."""
    return _lost_gained(self_knn(xa, k), self_knn(xb, k), rows)


def _lost_gained(Ia: np.ndarray, Ib: np.ndarray, rows: list[int]) -> list[dict]:
    out = []
    for r in rows:
        a, b = list(map(int, Ia[r])), list(map(int, Ib[r]))
        out.append({"row": int(r), "lost": [i for i in a if i not in b], "gained": [i for i in b if i not in a]})
    return out


@dataclass(frozen=True)
class SpaceComparison:
    model: str  # "student" or "teacher-prefix"
    dim: int
    overlap: float  # neighbour overlap@k
    spearman: float
    cka: float
    mutual_knn: float
    k: int

    def as_dict(self) -> dict:
        return asdict(self)


def compare_spaces(x_ref: np.ndarray, x: np.ndarray, dims: list[int], name: str, k: int = 10,
                   n_pairs: int = 20_000, seed: int = 0, example_rows: list[int] | None = None
                   ) -> tuple[list[SpaceComparison], list[dict]]:
    """Metrics of each prefix size ``d`` of ``x`` against the reference space ``x_ref`` (full width).

    Also returns, per prefix size, the neighbours lost and gained for each of ``example_rows``.
    """
    if len(x_ref) != len(x):
        raise DistillError(f"cannot compare {len(x_ref)} reference vectors with {len(x)} vectors")
    if len(x) <= k:
        raise DistillError(f"comparing neighbours at k={k} needs more than {k} texts, got {len(x)}")
    I_ref = self_knn(x_ref, k)
    rows, examples = [], []
    for d in dims:
        xd = normalize_prefix(x, d)
        I = self_knn(xd, k)
        rows.append(SpaceComparison(model=name, dim=int(d), overlap=_overlap(I_ref, I),
                                    spearman=pairwise_spearman(x_ref, xd, n_pairs, seed), cka=linear_cka(x_ref, xd),
                                    mutual_knn=_mutual(I_ref, I), k=k))
        examples.append({"model": name, "dim": int(d), "queries": _lost_gained(I_ref, I, example_rows or [])})
    return rows, examples


def quantized_self_knn(xb: np.ndarray, k: int, precision: Precision | str) -> np.ndarray:
    """The k nearest other rows of each row of ``xb`` (N, d) in an exact index of ``precision``: (N, k).

    Searched as an index of that precision is: float queries against int8 codes, sign bits
    against sign bits (Hamming).
    """
    index, _ = make_index(xb, IndexType.FLAT, precision=precision)
    _, I = index_search(index, xb, k + 1)
    return drop_self(I, k)


def compare_precisions(x_ref: np.ndarray, x: np.ndarray, dims: list[int],
                       precisions: Sequence[Precision | str] = tuple(Precision), k: int = 10) -> list[dict]:
    """Neighbour overlap@k with the reference space ``x_ref`` of each prefix size of ``x`` stored at each precision.

    Returns one row per (dim, precision): ``{"dim", "precision", "bytes_per_vector", "overlap", "k"}``,
    ``bytes_per_vector`` being the code size of a ``dim``-dim prefix (4 d, d, ceil(d / 8)).
    :raises DistillError: row counts that differ, or too few rows for ``k``.
    """
    if len(x_ref) != len(x):
        raise DistillError(f"cannot compare {len(x_ref)} reference vectors with {len(x)} vectors")
    if len(x) <= k:
        raise DistillError(f"comparing neighbours at k={k} needs more than {k} texts, got {len(x)}")
    I_ref = self_knn(x_ref, k)
    rows = []
    for d in dims:
        xd = normalize_prefix(x, d)
        for p in map(Precision, precisions):
            I = self_knn(xd, k) if p is Precision.FLOAT32 else quantized_self_knn(xd, k, p)
            rows.append({"dim": int(d), "precision": p.value, "bytes_per_vector": bytes_per_vector(d, p),
                         "overlap": _overlap(I_ref, I), "k": k})
    return rows


def compare_models(teacher, student, texts: list[str], dims: list[int] | None = None, k: int = 10,
                   n_pairs: int = 20_000, n_examples: int = 3, seed: int = 0, batch_size: int = 64,
                   progress: bool = False, rotate=None, precisions: Sequence[Precision | str] | None = None) -> dict:
    """Compare the student's prefixes, and the teacher's own prefixes (the baselines), with the teacher's
    full-width space over ``texts``.

    Baselines: ``teacher-prefix`` cuts the teacher's raw dimensions; with ``rotate`` (the run's PCA
    rotation, a function of (N, D_t) arrays, the space the student is trained against)
    ``teacher-rotated`` cuts the rotated teacher, whose leading dimensions hold the most of it: that
    is the baseline a student of the same size must be held against.

    With ``precisions``, also the student's overlap@k at each prefix size stored at each precision
    (:func:`compare_precisions`), under ``"precisions"``.

    Returns ``{"reference": ..., "rows": [SpaceComparison dicts], "examples": [...], "precisions": [...]}``;
    example neighbours are given as texts.
    :raises DistillError: too few texts, or dims wider than the student.
    """
    from distill.index.models import model_dims, model_identity

    dims = sorted(set(dims or model_dims(student)))
    if not dims or dims[0] <= 0 or dims[-1] > int(student.dim):
        raise DistillError(f"--dims must be prefix sizes in 1..{student.dim} for this student, got {dims}")
    x_t = normalize_prefix(np.asarray(teacher.encode(texts, batch_size=batch_size, progress=progress)))
    x_s = normalize_prefix(np.asarray(student.encode(texts, batch_size=batch_size, progress=progress)))
    rng = np.random.default_rng(seed)
    example_rows = sorted(rng.choice(len(texts), min(n_examples, len(texts)), replace=False).tolist())
    rows, examples = compare_spaces(x_t, x_s, dims, "student", k, n_pairs, seed, example_rows)
    t_dims = [d for d in dims if d < x_t.shape[1]]
    t_rows, _ = compare_spaces(x_t, x_t, t_dims, "teacher-prefix", k, n_pairs, seed)
    if rotate is not None:  # the rotation keeps every cosine at full width: the reference is unchanged
        r_rows, _ = compare_spaces(x_t, normalize_prefix(np.asarray(rotate(x_t), dtype=np.float32)), t_dims,
                                   "teacher-rotated", k, n_pairs, seed)
        t_rows += r_rows
    for ex in examples:
        for q in ex["queries"]:
            q["text"] = texts[q["row"]]
            q["lost"] = [texts[i] for i in q["lost"]]
            q["gained"] = [texts[i] for i in q["gained"]]
    return {"reference": {"model": model_identity(teacher), "dim": int(x_t.shape[1]), "n_texts": len(texts)},
            "student": model_identity(student), "k": k,
            "rows": [r.as_dict() for r in sorted(rows + t_rows, key=lambda r: (r.dim, r.model))],
            "examples": examples, "precisions": compare_precisions(x_t, x_s, dims, precisions, k) if precisions else []}
