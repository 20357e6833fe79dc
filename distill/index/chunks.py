"""Stored vectors: ``.npy`` chunk files read as one (count, width) array, by rows, without loading them all.

Two ways to read them, for two access patterns. A query re-scores a few hundred scattered rows, so an open
index reads rows with ``os.pread`` (:class:`RowFile`): through a memory map each 1 KB row would map its 64 KB
neighbourhood too (the kernel's fault-around, MADV_RANDOM or not), and a 10M index being queried would
soon hold its 10 GB of vectors resident. A build passes over every row in order, so it reads whole chunks, one
at a time (:class:`StoredChunks`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_PREAD_MAX = 1 << 30  # bytes per pread call (Linux caps one at just under 2 GiB)


class RowFile:
    """A 2-D C-order ``.npy`` file, read by rows from an open descriptor (it stays readable if the file is
    removed: an add that retires a generation does not disturb a reader). ``x[rows]``, ``x[rows, cols]``,
    slices; ``np.asarray(x)`` reads it all."""

    def __init__(self, path: str | Path):
        header = np.load(path, mmap_mode="r")  # the header only: shape, dtype, where the data starts
        self.shape, self.dtype, self.ndim, self._offset = header.shape, header.dtype, 2, header.offset
        if header.ndim != 2 or not header.flags.c_contiguous:
            raise ValueError(f"{path}: expected a 2-D C-order array, got shape {header.shape}")
        del header
        self._row = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(stop - start, 0), self.shape[1]), dtype=self.dtype)
        view, pos = memoryview(out).cast("B"), 0
        while pos < len(view):
            got = os.preadv(self._fd, [view[pos:pos + _PREAD_MAX]], self._offset + start * self._row + pos)
            if got <= 0:
                raise OSError(f"short read from a vector chunk at row {start}")
            pos += got
        return out

    def _read_rows(self, ids: np.ndarray) -> np.ndarray:
        order = np.argsort(ids, kind="stable")  # ascending offsets: the disk and the page cache read ahead
        out = np.empty((len(ids), self.shape[1]), dtype=self.dtype)
        view, row = memoryview(out).cast("B"), self._row
        for j, i in zip(order.tolist(), ids[order].tolist()):
            os.preadv(self._fd, [view[j * row:(j + 1) * row]], self._offset + i * row)
        return out

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            return self._read_range(start, stop)[::step, cols] if step > 0 else np.asarray(self)[rows, cols]
        one = isinstance(rows, (int, np.integer))
        ids = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        ids = np.where(ids < 0, ids + len(self), ids)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"row ids out of range 0..{len(self) - 1}")
        out = self._read_rows(ids)[:, cols]
        return out[0] if one else out

    def __array__(self, dtype=None, copy=None):
        a = self._read_range(0, len(self))
        return a.astype(dtype) if dtype is not None else a

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()


class ChunkedVectors:
    """The stored vectors, several ``.npy`` chunks, as one read-only (count, width) array-like.

    Rows are read where asked (``xb[ids]``, ``xb[ids, :d]``, slices) without concatenating the
    chunks; ``np.asarray(xb)`` reads them all.
    """

    def __init__(self, chunks: list[np.ndarray]):
        self.chunks = chunks  # memory maps, (rows_i, width) each
        self.starts = np.cumsum([0] + [len(c) for c in chunks])  # (n_chunks + 1,) first id of each
        self.shape = (int(self.starts[-1]), int(chunks[0].shape[1]))
        self.dtype = chunks[0].dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, (int, np.integer)):
            return self.take(np.array([rows]), cols)[0]
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows)
        return self.take(np.flatnonzero(rows) if rows.dtype == bool else rows, cols)

    def take(self, ids: np.ndarray, cols=slice(None)) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = np.where(ids < 0, ids + len(self), ids)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"row ids out of range 0..{len(self) - 1}")
        which = np.searchsorted(self.starts, ids, side="right") - 1  # chunk of each id
        width = len(range(self.shape[1])[cols])
        out = np.empty((len(ids), width), dtype=self.dtype)
        for c in np.unique(which):
            sel = which == c
            out[sel] = self.chunks[c][ids[sel] - self.starts[c], cols]
        return out

    def __array__(self, dtype=None, copy=None):
        a = np.concatenate([np.asarray(c) for c in self.chunks]) if len(self.chunks) > 1 else np.array(self.chunks[0])
        return a.astype(dtype) if dtype is not None else a

    def close(self) -> None:
        for c in self.chunks:
            if hasattr(c, "close"):
                c.close()



class _OneChunkAtATime:
    """Chunk files read whole when asked for, the last one kept: what a build reads its stored vectors through.
    (Through a memory map, a pass over 10 GB of vectors leaves all of them resident in the building process.)"""

    def __init__(self, paths: list[Path]):
        self.paths, self._last = paths, (-1, None)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, c: int) -> np.ndarray:
        if self._last[0] != c:
            self._last = (-1, None)  # drop the previous chunk before reading the next
            self._last = (c, np.load(self.paths[c]))
        return self._last[1]


class StoredChunks(ChunkedVectors):
    """The vectors a build stored (``lengths`` rows per chunk file), read by whole chunks, one in memory at a time."""

    def __init__(self, paths: list[Path], lengths: list[int], width: int):
        self.chunks = _OneChunkAtATime(paths)
        self.starts = np.cumsum([0, *lengths])
        self.shape, self.dtype, self.ndim = (int(self.starts[-1]), width), np.dtype(np.float32), 2
