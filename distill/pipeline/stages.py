"""The stages of a run, each a function that reads and writes the run folder, and the table that orders them.

``targets`` (:func:`distill.pipeline.prepare.prepare`: teacher labels, split, PCA, token ids in ``data/``) ->
``train`` (``student/``) -> ``eval`` (``summary.json``; then ``report.html``) -> ``export`` (the model cards,
``student-st/``). Each stage reads only what the stages before it wrote (the files are named in
:mod:`distill.pipeline.folder`), so any stage reruns alone (``distill train RUN``, ``distill eval RUN``,
``distill export RUN``), and ``distill run`` walks :data:`STAGES`, skipping a stage whose output is complete.
Each stage function takes the run's config and the command's distributed state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from distill.devices import ONE_PROCESS, release_memory
from distill.errors import DistillError
from distill.io import save_json
from distill.pipeline.config import StudentKind
from distill.pipeline.folder import RunFolder, RunSummary
from distill.pipeline.pca import PCARotation
from distill.pipeline.prepare import load_vocab, prepare, run_teacher  # noqa: F401  (prepare: run by name)
from distill.pipeline.targets import TargetKind, TargetView

logger = logging.getLogger(__name__)
SPEED_TEXTS = 512  # held-out texts timed for the student-vs-teacher speed


def _train_config(cfg, dims: list[int]):
    """``cfg.train`` with its ``dim_weights`` (one per ``cfg.dims``) cut to the sizes the student has: the
    sizes above a narrow teacher's width are dropped, and their weights with them."""
    weights = cfg.train.dim_weights
    if weights is None:
        return cfg.train
    by_size = dict(zip(cfg.dims, weights))
    return replace(cfg.train, dim_weights=tuple(by_size[d] for d in dims))


def _save_student(student, folder) -> None:
    """``student/`` is whole or absent: written into a temporary folder and renamed into place."""
    from distill.io import atomic_dir

    with atomic_dir(folder) as tmp:
        student.save(tmp)


# ---- train -----------------------------------------------------------------------------------------
def _initialised_student(cfg, folder: RunFolder, view: TargetView | None, train_idx: np.ndarray):
    """The student built from ``data/`` and set to its starting point (the teacher's rotated vocabulary, or its
    kept layers); returns (student, vocab targets, token arrays, token counts or None)."""
    from tokenizers import Tokenizer

    from distill.pipeline.data import TokenArrays
    from distill.pipeline.init import init_static, init_transformer
    from distill.students import StudentConfig, build_student

    config = StudentConfig(**json.loads(folder.student_config.read_text()))
    torch.manual_seed(cfg.train.seed)  # the same seed gives the same initial weights, whatever ran before
    student = build_student(config, Tokenizer.from_str(folder.tokenizer.read_text()))
    vocab, pca, tokens = load_vocab(folder), PCARotation.load(folder.pca), TokenArrays(folder.data)
    # one pass over the token ids: SIF weights and the emergent hierarchy both start from these counts
    counts = tokens.token_counts(train_idx, config.vocab_size) if view is not None else None
    if cfg.student is not StudentKind.STATIC and view is None:
        raise DistillError(f"a {cfg.student} student needs texts to learn from: pass --corpus")
    if cfg.student.derived:
        from safetensors.torch import load_file

        student.init_from(load_file(str(folder.layers_init)), pca.components, pca.mean, pca.factors())
    else:
        init_static(student, vocab.ids, vocab.pooled, pca, tokens=tokens if view is not None else None,
                    rows=train_idx, targets=view, counts=counts, weighting=cfg.token_weights)
    if cfg.student is StudentKind.TRANSFORMER:
        init_transformer(student, vocab.input_embeddings, vocab.ids)
    return student, vocab, tokens, counts


def train(cfg, state=None, resume: bool = False) -> dict:
    """Stage 2: build and initialise the student from ``data/``, train it, write ``student/`` and ``train.json``
    (``state``: the command's distributed state, None for one process)."""
    from distill.hierarchy.session import start_hierarchy
    from distill.pipeline.data import TrainSet
    from distill.pipeline.train import Trainer

    state = state or ONE_PROCESS
    folder = RunFolder(cfg.out)
    meta = folder.read_meta()
    view = TargetView.load(folder.data, "targets") if meta["texts"] else None
    train_idx = np.load(folder.split)["train"]
    student, vocab, tokens, counts = _initialised_student(cfg, folder, view, train_idx)
    pca = PCARotation.load(folder.pca)
    hierarchy = start_hierarchy(cfg.hierarchy, student, vocab, counts, pca, cfg.train.seed)
    result: dict = {"steps": 0}
    if view is not None and state.is_main_process and not folder.has_init():
        _save_student(student, folder.student_init)  # the baseline training must beat (evaluate scores both)
    if view is not None:
        dataset = TrainSet(tokens, view, train_idx, static=cfg.student is StudentKind.STATIC,
                           token_targets=meta["kind"] == TargetKind.TOKEN.value, pad_id=student.config.pad_id)
        trainer = Trainer(student, dataset, _train_config(cfg, student.dims), folder.root, pca, device=cfg.device,
                          extra_terms=hierarchy.terms if hierarchy else None, state=state)
        result = trainer.fit(resume=resume)
    if state.is_main_process:
        if hierarchy is not None:  # groups.json: the groups and their typical tokens
            result["hierarchy"] = hierarchy.finish(folder.root, student)
        save_json(folder.train_log, result)
        _save_student(student.cpu(), folder.student)
    state.wait_for_everyone()
    return result


# ---- evaluate ----------------------------------------------------------------------------------------
NO_TEXTS = ("no training texts: the student is the teacher's PCA-rotated vocabulary (each token's vector alone, "
            "cut to the prefix sizes), untrained, so it matches the teacher on tokens by construction; pass --corpus "
            "to train it on texts")


def _summary_head(cfg, folder: RunFolder, student) -> RunSummary:
    """What the run folder already says: teacher, sizes, texts, stage times, training, hierarchy, added words."""
    from distill.pipeline.vocab import words_summary

    meta, train_info = folder.read_meta(), folder.read_train_log()
    summary: RunSummary = {"teacher": student.config.teacher, "student": cfg.student, "dims": student.dims,
                           "train_texts": meta["train"], "holdout_texts": meta["held"],
                           "stage_seconds": {**meta["seconds"], "train": train_info.get("seconds", 0.0)}}
    if train_info.get("steps"):
        summary["train"] = {k: v for k, v in train_info.items() if k != "hierarchy"}
    if not meta["texts"]:
        summary["note"] = NO_TEXTS
    if "hierarchy" in train_info:
        summary["hierarchy"] = train_info["hierarchy"]
    words = words_summary(folder.data)
    if words is not None:  # --vocab-from-corpus: words asked for and added
        summary["corpus_words"] = words
    return summary


def _holdout(folder: RunFolder, student, pca: PCARotation) -> tuple[dict, list[str]]:
    """Agreement with the teacher on the held-out texts of student, initialisation and the teacher's own
    prefixes (rotated and truncated); returns (that section, the held-out texts)."""
    from distill.pipeline.evaluate import agreement
    from distill.students import load_student

    held_texts = [json.loads(line) for line in folder.holdout.read_text().splitlines()]
    x_teacher = TargetView.load(folder.data, "targets").pooled(np.load(folder.split)["held"])
    dims = student.dims
    section = {"student": agreement(student.encode(held_texts), x_teacher, dims),
               "teacher_rotated": agreement(pca.transform(x_teacher), x_teacher, dims),
               "teacher_truncated": agreement(x_teacher, x_teacher, dims)}
    if folder.has_init():
        section["init"] = agreement(load_student(folder.student_init).encode(held_texts), x_teacher, dims)
    return section, held_texts


def _sts(path: str, student, teacher, pca: PCARotation) -> dict:
    """STS Spearman/Pearson per prefix size of the student, the teacher and the teacher's rotated prefixes."""
    from distill.pipeline.evaluate import read_pairs, sts_scores

    pairs, dims = read_pairs(path), student.dims

    class Rotated:  # the teacher in the run's rotated space: its prefixes are the baseline the student chases
        def encode(self, texts, batch_size=64, **_):
            return pca.transform(teacher.embed_texts(list(texts), batch_size=batch_size))

    return {"student": sts_scores(student, pairs, dims), "teacher": sts_scores(teacher, pairs, dims),
            "teacher_rotated": sts_scores(Rotated(), pairs, dims)}


def evaluate(cfg, state=None) -> RunSummary:
    """Stage 3: held-out agreement with the teacher (and STS with ``--sts``, retrieval with ``--retrieval``)
    -> ``summary.json``. (The report is drawn from the finished run folder by
    :func:`distill.report.write_report`, which ``distill run`` and ``distill eval RUN`` call next.)"""
    from distill.students import load_student

    t0 = time.perf_counter()
    folder = RunFolder(cfg.out)
    student = load_student(folder.student)
    summary, pca = _summary_head(cfg, folder, student), PCARotation.load(folder.pca)
    held_texts: list[str] = []
    if summary["holdout_texts"] > 10:  # overlap@10 needs more than 10 held-out texts
        summary["holdout"], held_texts = _holdout(folder, student, pca)
    teacher = run_teacher(cfg, state) if held_texts or cfg.sts or cfg.retrieval else None
    if held_texts:
        summary["speed"] = encode_speeds(student, teacher, held_texts[:SPEED_TEXTS])
        summary["size"] = {"student_parameters": sum(p.numel() for p in student.parameters()),
                           "teacher_parameters": sum(p.numel() for p in teacher.model.parameters())}
    if cfg.sts:
        summary["sts"] = _sts(cfg.sts, student, teacher, pca)
    if cfg.retrieval:
        from distill.pipeline.retrieval import read_task, run_retrieval

        students = {"student": student, **({"init": load_student(folder.student_init)} if folder.has_init() else {})}
        summary["retrieval"] = run_retrieval(read_task(cfg.retrieval, cfg.retrieval_split), cfg.retrieval_split,
                                             students, teacher, pca.transform, student.dims, cache=cfg.targets_dir,
                                             batch_size=cfg.teacher_batch_size)
    if teacher is not None:
        device = teacher.device
        del teacher
        release_memory(device)
    summary["stage_seconds"]["eval"] = time.perf_counter() - t0
    summary["seconds"] = sum(summary["stage_seconds"].values())
    folder.write_summary(summary)
    return summary


def texts_per_second(encode, texts: list[str], batch_size: int = 64) -> float:
    """Texts per second of ``encode(texts)``, timed after a warm-up call on its first batch."""
    encode(texts[:batch_size])
    t = time.perf_counter()
    encode(texts)
    return len(texts) / max(time.perf_counter() - t, 1e-9)


def encode_speeds(student, teacher, texts: list[str], batch_size: int = 64) -> dict:
    """Sentences per second of the student and of the teacher on the same texts, one after the other on
    the run's device, each after a warm-up batch: the ratio is the speed-up a user of the student sees."""
    s = texts_per_second(lambda x: student.encode(x, batch_size=batch_size), texts, batch_size)
    t = texts_per_second(lambda x: teacher.embed_texts(x, batch_size=batch_size), texts, batch_size)
    student_device = str(next(student.parameters()).device)
    return {"texts": len(texts), "device": str(teacher.device), "student_device": student_device, "sentences_per_s": s,
            "teacher_sentences_per_s": t, "speedup": s / t}


def export(cfg, state=None) -> None:
    """Stage 4: model cards (``README.md``) for ``student/`` and, for a static student, the
    sentence-transformers folder ``student-st/`` (with its card)."""
    from distill.pipeline.folder import summary_of
    from distill.students import load_student
    from distill.students.card import write_model_card
    from distill.students.export import ExportFormat, export_student

    folder = RunFolder(cfg.out)
    student = load_student(folder.student)
    summary = summary_of(folder.root, student.config.teacher)
    write_model_card(folder.student, student, summary, ExportFormat.NATIVE.value)
    # transformer and conv students have no sentence-transformers form
    if cfg.student in (StudentKind.STATIC, StudentKind.LAYERS):
        export_student(student, folder.student_st, ExportFormat.SENTENCE_TRANSFORMERS.value, summary=summary)


# ---- the table ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """A stage of a run: what it reads and writes in the run folder (:class:`RunFolder` attribute names), the
    question that says its output is complete (None: it always runs), and its function ``(cfg, state)``, named
    here and looked up when the stage runs (a test or a plugin may replace it in this module)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    complete: Callable[[RunFolder], bool] | None
    function: str
    main_only: bool = False  # the main process alone runs it (under several processes)

    def run(self, cfg, state, **kwargs):
        return globals()[self.function](cfg, state, **kwargs)


STAGES = (
    Stage("targets", ("config",), ("data", "pca"), RunFolder.prepared, "prepare"),
    Stage("train", ("data", "pca"), ("metrics", "checkpoints", "student_init", "train_log", "student", "groups"),
          RunFolder.trained, "train"),
    Stage("eval", ("data", "pca", "student", "student_init", "train_log"), ("summary", "report"), None, "evaluate",
          main_only=True),
    Stage("export", ("student", "summary"), ("student", "student_st"), None, "export", main_only=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise DistillError(f"unknown stage {name!r} (one of {', '.join(STAGE_NAMES)})")
