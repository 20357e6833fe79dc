# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Searching a Qdrant index folder: one Query API request per query, the funnel run inside the database.

A funnel ``SMALL:LARGE`` is a ``prefetch`` on the ``d{SMALL}`` named vector (the shortlist) with the
main query on ``d{LARGE}``: Qdrant re-scores the shortlist itself, the client does no re-ranking.
Quantized collections (``int8``, ``binary``) are searched with rescoring on the original vectors.
Only rows below the manifest's count are answered (an add under way or killed writes rows past it): a
server is always asked with that filter; local mode, which one process holds at a time, only when the
collection holds more points than the manifest.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from distill.index.errors import IndexMismatchError, IndexNotFoundError
from distill.index.precision import Precision
from distill.index.qdrant import (
    BACKEND,
    connect,
    count_points,
    guarded,
    qdrant,
    row_filter,
    vector_name,
    where,
)
from distill.index.search import prefix
from distill.index.store import Manifest, live_generation


def default_shortlist(k: int) -> int:
    from distill.index.query import default_shortlist as default  # query.py opens this module: import late

    return default(k)


class QdrantIndex:
    """A Qdrant index folder opened for reading: its manifest and a client of its collection.

    :raises IndexNotFoundError: no collection, or fewer points than the manifest.
    :raises QdrantError: no qdrant-client, a server that cannot be reached, local storage held by another process.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.generation = live_generation(self.folder)
        self.manifest = m = Manifest.read(self.generation)
        if m.backend != BACKEND:
            raise IndexNotFoundError(f"{self.folder} is a {m.backend} index, not a Qdrant one")
        self.where = where(self.folder, m.location)
        self._client = None
        with guarded(self.folder, m.location):
            self._client = connect(self.folder, m.location)
            try:
                if not self._client.collection_exists(m.collection):
                    raise IndexNotFoundError(f"collection {m.collection} is not at {self.where}; rebuild the index "
                                             "with `distill index build --backend qdrant --overwrite`")
                self.points = count_points(self._client, m.collection)
            except BaseException:
                self.close()
                raise
        if self.points < m.count:
            self.close()
            raise IndexNotFoundError(f"collection {m.collection} at {self.where} holds {self.points} points, the "
                                     f"manifest {m.count}; rebuild the index")
        _, models = qdrant()
        self._filter = row_filter(models, hi=m.count) if m.location or self.points > m.count else None
        quantized = Precision(m.precision) is not Precision.FLOAT32
        self._params = (models.SearchParams(quantization=models.QuantizationSearchParams(rescore=True))
                        if quantized else None)

    def _requests(self, xq: np.ndarray, k: int, dim: int | None, funnel) -> list[dict]:
        """The Query API request of each query: ``query_points`` keyword arguments."""
        _, models = qdrant()
        m = self.manifest
        xq = np.atleast_2d(np.asarray(xq, dtype=np.float32))
        large = funnel.d_large if funnel else (dim or m.width)
        for d in ([funnel.d_small, funnel.d_large] if funnel else [large]):
            if d not in m.dims:
                raise IndexMismatchError(f"this Qdrant index has named vectors at prefix sizes {m.dims}, not {d}; "
                                         "search one of those (a funnel needs both of its sizes among them)")
        if xq.shape[1] < large:
            raise IndexMismatchError(f"queries have {xq.shape[1]} dims but this search needs {large}; "
                                     "encode them with the model the index was built with")
        q_large = prefix(xq, large, m.metric)
        out = []
        for i in range(len(xq)):
            req = {"query": q_large[i].tolist(), "using": vector_name(large), "limit": k,
                   "filter": self._filter, "params": self._params}
            if funnel:
                shortlist = max(funnel.shortlist or default_shortlist(k), k)
                req["prefetch"] = models.Prefetch(query=prefix(xq[i:i + 1], funnel.d_small, m.metric)[0].tolist(),
                                                  using=vector_name(funnel.d_small), limit=shortlist,
                                                  filter=self._filter, params=self._params)
            out.append(req)
        return out

    def search(self, xq: np.ndarray, k: int = 10, dim: int | None = None, funnel=None
               ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """D, I of shape (nq, k) (-1: no result) and the texts of the ids found.

        One query: one ``query_points`` request; several: one ``query_batch_points`` request holding them.
        :raises IndexMismatchError: a prefix size without a named vector, or queries too narrow.
        """
        _, models = qdrant()
        reqs = self._requests(xq, k, dim, funnel)
        with guarded(self.folder, self.manifest.location), warnings.catch_warnings():
            # local mode searches exactly and says the quantization parameters have no effect there
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            if len(reqs) == 1:
                r = reqs[0]
                results = [self._client.query_points(
                    self.manifest.collection, query=r["query"], using=r["using"], prefetch=r.get("prefetch"),
                    query_filter=r["filter"], search_params=r["params"], limit=k, with_payload=["text"]).points]
            else:
                results = [res.points for res in self._client.query_batch_points(
                    self.manifest.collection, [models.QueryRequest(**r, with_payload=["text"]) for r in reqs])]
        D = np.full((len(reqs), k), -np.inf, dtype=np.float32)
        I = np.full((len(reqs), k), -1, dtype=np.int64)
        texts: dict[int, str] = {}
        for q, points in enumerate(results):
            for r, p in enumerate(points[:k]):
                D[q, r], I[q, r] = p.score, int(p.id)
                texts[int(p.id)] = (p.payload or {}).get("text", "")
        return D, I, texts

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> QdrantIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
