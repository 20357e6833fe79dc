"""A run's view of a target store: its texts' rows, in corpus order, read on demand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.io import save_json, save_npy
from distill.pipeline.targets.store import TargetKind, TargetStore


# ---- a run's view of a store ---------------------------------------------------------------------
@dataclass
class TargetView:
    """The targets of one corpus, in corpus order, read from a store's shards on demand.

    Nothing is concatenated or memory-mapped: ``pooled(idx)``, ``token_slices(idx)`` and ``token_ids(idx)`` read
    just the rows asked for, so a process's memory does not grow with the corpus however often it reads.
    """

    store: TargetStore
    names: list[str]  # the shards this view reads
    shard: np.ndarray  # (N,) int32 index into names
    row: np.ndarray  # (N,) int32 row inside the shard
    n_truncated: int = 0
    _lengths: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.shard)

    @property
    def kind(self) -> TargetKind:
        return self.store.kind

    @property
    def dim(self) -> int:
        return self.store.dim

    def _groups(self, idx: np.ndarray):
        """(positions in idx, shard name, rows) for each shard the rows ``idx`` touch."""
        idx = np.asarray(idx, dtype=np.int64)
        shards = self.shard[idx]
        order = np.argsort(shards, kind="stable")
        bounds = np.flatnonzero(np.diff(shards[order])) + 1
        for part in np.split(order, bounds):
            if len(part):
                yield part, self.names[shards[part[0]]], self.row[idx[part]]

    def pooled(self, idx: np.ndarray | None = None) -> np.ndarray:
        """(len(idx), D) float32 pooled targets of the texts ``idx`` (all texts when None)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        for pos, name, rows in self._groups(idx):
            out[pos] = self.store.files(name).pooled.take(rows)
        return out

    def lengths(self) -> np.ndarray:
        """(N,) token counts of the texts (token targets)."""
        if self._lengths is None:
            out = np.empty(len(self), dtype=np.int64)
            for pos, name, rows in self._groups(np.arange(len(self))):
                off = self.store.files(name).offsets
                out[pos] = off[rows + 1] - off[rows]
            self._lengths = out
        return self._lengths

    def token_slices(self, idx: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text of ``idx``: its teacher token ids (int32) and contextual states ((T, D) float16)."""
        ids: list = [None] * len(idx)
        states: list = [None] * len(idx)
        for pos, name, rows in self._groups(idx):
            f = self.store.files(name)
            for p, r in zip(pos, rows):
                a, b = f.offsets[r], f.offsets[r + 1]
                ids[p], states[p] = f.ids.rows(a, b), f.tokens.rows(a, b)
        return ids, states

    def token_ids(self, idx: np.ndarray) -> list[np.ndarray]:
        """Per text of ``idx``: its teacher token ids (int32), without reading its states (64x the bytes at
        128 dims: the prepare stage's peak when it read both for 16k texts at a time, to keep the ids)."""
        ids: list = [None] * len(idx)
        for pos, name, rows in self._groups(idx):
            f = self.store.files(name)
            for p, r in zip(pos, rows):
                ids[p] = f.ids.rows(f.offsets[r], f.offsets[r + 1])
        return ids

    def save(self, folder: str | Path, name: str = "targets") -> None:
        """Write the view into a run folder: ``<name>.rows.npy`` (shard, row per text), ``<name>.json`` last."""
        folder = Path(folder)
        save_npy(folder / f"{name}.rows.npy", np.stack([self.shard, self.row], axis=1))
        save_json(folder / f"{name}.json", {"store": str(self.store.folder.resolve()), "kind": self.kind.value,
                                             "teacher": self.store.identity, "count": len(self),
                                             "n_truncated": self.n_truncated, "shards": self.names})

    @classmethod
    def load(cls, folder: str | Path, name: str = "targets") -> TargetView:
        folder = Path(folder)
        ref = json.loads((folder / f"{name}.json").read_text())
        store = TargetStore.open(ref["store"])
        rows = np.load(folder / f"{name}.rows.npy")
        missing = [n for n in ref["shards"] if store._marker(n) is None]
        if missing:
            raise DistillError(f"{len(missing)} target shards this run reads are gone from {store.folder} "
                               f"(e.g. {missing[0]}); delete {folder} and rerun to label them again")
        return cls(store, ref["shards"], rows[:, 0].copy(), rows[:, 1].copy(), ref.get("n_truncated", 0))


@dataclass
class VocabTargets:
    """The teacher's vocabulary targets: each usable token alone, its string and its input-embedding row."""

    ids: np.ndarray  # (V,) token ids
    strings: list[str]
    pooled: np.ndarray  # (V, D) float32
    input_embeddings: np.ndarray  # (V, D_in)


def vocab_targets(view: TargetView) -> VocabTargets:
    info = json.loads((view.store.folder / "vocab.json").read_text())
    return VocabTargets(np.asarray(info["ids"], np.int64), info["strings"], view.pooled(),
                        np.load(view.store.folder / "input_embeddings.npy"))
