"""Atomic file writes: the one helper every stage uses to write what it hands to the next one.

A file is written to a temporary name in its folder, flushed and fsynced, renamed over its final
name, and the folder is fsynced, so a process killed at any moment leaves either the old file or
the new one, never a torn one. The bytes are hashed while they are written (no second read).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


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


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> dict:
    """Write ``path`` atomically through ``write(f)``; returns ``{"bytes": n, "sha256": hex}`` of its content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            f = _HashingFile(raw)
            write(f)  # type: ignore[arg-type]
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
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
