"""Stage 1 of a run, the targets stage: label the vocabulary and the corpus (cached per text in the target
store), split, fit the PCA, write the student's token ids and shape into ``data/`` (see
:mod:`distill.pipeline.folder` for the files).

:func:`prepare` runs its steps in order; each step returns what the next needs. Every rank labels its
share of the texts; the main process alone writes the run folder, ``data/meta.json`` last.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from distill.devices import ONE_PROCESS, release_memory, run_device
from distill.errors import DistillError
from distill.io import remove_stale_tmp, save_json, save_text
from distill.memory import trim_heap
from distill.pipeline.config import StudentKind
from distill.pipeline.corpus import Corpus, resolve_source
from distill.pipeline.folder import RunFolder
from distill.pipeline.pca import PCARotation
from distill.pipeline.targets import TargetKind, TargetView, VocabTargets, label, text_keys, vocab_targets

logger = logging.getLogger(__name__)
PCA_SAMPLE = 200_000  # PCA is fitted on at most this many training targets (a seeded sample)
CHUNK = 16_384  # texts per chunk when streaming over the corpus


@contextmanager
def timed(seconds: dict, name: str):
    """Add the seconds the block took to ``seconds[name]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t


def holdout_size(n: int, holdout: int | None) -> int:
    """Texts held out of ``n`` (default: 10%, at most 1000).

    :raises DistillError: when too few would be left to train on.
    """
    n_held = min(1000, n // 10) if holdout is None else holdout
    if n and n - n_held < max(n_held, 2):
        raise DistillError(f"the corpus has {n} texts: too few to train on after a holdout of {n_held} "
                           "(lower --holdout)")
    return n_held


def student_dims(dims, teacher_dim: int) -> list[int]:
    """The prefix sizes asked for that fit the teacher's width, ascending."""
    kept = sorted({d for d in dims if d <= teacher_dim})
    if not kept:
        raise DistillError(f"no prefix size in {list(dims)} fits the teacher's width {teacher_dim}")
    if len(kept) < len(dims):
        logger.warning("prefix sizes above the teacher's width %d dropped: %s", teacher_dim,
                       [d for d in dims if d > teacher_dim])
    return kept


def target_kind(student: StudentKind | str, token_targets: bool) -> TargetKind:
    """Token targets for a contextual student that learns them, text targets otherwise."""
    student = StudentKind(student)
    if student is StudentKind.CONV and token_targets:
        logger.info("conv student: trained on the teacher's text vectors only (its merged positions do not line "
                    "up with the teacher's tokens, so there are no token targets)")
    return TargetKind.TOKEN if student.token_states and token_targets else TargetKind.TEXT


def run_teacher(cfg, state):
    """The run's teacher on this process's device, loaded with every option that decides its targets."""
    from distill.teachers import load_teacher

    return load_teacher(cfg.teacher, device=run_device(state, cfg.device), dtype=cfg.teacher_dtype,
                        pooling=cfg.pooling, layer=cfg.layer, max_length=cfg.max_length, prompt=cfg.prompt)


def corpus_stamp(cfg) -> list | None:
    """Size and modification time of a corpus file (or of a saved dataset's files): a changed corpus
    makes the prepared data stale."""
    if not cfg.corpus or str(cfg.corpus).startswith("hf:"):
        return None
    path = Path(resolve_source(cfg.corpus))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


# ---- the steps ---------------------------------------------------------------------------------------
def read_corpus(cfg, main: bool) -> tuple[Corpus | None, np.ndarray | None]:
    """The corpus and every text's key: the first read hashes every text and fails on a bad corpus (or one too
    small for the holdout) before the teacher loads."""
    if not cfg.corpus:
        return None, None
    corpus = Corpus(cfg.corpus, text_column=cfg.text_column, limit=cfg.limit)
    keys = text_keys(tqdm(corpus, unit="text", desc="reading the corpus", disable=not main, mininterval=1.0))
    holdout_size(len(keys), cfg.holdout)
    return corpus, keys


def load_run_teacher(cfg, state):
    """The teacher, checked for what the student needs of it, with its weights fingerprint computed."""
    teacher = run_teacher(cfg, state)
    if cfg.student is StudentKind.CONV:  # before any labeling: a teacher it cannot be derived from fails now
        from distill.students.conv import check_teacher

        check_teacher(teacher.model.config.to_dict(), teacher.pooling.value, cfg.merge, cfg.merge_after, cfg.depth,
                      cfg.layers)
    teacher.identity()  # computed (or recalled) here and timed with the load
    return teacher


def label_vocab(cfg, teacher, corpus: Corpus | None, folder: RunFolder, state):
    """Label the vocabulary (or, in char mode, the corpus's characters); returns (tokenizer, vocab targets)."""
    from tokenizers import Tokenizer

    if cfg.tokenizer == "char":
        from distill.hierarchy.chars import char_tokenizer, corpus_chars

        if cfg.student is not StudentKind.STATIC:
            raise DistillError("--tokenizer char needs --student static")
        if corpus is None:
            raise DistillError("--tokenizer char needs --corpus: the characters come from its texts")
        chars = corpus_chars(corpus)  # streams: the corpus is read once, not held
        view = label(teacher, TargetKind.TEXT, cfg.targets_dir, chars, batch_size=256, progress=False, state=state)
        ids, strings, input_embeddings = np.arange(1, len(chars) + 1, dtype=np.int64), chars, None
        tokenizer = char_tokenizer(chars)
        vocab = VocabTargets(ids, strings, view.pooled(), np.zeros((len(ids), 0), np.float32))
    else:
        view = label(teacher, TargetKind.VOCAB, cfg.targets_dir, batch_size=max(256, cfg.teacher_batch_size),
                     state=state)
        vocab = vocab_targets(view)
        ids, strings, input_embeddings = vocab.ids, vocab.strings, str(view.store.folder / "input_embeddings.npy")
        tokenizer = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    if state.is_main_process:
        view.save(folder.data, "vocab")
        save_json(folder.vocab_items, {"ids": ids.tolist(), "strings": strings, "input_embeddings": input_embeddings},
                  indent=None)
    return tokenizer, vocab


def load_vocab(run: str | Path | RunFolder) -> VocabTargets:
    """The vocabulary targets a prepared run starts its student from (with the words --vocab-from-corpus added)."""
    from distill.pipeline.vocab import with_corpus_words

    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    items = json.loads(folder.vocab_items.read_text())
    view = TargetView.load(folder.data, "vocab")
    emb = (np.load(items["input_embeddings"]) if items["input_embeddings"]
           else np.zeros((len(items["ids"]), 0), np.float32))
    vocab = VocabTargets(np.asarray(items["ids"], np.int64), items["strings"], view.pooled(), emb)
    return with_corpus_words(folder.data, vocab)


def split_texts(n: int, holdout: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) text indices, each ascending: a seeded permutation's first ``holdout_size`` held."""
    n_held = holdout_size(n, holdout)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def derive_layers(cfg, teacher, folder: RunFolder, main: bool) -> dict:
    """A layers student's config fields; writes its starting weights (the teacher's kept layers) into ``data/``."""
    from safetensors.torch import save_file

    from distill.students.layers import derived_hf_config, derived_weights, pick_layers, teacher_depth

    if cfg.layer != -1:
        raise DistillError(f"--student {cfg.student} distils the teacher's last layer; leave --layer out")
    hf = teacher.model.config.to_dict()
    layers = pick_layers(teacher_depth(hf), cfg.depth, list(cfg.layers) if cfg.layers else None)
    merged = {"merge": cfg.merge, "merge_after": cfg.merge_after} if cfg.student is StudentKind.CONV else {}
    keep = {k: v for k, v in derived_hf_config(hf, len(layers)).items()
            if not k.startswith("_") and k not in ("architectures", "torch_dtype", "dtype", "transformers_version")}
    if main:
        weights = {k: v.detach().float().cpu().contiguous() for k, v in teacher.model.state_dict().items()}
        save_file(derived_weights(weights, layers), str(folder.layers_init))
    logger.info("%s student: teacher layers %s of %d", cfg.student, layers, teacher_depth(hf))
    return {"hf_config": keep, "layers": layers, "pooling": teacher.pooling.value, "normalize": teacher.normalize,
            "lowercase": teacher.lowercase, **merged}


def student_config(cfg, teacher, tokenizer, dims: list[int], n_words: int, folder: RunFolder, main: bool):
    """The student's shape: its sizes, its tokenizer's ids, the teacher it learns and its prompts."""
    from distill.students import StudentConfig

    special = teacher.tokenizer
    derived = derive_layers(cfg, teacher, folder, main) if cfg.student.derived else {}
    return StudentConfig(kind=cfg.student.value, vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                         dim=dims[-1], dims=dims, teacher=teacher.identity(), width=cfg.width, n_layers=cfg.n_layers,
                         n_heads=cfg.n_heads, max_length=teacher.max_length, pad_id=special.pad_token_id or 0,
                         cls_id=special.cls_token_id, sep_id=special.sep_token_id, prompts=teacher.prompts,
                         default_prompt_name=teacher.prompt_name, corpus_words=n_words, **derived)


def fit_pca(cfg, view: TargetView | None, vocab: VocabTargets, train: np.ndarray) -> PCARotation:
    """The rotation of the teacher space, fitted on (a seeded sample of) the training texts' targets, or on the
    vocabulary's without texts."""
    if view is None:
        return PCARotation.fit(vocab.pooled, center=cfg.pca_center, whiten=cfg.whiten)
    sample = train if len(train) <= PCA_SAMPLE else np.sort(
        np.random.default_rng(cfg.train.seed).choice(train, PCA_SAMPLE, replace=False))
    return PCARotation.fit_chunks((view.pooled(sample[i:i + CHUNK]) for i in range(0, len(sample), CHUNK)),
                                  center=cfg.pca_center, whiten=cfg.whiten)


def write_tokens(corpus: Corpus | None, view: TargetView | None, held: np.ndarray, student, folder: RunFolder
                 ) -> list[str]:
    """Token ids of every text into ``data/``: the student tokenizer's (``student``, text targets) or the
    teacher's own (``student`` None: token targets are aligned to them). Returns the held-out texts."""
    from distill.pipeline.data import TokenWriter

    writer = TokenWriter(folder.data)
    held_texts: list[str] = []
    if corpus is not None:
        held_set = set(held.tolist())
        position = 0
        for chunk in corpus.chunks(CHUNK):
            if student is not None:  # with the prompt the targets were labeled with, as encode will put it
                writer.add(student.tokenize(student.with_prompt(chunk)))
            else:
                writer.add(view.token_ids(np.arange(position, position + len(chunk))))
            held_texts += [t for k, t in enumerate(chunk, start=position) if k in held_set]
            position += len(chunk)
            trim_heap()
        if position != len(view):
            raise DistillError(f"the corpus changed while being read ({position} texts, {len(view)} labeled)")
    writer.close()
    return held_texts


# ---- the stage --------------------------------------------------------------------------------------
def prepare(cfg, state=None) -> None:
    """Stage 1: label the vocabulary and the corpus, split, fit the PCA, write token ids (``state``: the
    command's distributed state, None for one process; every rank labels its share, the main process writes
    ``data/``)."""
    state = state or ONE_PROCESS
    folder, main, seconds = RunFolder(cfg.out), state.is_main_process, {}
    with timed(seconds, "reading"):
        corpus, keys = read_corpus(cfg, main)
        if main:
            folder.data.mkdir(parents=True, exist_ok=True)
            for path in (folder.root, folder.data):  # temporary files of a run killed mid-write
                remove_stale_tmp(path)
    with timed(seconds, "teacher"):
        teacher = load_run_teacher(cfg, state)
    dims = student_dims(cfg.dims, teacher.dim)
    logger.info("teacher %s (%s, %d dims, %s on %s); student %s with dims %s; world size %d", teacher.source.name,
                teacher.kind.value, teacher.dim, teacher.dtype, teacher.device, cfg.student, dims,
                state.num_processes)
    with timed(seconds, "vocab"):
        tokenizer, vocab = label_vocab(cfg, teacher, corpus, folder, state)
    kind, view = target_kind(cfg.student, cfg.token_targets), None
    with timed(seconds, "labeling"):
        if corpus is not None:
            view = label(teacher, kind, cfg.targets_dir, corpus, batch_size=cfg.teacher_batch_size, keys=keys,
                         state=state)
    train, held = split_texts(len(view) if view is not None else 0, cfg.holdout, cfg.train.seed)
    n_words = 0
    if cfg.vocab_from_corpus and corpus is not None:  # words of the training texts: the held-out ones play no part
        from distill.pipeline.vocab import add_corpus_words

        with timed(seconds, "words"):
            vocab, n_words = add_corpus_words(cfg, teacher, corpus, train, tokenizer, vocab, folder.data, state)
    config = student_config(cfg, teacher, tokenizer, dims, n_words, folder, main)
    device = teacher.device
    del teacher
    release_memory(device)  # the student needs the teacher's GPU memory
    if main:
        _write_data(cfg, folder, config, tokenizer, corpus, view, kind, vocab, (train, held), seconds)
    state.wait_for_everyone()


def _write_data(cfg, folder: RunFolder, config, tokenizer, corpus, view, kind: TargetKind, vocab, split: tuple,
                seconds: dict) -> None:
    """The main process's part: the split, the PCA, the token ids, the student's shape, ``meta.json`` last."""
    from distill.students import build_student

    train, held = split
    np.savez(folder.split, train=train, held=held)
    with timed(seconds, "pca"):
        pca = fit_pca(cfg, view, vocab, train)
        if view is not None:
            view.save(folder.data, "targets")
        pca.save(folder.pca)
        config.space = pca.fingerprint()  # the space the student's vectors share with the teacher's rotated ones
    with timed(seconds, "tokens"):
        student = build_student(config, tokenizer) if corpus is not None and kind is TargetKind.TEXT else None
        held_texts = write_tokens(corpus, view, held, student, folder)
        save_text(folder.holdout, "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in held_texts))
        save_json(folder.student_config, asdict(config))
        save_text(folder.tokenizer, tokenizer.to_str())
    n = len(view) if view is not None else 0
    save_json(folder.meta, {"texts": n, "train": len(train), "held": len(held), "kind": kind.value,
                            "corpus_stamp": corpus_stamp(cfg), "n_empty": corpus.n_empty if corpus is not None else 0,
                            "n_truncated": view.n_truncated if view is not None else 0, "seconds": seconds})
