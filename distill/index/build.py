# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Building an index folder: embed a corpus once at full width, then one FAISS index per prefix size."""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import faiss
import numpy as np

from distill.errors import CorpusError, DistillError
from distill.index.models import EmbeddingModel, model_dims, model_identity, model_spec
from distill.index.search import knn, normalize_prefix, recall_at_k
from distill.index.store import DOCS, DocStore, IndexFolder, Manifest, save_faiss, save_vectors

logger = logging.getLogger(__name__)

APPROX_FROM = 1_000_000  # exact search stays fast enough below this many vectors
IVFPQ_FROM = 5_000_000  # past this HNSW (which keeps every float) gets too big in memory
IVFPQ_MIN = 10_000  # 256 PQ centroids per sub-quantizer want ~39 training points each


class IndexType(str, Enum):
    AUTO = "auto"  # chosen by size: flat, then hnsw past 1M, then ivfpq past 5M
    FLAT = "flat"  # exact IndexFlatIP
    HNSW = "hnsw"  # IndexHNSWFlat, graph search on the exact vectors
    IVFPQ = "ivfpq"  # IndexIVFPQ, inverted lists of product-quantized codes


@dataclass(frozen=True)
class IndexParams:
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int | None = None  # default: about sqrt(N)
    nprobe: int = 16
    seed: int = 0


def choose_index_type(n: int, index_type: IndexType | str = IndexType.AUTO) -> IndexType:
    index_type = IndexType(index_type)
    if index_type is not IndexType.AUTO:
        return index_type
    return IndexType.FLAT if n < APPROX_FROM else IndexType.HNSW if n < IVFPQ_FROM else IndexType.IVFPQ


def pq_subquantizers(d: int) -> int:
    """The most sub-quantizers (bytes per code) that divide ``d`` with at least 4 dims each."""
    return max((m for m in range(1, d + 1) if d % m == 0 and d // m >= 4), default=1)


def make_index(xb: np.ndarray, index_type: IndexType | str, params: IndexParams = IndexParams()
               ) -> tuple[faiss.Index, dict]:
    """An inner-product FAISS index over the normalized vectors ``xb`` (N, d), trained and filled.

    Returns the index and the parameters to record in the manifest.
    :raises DistillError: IVF-PQ asked for with too few vectors to train it.
    """
    n, d = xb.shape
    index_type = choose_index_type(n, index_type)
    if index_type is IndexType.FLAT:
        index, used = faiss.IndexFlatIP(d), {}
    elif index_type is IndexType.HNSW:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        used = {"hnsw_m": params.hnsw_m, "ef_construction": params.ef_construction, "ef_search": params.ef_search}
    else:
        if n < IVFPQ_MIN:
            raise DistillError(f"ivfpq needs at least {IVFPQ_MIN} vectors to train its codebooks, got {n}; "
                               "use --index-type flat or hnsw")
        nlist = params.nlist or max(1, round(math.sqrt(n)))
        m = pq_subquantizers(d)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = params.nprobe
        n_train = min(n, max(64 * nlist, IVFPQ_MIN))
        rng = np.random.default_rng(params.seed)
        index.train(xb[np.sort(rng.choice(n, n_train, replace=False))])
        used = {"nlist": nlist, "pq_m": m, "pq_bits": 8, "nprobe": params.nprobe}
    index.add(xb)
    return index, {"type": index_type.value, **used}


def estimate_recall(index: faiss.Index, xb: np.ndarray, k: int = 10, nq: int = 200, seed: int = 0) -> float:
    """recall@k of ``index`` against exact search, with ``nq`` database vectors as queries.

    A database vector finds itself first in both searches, which would count as a free hit: each
    query's own row is dropped from both lists (k + 1 are asked for), so the figure is the recall of
    its k real neighbours. ``index`` holds the rows of ``xb`` under ids 0..n-1.
    """
    rng = np.random.default_rng(seed)
    qid = np.sort(rng.choice(len(xb), min(nq, len(xb)), replace=False))
    xq = xb[qid]
    k = min(k, len(xb) - 1)
    if k < 1:
        return 1.0
    _, I_true = knn(xq, xb, k + 1)
    _, I = index.search(xq, k + 1)

    def others(rows: np.ndarray) -> np.ndarray:
        return np.stack([[i for i in row if i != q][:k] for row, q in zip(rows, qid)])

    return recall_at_k(others(I_true), others(I), k)


def _check_dims(dims: list[int], width: int) -> list[int]:
    dims = sorted(set(int(d) for d in dims))
    bad = [d for d in dims if not 0 < d <= width]
    if not dims or bad:
        raise DistillError(f"--dims must be prefix sizes in 1..{width} for this model, got {dims}")
    return dims


def _embed(model: EmbeddingModel, texts: list[str], width: int, batch_size: int, progress: bool) -> np.ndarray:
    # One pass at full width: the contract says encode(texts, dim=d) is the re-normalized prefix of that.
    xb = np.asarray(model.encode(texts, batch_size=batch_size, progress=progress), dtype=np.float32)
    if xb.ndim != 2 or len(xb) != len(texts) or xb.shape[1] < width:
        raise DistillError(f"the model returned vectors of shape {xb.shape} for {len(texts)} texts, "
                           f"expected ({len(texts)}, >= {width})")
    return normalize_prefix(xb, width)


def build_index(model: EmbeddingModel, texts: list[str], out: str | Path, dims: list[int] | None = None,
                index_type: IndexType | str = IndexType.AUTO, spec: str | Path | None = None,
                params: IndexParams = IndexParams(), batch_size: int = 64, progress: bool = False,
                overwrite: bool = False) -> Manifest:
    """Embed ``texts`` with ``model`` and write an index folder at ``out``.

    :param dims: prefix sizes to index (default: the model's ``dims``, or its full width).
    :param spec: how to load the model again for queries (default: its identity's name).
    :raises CorpusError: no texts. :raises DistillError: bad dims, an existing non-index folder.
    """
    if not texts:
        raise CorpusError("the corpus holds no texts to index")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DistillError(f"{out} exists and is not empty; pass --overwrite or another --out")
        if not (out / "manifest.json").is_file():
            raise DistillError(f"{out} is not an index folder; refusing to overwrite it")
        shutil.rmtree(out)
    dims = _check_dims(dims or model_dims(model), int(model.dim))
    identity = model_identity(model)
    xb = _embed(model, texts, max(dims), batch_size, progress)
    index_type = choose_index_type(len(xb), index_type)
    out.mkdir(parents=True, exist_ok=True)
    save_vectors(out, xb)
    recalls, used = {}, {}
    for d in dims:
        xd = normalize_prefix(xb, d)
        index, used = make_index(xd, index_type, params)
        if index_type is not IndexType.FLAT:
            recalls[str(d)] = estimate_recall(index, xd, seed=params.seed)
            logger.info("%s index at %d dims: recall@10 %.3f against exact search", index_type.value, d,
                        recalls[str(d)])
        save_faiss(out, d, index)
    docs = DocStore(out / DOCS)
    docs.add(0, texts)
    docs.close()
    manifest = Manifest(model=identity, model_spec=model_spec(spec) if spec else str(identity.get("name", "")),
                        dims=dims, count=len(texts), index_type=index_type.value, index_params=used,
                        recall_at_10=recalls)
    manifest.save(out)  # last: a folder without a manifest is not an index
    return manifest


def add_to_index(folder: str | Path, model: EmbeddingModel, texts: list[str], batch_size: int = 64,
                 progress: bool = False) -> tuple[int, int]:
    """Append ``texts`` to an index without rebuilding it; returns (first new id, count after).

    :raises IndexMismatchError: ``model`` is not the model the index was built with.
    :raises CorpusError: no texts.
    """
    if not texts:
        raise CorpusError("no texts to add")
    with IndexFolder(folder) as ix:
        m = ix.manifest
        m.check_model(model_identity(model))
        x_new = _embed(model, texts, m.width, batch_size, progress)
        first = m.count
        for d in m.dims:
            index = ix.index(d)
            index.add(normalize_prefix(x_new, d))
            save_faiss(ix.folder, d, index)
        save_vectors(ix.folder, np.concatenate([np.asarray(ix.xb), x_new]))
        ix._xb = None
        ix.docs.add(first, texts)
        m.count = first + len(texts)
        m.save(ix.folder)
    return first, m.count
