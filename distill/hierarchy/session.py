"""The hierarchy inside `distill run`: build the groups, hand the trainer its term, write ``groups.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.hierarchy.config import HierarchyConfig
from distill.hierarchy.emergent import emergent_hierarchy
from distill.hierarchy.groups import load_groups
from distill.hierarchy.tree import Hierarchy, cohesion
from distill.io import save_text
from distill.students import StaticStudent
from distill.students.losses import HierarchyLoss

logger = logging.getLogger(__name__)
GROUPS_NAME = "groups.json"


def _levels(h: Hierarchy) -> list[tuple[int, np.ndarray, np.ndarray]]:
    return [(lv.prefix, *lv.labels()) for lv in h.levels]


def frequent_tokens(counts: np.ndarray, allowed: np.ndarray, max_tokens: int) -> np.ndarray:
    """The ``max_tokens`` most frequent ids of ``allowed`` (ties by id), sorted by id.

    :param counts: (V,) occurrences of each token id in the training texts.
    """
    counts = np.pad(counts, (0, max(0, int(allowed.max()) + 1 - len(counts))))[allowed]
    order = np.lexsort((allowed, -counts))
    keep = order[counts[order] > 0][:max_tokens]
    return np.sort(allowed[keep])


class HierarchySession:
    """Holds the current hierarchy (emergent groups may be refreshed during training) and its loss term."""

    def __init__(self, cfg: HierarchyConfig, student: StaticStudent, hierarchy: Hierarchy, strings: dict[int, str],
                 teacher_rows: np.ndarray | None, seed: int = 0):
        self.cfg, self.hierarchy, self.strings, self.teacher_rows = cfg, hierarchy, strings, teacher_rows
        self.term = HierarchyLoss(_levels(hierarchy), weight=cfg.weight, temperature=cfg.temperature,
                                  sample=cfg.sample, refresh_every=cfg.refresh_every if cfg.emergent else 0,
                                  refresh=self._refresh, restore=self._restore, seed=seed)
        self.seed = seed
        for lv in hierarchy.levels:
            logger.info("%s groups at prefix %d: %s", hierarchy.source, lv.prefix,
                        ", ".join(f"{g.name} ({len(g.ids)})" for g in lv.groups[:12]))

    @property
    def terms(self) -> dict:
        return {"hier": self.term}

    def _refresh(self, student) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], dict]:
        ids = np.array(sorted(i for g in self.hierarchy.levels[0].groups for i in g.ids), dtype=np.int64)
        rows = student.embedding.detach().float().cpu().numpy()[ids]  # (n, D)
        self.hierarchy = emergent_hierarchy(ids, rows, student.dims, self.cfg.branching, self.cfg.min_size,
                                            self.cfg.threshold, seed=self.seed)
        self.hierarchy.meta["refreshed_from"] = "student"
        return _levels(self.hierarchy), self.hierarchy.to_json({})

    def _restore(self, saved: dict) -> None:
        """A resumed run picks up the groups its checkpoint was trained against."""
        self.hierarchy = Hierarchy.from_json(saved)

    def finish(self, out: str | Path, student: StaticStudent) -> dict:
        """Write ``<out>/groups.json`` (typical tokens by the trained student) and return the cohesion numbers."""
        rows = student.embedding.detach().float().cpu().numpy()  # (V, D)
        data = self.hierarchy.to_json(self.strings, vectors=rows)
        levels = []
        for entry, lv in zip(data["levels"], self.hierarchy.levels):
            row = {"prefix": lv.prefix, "groups": len(lv.groups),
                   "student": {k: entry[k] for k in ("within", "between", "gap")}}
            if self.teacher_rows is not None:
                row["teacher"] = cohesion(self.teacher_rows[:, :lv.prefix], *lv.labels())
            levels.append(row)
        save_text(Path(out, GROUPS_NAME), json.dumps(data, indent=1, ensure_ascii=False))
        return {"source": self.hierarchy.source, "levels": levels}


def start_hierarchy(cfg: HierarchyConfig, student, vocab, counts: np.ndarray | None, pca=None,
                    seed: int = 0) -> HierarchySession | None:
    """Build the imposed or emergent groups of a run, or None when the run has neither.

    :param vocab: the vocabulary targets (``.ids``, ``.strings``, ``.pooled``) the student was built on.
    :param counts: (V,) token counts of the training texts; None when the run has no texts.
    :param pca: the run's rotation; the teacher's rows in it give the teacher-side cohesion numbers.
    :raises DistillError: for a transformer student, a run with no texts, or a bad groups file.
    """
    if not cfg.enabled:
        return None
    if not isinstance(student, StaticStudent):
        raise DistillError("--groups and --emergent work on a static student's token table; "
                           "pass --student static")
    if counts is None:
        raise DistillError("--groups and --emergent need training texts: pass --corpus")
    ids = np.asarray(vocab.ids, dtype=np.int64)
    strings = {int(i): s for i, s in zip(ids, vocab.strings)}
    teacher = np.asarray(vocab.pooled, dtype=np.float32)  # (n_vocab, D_t), row k is token ids[k]
    teacher_rows = None
    if pca is not None:
        teacher_rows = np.zeros((student.config.vocab_size, teacher.shape[1]), dtype=np.float32)
        teacher_rows[ids] = pca.transform(teacher)
    if cfg.groups:
        hierarchy = load_groups(cfg.groups, {s: i for i, s in strings.items()}, student.dims)
    else:
        chosen = frequent_tokens(counts, ids, cfg.max_tokens)
        row_of = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        row_of[ids] = np.arange(len(ids))
        hierarchy = emergent_hierarchy(chosen, teacher[row_of[chosen]], student.dims, cfg.branching,
                                       cfg.min_size, cfg.threshold, seed=seed)
    return HierarchySession(cfg, student, hierarchy, strings, teacher_rows, seed=seed)
