"""A target store on disk: its keys (128-bit text hashes), the index from key to (shard, row), and the
append-only shards with their commit markers (layout: :mod:`distill.pipeline.targets`)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.io import RowFile, remove_stale_tmp, save_json, save_npy, sha256_file
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
