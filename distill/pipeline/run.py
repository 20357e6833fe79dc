"""`distill run`: teacher -> targets (cached) -> PCA -> student -> train -> evaluate -> export."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from distill.errors import DistillError
from distill.hierarchy.config import HierarchyConfig, TokenizerMode
from distill.pipeline.corpus import read_corpus
from distill.pipeline.evaluate import agreement, read_pairs, sts_scores
from distill.pipeline.init import init_static, init_transformer
from distill.pipeline.pca import PCARotation
from distill.pipeline.targets import TargetKind, build_targets, load_targets
from distill.pipeline.train import TrainConfig, TrainData, Trainer
from distill.students import StudentConfig, build_student
from distill.teachers import load_teacher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    out: str  # the run folder
    teacher: str = "minilm"
    corpus: str | None = None
    text_column: str = "text"
    limit: int | None = None  # use only the first N texts of the corpus
    student: str = "static"
    dims: tuple[int, ...] = (32, 64, 128, 256)  # cut to the teacher's width when it is smaller
    holdout: int | None = None  # texts kept out of training for evaluation (default: 10%, at most 1000)
    sts: str | None = None  # an STS pairs file to score at the end
    targets_dir: str = "runs/targets"
    pooling: str | None = None
    layer: int = -1
    max_length: int | None = None
    teacher_batch_size: int = 64
    pca_center: bool = False
    whiten: bool = False
    width: int = 256  # transformer students
    n_layers: int = 2
    n_heads: int = 4
    token_targets: bool = True  # transformer students: also learn the teacher's contextual token states
    device: str | None = None
    tokenizer: str = "teacher"  # teacher | char (single characters of the corpus, for demonstrations)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)  # imposed or emergent token groups
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DistillError(f"unknown run options: {', '.join(sorted(unknown))}")
        data = dict(data)
        train = data.pop("train", {}) or {}
        bad = set(train) - {f.name for f in fields(TrainConfig)}
        if bad:
            raise DistillError(f"unknown training options: {', '.join(sorted(bad))}")
        if "dim_weights" in train and train["dim_weights"] is not None:
            train["dim_weights"] = tuple(train["dim_weights"])
        if "dims" in data:
            data["dims"] = tuple(int(d) for d in data["dims"])
        if data.get("tokenizer", "teacher") not in {m.value for m in TokenizerMode}:
            raise DistillError(f"unknown tokenizer {data['tokenizer']!r} (teacher, char)")
        hierarchy = HierarchyConfig.from_dict(data.pop("hierarchy", None))
        return cls(**data, train=TrainConfig(**train), hierarchy=hierarchy)


def _student_dims(dims: tuple[int, ...], teacher_dim: int) -> list[int]:
    kept = sorted({d for d in dims if d <= teacher_dim})
    if not kept:
        raise DistillError(f"no prefix size in {list(dims)} fits the teacher's width {teacher_dim}")
    if len(kept) < len(dims):
        logger.warning("prefix sizes above the teacher's width %d dropped: %s", teacher_dim,
                       [d for d in dims if d > teacher_dim])
    return kept


def _prepare_folder(cfg: RunConfig, resume: bool) -> Path:
    out = Path(cfg.out)
    saved = out / "config.json"
    # a folder whose run stopped before training (bad teacher, interrupted labeling) holds nothing to keep
    started = any((out / name).exists() for name in ("checkpoints", "student", "summary.json"))
    if saved.is_file() and started:
        previous = json.loads(saved.read_text())
        if not resume:
            raise DistillError(f"run folder {out} already holds a run; pass --resume to continue it, or another --out")
        if previous != json.loads(json.dumps(asdict(cfg))):
            raise DistillError(f"--resume: the options differ from those saved in {saved}; rerun with the same ones")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(asdict(cfg), indent=2))
    return out


def run(cfg: RunConfig, resume: bool = False) -> dict:
    """The main job. Returns the summary written to ``<out>/summary.json``.

    Under ``accelerate launch`` every rank labels its share of the targets and trains its share of
    each batch; the main process alone writes the run folder.
    """
    from distill.devices import distributed_state

    state = distributed_state()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    texts: list[str] = []  # read first: a bad corpus fails before any teacher work
    if cfg.corpus:
        texts = read_corpus(cfg.corpus, text_column=cfg.text_column, limit=cfg.limit).texts
    n_held = min(1000, len(texts) // 10) if cfg.holdout is None else cfg.holdout
    if texts and len(texts) - n_held < max(n_held, 2):
        raise DistillError(f"the corpus has {len(texts)} texts: too few to train on after a holdout of {n_held} "
                           "(lower --holdout)")
    if state.is_main_process:
        _prepare_folder(cfg, resume)
    state.wait_for_everyone()
    teacher = load_teacher(cfg.teacher, device=cfg.device, pooling=cfg.pooling, layer=cfg.layer,
                           max_length=cfg.max_length)
    dims = _student_dims(cfg.dims, teacher.dim)
    logger.info("teacher %s (%s, %d dims); student %s with dims %s; world size %d", teacher.source.name,
                teacher.kind.value, teacher.dim, cfg.student, dims, state.num_processes)
    vocab = load_targets(build_targets(teacher, TargetKind.VOCAB, cfg.targets_dir,
                                       batch_size=max(256, cfg.teacher_batch_size)))

    kind = TargetKind.TOKEN if cfg.student == "transformer" and cfg.token_targets else TargetKind.TEXT
    targets = load_targets(build_targets(teacher, kind, cfg.targets_dir, texts=texts,
                                         batch_size=cfg.teacher_batch_size)) if texts else None

    order = np.random.default_rng(cfg.train.seed).permutation(len(texts))
    held, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    pca = PCARotation.fit(targets.pooled[train_idx] if targets is not None else vocab.pooled,
                          center=cfg.pca_center, whiten=cfg.whiten)
    if state.is_main_process:
        pca.save(out / "pca.npz")

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    if cfg.tokenizer == TokenizerMode.CHAR:  # single characters, each with the teacher's vector of it alone
        from distill.hierarchy.chars import char_vocab

        if cfg.student != "static":
            raise DistillError("--tokenizer char needs --student static")
        tokenizer, vocab = char_vocab(teacher, texts, cfg.targets_dir)
    special = teacher.tokenizer
    config = StudentConfig(kind=cfg.student, vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                           dim=dims[-1], dims=dims, teacher=teacher.identity(), width=cfg.width,
                           n_layers=cfg.n_layers, n_heads=cfg.n_heads, max_length=teacher.max_length,
                           pad_id=special.pad_token_id or 0, cls_id=special.cls_token_id, sep_id=special.sep_token_id)
    torch.manual_seed(cfg.train.seed)  # the same seed gives the same initial weights, whatever ran before
    student = build_student(config, tokenizer)
    data = None
    if targets is not None:
        seqs = ([targets.ids[targets.offsets[i]:targets.offsets[i + 1]].tolist() for i in train_idx]
                if kind is TargetKind.TOKEN else student.tokenize([texts[i] for i in train_idx]))
        data = TrainData(seqs=seqs, targets=pca.transform(targets.pooled[train_idx]))
        if kind is TargetKind.TOKEN:
            starts, ends = targets.offsets[train_idx], targets.offsets[train_idx + 1]
            data.token_targets = pca.transform(np.concatenate([targets.tokens[a:b] for a, b in zip(starts, ends)]))
            data.token_offsets = np.concatenate([[0], np.cumsum(ends - starts)])
    init_static(student, vocab.ids, vocab.pooled, pca, seqs=data.seqs if data else None,
                text_targets=targets.pooled[train_idx] if targets is not None else None)
    if cfg.student == "transformer":
        init_transformer(student, vocab.input_embeddings, vocab.ids)
        if data is None:
            raise DistillError("a transformer student needs texts to learn from: pass --corpus")

    from distill.hierarchy.session import start_hierarchy

    hierarchy = start_hierarchy(cfg.hierarchy, student, vocab, data.seqs if data else None, pca, cfg.train.seed)
    summary: dict = {"teacher": teacher.identity(), "student": cfg.student, "dims": dims,
                     "train_texts": len(train_idx), "holdout_texts": len(held)}
    if data is not None:
        summary["train"] = Trainer(student, data, cfg.train, out,
                                   extra_terms=hierarchy.terms if hierarchy else None).fit(resume=resume)
    if not state.is_main_process:
        return summary
    student.save(out / "student")
    if hierarchy is not None:  # groups.json: the groups and their typical tokens, for the report and `distill groups`
        summary["hierarchy"] = hierarchy.finish(out, student)
    if targets is not None and len(held) > 10:  # overlap@10 needs more than 10 held-out texts
        held_texts = [texts[i] for i in held]
        x_student = student.encode(held_texts)
        x_teacher = np.asarray(targets.pooled[held])
        summary["holdout"] = {"student": agreement(x_student, x_teacher, dims),
                              "teacher_truncated": agreement(x_teacher, x_teacher, dims)}
    if cfg.sts:
        pairs = read_pairs(cfg.sts)
        summary["sts"] = {"student": sts_scores(student, pairs, dims), "teacher": sts_scores(teacher, pairs, dims)}
    if cfg.student == "static":
        from distill.students.export import export_sentence_transformers

        export_sentence_transformers(student, out / "student-st")
    summary["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        from distill.report import write_report

        write_report(out)
    except Exception as e:  # a broken report must not lose a finished run
        logger.warning("could not write the report (rerun `distill plot %s`): %s", out, e)
    return summary
