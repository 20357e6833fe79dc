"""Labeling: the texts a store lacks, cut into shards in corpus order, run through the teacher and
written shard by shard (resumable, deterministic, shared out across ranks)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from distill.errors import DistillError
from distill.io import save_json, save_npy
from distill.memory import trim_heap
from distill.pipeline.targets.store import (
    KEY_DTYPE,
    STORE_NAME,
    KeyIndex,
    TargetKind,
    TargetStore,
    shard_name,
    store_identity,
    text_keys,
    vocab_keys,
)
from distill.pipeline.targets.view import TargetView, VocabTargets, vocab_targets
from distill.teachers.teacher import Teacher

logger = logging.getLogger(__name__)

def _warn_old_layout(root: Path) -> None:
    old = [p for p in root.glob("*-*/manifest.json") if not (p.parent / STORE_NAME).is_file()]
    if old:
        size = sum(f.stat().st_size for p in old for f in p.parent.iterdir() if f.is_file())
        logger.warning("%s holds %d target sets in the old cache layout (format 1, %.1f MB) that this distill "
                       "does not read; delete them to free the space: %s", root, len(old), size / 1e6,
                       ", ".join(p.parent.name for p in old[:3]))


def _teacher_inputs(teacher: Teacher, kind: TargetKind, items: list) -> tuple[list[list[int]], int, int]:
    """The teacher's inputs for one shard's items, framed by the teacher for the kind of target: (token ids,
    leading positions not to pool, texts truncated)."""
    if kind is TargetKind.VOCAB:
        return (*teacher.vocab_seqs(items), 0)
    if kind is TargetKind.WORD:
        return (*teacher.word_seqs(items), 0)
    seqs, n_truncated = teacher.tokenize(items)
    return seqs, 0, n_truncated


def _label_shard(teacher: Teacher, store: TargetStore, name: str, keys: np.ndarray, items: list,
                 batch_size: int) -> None:
    """Run the teacher over one shard's items (texts, or token ids for the vocabulary) and write it."""
    seqs, skip, n_truncated = _teacher_inputs(teacher, store.kind, items)
    if store.kind is TargetKind.TOKEN:
        pooled, flat, offsets = teacher.embed_ids(seqs, batch_size=batch_size, with_tokens=True)
        ids = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(offsets[-1]))
        store.write_shard(name, keys, pooled, n_truncated, tokens=flat, offsets=offsets, ids=ids)
    else:
        store.write_shard(name, keys, teacher.embed_ids(seqs, batch_size=batch_size, skip=skip), n_truncated)


def label(teacher: Teacher, kind: TargetKind | str, root: str | Path, texts: Iterable[str] | None = None,
          shard_size: int | None = None, batch_size: int = 64, progress: bool = True,
          keys: np.ndarray | None = None, state=None) -> TargetView:
    """Make sure the store of (``teacher``, ``kind``) under ``root`` holds every text; return their view.

    :param texts: a re-iterable sequence of texts (a list or a :class:`~distill.pipeline.corpus.Corpus`):
        it is read twice, once to hash, once to label what is missing. Ignored for ``vocab``.
    :param keys: ``text_keys(texts)``, when the caller has hashed them already (then ``texts`` is read
        once, and only up to the last text missing from the store).
    :param shard_size: texts per shard, the unit of resumption (default 4096; 1024 for token targets,
        whose shard is held in memory while it is labeled: ~T x D x 2 bytes a text).
    :param state: the command's distributed state (every rank labels its share of the missing shards, the main
        process writes the index); None: one process.
    :raises DistillError: no texts, or shards still missing after labeling.
    """
    from distill.devices import ONE_PROCESS

    kind = TargetKind(kind)
    shard_size = shard_size or (1024 if kind is TargetKind.TOKEN else 4096)
    state = state or ONE_PROCESS
    store = TargetStore(root, store_identity(teacher, kind), kind, teacher.dim)
    items, keys = _items_and_keys(teacher, kind, texts, keys)
    if state.is_main_process:
        Path(root).mkdir(parents=True, exist_ok=True)
        _warn_old_layout(Path(root))
        store.create()
    state.wait_for_everyone()
    missing, index = _missing(store, keys)
    # every rank has cut the same missing set before any rank writes a shard
    state.wait_for_everyone()
    chunks = [missing[i:i + shard_size] for i in range(0, len(missing), shard_size)]
    mine = chunks[state.process_index::state.num_processes]
    if state.num_processes > 1:
        logger.info("rank %d of %d labels %d of %d %s shards", state.process_index, state.num_processes,
                    len(mine), len(chunks), kind.value)
    if mine:
        _label_chunks(teacher, store, keys, items, mine, batch_size, progress and state.is_main_process)
    state.wait_for_everyone()
    # every rank cut the same missing set: all or none of them labeled something
    view = _view_of(store, keys, store.index() if len(missing) else index, teacher.max_length)
    if kind is TargetKind.VOCAB and state.is_main_process:
        _write_vocab(teacher, store)
    state.wait_for_everyone()
    return view


def _items_and_keys(teacher: Teacher, kind: TargetKind, texts: Iterable[str] | None,
                    keys: np.ndarray | None) -> tuple[Iterable, np.ndarray]:
    """What is labeled (the texts, or the usable vocabulary's token ids) and its keys."""
    if kind is TargetKind.VOCAB:
        vocab_ids, _ = teacher.vocab()
        return vocab_ids.tolist(), vocab_keys(vocab_ids)
    if keys is None:
        keys = text_keys(texts) if texts is not None else np.empty((0, 2), KEY_DTYPE)
    if not len(keys):
        raise DistillError(f"{kind.value} targets need a non-empty list of texts")
    return texts, keys


def _missing(store: TargetStore, keys: np.ndarray) -> tuple[np.ndarray, KeyIndex]:
    """Positions of the keys the store lacks (each missing key once, at its first position, in order) and the
    store's index they were looked up in."""
    index = store.index()
    shard, _ = index.lookup(keys)
    missing = np.flatnonzero(shard < 0)
    if len(missing):
        _, first = np.unique(keys[missing], axis=0, return_index=True)
        missing = np.sort(missing[first])
    kind = store.kind.value
    if len(keys) - len(missing) and len(missing):
        logger.info("%d of %d %s targets already in the cache; labeling %d new", len(keys) - len(missing),
                    len(keys), kind, len(missing))
    elif not len(missing):
        logger.info("all %d %s targets found in the cache %s", len(keys), kind, store.folder)
    return missing, index


def _view_of(store: TargetStore, keys: np.ndarray, index: KeyIndex, max_length: int) -> TargetView:
    """The view of ``keys`` in the store, naming only the shards it reads.

    :raises DistillError: when a key is still missing (the cache changed while labeling).
    """
    shard, row = index.lookup(keys)
    if (shard < 0).any():
        raise DistillError(f"{int((shard < 0).sum())} {store.kind.value} targets are missing from {store.folder} "
                           "after labeling (was the cache changed meanwhile?); rerun")
    used = np.unique(shard)
    remap = np.full(len(index.names), -1, np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    names = [index.names[i] for i in used]
    n_truncated = sum(json.loads((store.folder / f"{n}.json").read_text())["n_truncated"] for n in names)
    if n_truncated and store.kind not in (TargetKind.VOCAB, TargetKind.WORD):
        logger.warning("%d texts were longer than the teacher's %d tokens and were truncated", n_truncated,
                       max_length)
    return TargetView(store, names, remap[shard], row, n_truncated)


def _write_vocab(teacher: Teacher, store: TargetStore) -> None:
    """The vocabulary's strings and input-embedding rows, beside its targets (once)."""
    if (store.folder / "vocab.json").is_file():
        return
    vocab, strings = teacher.vocab()
    save_npy(store.folder / "input_embeddings.npy", teacher.input_embeddings(vocab))
    save_json(store.folder / "vocab.json", {"ids": vocab.tolist(), "strings": strings})


def _label_chunks(teacher: Teacher, store: TargetStore, keys: np.ndarray, items: Iterable, chunks: list[np.ndarray],
                  batch_size: int, progress: bool) -> None:
    """Label the given chunks of item positions, reading ``items`` once, in order.

    The chunks are sorted runs of positions that do not interleave, so they fill one after the
    other and at most one chunk's texts are held at a time.
    """
    wanted = np.concatenate(chunks)  # ascending
    owner = np.repeat(np.arange(len(chunks)), [len(c) for c in chunks])
    bar = tqdm(total=len(wanted), unit="text", desc=f"{store.kind.value} targets", disable=not progress)
    collected: list = []
    j, n_read = 0, 0
    for pos, item in enumerate(items):
        n_read = pos + 1
        if pos != wanted[j]:
            continue
        collected.append(item)
        j += 1
        c = int(owner[j - 1])
        if j == len(wanted) or owner[j] != c:  # chunk c is complete
            name = shard_name(keys[chunks[c]])
            _label_shard(teacher, store, name, keys[chunks[c]], collected, batch_size)
            trim_heap()
            bar.update(len(collected))
            collected = []
            if j == len(wanted):
                break
    bar.close()
    if j < len(wanted):
        raise DistillError(f"the corpus ended after {n_read} texts while labeling; it changed while being read")


def label_vocab(teacher: Teacher, root: str | Path, batch_size: int = 256, progress: bool = True) -> VocabTargets:
    return vocab_targets(label(teacher, TargetKind.VOCAB, root, batch_size=batch_size, progress=progress))
