"""The training data of a run, streamed from disk: token ids, targets, batches.

Batches of texts of similar length (contextual students pad each to its longest text) come from
:func:`epoch_order` and :func:`length_passes`.

Nothing here grows with the corpus in memory: token ids are one flat int32 file with int64 offsets
(read with ``pread``), targets are read from the target store's shards batch by batch
(:class:`~distill.pipeline.targets.TargetView`), and the PCA rotation is applied on the device,
per batch, by the trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.io import RowFile, atomic_path, save_npy
from distill.pipeline.targets import TargetView


class TokenWriter:
    """Appends token-id sequences to ``<stem>.ids.bin`` (flat int32), then writes ``<stem>.offsets.npy``."""

    def __init__(self, folder: str | Path, stem: str = "tokens"):
        self.folder, self.stem = Path(folder), stem
        self._atomic = atomic_path(self.folder / f"{stem}.ids.bin")
        self.f = open(self._atomic.__enter__(), "wb")  # renamed into place by close()
        self.lengths: list[np.ndarray] = []

    def add(self, seqs) -> None:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(lengths.sum()))
        self.f.write(flat.tobytes())
        self.lengths.append(lengths)

    def close(self) -> None:
        self.f.close()
        self._atomic.__exit__(None, None, None)
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        save_npy(self.folder / f"{self.stem}.offsets.npy", offsets)


class TokenArrays:
    """Token ids of every text of a run, read from disk on demand: ``seq(i)`` is text i's ids."""

    def __init__(self, folder: str | Path, stem: str = "tokens"):
        folder = Path(folder)
        self.offsets = np.load(folder / f"{stem}.offsets.npy")  # (N + 1,) int64, in memory
        self.ids = RowFile(folder / f"{stem}.ids.bin", np.int32, (int(self.offsets[-1]),))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def seq(self, i: int) -> np.ndarray:
        return self.ids.rows(self.offsets[i], self.offsets[i + 1])

    def lengths(self, idx: np.ndarray | None = None) -> np.ndarray:
        lengths = np.diff(self.offsets)
        return lengths if idx is None else lengths[idx]

    def flat(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat int64 ids, (len(idx),) start offsets) of the texts ``idx``, for ``embedding_bag``."""
        seqs = [self.seq(i) for i in idx]
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        flat = np.concatenate(seqs).astype(np.int64) if seqs else np.empty(0, np.int64)
        return flat, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    def token_counts(self, idx: np.ndarray, vocab_size: int, chunk: int = 65536) -> np.ndarray:
        """How often each token id occurs in the texts ``idx`` (counted in chunks)."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        for start in range(0, len(idx), chunk):
            flat, _ = self.flat(idx[start:start + chunk])
            counts += np.bincount(flat, minlength=vocab_size)[:vocab_size]
        return counts


class TrainSet(torch.utils.data.Dataset):
    """Training batches: position ``p`` is training text ``rows[p]`` of the run.

    ``__getitems__`` builds a whole batch in one call (the DataLoader passes it the list of
    positions), so targets are gathered shard by shard rather than row by row.
    """

    def __init__(self, tokens: TokenArrays, targets: TargetView, rows: np.ndarray, static: bool,
                 token_targets: bool = False, pad_id: int = 0):
        self.tokens, self.targets, self.rows = tokens, targets, np.asarray(rows, dtype=np.int64)
        self.static, self.token_targets, self.pad_id = static, token_targets, pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        return self.tokens.lengths(self.rows)

    def __getitem__(self, p: int) -> dict:
        return self.__getitems__([p])

    def __getitems__(self, positions) -> dict[str, torch.Tensor]:
        idx = self.rows[np.asarray(positions, dtype=np.int64)]
        batch = {"target": torch.from_numpy(self.targets.pooled(idx))}  # (B, D_t) raw teacher vectors
        if self.static:
            flat, offsets = self.tokens.flat(idx)
            batch.update(ids=torch.from_numpy(flat), offsets=torch.from_numpy(offsets))
            return batch
        seqs = [self.tokens.seq(i) for i in idx]
        T = max(1, max(len(s) for s in seqs))
        ids = np.full((len(seqs), T), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), T), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = s
            mask[r, :len(s)] = 1
        batch.update(ids=torch.from_numpy(ids), mask=torch.from_numpy(mask))
        if self.token_targets:
            _, states = self.targets.token_slices(idx)
            token_target = np.zeros((len(seqs), T, self.targets.dim), dtype=np.float16)  # (B, T, D_t)
            for r, s in enumerate(states):
                token_target[r, :min(len(s), T)] = s[:T]
            batch["token_target"] = torch.from_numpy(token_target)
        return batch


def collate_batch(batch):
    """The DataLoader's collate: ``__getitems__`` already built the batch."""
    return batch


# ---- length-sorted batches ----------------------------------------------------------------------
def epoch_order(n: int, seed: int, batch: int, lengths: np.ndarray | None = None, pool: int = 50) -> np.ndarray:
    """The order of the ``n`` training texts in one epoch, fixed by ``seed``.

    With ``lengths`` (contextual students, which pad each batch to its longest text), texts are
    sorted by length within pools of ``pool`` batches and the batches shuffled, so a batch holds
    texts of similar length and pays little padding, while batches still come in random order.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if lengths is None:
        return perm
    batches = []
    for start in range(0, n, batch * pool):
        part = perm[start:start + batch * pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch] for i in range(0, len(part), batch)]
    tail = batches.pop() if len(batches[-1]) < batch else None  # a short last batch stays last
    order = [batches[i] for i in rng.permutation(len(batches))] + ([tail] if tail is not None else [])
    return np.concatenate(order)


def length_passes(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """The rows of a batch of texts with ``lengths`` tokens, cut into forward passes: rows in order of length,
    a pass as long as its rows times its longest one stay within ``budget`` padded positions (a text longer
    than ``budget`` is a pass of its own). Together the passes hold every row once."""
    order = np.argsort(lengths, kind="stable")
    passes, start = [], 0
    for end in range(1, len(order) + 1):  # lengths ascend: the row at end - 1 is the longest so far
        if end - 1 > start and (end - start) * int(lengths[order[end - 1]]) > budget:
            passes.append(order[start:end - 1])
            start = end - 1
    passes.append(order[start:])
    return passes
