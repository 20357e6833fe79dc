"""Emergent groups: the teacher's token vectors clustered by cosine into a coarse-to-fine tree.

Top-down spherical k-means: the tokens are split into ``branching[0]`` groups, each of those into
``branching[1]``, and so on, so every level nests inside the one before it (a tree). Groups smaller
than ``min_size`` merge into their nearest sibling; a group whose members already sit within
``threshold`` cosine of their centroid is not split further. Level ``l`` is tied to the ``l``-th
smallest prefix size. numpy in, numpy out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill.errors import DistillError
from distill.hierarchy.tree import Group, Hierarchy, Level
from distill.vectors import normalize


def _unit(x: np.ndarray) -> np.ndarray:
    return normalize(np.asarray(x, dtype=np.float32))


def spherical_kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50, n_init: int = 4) -> np.ndarray:
    """(n, d) vectors -> (n,) labels in 0..k-1 maximizing the summed cosine to the cluster centroids.

    k-means++ seeding on cosine distance, ``n_init`` restarts, the best kept.
    """
    x = _unit(x)
    n = len(x)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    best, best_score = None, -np.inf
    for _ in range(n_init):
        centers = [int(rng.integers(n))]
        dist = 1 - x @ x[centers[0]]  # (n,)
        for _ in range(1, k):
            p = np.maximum(dist, 0) ** 2
            nxt = int(rng.choice(n, p=p / p.sum())) if p.sum() > 0 else int(rng.integers(n))
            centers.append(nxt)
            dist = np.minimum(dist, 1 - x @ x[nxt])
        c = x[centers]  # (k, d)
        labels = np.full(n, -1)
        for _ in range(iters):
            new = np.argmax(x @ c.T, axis=1)  # (n,)
            if np.array_equal(new, labels):
                break
            labels = new
            sums = np.zeros_like(c)
            np.add.at(sums, labels, x)
            empty = np.bincount(labels, minlength=k) == 0
            if empty.any():  # reseed an empty cluster at the point worst served by its centroid
                worst = np.argsort(np.sum(x * c[labels], 1))[: int(empty.sum())]
                sums[empty] = x[worst]
            c = _unit(sums)
        score = float(np.sum(x * c[labels]))
        if score > best_score:
            best, best_score = labels.copy(), score
    return best


def _merge_small(x: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge groups under ``min_size`` into the sibling with the nearest centroid; relabel 0..k'-1."""
    labels = labels.copy()
    while True:
        ks, counts = np.unique(labels, return_counts=True)
        if len(ks) <= 1 or counts.min() >= min_size:
            break
        small = ks[np.argmin(counts)]
        cents = _unit(np.stack([x[labels == k].mean(0) for k in ks]))  # (k, d)
        sims = cents @ cents[ks == small][0]
        sims[ks == small] = -np.inf
        labels[labels == small] = ks[int(np.argmax(sims))]
    return np.unique(labels, return_inverse=True)[1]


def cluster_tree(x: np.ndarray, branching: Sequence[int], min_size: int = 3, threshold: float | None = None,
                 seed: int = 0) -> list[np.ndarray]:
    """Top-down tree of (n, d) vectors: one (n,) label array per level, each level nested in the previous.

    :param branching: children per group at each level, coarse to fine.
    :param min_size: no group of a split is smaller than this (small ones merge into a sibling).
    :param threshold: do not split a group whose mean cosine to its centroid is at least this.
    """
    x = _unit(x)
    parent = np.zeros(len(x), dtype=np.int64)
    levels = []
    for depth, b in enumerate(branching):
        labels = np.empty(len(x), dtype=np.int64)
        next_id = 0
        for g in np.unique(parent):
            idx = np.flatnonzero(parent == g)
            k = min(b, len(idx) // min_size)
            tight = threshold is not None and float(np.mean(x[idx] @ _unit(x[idx].mean(0, keepdims=True))[0])) \
                >= threshold
            if k < 2 or tight:
                sub = np.zeros(len(idx), dtype=np.int64)
            else:
                sub = _merge_small(x[idx], spherical_kmeans(x[idx], k, seed=seed + 7919 * depth + g), min_size)
            labels[idx] = sub + next_id
            next_id += int(sub.max()) + 1
        levels.append(labels)
        parent = labels
    return levels


def emergent_hierarchy(ids: np.ndarray, vectors: np.ndarray, dims: Sequence[int], branching: Sequence[int],
                       min_size: int = 3, threshold: float | None = None, seed: int = 0) -> Hierarchy:
    """Cluster tokens ``ids`` by their (n, D) ``vectors`` into a tree tied to the smallest prefix sizes.

    Group names are tree paths: ``2`` at the first level, ``2.1`` below it, and so on.

    :raises DistillError: when there are more levels than prefix sizes, or too few tokens.
    """
    if len(branching) > len(dims):
        raise DistillError(f"{len(branching)} emergent levels but only {len(dims)} prefix sizes {list(dims)}; "
                           "pass fewer --branching entries or more --dims")
    if len(ids) < 2 * min_size:
        raise DistillError(f"only {len(ids)} tokens to cluster; need at least {2 * min_size}")
    label_levels = cluster_tree(vectors, branching, min_size=min_size, threshold=threshold, seed=seed)
    levels, names = [], np.array([""] * len(ids), dtype=object)
    for depth, labels in enumerate(label_levels):
        groups, new_names = [], names.copy()
        # children of one parent are numbered 1.. in the order of their first member
        counter: dict[str, int] = {}
        for g in np.unique(labels):
            members = np.flatnonzero(labels == g)
            parent = names[members[0]] or None
            counter[parent or ""] = counter.get(parent or "", 0) + 1
            name = f"{parent}.{counter[parent or '']}" if parent else str(counter[""])
            new_names[members] = name
            groups.append(Group(name, sorted(int(i) for i in ids[members]), parent))
        levels.append(Level(int(dims[depth]), groups, f"level {depth + 1}"))
        names = new_names
    return Hierarchy(levels, "emergent", {"branching": list(branching), "min_size": min_size,
                                          "threshold": threshold, "tokens": int(len(ids))})
