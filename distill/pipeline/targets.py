"""The teacher target cache: one store per (teacher identity, target kind), one entry per text.

Layout of one store, ``ROOT/<kind>-v2-<key>/`` (``key`` hashes the teacher's identity: name,
weights fingerprint, pooling, layer, max length, dtype and autocast, and the kind)::

    store.json                    what the store holds (format, kind, teacher identity, width)
    shard-<h>.keys.npy            (n, 2) uint64: the 128-bit hash of each text (blake2b of its UTF-8)
    shard-<h>.pooled.npy          (n, D) float32 pooled teacher vectors
    shard-<h>.tokens.npy          ("token") (sum of lengths, D) float16 contextual states
    shard-<h>.offsets.npy         ("token") (n + 1,) int64 offsets into tokens
    shard-<h>.ids.npy             ("token") (sum of lengths,) int32 teacher token ids
    shard-<h>.json                commit marker, written last: count, bytes and sha256 of each file
    vocab.json, input_embeddings.npy   ("vocab") token strings and raw input-embedding rows

Shards are append-only and named by the hash of their keys. The index (text hash -> shard, row) is
rebuilt from the shards' key files when a store is opened (16 bytes a text). A corpus that grows by
1% labels only that 1%; ``--limit``, a reordered corpus or duplicated texts label nothing new.

Labeling is resumable and deterministic: the texts missing from the store are cut into shards of
``shard_size`` in corpus order, so a killed run's rerun cuts the rest exactly as the first run
would have, and gives byte-identical files. Under ``accelerate launch`` rank r labels shards
r, r + world, ... of the missing ones. Hashes are computed while writing; opening a store checks
file sizes only, :meth:`TargetStore.verify` (``distill targets --verify``) re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from distill.errors import DistillError
from distill.io import RowFile, remove_stale_tmp, save_json, save_npy, sha256_file
from distill.memory import trim_heap
from distill.teachers.teacher import Teacher

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
STORE_NAME = "store.json"
KEY_DTYPE = np.uint64  # a text's key: two uint64 words of its 128-bit blake2b hash


class TargetKind(str, Enum):
    VOCAB = "vocab"  # each vocabulary token alone: (V, D)
    TEXT = "text"  # pooled vector of each text: (N, D)
    TOKEN = "token"  # pooled vector and contextual states of each text's tokens, ragged
    WORD = "word"  # a whole word's pieces alone, framed as a vocabulary token is: (N, D) (--vocab-from-corpus)


# ---- keys ----------------------------------------------------------------------------------------
def text_keys(texts: Iterable[str]) -> np.ndarray:
    """(N, 2) uint64: the 128-bit blake2b hash of each text's UTF-8 bytes."""
    digests = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(digests, dtype="<u8").reshape(-1, 2).astype(KEY_DTYPE)


def vocab_keys(ids: Iterable[int]) -> np.ndarray:
    """Keys of vocabulary items (a token id alone, framed by the teacher's special tokens)."""
    return text_keys(f"\0vocab\0{int(i)}" for i in ids)


def shard_name(keys: np.ndarray) -> str:
    return "shard-" + hashlib.sha256(np.ascontiguousarray(keys).tobytes()).hexdigest()[:16]


def store_key(identity: dict, kind: TargetKind) -> str:
    payload = {"format": FORMAT_VERSION, "teacher": identity, "kind": kind.value}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def store_identity(teacher: Teacher, kind: TargetKind | str) -> dict:
    """What a store's targets depend on: the teacher's identity, plus how vocabulary tokens are framed
    when the teacher adds context to them (decoders without a BOS; see ``Teacher.vocab_context``)."""
    identity = teacher.identity()
    if TargetKind(kind) in (TargetKind.VOCAB, TargetKind.WORD) and teacher.vocab_context():
        identity["vocab_context"] = teacher.vocab_context()
    return identity


# ---- the index -----------------------------------------------------------------------------------
@dataclass
class KeyIndex:
    """Sorted keys of every committed shard, for vectorised lookups."""

    hi: np.ndarray  # (M,) uint64 first key word, sorted
    lo: np.ndarray  # (M,) uint64 second key word, in the same order
    shard: np.ndarray  # (M,) int32 index into ``names``
    row: np.ndarray  # (M,) int32 row in that shard
    names: list[str]

    @classmethod
    def build(cls, parts: list[tuple[str, np.ndarray]]) -> KeyIndex:
        if not parts:
            empty = np.empty(0, KEY_DTYPE)
            return cls(empty, empty, np.empty(0, np.int32), np.empty(0, np.int32), [])
        keys = np.concatenate([k for _, k in parts])  # (M, 2)
        shard = np.concatenate([np.full(len(k), s, np.int32) for s, (_, k) in enumerate(parts)])
        row = np.concatenate([np.arange(len(k), dtype=np.int32) for _, k in parts])
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        return cls(keys[order, 0], keys[order, 1], shard[order], row[order], [n for n, _ in parts])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row) of each key; -1 where the store does not hold it."""
        n = len(keys)
        shard, row = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
        if not len(self.hi) or not n:
            return shard, row
        left = np.searchsorted(self.hi, keys[:, 0], side="left")
        right = np.searchsorted(self.hi, keys[:, 0], side="right")
        first = np.minimum(left, len(self.hi) - 1)
        hit = (right > left) & (self.lo[first] == keys[:, 1])
        shard[hit], row[hit] = self.shard[first[hit]], self.row[first[hit]]
        # the same 64-bit first word with another second word (or the same text twice in the store)
        for i in np.flatnonzero(~hit & (right - left > 1)):
            for j in range(left[i] + 1, right[i]):
                if self.lo[j] == keys[i, 1]:
                    shard[i], row[i] = self.shard[j], self.row[j]
                    break
        return shard, row


# ---- the store -----------------------------------------------------------------------------------
@dataclass
class ShardFiles:
    """The arrays of one committed shard, read row by row with ``pread`` (see :class:`~distill.io.RowFile`);
    only the offsets are held in memory."""

    pooled: RowFile  # (n, D) float32
    tokens: RowFile | None = None  # (sum of lengths, D) float16
    offsets: np.ndarray | None = None  # (n + 1,) int64
    ids: RowFile | None = None  # (sum of lengths,) int32


class TargetStore:
    """All targets of one teacher identity and kind: append-only shards plus an index by text hash."""

    def __init__(self, root: str | Path, identity: dict, kind: TargetKind | str, dim: int):
        self.kind = TargetKind(kind)
        self.identity, self.dim = identity, int(dim)
        self.folder = Path(root) / f"{self.kind.value}-v2-{store_key(identity, self.kind)}"
        self._open: dict[str, ShardFiles] = {}

    @classmethod
    def open(cls, folder: str | Path) -> TargetStore:
        folder = Path(folder)
        info_path = folder / STORE_NAME
        if not info_path.is_file():
            if (folder / "manifest.json").is_file():
                raise DistillError(f"{folder} was written by an older distill (target cache format 1), which "
                                   "this version does not read: delete it and label again with `distill targets`")
            raise DistillError(f"{folder} is not a distill target store (no {STORE_NAME})")
        info = json.loads(info_path.read_text())
        if info.get("format") != FORMAT_VERSION:
            raise DistillError(f"{folder}: target cache format {info.get('format')}, this distill reads "
                               f"{FORMAT_VERSION}; delete it and label again")
        store = cls(folder.parent, info["teacher"], info["kind"], info["dim"])
        store.folder = folder
        return store

    def create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.folder)  # of a labeler killed mid-write
        if not (self.folder / STORE_NAME).is_file():
            save_json(self.folder / STORE_NAME, {"format": FORMAT_VERSION, "kind": self.kind.value,
                                                 "teacher": self.identity, "dim": self.dim})

    # ---- shards ----------------------------------------------------------------------------------
    def _marker(self, name: str) -> dict | None:
        """The shard's commit marker when every file it names is there with its recorded size."""
        try:
            info = json.loads((self.folder / f"{name}.json").read_text())
            for fname, meta in info["files"].items():
                if (self.folder / fname).stat().st_size != meta["bytes"]:
                    return None
            return info
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def shard_names(self) -> list[str]:
        """Committed shards whose files have their recorded sizes, sorted by name."""
        if not self.folder.is_dir():
            return []
        names = sorted(p.name[:-5] for p in self.folder.glob("shard-*.json"))
        good = [n for n in names if self._marker(n) is not None]
        if len(good) < len(names):
            logger.warning("%d shards of %s are incomplete or damaged and will be labeled again",
                           len(names) - len(good), self.folder)
        return good

    def index(self) -> KeyIndex:
        return KeyIndex.build([(n, np.load(self.folder / f"{n}.keys.npy")) for n in self.shard_names()])

    def verify(self) -> list[str]:
        """Re-hash every file of every shard; remove the markers of bad shards (they are labeled
        again on the next run). Returns the names of the bad shards."""
        bad = []
        for marker in sorted(self.folder.glob("shard-*.json")):
            name = marker.name[:-5]
            info = self._marker(name)
            ok = info is not None and all(sha256_file(self.folder / f) == meta["sha256"]
                                          for f, meta in info["files"].items())
            if not ok:
                bad.append(name)
                marker.unlink(missing_ok=True)
        if bad:
            logger.warning("%d shards of %s failed their checksums and were dropped: %s", len(bad), self.folder,
                           bad[:3])
        return bad

    def files(self, name: str) -> ShardFiles:
        if name not in self._open:
            def part(p: str) -> RowFile:
                return RowFile(self.folder / f"{name}.{p}.npy")

            if self.kind is TargetKind.TOKEN:
                offsets = np.load(self.folder / f"{name}.offsets.npy")
                self._open[name] = ShardFiles(part("pooled"), part("tokens"), offsets, part("ids"))
            else:
                self._open[name] = ShardFiles(part("pooled"))
        return self._open[name]

    def write_shard(self, name: str, keys: np.ndarray, pooled: np.ndarray, n_truncated: int = 0,
                    tokens: np.ndarray | None = None, offsets: np.ndarray | None = None,
                    ids: np.ndarray | None = None) -> None:
        """Write one shard's files, the commit marker last."""
        arrays = {"keys": keys.astype(KEY_DTYPE), "pooled": pooled.astype(np.float32)}
        if self.kind is TargetKind.TOKEN:
            arrays.update(tokens=tokens.astype(np.float16), offsets=offsets.astype(np.int64),
                          ids=ids.astype(np.int32))
        files = {}
        for part, array in arrays.items():
            fname = f"{name}.{part}.npy"
            files[fname] = save_npy(self.folder / fname, array)
        save_json(self.folder / f"{name}.json", {"count": len(keys), "n_truncated": int(n_truncated), "files": files})


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


# ---- labeling ------------------------------------------------------------------------------------
def _warn_old_layout(root: Path) -> None:
    old = [p for p in root.glob("*-*/manifest.json") if not (p.parent / STORE_NAME).is_file()]
    if old:
        size = sum(f.stat().st_size for p in old for f in p.parent.iterdir() if f.is_file())
        logger.warning("%s holds %d target sets in the old cache layout (format 1, %.1f MB) that this distill "
                       "does not read; delete them to free the space: %s", root, len(old), size / 1e6,
                       ", ".join(p.parent.name for p in old[:3]))


def word_seqs(teacher: Teacher, words: list[str]) -> tuple[list[list[int]], int]:
    """Inputs for the word targets of ``words`` and how many leading tokens not to pool: each word as a text
    (its pieces inside the teacher's special tokens and prompt), after the context a vocabulary token gets
    (``Teacher.vocab_context``), so a whole word's row starts where its pieces' rows do."""
    context = teacher.vocab_context()
    seqs, _ = teacher.tokenize(list(words))
    return [context + s for s in seqs], len(context)


def _label_shard(teacher: Teacher, store: TargetStore, name: str, keys: np.ndarray, items: list,
                 batch_size: int) -> None:
    """Run the teacher over one shard's items (texts, or token ids for the vocabulary) and write it."""
    skip = 0
    if store.kind is TargetKind.VOCAB:
        (seqs, skip), n_truncated = teacher.vocab_seqs(items), 0
    elif store.kind is TargetKind.WORD:
        (seqs, skip), n_truncated = word_seqs(teacher, items), 0
    else:
        seqs, n_truncated = teacher.tokenize(items)
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
    root = Path(root)
    state = state or ONE_PROCESS
    store = TargetStore(root, store_identity(teacher, kind), kind, teacher.dim)
    if kind is TargetKind.VOCAB:
        vocab_ids, strings = teacher.vocab()
        items, keys = vocab_ids.tolist(), vocab_keys(vocab_ids)
    else:
        if keys is None:
            keys = text_keys(texts) if texts is not None else np.empty((0, 2), KEY_DTYPE)
        if not len(keys):
            raise DistillError(f"{kind.value} targets need a non-empty list of texts")
        items = texts
    if state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        _warn_old_layout(root)
        store.create()
    state.wait_for_everyone()

    index = store.index()
    shard, row = index.lookup(keys)
    missing = np.flatnonzero(shard < 0)
    if len(missing):  # each missing key once, at its first position in the corpus
        _, first = np.unique(keys[missing], axis=0, return_index=True)
        missing = np.sort(missing[first])
    # every rank has cut the same missing set before any rank writes a shard
    state.wait_for_everyone()
    chunks = [missing[i:i + shard_size] for i in range(0, len(missing), shard_size)]
    mine = chunks[state.process_index::state.num_processes]
    if state.num_processes > 1:
        logger.info("rank %d of %d labels %d of %d %s shards", state.process_index, state.num_processes,
                    len(mine), len(chunks), kind.value)
    if len(keys) - len(missing) and len(missing):
        logger.info("%d of %d %s targets already in the cache; labeling %d new", len(keys) - len(missing),
                    len(keys), kind.value, len(missing))
    elif not len(missing):
        logger.info("all %d %s targets found in the cache %s", len(keys), kind.value, store.folder)
    if mine:
        _label_chunks(teacher, store, keys, items, mine, batch_size, progress and state.is_main_process)
    state.wait_for_everyone()
    if len(missing):  # every rank cut the same missing set: all or none of them labeled something
        index = store.index()
        shard, row = index.lookup(keys)
    if (shard < 0).any():
        raise DistillError(f"{int((shard < 0).sum())} {kind.value} targets are missing from {store.folder} "
                           "after labeling (was the cache changed meanwhile?); rerun")
    used = np.unique(shard)  # the view names only the shards it reads
    remap = np.full(len(index.names), -1, np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    names = [index.names[i] for i in used]
    n_truncated = sum(json.loads((store.folder / f"{n}.json").read_text())["n_truncated"] for n in names)
    if n_truncated and kind not in (TargetKind.VOCAB, TargetKind.WORD):
        logger.warning("%d texts were longer than the teacher's %d tokens and were truncated", n_truncated,
                       teacher.max_length)
    view = TargetView(store, names, remap[shard], row, n_truncated)
    if kind is TargetKind.VOCAB and state.is_main_process:
        if not (store.folder / "vocab.json").is_file():
            save_npy(store.folder / "input_embeddings.npy", teacher.input_embeddings(vocab_ids))
            save_json(store.folder / "vocab.json", {"ids": vocab_ids.tolist(), "strings": strings})
    state.wait_for_everyone()
    return view


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


def label_vocab(teacher: Teacher, root: str | Path, batch_size: int = 256, progress: bool = True) -> VocabTargets:
    return vocab_targets(label(teacher, TargetKind.VOCAB, root, batch_size=batch_size, progress=progress))
