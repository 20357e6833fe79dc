"""A content-addressed, sharded, resumable cache of teacher targets.

Layout of one target set, ``OUT/<kind>-<key>/``::

    shard-00000.pooled.npy      (n, D) float32 pooled teacher vectors, in corpus order
    shard-00000.tokens.npy      ("token" kind) flat contextual states, (sum of lengths, D)
    shard-00000.offsets.npy     ("token" kind) (n + 1,) offsets into tokens
    shard-00000.ids.npy         ("token" kind) flat token ids; ("vocab" kind) the token ids
    shard-00000.json            commit marker: counts and sha256 of each file, written last
    manifest.json               written by rank 0 once every shard is complete
    vocab.json, input_embeddings.npy   ("vocab" kind) token strings and raw input-embedding rows

The key covers the teacher's identity (name, weights fingerprint, pooling, layer, max length), the
target kind and the texts themselves, so a changed input never reuses stale targets. Every file is
written to a temporary name and renamed, so a killed run leaves only complete files; a rerun skips
shards whose checksums verify and redoes the rest. Under ``accelerate launch`` rank r labels shards
r, r + world, ...; rank 0 writes the manifest after a barrier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from distill.errors import DistillError
from distill.teachers.teacher import Teacher

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class TargetKind(str, Enum):
    VOCAB = "vocab"  # each vocabulary token alone: (V, D)
    TEXT = "text"  # pooled vector of each text: (N, D)
    TOKEN = "token"  # contextual states of each text's tokens, ragged


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def save_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def texts_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def cache_key(teacher: Teacher, kind: TargetKind, items_digest: str, shard_size: int) -> str:
    payload = {"format": FORMAT_VERSION, "teacher": teacher.identity(), "kind": kind.value,
               "items": items_digest, "shard_size": shard_size}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class TargetSet:
    """A complete target set loaded from disk (arrays are memory-mapped where possible)."""

    path: Path
    manifest: dict
    pooled: np.ndarray  # (N, D)
    ids: np.ndarray | None = None  # vocab: (V,) token ids; token: flat token ids
    tokens: np.ndarray | None = None  # token: (sum of lengths, D)
    offsets: np.ndarray | None = None  # token: (N + 1,)
    strings: list[str] | None = None  # vocab: token strings
    input_embeddings: np.ndarray | None = None  # vocab: (V, D_in)

    @property
    def kind(self) -> TargetKind:
        return TargetKind(self.manifest["kind"])


def _shard_ok(folder: Path, name: str) -> bool:
    marker = folder / f"{name}.json"
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
        return all((folder / f).is_file() and _sha256(folder / f) == digest for f, digest in info["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def _label_shard(teacher: Teacher, kind: TargetKind, items: list, folder: Path, name: str,
                 batch_size: int) -> None:
    """Run the teacher over one shard's items and write its files, marker last."""
    if kind is TargetKind.VOCAB:
        seqs, n_truncated = [teacher.frame([int(i)]) for i in items], 0
    else:
        seqs, n_truncated = teacher.tokenize(items)
    arrays: dict[str, np.ndarray] = {}
    if kind is TargetKind.TOKEN:
        pooled, flat, offsets = teacher.embed_ids(seqs, batch_size=batch_size, with_tokens=True)
        arrays.update(tokens=flat, offsets=offsets, ids=np.array([i for s in seqs for i in s], np.int64))
    else:
        pooled = teacher.embed_ids(seqs, batch_size=batch_size)
        if kind is TargetKind.VOCAB:
            arrays["ids"] = np.asarray(items, dtype=np.int64)
    arrays["pooled"] = pooled
    files = {}
    for part, array in arrays.items():
        fname = f"{name}.{part}.npy"
        save_npy(folder / fname, array)
        files[fname] = _sha256(folder / fname)
    save_json(folder / f"{name}.json", {"count": len(items), "n_truncated": n_truncated, "files": files})


def build_targets(teacher: Teacher, kind: TargetKind | str, out: str | Path, texts: list[str] | None = None,
                  shard_size: int = 4096, batch_size: int = 64, progress: bool = True,
                  extra: dict | None = None) -> Path:
    """Label ``texts`` (or the teacher's vocabulary for ``vocab``) into a cached target set; return its folder.

    Reruns with the same inputs are free; a run killed at any point resumes from the last complete shard.
    """
    from distill.devices import distributed_state

    kind = TargetKind(kind)
    if kind is TargetKind.VOCAB:
        vocab_ids, strings = teacher.vocab()
        items: list = vocab_ids.tolist()
        digest = texts_digest(strings)
    else:
        if not texts:
            raise DistillError(f"{kind.value} targets need a non-empty list of texts")
        items, digest = list(texts), texts_digest(texts)
    key = cache_key(teacher, kind, digest, shard_size)
    folder = Path(out) / f"{kind.value}-{key}"
    manifest_path = folder / "manifest.json"
    n_shards = (len(items) + shard_size - 1) // shard_size
    names = [f"shard-{s:05d}" for s in range(n_shards)]
    state = distributed_state()
    if manifest_path.is_file():
        # Checksums are cheap next to a forward pass: verify them, so a shard corrupted after the
        # set was complete is redone instead of being served. Every rank sees the same files and
        # takes the same branch.
        bad = [n for n in names if not _shard_ok(folder, n)]
        if not bad:
            logger.info("reusing cached %s targets in %s", kind.value, folder)
            return folder
        logger.warning("%d shards of %s fail their checksums and will be redone: %s", len(bad), folder, bad[:3])
        state.wait_for_everyone()  # every rank has looked at the manifest before rank 0 removes it
        if state.is_main_process:
            manifest_path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    mine = [s for s in range(n_shards) if s % state.num_processes == state.process_index]
    todo = [s for s in mine if not _shard_ok(folder, names[s])]
    if state.num_processes > 1:
        logger.info("rank %d of %d labels %d of %d %s shards", state.process_index, state.num_processes,
                    len(todo), n_shards, kind.value)
    if len(todo) < len(mine):
        logger.info("resuming: %d of %d shards already complete", len(mine) - len(todo), len(mine))
    bar = tqdm(total=sum(min(shard_size, len(items) - s * shard_size) for s in todo), unit="text",
               desc=f"{kind.value} targets", disable=not (progress and state.is_main_process))
    for s in todo:
        chunk = items[s * shard_size:(s + 1) * shard_size]
        _label_shard(teacher, kind, chunk, folder, names[s], batch_size)
        bar.update(len(chunk))
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        bad = [n for n in names if not _shard_ok(folder, n)]
        if bad:
            raise DistillError(f"{len(bad)} shards in {folder} are incomplete after labeling: {bad[:3]}")
        shards = [json.loads((folder / f"{n}.json").read_text()) | {"name": n} for n in names]
        n_truncated = sum(s["n_truncated"] for s in shards)
        if n_truncated:
            logger.warning("%d of %d texts were longer than the teacher's %d tokens and were truncated",
                           n_truncated, len(items), teacher.max_length)
        if kind is TargetKind.VOCAB:
            save_json(folder / "vocab.json", strings)
            save_npy(folder / "input_embeddings.npy", teacher.input_embeddings(vocab_ids))
        save_json(manifest_path, {
            "format": FORMAT_VERSION, "kind": kind.value, "key": key, "teacher": teacher.identity(),
            "count": len(items), "dim": teacher.dim, "shard_size": shard_size, "n_truncated": n_truncated,
            "items_sha256": digest, "shards": shards, **(extra or {}),
        })
    state.wait_for_everyone()
    return folder


def load_targets(folder: str | Path, mmap: bool = True) -> TargetSet:
    """Load a complete target set written by :func:`build_targets`."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise DistillError(f"{folder} is not a complete target set (no manifest.json); rerun `distill targets`")
    manifest = json.loads(manifest_path.read_text())
    mode = "r" if mmap else None

    def cat(part: str) -> np.ndarray | None:
        files = [folder / f"{s['name']}.{part}.npy" for s in manifest["shards"]]
        if not files[0].is_file():
            return None
        arrays = [np.load(f, mmap_mode=mode) for f in files]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    targets = TargetSet(folder, manifest, pooled=cat("pooled"), ids=cat("ids"), tokens=cat("tokens"))
    if targets.kind is TargetKind.TOKEN:
        # shard offsets start at 0 each: shift them onto the concatenated flat array
        parts, base = [], 0
        for s in manifest["shards"]:
            off = np.load(folder / f"{s['name']}.offsets.npy")
            parts.append(off[:-1] + base)
            base += int(off[-1])
        targets.offsets = np.concatenate(parts + [np.array([base], np.int64)])
    if targets.kind is TargetKind.VOCAB:
        targets.strings = json.loads((folder / "vocab.json").read_text())
        targets.input_embeddings = np.load(folder / "input_embeddings.npy", mmap_mode=mode)
    return targets
