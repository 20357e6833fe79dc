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
from distill.index.models import EmbeddingModel, embed, model_dims, model_identity, model_spec
from distill.index.precision import Metric, Precision, binary_codes, index_search
from distill.index.search import knn, prefix, recall_at_k
from distill.index.store import (
    DOCS,
    DocStore,
    Manifest,
    chunk_file,
    clear_unfinished,
    gen_name,
    index_file,
    is_index_folder,
    save_faiss,
    switch_generation,
    unfinished_build,
    writer_lock,
)
from distill.io import save_npy

logger = logging.getLogger(__name__)

APPROX_FROM = 1_000_000  # exact search stays fast enough below this many vectors
IVFPQ_FROM = 5_000_000  # past this HNSW (which keeps every float) gets too big in memory
IVFPQ_MIN = 10_000  # 256 PQ centroids per sub-quantizer want ~39 training points each


class IndexType(str, Enum):
    AUTO = "auto"  # chosen by size: flat, then hnsw past 1M, then ivfpq past 5M (float32 only)
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


def choose_index_type(n: int, index_type: IndexType | str = IndexType.AUTO,
                      precision: Precision | str = Precision.FLOAT32) -> IndexType:
    """:raises DistillError: ivfpq with int8 or binary codes (PQ is a compression of its own)."""
    index_type, precision = IndexType(index_type), Precision(precision)
    quantized = precision is not Precision.FLOAT32
    if index_type is IndexType.AUTO:
        index_type = (IndexType.FLAT if n < APPROX_FROM else IndexType.HNSW if n < IVFPQ_FROM or quantized
                      else IndexType.IVFPQ)
    if index_type is IndexType.IVFPQ and quantized:
        raise DistillError(f"--precision {precision.value} works with --index-type flat or hnsw; ivfpq already "
                           "compresses its vectors (use --precision float32 with it)")
    return index_type


def pq_subquantizers(d: int) -> int:
    """The most sub-quantizers (bytes per code) that divide ``d`` with at least 4 dims each."""
    return max((m for m in range(1, d + 1) if d % m == 0 and d // m >= 4), default=1)


def make_index(xb: np.ndarray, index_type: IndexType | str, params: IndexParams = IndexParams(),
               precision: Precision | str = Precision.FLOAT32) -> tuple[faiss.Index | faiss.IndexBinary, dict]:
    """An inner-product FAISS index over the prefixes ``xb`` (N, d), trained and filled.

    ``xb`` is already what the metric compares (normalized for cos, raw for dot). ``int8`` trains
    its per-dim min/max on ``xb``; ``binary`` indexes the sign bits of ``xb`` (search it through
    :func:`~distill.index.precision.index_search`). Returns the index and the parameters to record
    in the manifest.
    :raises DistillError: IVF-PQ asked for with too few vectors to train it, or with int8/binary codes.
    """
    n, d = xb.shape
    precision = Precision(precision)
    index_type = choose_index_type(n, index_type, precision)
    hnsw = {"hnsw_m": params.hnsw_m, "ef_construction": params.ef_construction, "ef_search": params.ef_search}
    if precision is Precision.BINARY:
        bits = -(-d // 8) * 8  # FAISS codes are whole bytes: the padding bits are zero in every code
        if index_type is IndexType.FLAT:
            index, used = faiss.IndexBinaryFlat(bits), {}
        else:
            index, used = faiss.IndexBinaryHNSW(bits, params.hnsw_m), hnsw
            index.hnsw.efConstruction, index.hnsw.efSearch = params.ef_construction, params.ef_search
        index.add(binary_codes(xb))
        return index, {"type": index_type.value, **used}
    if precision is Precision.INT8:
        qt = faiss.ScalarQuantizer.QT_8bit  # per-dim min/max of xb, 256 levels
        if index_type is IndexType.FLAT:
            index, used = faiss.IndexScalarQuantizer(d, qt, faiss.METRIC_INNER_PRODUCT), {}
        else:
            index = faiss.IndexHNSWSQ(d, qt, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction, index.hnsw.efSearch = params.ef_construction, params.ef_search
            used = hnsw
        index.train(xb)
        index.add(xb)
        return index, {"type": index_type.value, **used, "calibration": "per-dim min/max", "calibrated_on": n}
    if index_type is IndexType.FLAT:
        index, used = faiss.IndexFlatIP(d), {}
    elif index_type is IndexType.HNSW:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        used = hnsw
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


def estimate_recall(index, xb: np.ndarray, k: int = 10, nq: int = 200, seed: int = 0) -> float:
    """recall@k of ``index`` (any precision) against exact float search, with ``nq`` database vectors as queries.

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
    _, I = index_search(index, xq, k + 1)

    def others(rows: np.ndarray) -> np.ndarray:
        return np.stack([[i for i in row if i != q][:k] for row, q in zip(rows, qid)])

    return recall_at_k(others(I_true), others(I), k)


def _check_dims(dims: list[int], width: int) -> list[int]:
    dims = sorted(set(int(d) for d in dims))
    bad = [d for d in dims if not 0 < d <= width]
    if not dims or bad:
        raise DistillError(f"--dims must be prefix sizes in 1..{width} for this model, got {dims}")
    return dims


def build_index(model: EmbeddingModel, texts: list[str], out: str | Path, dims: list[int] | None = None,
                index_type: IndexType | str = IndexType.AUTO, spec: str | Path | None = None,
                params: IndexParams = IndexParams(), batch_size: int = 64, progress: bool = False,
                overwrite: bool = False, metric: Metric | str = Metric.COS,
                precision: Precision | str = Precision.FLOAT32, space_spec: str | Path | None = None) -> Manifest:
    """Embed ``texts`` with ``model`` and write an index folder at ``out`` (its first generation).

    A model in a space (a student, or a teacher placed in a run's space) records it in the manifest: any
    model of that space can then query the index (:meth:`Manifest.check_model`).

    :param dims: prefix sizes to index (default: the model's ``dims``, or its full width).
    :param spec: how to load the model again for queries (default: its identity's name).
    :param metric: ``cos`` (normalized prefixes) or ``dot`` (raw prefixes, for norms that carry meaning).
    :param precision: ``float32``, ``int8`` (scalar quantization) or ``binary`` (sign bits, Hamming).
    :param space_spec: the run folder that placed a teacher in its space (``--space``), to load it again for adds.
    :raises CorpusError: no texts. :raises DistillError: bad dims, an existing non-index folder.
    """
    if not texts:
        raise CorpusError("the corpus holds no texts to index")
    metric, precision = Metric(metric), Precision(precision)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if unfinished_build(out):  # a build killed before it finished: nothing live to lose, start it again
            logger.info("%s holds a build that did not finish: building it again", out)
            clear_unfinished(out)
        elif not overwrite:
            raise DistillError(f"{out} exists and is not empty; pass --overwrite or another --out")
        elif not is_index_folder(out):
            raise DistillError(f"{out} is not an index folder; refusing to overwrite it")
        else:
            shutil.rmtree(out)
    dims = _check_dims(dims or model_dims(model), int(model.dim))
    index_type = choose_index_type(len(texts), index_type, precision)
    identity = model_identity(model)
    xb = embed(model, texts, max(dims), metric, batch_size, progress)
    out.mkdir(parents=True, exist_ok=True)
    with writer_lock(out):
        gen = out / gen_name(1)
        gen.mkdir()
        save_npy(gen / chunk_file(0), xb)
        recalls, used = {}, {}
        for d in dims:
            xd = prefix(xb, d, metric)
            index, used = make_index(xd, index_type, params, precision)
            if index_type is not IndexType.FLAT or precision is not Precision.FLOAT32:
                recalls[str(d)] = estimate_recall(index, xd, seed=params.seed)
                logger.info("%s %s index at %d dims: recall@10 %.3f against exact search", index_type.value,
                            precision.value, d, recalls[str(d)])
            save_faiss(gen / index_file(d), index)
        with DocStore(out / DOCS) as docs:
            docs.put(0, texts)
        manifest = Manifest(model=identity, model_spec=model_spec(spec) if spec else str(identity.get("name", "")),
                            dims=dims, count=len(texts), index_type=index_type.value, index_params=used,
                            recall_at_10=recalls, metric=metric.value, precision=precision.value,
                            chunks=[len(texts)], space=identity.get("space"),
                            space_spec=model_spec(space_spec) if space_spec else None)
        manifest.save(gen)
        switch_generation(out, gen)  # last: a folder without CURRENT is not an index
    return manifest
