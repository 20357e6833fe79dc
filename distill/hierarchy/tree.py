"""A hierarchy of token groups: levels tied to prefix sizes, groups of token ids, and its JSON form.

``groups.json`` in a run folder is :meth:`Hierarchy.to_json`; the report and ``distill groups``
read it back with :meth:`Hierarchy.from_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.vectors import normalize


@dataclass
class Group:
    name: str
    ids: list[int]  # token ids of the members
    parent: str | None = None  # the group of the previous (coarser) level holding it, when it nests


@dataclass
class Level:
    prefix: int  # the prefix size the level is tied to
    groups: list[Group]
    name: str = ""

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(n,) token ids and (n,) group index of every member of the level."""
        ids = np.array([i for g in self.groups for i in g.ids], dtype=np.int64)
        labels = np.array([k for k, g in enumerate(self.groups) for _ in g.ids], dtype=np.int64)
        return ids, labels


@dataclass
class Hierarchy:
    levels: list[Level]
    source: str  # "imposed" | "emergent"
    meta: dict = field(default_factory=dict)

    def to_json(self, strings: dict[int, str], vectors: np.ndarray | None = None, top: int = 8) -> dict:
        """JSON-ready dict; with ``vectors`` (V, D) each group lists its ``top`` most typical tokens
        (nearest its centroid at the level's prefix) and each level its within/between cosine gap."""
        levels = []
        for level in self.levels:
            entry: dict = {"name": level.name, "prefix": level.prefix, "groups": []}
            if vectors is not None:
                entry.update(cohesion(vectors[:, :level.prefix], *level.labels()))
            for g in level.groups:
                row = {"name": g.name, "parent": g.parent, "size": len(g.ids), "ids": [int(i) for i in g.ids],
                       "tokens": [strings.get(int(i), f"<{i}>") for i in g.ids]}
                if vectors is not None:
                    row["typical"] = [strings.get(int(i), f"<{i}>") for i in typical(vectors[:, :level.prefix],
                                                                                     g.ids, top)]
                entry["groups"].append(row)
            levels.append(entry)
        return {"source": self.source, "meta": self.meta, "levels": levels}

    @classmethod
    def from_json(cls, data: dict) -> Hierarchy:
        return cls([Level(lv["prefix"], [Group(g["name"], list(g["ids"]), g.get("parent")) for g in lv["groups"]],
                          lv.get("name", "")) for lv in data["levels"]], data["source"], data.get("meta", {}))

    @classmethod
    def load(cls, path: str | Path) -> Hierarchy:
        path = Path(path)
        if not path.is_file():
            raise DistillError(f"{path} does not exist: the run was trained without --groups or --emergent")
        return cls.from_json(json.loads(path.read_text()))


def _unit(x: np.ndarray) -> np.ndarray:
    return normalize(np.asarray(x, dtype=np.float32))


def typical(vectors: np.ndarray, ids: list[int], top: int = 8) -> list[int]:
    """The ``top`` members nearest (by cosine) the normalized mean of the group's unit vectors."""
    x = _unit(vectors[np.asarray(ids, dtype=np.int64)])  # (n, d)
    centroid = x.mean(0)
    order = np.argsort(-(x @ centroid), kind="stable")[:top]
    return [int(ids[i]) for i in order]


def cohesion(vectors: np.ndarray, ids: np.ndarray, labels: np.ndarray, max_tokens: int = 4000,
             seed: int = 0) -> dict[str, float]:
    """Mean cosine of token pairs within a group, between groups, and the gap between the two.

    :param vectors: (V, d) token rows, already cut to the prefix of interest.
    """
    if len(ids) > max_tokens:  # pairs grow quadratically: a fixed sample keeps it cheap and comparable
        keep = np.sort(np.random.default_rng(seed).choice(len(ids), max_tokens, replace=False))
        ids, labels = ids[keep], labels[keep]
    x = _unit(vectors[ids])  # (n, d)
    sim = x @ x.T  # (n, n)
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(ids), dtype=bool)
    within = float(sim[same & off].mean()) if (same & off).any() else float("nan")
    between = float(sim[~same].mean()) if (~same).any() else float("nan")
    return {"within": within, "between": between, "gap": within - between}
