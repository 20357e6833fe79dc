# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Querying an index folder with texts: exact or approximate search at one prefix size, or funnel search;
FAISS or Qdrant (``open_index`` and ``search_hits`` take either)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.index.errors import IndexMismatchError, IndexNotFoundError
from distill.index.models import EmbeddingModel, describe_identity, embed, model_identity
from distill.index.precision import index_search
from distill.index.search import funnel_search, prefix
from distill.index.store import IndexFolder, Manifest, live_generation


@dataclass(frozen=True)
class Funnel:
    d_small: int  # prefix size of the shortlist search
    d_large: int  # prefix size of the re-ranking
    shortlist: int | None = None  # candidates kept by the small prefix (default: default_shortlist(k))

    @classmethod
    def parse(cls, text: str, shortlist: int | None = None) -> Funnel:
        """``"64:256"`` -> Funnel(64, 256). :raises DistillError: anything else."""
        try:
            small, large = (int(p) for p in text.split(":"))
        except ValueError:
            raise DistillError(f"--funnel takes SMALL:LARGE prefix sizes such as 64:256, got {text!r}") from None
        if not 0 < small < large:
            raise DistillError(f"--funnel {text}: the shortlist prefix must be smaller than the re-ranking one")
        return cls(small, large, shortlist)


def default_shortlist(k: int) -> int:
    return max(10 * k, 100)


def search_index(ix: IndexFolder, xq: np.ndarray, k: int = 10, dim: int | None = None,
                 funnel: Funnel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search an opened index with query vectors ``xq`` (nq, >= dim): D, I of shape (nq, k).

    The index's metric says how ``xq`` is read: ``cos`` re-normalizes each prefix (any norm will do),
    ``dot`` takes the raw prefixes (pass the model's raw vectors for raw dot-product scores; a
    normalized query ranks the same, its scores scaled). Binary indexes score by sign agreement.
    :raises IndexMismatchError: a dim the index does not hold, or queries narrower than needed.
    """
    m = ix.manifest
    xq = np.atleast_2d(np.asarray(xq, dtype=np.float32))
    need = funnel.d_large if funnel else (dim or m.width)
    if xq.shape[1] < need:
        raise IndexMismatchError(f"queries have {xq.shape[1]} dims but this search needs {need}; "
                                 "encode them with the model the index was built with")
    if funnel:
        m.check_dim(funnel.d_small)
        if funnel.d_large > m.width:
            raise IndexMismatchError(f"--funnel re-ranks at {funnel.d_large} dims but the index stores only "
                                     f"{m.width}")
        return funnel_search(ix.index(funnel.d_small), ix.xb, xq, k, funnel.d_small, funnel.d_large,
                             funnel.shortlist or default_shortlist(k), metric=m.metric)
    d = dim or m.width
    rescore = int(m.index_params.get("rescore", 0))
    if rescore:  # ivfpq: its coarse codes choose candidates, the stored floats rank them
        return funnel_search(ix.index(d), ix.xb, xq, k, d, d, max(rescore, k), metric=m.metric)
    return index_search(ix.index(d), prefix(xq, d, m.metric), k)


def open_index(folder: str | Path):
    """An index folder opened for reading, whatever its backend: an :class:`IndexFolder` (FAISS) or a
    :class:`~distill.index.qdrant_search.QdrantIndex`. :raises IndexNotFoundError: not an index."""
    if Manifest.load(folder).backend == "qdrant":
        from distill.index.qdrant_search import QdrantIndex

        return QdrantIndex(folder)
    return IndexFolder(folder)


def search_hits(ix, xq: np.ndarray, k: int = 10, dim: int | None = None, funnel: Funnel | None = None
                ) -> list[list[dict]]:
    """Per query, its ranked hits ``{"rank", "score", "id", "text"}`` from an index of either backend."""
    if isinstance(ix, IndexFolder):
        D, I = search_index(ix, xq, k=k, dim=dim, funnel=funnel)
        docs = ix.docs.get(I)
    else:  # Qdrant: the funnel is one Query API request, the texts come back as payload
        D, I, docs = ix.search(xq, k=k, dim=dim, funnel=funnel)
    return [[{"rank": r + 1, "score": float(s), "id": int(i), "text": docs.get(int(i), "")}
             for r, (s, i) in enumerate(zip(D[q], I[q], strict=True)) if i >= 0] for q in range(len(I))]


def describe_index(folder: str | Path) -> dict:
    """What ``distill index info`` shows: backend, location, count, prefix sizes, metric, precision, model,
    space, generation (and, for Qdrant, the points in the collection now).
    :raises IndexNotFoundError: not an index, with what to do (an interrupted Qdrant build: run it again)."""
    folder = Path(folder)
    pending = folder / "qdrant-pending.json"
    if pending.is_file() and not (folder / "CURRENT").is_file():
        raise IndexNotFoundError(f"{folder} holds an interrupted Qdrant build; run the same `distill index build` "
                                 "command again to finish it")
    gen = live_generation(folder)
    m = Manifest.read(gen)
    info = {"path": str(folder), "backend": m.backend, "count": m.count, "dims": m.dims, "metric": m.metric,
            "precision": m.precision, "index_type": m.index_type, "model": describe_identity(m.model),
            "model_spec": m.model_spec, "space": m.space, "space_spec": m.space_spec, "generation": m.generation,
            "last_add": m.last_add}
    if m.backend == "qdrant":
        from distill.index.qdrant import live_count, where

        info.update(location=where(folder, m.location), collection=m.collection, points=live_count(folder, m),
                    add_pending=pending.is_file())
    else:  # how it searches: nlist, nprobe per prefix size, rescoring; and its recall@10 estimated at build
        info.update(location=str(gen), index_params=m.index_params, recall_at_10=m.recall_at_10)
    return info


def query_index(folder: str | Path, texts: list[str], model: EmbeddingModel, k: int = 10, dim: int | None = None,
                funnel: Funnel | None = None, batch_size: int = 64) -> list[dict]:
    """Embed ``texts`` with ``model`` (checked against the manifest) and return, per text, its ranked hits.

    Each result is ``{"query": text, "hits": [{"rank", "score", "id", "text"}, ...]}``.
    :raises IndexMismatchError: another model than the index was built with (or, in an index with a space,
        a model of another space), or a dim it does not hold.
    """
    if not texts:
        raise DistillError("no query texts")
    with open_index(folder) as ix:
        m = ix.manifest
        m.check_model(model_identity(model), queries=True)
        if dim is not None:
            m.check_dim(dim)
        xq = embed(model, list(texts), m.width, m.metric, batch_size)
        hits = search_hits(ix, xq, k=min(k, m.count), dim=dim, funnel=funnel)
    return [{"query": text, "hits": h} for text, h in zip(texts, hits, strict=True)]
