"""Atomic file writes: the one helper every stage uses to write what it hands to the next one.

A file is written to a temporary name in its folder, flushed and fsynced, renamed over its final
name, and the folder is fsynced, so a process killed at any moment leaves either the old file or
the new one, never a torn one. The bytes are hashed while they are written (no second read).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from distill.faults import maybe_crash


class _HashingFile:
    """A write-only file wrapper that counts and sha256-hashes what passes through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        return self.f.write(view)

    def flush(self) -> None:
        self.f.flush()


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def remove_stale_tmp(folder: str | Path) -> int:
    """Remove the temporary files and folders that writers killed mid-write left in ``folder``; returns how many.

    Only those of processes that are gone: a live writer's (another rank's) are left alone.
    """
    removed = 0
    for p in Path(folder).iterdir() if Path(folder).is_dir() else []:
        m = _TMP.match(p.name)
        if not m or _alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def atomic_path(path: str | Path):
    """For writers that want a path (pyarrow, torch.save): yields a temporary path in the same folder,
    then fsyncs it and renames it over ``path``; on an error the temporary file is removed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        maybe_crash("write:before-rename")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    maybe_crash("write:after-rename")
    fsync_dir(path.parent)


@contextmanager
def atomic_dir(path: str | Path):
    """A folder written whole or not at all: yields an empty temporary folder beside ``path``; on success
    its files are fsynced and it takes the place of ``path``.

    An error or a kill leaves ``path`` as it was, except for a kill in the instant between moving an
    old ``path`` aside and renaming the new one in: then ``path`` is absent (never partial), which the
    pipeline reads as "not written yet", and the old copy is a stale temporary folder.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(tmp)
        maybe_crash("write:before-rename")
        old = path.with_name(f".{path.name}-old.{os.getpid()}.tmp")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> dict:
    """Write ``path`` atomically through ``write(f)``; returns ``{"bytes": n, "sha256": hex}`` of its content."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        f = _HashingFile(raw)
        write(f)  # type: ignore[arg-type]
    return {"bytes": f.size, "sha256": f.sha.hexdigest()}


def save_npy(path: str | Path, array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def save_json(path: str | Path, obj, indent: int | None = 2) -> dict:
    data = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def save_text(path: str | Path, text: str) -> dict:
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- reading rows without mapping files -------------------------------------------------------------
_OPEN: dict[str, int] = {}  # path -> file descriptor, least recently used first
_MAX_OPEN = 256


def _fd(path: str) -> int:
    fd = _OPEN.pop(path, None)
    if fd is None:
        fd = os.open(path, os.O_RDONLY)
        while len(_OPEN) >= _MAX_OPEN:
            os.close(_OPEN.pop(next(iter(_OPEN))))
    _OPEN[path] = fd  # most recently used last
    return fd


class RowFile:
    """Rows of a ``.npy`` file (or a raw flat file), read with ``pread``.

    A memory-mapped file counts in the process's resident memory for every page it has touched:
    reading a run's targets through ``np.memmap`` once per epoch makes RSS grow with the corpus. The
    pages read here go to the kernel's page cache instead, which the kernel reclaims, so a process's
    memory stays at what it holds. Descriptors stay open (at most 256, least recently used closed).
    """

    def __init__(self, path: str | Path, dtype=None, shape: tuple[int, ...] | None = None):
        self.path = str(path)
        if dtype is None:  # a .npy file: read its header
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                if fortran:
                    raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
                self.offset = f.tell()
        else:
            self.offset = 0
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1
        self.row_bytes = self.row_items * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an array of their own."""
        n = max(0, int(stop) - int(start))
        data = os.pread(_fd(self.path), n * self.row_bytes, self.offset + int(start) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((n, *self.shape[1:]))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order); each maximal run of consecutive rows is one read."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        if not len(idx):
            return out
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
        for run in np.split(np.arange(len(idx)), breaks):
            block = self.rows(sorted_idx[run[0]], sorted_idx[run[-1]] + 1)
            out[order[run]] = block
        return out

    def read(self) -> np.ndarray:
        return self.rows(0, len(self))

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a.astype(dtype) if dtype is not None else a
