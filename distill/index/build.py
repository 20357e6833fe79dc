# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Building an index folder: embed a corpus once at full width, then one FAISS index per prefix size."""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import faiss
import numpy as np

from distill.errors import CorpusError, DistillError
from distill.index import ivf
from distill.index.chunks import StoredChunks
from distill.index.models import EmbeddingModel, embed, model_dims, model_identity, model_spec
from distill.index.precision import Metric, Precision, binary_codes, index_search
from distill.index.search import knn_blocks, prefix, recall_at_k, rerank
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
IVFPQ_MIN = 10_000  # fewer vectors than this train poor k-means lists
TARGET_RECALL = 0.95  # ivfpq's nprobe is tuned at build time to reach this estimated recall@10
TRAIN_PER_LIST = 40  # k-means training points per inverted list (FAISS warns below 39)
EMBED_BLOCK = 262_144  # texts embedded, stored (one vector chunk) and written to the docstore at a time


class IndexType(str, Enum):
    AUTO = "auto"  # chosen by size: flat, then ivfpq from 1M (hnsw for int8/binary codes)
    FLAT = "flat"  # exact IndexFlatIP
    HNSW = "hnsw"  # IndexHNSWFlat, graph search on the exact vectors
    IVFPQ = "ivfpq"  # IVF with spilled 4-bit fast-scan PQ codes, rescored on the stored floats (distill.index.ivf)


@dataclass(frozen=True)
class IndexParams:
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int | None = None  # default: about 4 sqrt(N), a power of two (ivf.default_nlist)
    nprobe: int | None = None  # default: tuned per prefix size at build time (tune_nprobe, TARGET_RECALL)
    rescore: int = 100  # ivfpq candidates re-scored on the stored float vectors per query
    spill: bool = True  # ivfpq: each vector in a second (SOAR) list too
    seed: int = 0


def choose_index_type(n: int, index_type: IndexType | str = IndexType.AUTO,
                      precision: Precision | str = Precision.FLOAT32) -> IndexType:
    """:raises DistillError: ivfpq with int8 or binary codes (PQ is a compression of its own)."""
    index_type, precision = IndexType(index_type), Precision(precision)
    quantized = precision is not Precision.FLOAT32
    if index_type is IndexType.AUTO:
        # IVF-PQ, not HNSW, from 1M: at 1M real student vectors it kept recall@10 0.96 at 7k q/s, and HNSW keeps
        # every float plus its graph in RAM (1.3 KB a vector at 256-d: 13 GB at 10M). See BENCHMARKS "past a million".
        index_type = (IndexType.FLAT if n < APPROX_FROM else IndexType.HNSW if quantized else IndexType.IVFPQ)
    if index_type is IndexType.IVFPQ and quantized:
        raise DistillError(f"--precision {precision.value} works with --index-type flat or hnsw; ivfpq already "
                           "compresses its vectors (use --precision float32 with it)")
    return index_type


def make_index(xb: np.ndarray, index_type: IndexType | str, params: IndexParams = IndexParams(),
               precision: Precision | str = Precision.FLOAT32, progress: bool = False
               ) -> tuple[faiss.Index | faiss.IndexBinary, dict]:
    """An inner-product FAISS index over the prefixes ``xb`` (N, d), trained and filled.

    ``xb``: an array, or any array-like sliced by rows (:class:`Prefixes`); ivfpq reads it block by block.
    ``xb`` is already what the metric compares (normalized for cos, raw for dot). ``int8`` trains
    its per-dim min/max on ``xb``; ``binary`` indexes the sign bits of ``xb`` (search it through
    :func:`~distill.index.precision.index_search`). Returns the index and the parameters to record
    in the manifest.
    :raises DistillError: IVF-PQ asked for with too few vectors to train it, or with int8/binary codes.
    """
    n, d = xb.shape
    precision = Precision(precision)
    index_type = choose_index_type(n, index_type, precision)
    if index_type is IndexType.IVFPQ:
        return _make_ivf(xb, params, progress)
    xb = np.ascontiguousarray(np.asarray(xb), dtype=np.float32)
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
    else:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        used = hnsw
    index.add(xb)
    return index, {"type": index_type.value, **used}


def _make_ivf(xb, params: IndexParams, progress: bool = False) -> tuple[faiss.Index, dict]:
    """The ivfpq index over ``xb`` (N, d), read block by block (any array-like sliced by rows)."""
    n, d = xb.shape
    if n < IVFPQ_MIN:
        raise DistillError(f"ivfpq needs at least {IVFPQ_MIN} vectors to train its lists, got {n}; "
                           "use --index-type flat or hnsw")
    nlist = params.nlist or ivf.default_nlist(n, TRAIN_PER_LIST)
    nprobe = min(nlist, params.nprobe or 16)  # build_index tunes it when not given
    m = ivf.fastscan_subquantizers(d)
    n_train = min(n, max(TRAIN_PER_LIST * nlist, IVFPQ_MIN))
    rng = np.random.default_rng(params.seed)
    index = ivf.train_ivf(xb[np.sort(rng.choice(n, n_train, replace=False))], nlist, m, params.seed)
    ivf.fill_lists(index, lambda start, stop: xb[start:stop], n, spill=params.spill, progress=progress)
    index.nprobe = nprobe
    return index, {"type": IndexType.IVFPQ.value, "nlist": nlist, "pq_m": m, "pq_bits": 4, "fast_scan": True,
                   "spill": params.spill, "nprobe": nprobe, "rescore": params.rescore, "trained_on": n_train}


class RecallProbe:
    """Exact neighbours of ``nq`` database vectors, computed once, to estimate an index's recall@k against.

    A database vector finds itself first in both searches, which would count as a free hit: each
    query's own row is dropped from both lists (k + 1 are asked for), so the figure is the recall of
    its k real neighbours. ``xb``: any array-like sliced by rows (read in blocks), ids 0..n-1 in the index.
    """

    def __init__(self, xb, k: int = 10, nq: int = 200, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.xb, self.k = xb, min(k, len(xb) - 1)
        self.qid = np.sort(rng.choice(len(xb), min(nq, len(xb)), replace=False))
        self.xq = np.ascontiguousarray(xb[self.qid], dtype=np.float32)
        self.truth = self._others(knn_blocks(self.xq, xb, self.k + 1)[1]) if self.k >= 1 else None

    def _others(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([[i for i in row if i != q][:self.k] for row, q in zip(rows, self.qid)])

    def recall(self, index, rescore: int = 0) -> float:
        """recall@k of ``index``; ``rescore``: its search re-ranks that many candidates on ``xb``, as queries do."""
        if self.truth is None:
            return 1.0
        k1 = self.k + 1
        if rescore:  # xb is what the index compares already: plain inner products re-rank it
            _, I = rerank(self.xq, self.xb, index_search(index, self.xq, max(rescore, k1))[1], k1, self.xb.shape[1],
                          Metric.DOT)
        else:
            _, I = index_search(index, self.xq, k1)
        return recall_at_k(self.truth, self._others(I), self.k)


def estimate_recall(index, xb, k: int = 10, nq: int = 200, seed: int = 0, rescore: int = 0) -> float:
    """recall@k of ``index`` (any precision) against exact float search, ``nq`` database vectors as queries
    (see :class:`RecallProbe`)."""
    return RecallProbe(xb, k, nq, seed).recall(index, rescore)


def tune_nprobe(index, probe: RecallProbe, rescore: int, target: float = TARGET_RECALL) -> tuple[int, float]:
    """The smallest power-of-two nprobe from 8 whose estimated recall@10 reaches ``target`` (or every list), and
    that recall: how far to probe depends on how clustered the vectors are, which only a measurement tells."""
    nprobe = min(8, index.nlist)
    while True:
        index.nprobe = nprobe
        r = probe.recall(index, rescore)
        if r >= target or nprobe >= index.nlist:
            return nprobe, r
        nprobe = min(2 * nprobe, index.nlist)


class Prefixes:
    """The ``d``-dim prefixes of stored vectors as an index of ``metric`` compares them, read where asked
    (``view[start:stop]``, ``view[ids]``, ``view[ids, :d]``): an index is built from it block by block."""

    def __init__(self, xb, d: int, metric: Metric | str):
        self.xb, self.d, self.metric = xb, d, Metric(metric)
        self.shape = (len(xb), d)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        return prefix(np.asarray(self.xb[rows, :self.d]), self.d, self.metric)[:, cols]

    def __array__(self, dtype=None, copy=None):
        return self[0:len(self)].astype(dtype or np.float32)


def _check_dims(dims: list[int], width: int) -> list[int]:
    dims = sorted(set(int(d) for d in dims))
    bad = [d for d in dims if not 0 < d <= width]
    if not dims or bad:
        raise DistillError(f"--dims must be prefix sizes in 1..{width} for this model, got {dims}")
    return dims


def _text_blocks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while block := list(itertools.islice(it, size)):
        yield block


def _prepare_out(out: Path, overwrite: bool) -> None:
    """An empty ``out`` to build into: a killed build's leftovers cleared, a live index only with ``overwrite``."""
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


def _store_vectors(model: EmbeddingModel, blocks: Iterable[list[str]], gen: Path, docs: DocStore, width: int,
                   metric: Metric, batch_size: int, progress: bool, total: int | None) -> list[int]:
    """Embed and store the texts block by block: one vector chunk each, its texts in the docstore. Returns the
    chunk lengths. One block at a time is in memory, so a corpus of any size streams through."""
    from tqdm.auto import tqdm

    one_block = total is not None and total <= EMBED_BLOCK
    chunks: list[int] = []
    with tqdm(total=total, desc="embedding", unit="text", disable=not progress or one_block) as bar:
        for block in blocks:
            x = embed(model, block, width, metric, batch_size, progress and one_block)
            save_npy(gen / chunk_file(len(chunks)), x)
            docs.put(sum(chunks), block)
            chunks.append(len(block))
            bar.update(len(block))
    return chunks


def build_index(model: EmbeddingModel, texts: Iterable[str], out: str | Path, dims: list[int] | None = None,
                index_type: IndexType | str = IndexType.AUTO, spec: str | Path | None = None,
                params: IndexParams = IndexParams(), batch_size: int = 64, progress: bool = False,
                overwrite: bool = False, metric: Metric | str = Metric.COS,
                precision: Precision | str = Precision.FLOAT32, space_spec: str | Path | None = None) -> Manifest:
    """Embed ``texts`` with ``model`` and write an index folder at ``out`` (its first generation).

    ``texts``: a list, or any iterable (a :class:`~distill.pipeline.corpus.Corpus`): they are embedded and stored
    :data:`EMBED_BLOCK` at a time, and an ivfpq index is built from the stored chunks block by block, so memory
    stays bounded at any corpus size. A model in a space (a student, or a teacher placed in a run's space)
    records it in the manifest: any model of that space can then query the index (:meth:`Manifest.check_model`).

    :param dims: prefix sizes to index (default: the model's ``dims``, or its full width).
    :param spec: how to load the model again for queries (default: its identity's name).
    :param metric: ``cos`` (normalized prefixes) or ``dot`` (raw prefixes, for norms that carry meaning).
    :param precision: ``float32``, ``int8`` (scalar quantization) or ``binary`` (sign bits, Hamming).
    :param space_spec: the run folder that placed a teacher in its space (``--space``), to load it again for adds.
    :raises CorpusError: no texts. :raises DistillError: bad dims, an existing non-index folder.
    """
    metric, precision = Metric(metric), Precision(precision)
    total = len(texts) if isinstance(texts, Sized) else None
    choose_index_type(total or 0, index_type, precision)  # a combination that cannot work fails before embedding
    blocks = _text_blocks(texts, EMBED_BLOCK)
    first = next(blocks, None)
    if not first:
        raise CorpusError("the corpus holds no texts to index")
    out = Path(out)
    _prepare_out(out, overwrite)
    dims = _check_dims(dims or model_dims(model), int(model.dim))
    identity = model_identity(model)
    out.mkdir(parents=True, exist_ok=True)
    with writer_lock(out):
        gen = out / gen_name(1)
        gen.mkdir()
        with DocStore(out / DOCS) as docs:
            chunks = _store_vectors(model, itertools.chain([first], blocks), gen, docs, max(dims), metric,
                                    batch_size, progress, total)
        n = sum(chunks)
        index_type = choose_index_type(n, index_type, precision)
        xb = StoredChunks([gen / chunk_file(i) for i in range(len(chunks))], chunks, max(dims))
        recalls, used, probes = {}, {}, {}
        for d in dims:
            xd = Prefixes(xb, d, metric)
            index, used = make_index(xd, index_type, params, precision, progress)
            if index_type is IndexType.IVFPQ and params.nprobe is None:
                probed, recalls[str(d)] = tune_nprobe(index, RecallProbe(xd, seed=params.seed), params.rescore)
                used = {**used, "nprobe": probed, "nprobe_by_dim": {**probes, str(d): probed}}
                probes = used["nprobe_by_dim"]
            elif index_type is not IndexType.FLAT or precision is not Precision.FLOAT32:
                recalls[str(d)] = estimate_recall(index, xd, seed=params.seed, rescore=used.get("rescore", 0))
                logger.info("%s %s index at %d dims: recall@10 %.3f against exact search", index_type.value,
                            precision.value, d, recalls[str(d)])
            save_faiss(gen / index_file(d), index)
            del index
        manifest = Manifest(model=identity, model_spec=model_spec(spec) if spec else str(identity.get("name", "")),
                            dims=dims, count=n, index_type=index_type.value, index_params=used,
                            recall_at_10=recalls, metric=metric.value, precision=precision.value,
                            chunks=chunks, space=identity.get("space"),
                            space_spec=model_spec(space_spec) if space_spec else None)
        manifest.save(gen)
        switch_generation(out, gen)  # last: a folder without CURRENT is not an index
    return manifest
