"""The stages of a run, each a function that reads and writes the run folder.

``prepare`` (teacher labels, split, PCA, token ids) -> ``train`` (student/) -> ``evaluate``
(summary.json; then report.html) -> ``export`` (student-st/). Each stage reads only what the stage before
it wrote, so any stage reruns alone (``distill train RUN``, ``distill eval RUN``, ``distill export RUN``),
and ``distill run`` skips a stage whose output is complete. Run folder::

    config.json                  the run's options
    data/targets.json, rows.npy  which target store holds the corpus's teacher vectors, and where each text is
    data/vocab.json, vocab.rows.npy, vocab-items.json   the vocabulary targets the student starts from
    data/words.json, words.rows.npy, words-items.json   --vocab-from-corpus: the added words and their targets
    data/split.npz               training and held-out text indices
    data/tokens.ids.bin, tokens.offsets.npy   the student's token ids of every text (flat int32)
    data/holdout.jsonl           the held-out texts, for evaluation
    data/student.json, tokenizer.json   the student's shape and tokenizer
    data/meta.json               written last: the stage is complete
    pca.npz                      the rotation of the teacher space
    metrics.jsonl, checkpoints/, train.json, student/, summary.json, report.html, student-st/
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.devices import distributed_state, run_device
from distill.errors import DistillError
from distill.io import remove_stale_tmp, save_json, save_text
from distill.memory import trim_heap
from distill.pipeline.corpus import Corpus, resolve_source
from distill.pipeline.pca import PCARotation
from distill.pipeline.targets import TargetKind, TargetView, VocabTargets, label, text_keys, vocab_targets

logger = logging.getLogger(__name__)
PCA_SAMPLE = 200_000  # PCA is fitted on at most this many training targets (a seeded sample)
CHUNK = 16_384  # texts per chunk when streaming over the corpus


def data_dir(out: Path) -> Path:
    return Path(out) / "data"


def prepared(out: Path) -> bool:
    return (data_dir(out) / "meta.json").is_file()


def _student_dims(dims, teacher_dim: int) -> list[int]:
    kept = sorted({d for d in dims if d <= teacher_dim})
    if not kept:
        raise DistillError(f"no prefix size in {list(dims)} fits the teacher's width {teacher_dim}")
    if len(kept) < len(dims):
        logger.warning("prefix sizes above the teacher's width %d dropped: %s", teacher_dim,
                       [d for d in dims if d > teacher_dim])
    return kept


def _train_config(cfg, dims: list[int]):
    """``cfg.train`` with its ``dim_weights`` (one per ``cfg.dims``) cut to the sizes the student has: the
    sizes above a narrow teacher's width are dropped, and their weights with them."""
    weights = cfg.train.dim_weights
    if weights is None:
        return cfg.train
    by_size = dict(zip(cfg.dims, weights))
    return replace(cfg.train, dim_weights=tuple(by_size[d] for d in dims))


def holdout_size(n: int, holdout: int | None) -> int:
    """Texts held out of ``n`` (default: 10%, at most 1000).

    :raises DistillError: when too few would be left to train on.
    """
    n_held = min(1000, n // 10) if holdout is None else holdout
    if n and n - n_held < max(n_held, 2):
        raise DistillError(f"the corpus has {n} texts: too few to train on after a holdout of {n_held} "
                           "(lower --holdout)")
    return n_held


def _release(device: torch.device) -> None:
    """After the caller dropped its teacher: collect it and return its GPU memory, which the student needs."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- prepare ---------------------------------------------------------------------------------------
def run_teacher(cfg):
    """The run's teacher, loaded with every option that decides its targets."""
    from distill.teachers import load_teacher

    return load_teacher(cfg.teacher, device=run_device(cfg.device), dtype=cfg.teacher_dtype, pooling=cfg.pooling,
                        layer=cfg.layer, max_length=cfg.max_length, prompt=cfg.prompt)


LAYERS_INIT = "layers-init.safetensors"  # a layers student's starting weights: the teacher's kept layers
DERIVED = ("layers", "conv")  # students made of the teacher's own layers (conv: merging tokens between them)


def _derive_layers(cfg, teacher, data: Path, main: bool) -> dict:
    """A layers student's config fields; writes its starting weights (the teacher's kept layers) to ``data/``."""
    from safetensors.torch import save_file

    from distill.students.layers import derived_hf_config, derived_weights, pick_layers, teacher_depth

    if cfg.layer != -1:
        raise DistillError(f"--student {cfg.student} distils the teacher's last layer; leave --layer out")
    hf = teacher.model.config.to_dict()
    layers = pick_layers(teacher_depth(hf), cfg.depth, list(cfg.layers) if cfg.layers else None)
    merged = {"merge": cfg.merge, "merge_after": cfg.merge_after} if cfg.student == "conv" else {}
    keep = {k: v for k, v in derived_hf_config(hf, len(layers)).items()
            if not k.startswith("_") and k not in ("architectures", "torch_dtype", "dtype", "transformers_version")}
    if main:
        state = {k: v.detach().float().cpu().contiguous() for k, v in teacher.model.state_dict().items()}
        save_file(derived_weights(state, layers), str(data / LAYERS_INIT))
    logger.info("%s student: teacher layers %s of %d", cfg.student, layers, teacher_depth(hf))
    return {"hf_config": keep, "layers": layers, "pooling": teacher.pooling.value, "normalize": teacher.normalize,
            "lowercase": teacher.lowercase, **merged}


def _vocab(cfg, teacher, corpus: Corpus | None, data: Path, main: bool):
    """Label the vocabulary (or, in char mode, the corpus's characters); returns (tokenizer, vocab targets)."""
    from tokenizers import Tokenizer

    if cfg.tokenizer == "char":
        from distill.hierarchy.chars import char_tokenizer, corpus_chars

        if cfg.student != "static":
            raise DistillError("--tokenizer char needs --student static")
        if corpus is None:
            raise DistillError("--tokenizer char needs --corpus: the characters come from its texts")
        chars = corpus_chars(corpus)  # streams: the corpus is read once, not held
        view = label(teacher, TargetKind.TEXT, cfg.targets_dir, chars, batch_size=256, progress=False)
        ids, strings, input_embeddings = np.arange(1, len(chars) + 1, dtype=np.int64), chars, None
        tokenizer = char_tokenizer(chars)
        vocab = VocabTargets(ids, strings, view.pooled(), np.zeros((len(ids), 0), np.float32))
    else:
        view = label(teacher, TargetKind.VOCAB, cfg.targets_dir, batch_size=max(256, cfg.teacher_batch_size))
        vocab = vocab_targets(view)
        ids, strings, input_embeddings = vocab.ids, vocab.strings, str(view.store.folder / "input_embeddings.npy")
        tokenizer = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    if main:
        view.save(data, "vocab")
        save_json(data / "vocab-items.json", {"ids": ids.tolist(), "strings": strings,
                                              "input_embeddings": input_embeddings}, indent=None)
    return tokenizer, vocab


def load_vocab(out: Path) -> VocabTargets:
    data = data_dir(out)
    items = json.loads((data / "vocab-items.json").read_text())
    view = TargetView.load(data, "vocab")
    emb = (np.load(items["input_embeddings"]) if items["input_embeddings"]
           else np.zeros((len(items["ids"]), 0), np.float32))
    from distill.pipeline.vocab import with_corpus_words

    vocab = VocabTargets(np.asarray(items["ids"], np.int64), items["strings"], view.pooled(), emb)
    return with_corpus_words(data, vocab)  # and the words --vocab-from-corpus added


def prepare(cfg) -> None:
    """Stage 1: label the vocabulary and the corpus (cached per text), split, fit the PCA, write token ids.

    Every rank labels its share; the main process writes ``data/``.
    """
    from distill.pipeline.data import TokenWriter
    from distill.students import StudentConfig, build_student

    t0 = time.perf_counter()
    state = distributed_state(cfg.device)
    out = Path(cfg.out)
    data = data_dir(out)
    corpus = Corpus(cfg.corpus, text_column=cfg.text_column, limit=cfg.limit) if cfg.corpus else None
    keys = None
    if corpus is not None:  # the first read: hashes every text and fails on a bad corpus before the teacher loads
        keys = text_keys(tqdm(corpus, unit="text", desc="reading the corpus", disable=not state.is_main_process,
                              mininterval=1.0))
        holdout_size(len(keys), cfg.holdout)
    main = state.is_main_process
    if main:
        data.mkdir(parents=True, exist_ok=True)
        for folder in (out, data):  # temporary files of a run killed mid-write
            remove_stale_tmp(folder)
    seconds_reading = time.perf_counter() - t0
    teacher = run_teacher(cfg)
    if cfg.student == "conv":  # before any labeling: a teacher it cannot be derived from fails now
        from distill.students.conv import check_teacher

        check_teacher(teacher.model.config.to_dict(), teacher.pooling.value, cfg.merge, cfg.merge_after, cfg.depth,
                      cfg.layers)
    teacher.identity()  # the weights fingerprint, computed (or recalled) here and timed with the load
    seconds = {"reading": seconds_reading, "teacher": time.perf_counter() - t0 - seconds_reading}
    dims = _student_dims(cfg.dims, teacher.dim)
    logger.info("teacher %s (%s, %d dims, %s on %s); student %s with dims %s; world size %d", teacher.source.name,
                teacher.kind.value, teacher.dim, teacher.dtype, teacher.device, cfg.student, dims,
                state.num_processes)
    t = time.perf_counter()
    tokenizer, vocab = _vocab(cfg, teacher, corpus, data, main)
    seconds["vocab"] = time.perf_counter() - t
    contextual = cfg.student in ("transformer", "layers")  # conv: T/k merged states match no teacher token
    if cfg.student == "conv" and cfg.token_targets:
        logger.info("conv student: trained on the teacher's text vectors only (its merged positions do not line "
                    "up with the teacher's tokens, so there are no token targets)")
    kind = TargetKind.TOKEN if contextual and cfg.token_targets else TargetKind.TEXT
    view = None
    t = time.perf_counter()
    if corpus is not None:
        view = label(teacher, kind, cfg.targets_dir, corpus, batch_size=cfg.teacher_batch_size, keys=keys)
    seconds["labeling"] = time.perf_counter() - t
    n = len(view) if view is not None else 0
    n_held = holdout_size(n, cfg.holdout)
    order = np.random.default_rng(cfg.train.seed).permutation(n)
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    n_words = 0
    if cfg.vocab_from_corpus and corpus is not None:  # words of the training texts: the held-out ones play no part
        from distill.pipeline.vocab import add_corpus_words

        t = time.perf_counter()
        vocab, n_words = add_corpus_words(cfg, teacher, corpus, train, tokenizer, vocab, data, main)
        seconds["words"] = time.perf_counter() - t
    special = teacher.tokenizer
    config = StudentConfig(kind=cfg.student, vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                           dim=dims[-1], dims=dims, teacher=teacher.identity(), width=cfg.width,
                           n_layers=cfg.n_layers, n_heads=cfg.n_heads, max_length=teacher.max_length,
                           pad_id=special.pad_token_id or 0, cls_id=special.cls_token_id, sep_id=special.sep_token_id,
                           prompts=teacher.prompts, default_prompt_name=teacher.prompt_name, corpus_words=n_words,
                           **(_derive_layers(cfg, teacher, data, main) if cfg.student in DERIVED else {}))
    device = teacher.device
    del teacher, special
    _release(device)
    if not main:
        state.wait_for_everyone()
        return
    np.savez(data / "split.npz", train=train, held=held)
    t1 = time.perf_counter()
    if view is not None:
        sample = train if len(train) <= PCA_SAMPLE else np.sort(
            np.random.default_rng(cfg.train.seed).choice(train, PCA_SAMPLE, replace=False))
        pca = PCARotation.fit_chunks((view.pooled(sample[i:i + CHUNK]) for i in range(0, len(sample), CHUNK)),
                                     center=cfg.pca_center, whiten=cfg.whiten)
        view.save(data, "targets")
    else:
        pca = PCARotation.fit(vocab.pooled, center=cfg.pca_center, whiten=cfg.whiten)
    pca.save(out / "pca.npz")
    config.space = pca.fingerprint()  # the space the student's vectors share with the teacher's rotated ones
    seconds["pca"] = time.perf_counter() - t1

    # token ids of every text: the teacher's own (token targets are aligned to them) or the student tokenizer's
    t2 = time.perf_counter()
    writer = TokenWriter(data)
    held_texts = []
    if corpus is not None:
        held_set = set(held.tolist())
        student = build_student(config, tokenizer) if kind is TargetKind.TEXT else None
        position = 0
        for chunk in corpus.chunks(CHUNK):
            if student is not None:  # with the prompt the targets were labeled with, as encode will put it
                writer.add(student.tokenize(student.with_prompt(chunk)))
            else:
                writer.add(view.token_ids(np.arange(position, position + len(chunk))))
            held_texts += [t for k, t in enumerate(chunk, start=position) if k in held_set]
            position += len(chunk)
            trim_heap()
        if position != n:
            raise DistillError(f"the corpus changed while being read ({position} texts, {n} labeled)")
    writer.close()
    save_text(data / "holdout.jsonl", "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in held_texts))
    save_json(data / "student.json", asdict(config))
    save_text(data / "tokenizer.json", tokenizer.to_str())
    seconds["tokens"] = time.perf_counter() - t2
    save_json(data / "meta.json", {"texts": n, "train": len(train), "held": len(held), "kind": kind.value,
                                   "corpus_stamp": corpus_stamp(cfg),
                                   "n_empty": corpus.n_empty if corpus is not None else 0,
                                   "n_truncated": view.n_truncated if view is not None else 0,
                                   "seconds": seconds})
    state.wait_for_everyone()


def corpus_stamp(cfg) -> list | None:
    """Size and modification time of a corpus file (or of a saved dataset's files): a changed corpus
    makes the prepared data stale."""
    if not cfg.corpus or str(cfg.corpus).startswith("hf:"):
        return None
    path = Path(resolve_source(cfg.corpus))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def read_meta(out: Path) -> dict:
    if not prepared(out):
        raise DistillError(f"{out} has no prepared data (data/meta.json); run `distill run --out {out}` "
                           "(it labels and prepares before training)")
    return json.loads((data_dir(out) / "meta.json").read_text())


def _has_student(folder: Path) -> bool:
    from distill.students.base import CONFIG_NAME

    return (Path(folder) / CONFIG_NAME).is_file()


def student_ready(out: Path) -> bool:
    return _has_student(Path(out) / "student")


# ---- train -----------------------------------------------------------------------------------------
def train(cfg, resume: bool = False) -> dict:
    """Stage 2: build and initialise the student from ``data/``, train it, write ``student/`` and ``train.json``."""
    from tokenizers import Tokenizer

    from distill.hierarchy.session import start_hierarchy
    from distill.pipeline.data import TokenArrays, TrainSet
    from distill.pipeline.init import init_static, init_transformer
    from distill.pipeline.train import Trainer
    from distill.students import StudentConfig, build_student

    state = distributed_state(cfg.device)
    out = Path(cfg.out)
    data = data_dir(out)
    meta = read_meta(out)
    config = StudentConfig(**json.loads((data / "student.json").read_text()))
    tokenizer = Tokenizer.from_str((data / "tokenizer.json").read_text())
    torch.manual_seed(cfg.train.seed)  # the same seed gives the same initial weights, whatever ran before
    student = build_student(config, tokenizer)
    vocab = load_vocab(out)
    pca = PCARotation.load(out / "pca.npz")
    split = np.load(data / "split.npz")
    train_idx = split["train"]
    tokens = TokenArrays(data)
    view = TargetView.load(data, "targets") if meta["texts"] else None
    # one pass over the token ids: SIF weights and the emergent hierarchy both start from these counts
    counts = tokens.token_counts(train_idx, config.vocab_size) if view is not None else None
    if cfg.student in DERIVED:
        from safetensors.torch import load_file

        if view is None:
            raise DistillError(f"a {cfg.student} student needs texts to learn from: pass --corpus")
        student.init_from(load_file(str(data / LAYERS_INIT)), pca.components, pca.mean, pca.factors())
    else:
        init_static(student, vocab.ids, vocab.pooled, pca, tokens=tokens if view is not None else None,
                    rows=train_idx, targets=view, counts=counts, weighting=cfg.token_weights)
    if cfg.student == "transformer":
        if view is None:
            raise DistillError("a transformer student needs texts to learn from: pass --corpus")
        init_transformer(student, vocab.input_embeddings, vocab.ids)
    hierarchy = start_hierarchy(cfg.hierarchy, student, vocab, counts, pca, cfg.train.seed)
    result: dict = {"steps": 0}
    if view is not None and state.is_main_process and not _has_student(out / INIT_NAME):
        _save_student(student, out / INIT_NAME)  # the baseline training must beat (evaluate scores both)
    if view is not None:
        dataset = TrainSet(tokens, view, train_idx, static=cfg.student == "static",
                           token_targets=meta["kind"] == TargetKind.TOKEN.value, pad_id=config.pad_id)
        trainer = Trainer(student, dataset, _train_config(cfg, student.dims), out, pca, device=cfg.device,
                          extra_terms=hierarchy.terms if hierarchy else None)
        result = trainer.fit(resume=resume)
    if state.is_main_process:
        if hierarchy is not None:  # groups.json: the groups and their typical tokens
            result["hierarchy"] = hierarchy.finish(out, student)
        save_json(out / "train.json", result)
        _save_student(student.cpu(), out / "student")
    state.wait_for_everyone()
    return result


INIT_NAME = "student-init"  # the student as initialised, before training
SPEED_TEXTS = 512  # held-out texts timed for the student-vs-teacher speed


def _save_student(student, folder: Path) -> None:
    """``student/`` is whole or absent: written into a temporary folder and renamed into place."""
    from distill.io import atomic_dir

    with atomic_dir(folder) as tmp:
        student.save(tmp)


# ---- evaluate and export -----------------------------------------------------------------------------
def evaluate(cfg) -> dict:
    """Stage 3: held-out agreement with the teacher (and STS with ``--sts``) -> ``summary.json``.

    (The report is drawn from the finished run folder by :func:`distill.report.write_report`, which
    ``distill run`` and ``distill eval RUN`` call next.)
    """
    from distill.pipeline.evaluate import agreement, read_pairs, sts_scores
    from distill.students import load_student

    t0 = time.perf_counter()
    out = Path(cfg.out)
    data = data_dir(out)
    meta = read_meta(out)
    student = load_student(out / "student")
    dims = student.dims
    train_info = json.loads((out / "train.json").read_text()) if (out / "train.json").is_file() else {}
    summary: dict = {"teacher": student.config.teacher, "student": cfg.student, "dims": dims,
                     "train_texts": meta["train"], "holdout_texts": meta["held"],
                     "stage_seconds": {**meta["seconds"], "train": train_info.get("seconds", 0.0)}}
    if train_info.get("steps"):
        summary["train"] = {k: v for k, v in train_info.items() if k != "hierarchy"}
    if not meta["texts"]:
        summary["note"] = ("no training texts: the student is the teacher's PCA-rotated vocabulary (each token's "
                           "vector alone, cut to the prefix sizes), untrained, so it matches the teacher on "
                           "tokens by construction; pass --corpus to train it on texts")
    if "hierarchy" in train_info:
        summary["hierarchy"] = train_info["hierarchy"]
    from distill.pipeline.vocab import words_summary

    words = words_summary(data)
    if words is not None:  # --vocab-from-corpus: words asked for and added
        summary["corpus_words"] = words
    held_texts: list[str] = []
    if meta["held"] > 10:  # overlap@10 needs more than 10 held-out texts
        held_texts = [json.loads(line) for line in (data / "holdout.jsonl").read_text().splitlines()]
        view = TargetView.load(data, "targets")
        x_teacher = view.pooled(np.load(data / "split.npz")["held"])
        x_student = student.encode(held_texts)
        rotated = PCARotation.load(out / "pca.npz").transform(x_teacher)
        summary["holdout"] = {"student": agreement(x_student, x_teacher, dims),
                              "teacher_rotated": agreement(rotated, x_teacher, dims),
                              "teacher_truncated": agreement(x_teacher, x_teacher, dims)}
        if _has_student(out / INIT_NAME):
            init = load_student(out / INIT_NAME)
            summary["holdout"]["init"] = agreement(init.encode(held_texts), x_teacher, dims)
    teacher = run_teacher(cfg) if held_texts or cfg.sts or cfg.retrieval else None
    if held_texts:
        summary["speed"] = encode_speeds(student, teacher, held_texts[:SPEED_TEXTS])
        summary["size"] = {"student_parameters": sum(p.numel() for p in student.parameters()),
                           "teacher_parameters": sum(p.numel() for p in teacher.model.parameters())}
    if cfg.sts:
        pairs = read_pairs(cfg.sts)
        pca = PCARotation.load(out / "pca.npz")

        class Rotated:  # the teacher in the run's rotated space: its prefixes are the baseline the student chases
            def encode(self, texts, batch_size=64, **_):
                return pca.transform(teacher.embed_texts(list(texts), batch_size=batch_size))

        summary["sts"] = {"student": sts_scores(student, pairs, dims), "teacher": sts_scores(teacher, pairs, dims),
                          "teacher_rotated": sts_scores(Rotated(), pairs, dims)}
    if cfg.retrieval:
        from distill.pipeline.retrieval import read_task, run_retrieval

        students = {"student": student, **({"init": load_student(out / INIT_NAME)} if _has_student(out / INIT_NAME)
                                           else {})}
        summary["retrieval"] = run_retrieval(read_task(cfg.retrieval, cfg.retrieval_split), cfg.retrieval_split,
                                             students, teacher, PCARotation.load(out / "pca.npz").transform, dims,
                                             cache=cfg.targets_dir, batch_size=cfg.teacher_batch_size)
    if teacher is not None:
        device = teacher.device
        del teacher
        _release(device)
    summary["stage_seconds"]["eval"] = time.perf_counter() - t0
    summary["seconds"] = sum(summary["stage_seconds"].values())
    save_json(out / "summary.json", summary)
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


def export(cfg) -> None:
    """Stage 4: model cards (``README.md``) for ``student/`` and, for a static student, the
    sentence-transformers folder ``student-st/`` (with its card)."""
    from distill.students import load_student
    from distill.students.card import run_summary, write_model_card
    from distill.students.export import ExportFormat, export_student

    out = Path(cfg.out)
    student = load_student(out / "student")
    summary = run_summary(out, student)
    write_model_card(out / "student", student, summary, ExportFormat.NATIVE.value)
    if cfg.student in ("static", "layers"):  # transformer and conv students have no sentence-transformers form
        export_student(student, out / "student-st", ExportFormat.SENTENCE_TRANSFORMERS.value, summary=summary)
