"""A run folder: the name of every file and folder a run writes, the stage questions, and the summary.

The one place that spells the run folder's layout; every other module asks a :class:`RunFolder`::

    config.json                  the run's options (written by `distill run` before its first stage)
    data/                        the targets stage: what training reads
      targets.json, targets.rows.npy   which target store holds the corpus's teacher vectors, and where each text is
      vocab.json, vocab.rows.npy, vocab-items.json   the vocabulary targets the student starts from
      words.json, words.rows.npy, words-items.json   --vocab-from-corpus: the added words and their targets
      split.npz                  training and held-out text indices
      tokens.ids.bin, tokens.offsets.npy   the student's token ids of every text (flat int32)
      holdout.jsonl              the held-out texts, for evaluation
      student.json, tokenizer.json   the student's shape and tokenizer
      layers-init.safetensors    layers and conv students: the teacher's kept layers
      meta.json                  written last: the stage is complete
    pca.npz                      the rotation of the teacher space (targets stage)
    metrics.jsonl, checkpoints/, train.json, student-init/, student/, groups.json   the train stage
    summary.json, report.html    the eval stage
    student-st/                  the export stage (static and layers students)

A stage's output is complete when the file written last by it exists (``data/meta.json``, ``student/``'s
config, ``summary.json``); every file is written atomically (:mod:`distill.io`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from distill.errors import DistillError
from distill.io import save_json

logger = logging.getLogger(__name__)


class RunSummary(TypedDict, total=False):
    """``summary.json``: what the eval stage measured. Sections are present when measured."""

    teacher: dict[str, Any]  # the teacher's identity (name, revision, weights fingerprint)
    student: str  # the student kind
    dims: list[int]
    train_texts: int
    holdout_texts: int
    stage_seconds: dict[str, float]  # per stage (and per step of the targets stage)
    seconds: float  # their sum
    train: dict[str, Any]  # steps, seconds, final loss (train.json without the hierarchy)
    note: str  # e.g. a run without texts
    hierarchy: dict[str, Any]  # token groups: within, between, gap per prefix size
    corpus_words: dict[str, Any]  # --vocab-from-corpus: words asked for and added
    holdout: dict[str, dict]  # agreement with the teacher: student, init, teacher_rotated, teacher_truncated
    speed: dict[str, Any]  # student and teacher sentences/s on the same texts
    size: dict[str, int]  # parameters of student and teacher
    sts: dict[str, dict]  # --sts: Spearman/Pearson of student, teacher, teacher_rotated per prefix size
    retrieval: dict[str, Any]  # --retrieval: NDCG@10, recall@100, MRR@10 per model and prefix size


@dataclass(frozen=True)
class RunFolder:
    """The files of the run in ``root`` (nothing is read or made by building one)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # ---- names ----------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def meta(self) -> Path:
        return self.data / "meta.json"

    @property
    def split(self) -> Path:
        return self.data / "split.npz"

    @property
    def holdout(self) -> Path:
        return self.data / "holdout.jsonl"

    @property
    def student_config(self) -> Path:
        return self.data / "student.json"

    @property
    def tokenizer(self) -> Path:
        return self.data / "tokenizer.json"

    @property
    def vocab_items(self) -> Path:
        return self.data / "vocab-items.json"

    @property
    def layers_init(self) -> Path:
        return self.data / "layers-init.safetensors"

    @property
    def pca(self) -> Path:
        return self.root / "pca.npz"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def train_log(self) -> Path:
        return self.root / "train.json"

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def student_init(self) -> Path:
        return self.root / "student-init"

    @property
    def groups(self) -> Path:
        from distill.hierarchy.session import GROUPS_NAME  # the hierarchy writes it (into any folder)

        return self.root / GROUPS_NAME

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def student_st(self) -> Path:
        return self.root / "student-st"

    # ---- stage questions ------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """A run folder (its options are saved), whatever its stages have done."""
        return self.config.is_file()

    def prepared(self) -> bool:
        """The targets stage is complete."""
        return self.meta.is_file()

    def trained(self) -> bool:
        """The train stage is complete: ``student/`` is whole."""
        return has_student(self.student)

    def has_init(self) -> bool:
        return has_student(self.student_init)

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir()

    def started(self) -> bool:
        """Training began (checkpoints, a student or a summary): the folder holds work to keep."""
        return self.has_checkpoints() or self.student.exists() or self.summary.exists()

    def stale(self, stamp: list | None) -> bool:
        """The prepared data was made from another corpus (``stamp``: the corpus's now) and nothing was trained
        on it yet: the targets stage must run again."""
        return (self.prepared() and not self.trained() and not self.has_checkpoints()
                and self.read_meta().get("corpus_stamp") != stamp)

    def evaluated(self) -> bool:
        return self.summary.is_file()

    # ---- reading and writing -------------------------------------------------------------------------
    def read_config(self) -> dict:
        if not self.is_run():
            raise DistillError(f"{self.root} is not a run folder (no config.json)")
        return json.loads(self.config.read_text())

    def read_meta(self) -> dict:
        if not self.prepared():
            raise DistillError(f"{self.root} has no prepared data (data/meta.json); run `distill run --out "
                               f"{self.root}` (it labels and prepares before training)")
        return json.loads(self.meta.read_text())

    def read_train_log(self) -> dict:
        return json.loads(self.train_log.read_text()) if self.train_log.is_file() else {}

    def read_summary(self) -> RunSummary:
        if not self.evaluated():
            raise DistillError(f"{self.root} holds no finished run (no summary.json): run `distill run --out "
                               f"{self.root} --resume` or `distill eval {self.root}`")
        return json.loads(self.summary.read_text())

    def write_summary(self, summary: RunSummary) -> None:
        save_json(self.summary, summary)


def has_student(folder: Path) -> bool:
    """``folder`` holds a whole student (its config is written last)."""
    from distill.students.base import CONFIG_NAME  # torch comes with it: imported when asked

    return (Path(folder) / CONFIG_NAME).is_file()


def summary_of(model: str | Path, teacher: dict) -> RunSummary | None:
    """The summary of the run that made the student in ``model`` (the run folder or its ``student/``), or None
    when there is none, it cannot be read, or it belongs to another teacher than ``teacher`` (an identity)."""
    model = Path(model)
    folder = next((f for f in (RunFolder(model), RunFolder(model.parent)) if f.evaluated()), None)
    if folder is None:
        return None
    try:
        summary = folder.read_summary()
    except (ValueError, UnicodeDecodeError):
        logger.warning("%s is not valid JSON: the model card goes without the run's numbers", folder.summary)
        return None
    if not isinstance(summary, dict) or summary.get("teacher") != teacher:
        return None
    return summary
