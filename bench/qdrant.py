# ruff: noqa: E741  (faiss names: I ids)
"""Qdrant vs FAISS on the same vectors: agreement, funnel recall, ingest and query rates.

    python bench/qdrant.py --model /tmp/runs/q --n 10000          # a student's vectors of the shared corpus
    python bench/qdrant.py --random --n 10000                      # Matryoshka-like random unit vectors instead
    python bench/qdrant.py --model RUN --url http://localhost:6333 # a Qdrant server instead of local mode

The corpus (``--corpus``, default ../shared/data/corpus/movie_reviews.txt, first ``--n`` + ``--nq``
distinct lines) is embedded once; both indexes are then built from those vectors through a model that
looks them up (so ingest rates are the index's, not the encoder's), with the same code a user runs:
``build_index`` (FAISS flat) and ``build_qdrant`` (one named vector per prefix size). Queries are the
``--nq`` held-out texts, searched one request at a time. Agreement: top-10 overlap of Qdrant with FAISS
flat at full width; funnel recall@10: the SMALL:LARGE funnel against exact search at LARGE dims
(Qdrant: ``prefetch``; FAISS: the shortlist re-ranked in numpy). Local mode is pure Python (exact
search, one SQLite commit per point): its rates are a floor, not what a server does.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from common import CORPUS

from distill.index.build import build_index  # noqa: E402
from distill.index.qdrant import build_qdrant  # noqa: E402
from distill.index.query import Funnel, open_index, search_index  # noqa: E402
from distill.index.search import knn, normalize_prefix, prefix, recall_at_k  # noqa: E402

MOVIE_REVIEWS = CORPUS / "movie_reviews.txt"


class Precomputed:
    """An EmbeddingModel over vectors computed once: ``encode`` looks each text up."""

    def __init__(self, texts: list[str], x: np.ndarray, dims: list[int], name: str):
        self.row = {t: i for i, t in enumerate(texts)}
        self.x, self.dim, self.dims, self.name = x, x.shape[1], dims, name

    def identity(self) -> dict:
        return {"name": self.name, "weights": "precomputed", "dim": self.dim}

    def encode(self, texts, dim=None, batch_size=256, progress=False):
        return normalize_prefix(self.x[[self.row[t] for t in texts]], dim)


def random_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors of 1,000 Gaussian clusters, variance of dim j ~ 1/j (as PCA-ordered embeddings)."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, d + 1) ** -0.5).astype(np.float32)
    centres = rng.standard_normal((1000, d)).astype(np.float32) * scale
    return normalize_prefix(centres[rng.integers(0, 1000, n)] + 0.7 * scale * rng.standard_normal((n, d)))


def load_texts(path: Path, n: int) -> list[str]:
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if (t := line.strip()) and t not in seen:
                seen[t] = None
                if len(seen) == n:
                    break
    return list(seen)


def per_query(fn, xq: np.ndarray) -> tuple[np.ndarray, float]:
    """Ids of each query searched alone (one request each) and queries/s."""
    start = time.perf_counter()
    I = np.concatenate([fn(xq[i:i + 1]) for i in range(len(xq))])
    return I, len(xq) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a student (run folder, student folder) to embed the corpus with")
    p.add_argument("--random", action="store_true", help="random Matryoshka-like unit vectors instead of a model")
    p.add_argument("--corpus", type=Path, default=MOVIE_REVIEWS)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--nq", type=int, default=200)
    p.add_argument("--funnel", default="64:256")
    p.add_argument("--shortlist", type=int, default=100)
    p.add_argument("--width", type=int, default=256, help="--random: vector width")
    p.add_argument("--url", help="a Qdrant server (default: local mode in a temporary folder)")
    args = p.parse_args()
    funnel = Funnel.parse(args.funnel, args.shortlist)
    dims = [funnel.d_small, funnel.d_large]
    if args.random:
        texts = [f"text {i}" for i in range(args.n + args.nq)]
        x, source = random_vectors(len(texts), args.width), f"random unit vectors ({args.width} dims)"
    else:
        if not args.model:
            p.error("pass --model STUDENT or --random")
        from distill.models import load_model

        texts = load_texts(args.corpus, args.n + args.nq)
        model = load_model(args.model)
        t0 = time.perf_counter()
        x = np.asarray(model.encode(texts, batch_size=256), dtype=np.float32)
        source = f"{args.model} on {args.corpus.name} (encoded in {time.perf_counter() - t0:.1f} s)"
    docs, queries = texts[:args.n], texts[args.n:]
    model = Precomputed(texts, x, dims, "bench")
    xq = model.encode(queries)  # (nq, width), full width normalized
    k = 10
    root = Path(tempfile.mkdtemp(prefix="bench-qdrant-"))
    rows = []
    try:
        t0 = time.perf_counter()
        build_index(model, docs, root / "faiss", dims=dims, index_type="flat")
        faiss_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_qdrant(model, docs, root / "qdrant", dims=dims, url=args.url, collection="bench-qdrant",
                     overwrite=True, progress=True)
        qdrant_build = time.perf_counter() - t0
        with open_index(root / "faiss") as f, open_index(root / "qdrant") as q:
            _, I_true = knn(prefix(xq, funnel.d_large), prefix(np.asarray(f.xb), funnel.d_large), k)
            I_f, f_qps = per_query(lambda v: search_index(f, v, k)[1], xq)
            I_ff, f_fqps = per_query(lambda v: search_index(f, v, k, funnel=funnel)[1], xq)
            I_q, q_qps = per_query(lambda v: q.search(v, k)[1], xq)
            I_qf, q_fqps = per_query(lambda v: q.search(v, k, funnel=funnel)[1], xq)
            t0 = time.perf_counter()
            q.search(xq, k, funnel=funnel)  # every query in one query_batch_points request
            q_batch = len(xq) / (time.perf_counter() - t0)
        where = f"server {args.url}" if args.url else "local mode"
        rows.append(("FAISS flat", args.n / faiss_build, f_qps, f_fqps, "-", recall_at_k(I_true, I_f, k),
                     recall_at_k(I_true, I_ff, k)))
        rows.append((f"Qdrant {where}", args.n / qdrant_build, q_qps, q_fqps, f"{q_batch:,.0f}",
                     recall_at_k(I_f, I_q, k), recall_at_k(I_true, I_qf, k)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.n:,} vectors, {len(queries)} queries; {source}; prefix sizes {dims}, funnel {args.funnel} "
          f"shortlist {args.shortlist}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print(f"| backend | ingest texts/s | queries/s at {funnel.d_large} | funnel queries/s | funnel queries/s, "
          f"one batch request | top-10 overlap with FAISS flat at {funnel.d_large} | funnel recall@10 |")
    print("|---|---|---|---|---|---|---|")
    for name, ingest, qps, fqps, batch, agree, rec in rows:
        print(f"| {name} | {ingest:,.0f} | {qps:,.0f} | {fqps:,.0f} | {batch} | {agree:.3f} | {rec:.3f} |")
    print("\nFAISS's overlap column is its recall@10 against exact search (1.000: it is exact search).")


if __name__ == "__main__":
    main()
