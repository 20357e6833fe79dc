# ruff: noqa: E741  (faiss names: D scores, I ids)
"""An index folder served from one thread: its SQLite docstore (or Qdrant local mode's storage) may only be used by
the thread that opened it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distill.index.query import open_index as open_folder
from distill.index.query import search_hits
from distill.index.search import normalize_prefix
from distill.index.store import Manifest

if TYPE_CHECKING:
    from distill.index.qdrant_search import QdrantIndex
    from distill.index.store import IndexFolder


class Searcher:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-index")
        self._ix = None  # an IndexFolder (FAISS) or a QdrantIndex

    @property
    def manifest(self) -> Manifest:
        if self._ix is None:
            raise RuntimeError("the index is not open")
        return self._ix.manifest

    async def open(self, identity: dict) -> None:
        """Open the folder and check it was built with the model of ``identity``.

        :raises IndexNotFoundError: not an index folder. :raises IndexMismatchError: another model.
        """
        self._ix = await asyncio.get_running_loop().run_in_executor(self._executor, open_index, self.folder, identity)

    async def search(self, xq: np.ndarray, k: int, dim: int) -> list[list[dict]]:
        """Raw full-width query vectors (nq, width) -> per query, ranked hits ``{rank, id, score, text}``."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._search, xq, k, dim)

    def _search(self, xq: np.ndarray, k: int, dim: int) -> list[list[dict]]:
        ix = self._ix
        if ix is None:
            raise RuntimeError("the index is not open")
        xq = normalize_prefix(xq, ix.manifest.width)
        return search_hits(ix, xq, k=min(k, ix.manifest.count), dim=dim)

    async def close(self) -> None:
        if self._ix is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._ix.close)
            self._ix = None
        self._executor.shutdown(wait=True)


def open_index(folder: Path, identity: dict) -> IndexFolder | QdrantIndex:
    """Open an index folder (FAISS or Qdrant) whose queries the model of ``identity`` may encode (its manifest
    check: the model it was built with, or one of its space), else raise."""
    ix = open_folder(folder)
    try:
        ix.manifest.check_model(identity, queries=True)
    except Exception:
        ix.close()
        raise
    return ix
