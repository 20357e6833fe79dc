"""A run's options as data: :class:`RunConfig` (``distill run``'s options, saved as the run folder's
``config.json``), :class:`TrainConfig` (its training loop) and the choices among them as enums. Both are
frozen and checked once, when built, so a bad option fails before any file is written; this module imports
no torch (the CLI builds a config before it loads a model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from enum import Enum

from distill.errors import DistillError, choice
from distill.hierarchy.config import HierarchyConfig, TokenizerMode
from distill.pipeline.corpus import DEFAULT_CORPUS

logger = logging.getLogger(__name__)


class StudentKind(str, Enum):
    """The kinds of student (``--student``); the models are :data:`distill.students.STUDENTS`."""

    STATIC = "static"  # a token table, pooled: no network at inference
    TRANSFORMER = "transformer"  # a small transformer trained from scratch
    LAYERS = "layers"  # the teacher's own layers, some kept
    CONV = "conv"  # the teacher's layers with its token states merged between them

    def __str__(self) -> str:
        return self.value

    @property
    def derived(self) -> bool:
        """Made of the teacher's own layers (its width and layers are derived from the teacher)."""
        return self in (StudentKind.LAYERS, StudentKind.CONV)

    @property
    def token_states(self) -> bool:
        """Has token states that line up with the teacher's tokens (so it can learn token targets)."""
        return self in (StudentKind.TRANSFORMER, StudentKind.LAYERS)


class TokenWeighting(str, Enum):
    """The static student's initial per-token pooling weights (``--token-weights``)."""

    SIF = "sif"  # a / (a + p(token)), from token counts
    BM25 = "bm25"  # BM25's IDF, from document frequencies
    NONE = "none"  # a plain mean: every token weighs the same

    @classmethod
    def parse(cls, value: str) -> TokenWeighting:
        return choice(cls, value, "token weighting")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 256  # texts per micro-batch (per optimizer step: batch_size * grad_accum)
    lr: float = 3e-3  # static, 5k movie-review texts, 8 epochs: overlap@10 0.23 (1e-3) -> 0.27, same STS
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    grad_accum: int = 1
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200  # optimizer steps
    mse: float = 1.0
    cosine: float = 1.0
    relational: float = 1.0
    token: float = 1.0  # token-level term (transformer students with token targets)
    dim_weights: tuple[float, ...] | None = None  # one per prefix size (default: all 1)
    log_every: int = 10
    # double a transformer or layers student's depth at these points: a value in (0, 1) is a share of the
    # optimizer steps (0.5: halfway), a whole number >= 1 a step; one doubling per value
    grow_at: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        """Checks what the CLI's bounds check for flags, for options that come from a config file.

        :raises DistillError: on a value no run can use.
        """
        if self.dim_weights is not None:
            object.__setattr__(self, "dim_weights", tuple(float(w) for w in self.dim_weights))
        if self.grow_at is not None:
            object.__setattr__(self, "grow_at", tuple(float(g) for g in self.grow_at) or None)
            bad = [g for g in self.grow_at or () if not (0 < g < 1 or (g >= 1 and g.is_integer()))]
            if bad:
                raise DistillError(f"--grow-at takes shares of training in (0, 1) or step numbers >= 1, got "
                                   f"{', '.join(f'{g:g}' for g in bad)}")
        least = {"epochs": 0, "batch_size": 1, "grad_accum": 1, "checkpoint_every": 1, "log_every": 1}
        for name, low in least.items():
            if getattr(self, name) < low:
                raise DistillError(f"training option {name} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "clip", "mse", "cosine", "relational", "token"):
            if getattr(self, name) < 0:
                raise DistillError(f"training option {name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio <= 1:
            raise DistillError(f"training option warmup_ratio must be within 0..1, got {self.warmup_ratio}")
        if self.dim_weights is not None and (not self.dim_weights or min(self.dim_weights) < 0):
            raise DistillError(f"dim weights must be non-negative numbers, got {list(self.dim_weights)}")


@dataclass(frozen=True)
class RunConfig:
    out: str  # the run folder
    teacher: str = "minilm"
    corpus: str | None = DEFAULT_CORPUS  # the shipped WikiText-2 sentences; None: distil the vocabulary alone
    text_column: str = "text"
    limit: int | None = None  # use only the first N texts of the corpus
    student: StudentKind = StudentKind.STATIC  # a kind's name is taken too ("static")
    dims: tuple[int, ...] = (32, 64, 128, 256)  # cut to the teacher's width when it is smaller
    holdout: int | None = None  # texts kept out of training for evaluation (default: 10%, at most 1000)
    sts: str | None = None  # an STS pairs file to score at the end
    retrieval: str | None = None  # a BEIR-layout task folder to score at the end (NDCG@10, recall@100, MRR@10)
    retrieval_split: str = "test"  # which qrels/<split>.tsv of it
    targets_dir: str = "runs/targets"
    pooling: str | None = None
    layer: int = -1
    max_length: int | None = None
    prompt: str | None = None  # a sentence-transformers teacher's prompt name; "none": none; default: its default
    teacher_batch_size: int = 64
    teacher_dtype: str | None = None  # float32 | bfloat16 | float16; default bf16 on CUDA, fp32 elsewhere
    pca_center: bool = False
    whiten: bool = False
    width: int = 256  # transformer students
    n_layers: int = 2
    n_heads: int = 4
    depth: int | None = None  # layers students: keep this many teacher layers, evenly spaced (default: all)
    layers: tuple[int, ...] | None = None  # layers students: the teacher layers to keep, by index
    merge: int = 4  # conv students: token states merged into one position after the first kept layers
    merge_after: int = 1  # conv students: kept layers that run at full length, before the merge
    token_weights: str = "sif"  # the static rows' initial pooling weights: sif | bm25 | none
    token_targets: bool = True  # transformer students: also learn the teacher's contextual token states
    device: str | None = None
    tokenizer: str = "teacher"  # teacher | char (single characters of the corpus, for demonstrations)
    vocab_from_corpus: int | None = None  # static students: add the N most frequent corpus words the tokenizer splits
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)  # imposed or emergent token groups
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Every check a run's options can fail, before any file is written or any text labeled.

        :raises DistillError: naming the option and what it takes.
        """
        object.__setattr__(self, "student", choice(StudentKind, self.student, "student"))
        weights = self.train.dim_weights
        if weights is not None and len(weights) != len(self.dims):
            raise DistillError(f"{len(weights)} dim weights for {len(self.dims)} prefix sizes "
                               f"({','.join(map(str, self.dims))}): give one weight per size")
        TokenWeighting.parse(self.token_weights)
        self._check_vocab_from_corpus()
        if self.train.grow_at:
            self._check_growable()
        if self.student is StudentKind.TRANSFORMER and self.width % self.n_heads:
            raise DistillError(f"{self.n_heads} attention heads do not divide the width {self.width} "
                               "(--n-heads, --width)")
        if self.merge < 1 or self.merge_after < 0:
            raise DistillError(f"--merge must be at least 1 and --merge-after at least 0, got {self.merge} and "
                               f"{self.merge_after}")

    def _check_growable(self) -> None:
        from distill.students.grow import GROWABLE  # the one list, beside the growth it allows (imports torch)

        if self.student not in GROWABLE:
            raise DistillError(f"--grow-at doubles the layers of a {' or '.join(GROWABLE)} student; a {self.student} "
                               "student has no layers to grow")

    def _check_vocab_from_corpus(self) -> None:
        n = self.vocab_from_corpus
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DistillError(f"--vocab-from-corpus takes a positive number of words, got {n!r} (leave it out to "
                               "keep the teacher's vocabulary)")
        if self.student is not StudentKind.STATIC:
            raise DistillError(f"--vocab-from-corpus adds rows to a static student's token table; a {self.student} "
                               "student cannot take new words (pass --student static, or leave --vocab-from-corpus "
                               "out)")
        if not self.corpus:
            raise DistillError("--vocab-from-corpus counts the words of the training texts: pass a --corpus "
                               "(not none)")
        if self.tokenizer != "teacher":
            raise DistillError(f"--vocab-from-corpus adds whole words to the teacher's tokenizer, not to "
                               f"--tokenizer {self.tokenizer}")

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DistillError(f"unknown run options: {', '.join(sorted(unknown))}")
        data = dict(data)
        train = dict(data.pop("train", {}) or {})
        if "cpu" in train:  # TrainConfig.cpu, replaced by ``device``: config.json files of older runs still hold it
            forced = bool(train.pop("cpu")) and data.get("device") is None
            if forced:
                data["device"] = "cpu"
            logger.warning("the training option cpu (of an older run) is no longer used, the run option device "
                           "replaced it: %s", "read as device: cpu" if forced else "ignored")
        bad = set(train) - {f.name for f in fields(TrainConfig)}
        if bad:
            raise DistillError(f"unknown training options: {', '.join(sorted(bad))}")
        if "dims" in data:
            data["dims"] = tuple(int(d) for d in data["dims"])
        if data.get("layers") is not None:
            data["layers"] = tuple(int(i) for i in data["layers"])
        choice(TokenizerMode, data.get("tokenizer", "teacher"), "tokenizer")
        hierarchy = HierarchyConfig.from_dict(data.pop("hierarchy", None))
        return cls(**data, train=TrainConfig(**train), hierarchy=hierarchy)
