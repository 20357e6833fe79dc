"""Hierarchy term: tokens of a group close, groups apart, within the prefix size a level is tied to.

A supervised-contrastive term on group centroids (a prototype loss): at prefix ``d`` every grouped
token's row ``x`` (cut to ``d`` dims, normalized) is scored against every group centroid ``c_g``
(the normalized mean of its members' rows), and ``softmax(cos(x, c_g) / temperature)`` is asked to
pick the token's own group. Pulling a token toward its own centroid draws its group together;
pushing it from the others moves groups apart. Groups are weighted equally however many members
they have. It works on the student's token table (``StaticStudent.embedding``), not on the text
batch, so :class:`NestedLoss` calls it as ``term(prefix, d, model=student)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Levels = Sequence[tuple[int, np.ndarray, np.ndarray]]  # (prefix size, token ids, group index) per level


def token_rows(student: nn.Module) -> torch.Tensor:
    """The student's (V, D) token rows; only students with a token table carry groups."""
    rows = getattr(student, "embedding", None)
    if not isinstance(rows, torch.Tensor):
        raise TypeError(f"the hierarchy term needs a student with a token table, not {type(student).__name__}")
    return rows


class HierarchyLoss(nn.Module):
    def __init__(self, levels: Sequence[tuple[int, np.ndarray, np.ndarray]], weight: float = 1.0,
                 temperature: float = 0.1, sample: int = 4096, refresh_every: int = 0,
                 refresh: Callable[[nn.Module], tuple[Levels, dict]] | None = None,
                 restore: Callable[[dict], None] | None = None, seed: int = 0):
        """
        :param levels: ``(d, ids, labels)`` per level: the prefix size, (n,) token ids, (n,) group index.
        :param sample: at most this many tokens of a level per evaluation (drawn afresh each time).
        :param refresh: called with the student every ``refresh_every`` optimizer steps; returns the new
            levels and a JSON-ready dict describing them for the caller (kept in checkpoints).
        :param restore: called with that dict when a checkpoint taken after a refresh is loaded.
        """
        super().__init__()
        self.weight, self.temperature, self.sample = weight, temperature, sample
        self.refresh_every, self.refresh, self.restore, self.seed = refresh_every, refresh, restore, seed
        self.calls = 0
        self.refreshed: dict | None = None  # the refresh's description of the levels in use, if refreshed
        self.set_levels(levels)

    def set_levels(self, levels: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> None:
        self.levels = [(int(d), torch.as_tensor(np.asarray(ids), dtype=torch.long),
                        torch.as_tensor(np.unique(np.asarray(labels), return_inverse=True)[1], dtype=torch.long))
                       for d, ids, labels in levels]

    def forward(self, prefix: torch.Tensor, d: int, model: nn.Module | None = None, **batch) -> torch.Tensor | None:
        """Scalar term at prefix ``d``, or None when no level is tied to ``d`` (or no ``model``, the student)."""
        mine = [(ids, labels) for dd, ids, labels in self.levels if dd == d]
        if not mine or model is None or self.weight == 0:
            return None
        rows = token_rows(model)
        total = rows.new_zeros(())
        for ids, labels in mine:
            if len(ids) > self.sample:  # a fresh, seeded subset each call: deterministic for a given run
                g = torch.Generator().manual_seed(self.seed + self.calls)
                keep = torch.randperm(len(ids), generator=g)[: self.sample]
                ids, labels = ids[keep], labels[keep]
            ids, labels = ids.to(rows.device), labels.to(rows.device)
            x = F.normalize(rows[ids, :d].float(), dim=1, eps=1e-8)  # (n, d)
            G = int(labels.max()) + 1
            one_hot = F.one_hot(labels, G).to(x.dtype)  # (n, G)
            centroids = F.normalize(one_hot.T @ x, dim=1, eps=1e-8)  # (G, d)
            logits = x @ centroids.T / self.temperature  # (n, G)
            counts = one_hot.sum(0)  # (G,)
            present = counts > 0  # a sampled subset may miss a small group
            class_weight = torch.where(present, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
            total = total + F.cross_entropy(logits, labels, weight=class_weight)
        self.calls += 1
        return self.weight * total

    def on_step(self, step: int, student: nn.Module) -> None:
        """Called by the trainer after each optimizer step: re-derive the groups every ``refresh_every``."""
        if self.refresh is not None and self.refresh_every and step % self.refresh_every == 0:
            levels, self.refreshed = self.refresh(student)
            self.set_levels(levels)

    # The sampling counter and refreshed levels are training state: a resumed run must draw the same
    # samples against the same groups. nn.Module's extra state puts them in ``state_dict()``, which the
    # trainer saves with each checkpoint (plain ints, strings and tensors: loadable with weights_only).
    def get_extra_state(self) -> dict:
        return {"calls": self.calls, "levels": [[d, ids, labels] for d, ids, labels in self.levels],
                "refreshed": json.dumps(self.refreshed) if self.refreshed is not None else ""}

    def set_extra_state(self, state: dict) -> None:
        self.calls = int(state["calls"])
        self.levels = [(int(d), ids.long(), labels.long()) for d, ids, labels in state["levels"]]
        self.refreshed = json.loads(state["refreshed"]) if state["refreshed"] else None
        if self.refreshed is not None and self.restore is not None:
            self.restore(self.refreshed)

    def get_config_dict(self) -> dict:
        return {"weight": self.weight, "temperature": self.temperature, "sample": self.sample,
                "refresh_every": self.refresh_every, "levels": [(d, len(ids)) for d, ids, _ in self.levels]}
