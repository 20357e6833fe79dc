# ruff: noqa: E741  (faiss names: D scores, I ids)
"""An index folder served from one thread: its SQLite docstore may only be used by the thread that opened it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from distill.index.query import search_index
from distill.index.search import normalize_prefix
from distill.index.store import IndexFolder, Manifest


class Searcher:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-index")
        self._ix: IndexFolder | None = None

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
        D, I = search_index(ix, xq, k=min(k, ix.manifest.count), dim=dim)
        docs = ix.docs.get(I)
        return [[{"rank": r + 1, "id": int(i), "score": float(s), "text": docs.get(int(i), "")}
                 for r, (s, i) in enumerate(zip(D[q], I[q])) if i >= 0] for q in range(len(xq))]

    async def close(self) -> None:
        if self._ix is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._ix.close)
            self._ix = None
        self._executor.shutdown(wait=True)


def open_index(folder: Path, identity: dict) -> IndexFolder:
    """Open an index folder whose queries the model of ``identity`` may encode (its manifest check: the model
    it was built with, or one of its space), else raise."""
    ix = IndexFolder(folder)
    try:
        ix.manifest.check_model(identity, queries=True)
    except Exception:
        ix.close()
        raise
    return ix
