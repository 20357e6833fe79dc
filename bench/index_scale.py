# ruff: noqa: E741  (faiss names: I ids)
"""FAISS past a million: `distill index build` and queries at 1M and 10M real student vectors.

    python bench/index_scale.py --student DIR                          # 1M and 10M (about 40 min on 2 cores)
    python bench/index_scale.py --student DIR --sizes 1000000 --nprobe 64,128,256   # a sweep at 1M
    python bench/index_scale.py --student DIR --sizes 1000000 --types auto,hnsw     # and HNSW beside it

``DIR`` is a distill student (``distill run --student static --out RUN`` makes one in a minute: RUN/student);
a static student embeds 10M texts in about 3 minutes here. The corpus is built: random windows of 6-30
words (seed 0) over the concatenated word stream of ../shared/data/corpus (3.1M words), one text per line;
the 1,000 queries are fresh windows (seed 1). Each build runs in its own process (the path
``distill index build`` takes: the corpus streamed, vectors stored in chunks, the index built from them)
and reports wall time and peak RSS; each query run too (1,000 queries in one batch after a warm-up
batch of 100), reporting queries/s, peak RSS and its resident file pages (the memory-mapped vectors
read to rescore). Recall@10 is against exact full-width search over the stored vectors, whose own
time is the ``exact`` row (FAISS flat search over the stored vectors read block by block, same 1,000 queries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/index.py

import numpy as np  # noqa: E402
from common import CORPUS  # noqa: E402

WINDOW = (6, 30)


def word_stream() -> np.ndarray:
    words: list[str] = []
    for f in sorted(CORPUS.glob("*.txt")):
        words += f.read_text(encoding="utf-8").split()
    return np.array(words, dtype=object)


def windows(words: np.ndarray, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(words) - WINDOW[1], n)
    lens = rng.integers(WINDOW[0], WINDOW[1] + 1, n)
    return [" ".join(words[s:s + l]) for s, l in zip(starts, lens)]


def write_corpus(path: Path, words: np.ndarray, n: int, block: int = 1_000_000) -> None:
    if path.is_file():
        return
    tmp = path.with_suffix(".part")
    rng = np.random.default_rng(0)
    with open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, n, block):
            m = min(block, n - start)
            f.write("\n".join(windows(words, m, int(rng.integers(2**31)))) + "\n")
    tmp.rename(path)


def peak_and_file_rss_mb() -> tuple[float, float]:
    """VmHWM (peak resident) and RssFile (resident file-backed pages now: mapped vectors) of this process."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return (int(status["VmHWM"].split()[0]) / 1024, int(status["RssFile"].split()[0]) / 1024)


# ---- workers: one process each, so that each peak RSS is that step's own ---------------------------------
def worker_build(args) -> dict:
    from distill.index.build import build_index
    from distill.models import load_model
    from distill.pipeline.corpus import Corpus

    t0 = time.perf_counter()
    build_index(load_model(str(args.student)), Corpus(str(args.corpus)), args.out, dims=[args.dim],
                index_type=args.index_type, spec=str(args.student), overwrite=True)
    peak, _ = peak_and_file_rss_mb()
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak}


def worker_query(args) -> dict:
    from distill.index.query import search_index
    from distill.index.store import IndexFolder

    xq = np.load(args.queries)
    with IndexFolder(args.out) as ix:
        index = ix.index(args.dim)
        if args.nprobe_one:
            index.nprobe = args.nprobe_one
        search_index(ix, xq[:100], 10, args.dim)  # warm-up: index read, first pages mapped
        t0 = time.perf_counter()
        _, I = search_index(ix, xq, 10, args.dim)
        seconds = time.perf_counter() - t0
    np.save(args.result, I)
    peak, file_now = peak_and_file_rss_mb()
    return {"qps": len(xq) / seconds, "peak_mb": peak, "file_mb": file_now}


def worker(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_mb(folder: Path, pattern: str) -> float:
    return sum(p.stat().st_size for p in folder.rglob(pattern)) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--nprobe", default="", help="nprobe values to query with besides the built default")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "distill-index-scale")
    ap.add_argument("--worker", choices=["build", "query"])
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--queries", type=Path)
    ap.add_argument("--result", type=Path)
    ap.add_argument("--nprobe-one", type=int, default=0)
    ap.add_argument("--index-type", default="auto", help="worker: the --index-type to build")
    ap.add_argument("--types", default="auto", help="index types to build at each size, e.g. auto,hnsw")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps((worker_build if args.worker == "build" else worker_query)(args)))
        return
    if args.student is None:
        ap.error("--student DIR is needed (distill run --student static --out RUN makes RUN/student)")
    from distill.models import load_model

    args.work.mkdir(parents=True, exist_ok=True)
    words = word_stream()
    queries = args.work / "queries.npy"
    np.save(queries, load_model(str(args.student)).encode(windows(words, 1000, seed=1), dim=args.dim))
    xq = np.load(queries)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        corpus = args.work / f"corpus-{n}.txt"
        write_corpus(corpus, words, n)
        I_true = None
        for kind in args.types.split(","):
            out = args.work / (f"index-{n}" + ("" if kind == "auto" else f"-{kind}"))
            I_true = measure(args, rows, n, kind, corpus, out, queries, xq, I_true)
    print(f"\n{args.dim}-d static-student vectors of built word-window texts, 1,000 queries, k=10, "
          f"{os.cpu_count()} CPUs\n")
    print("| vectors | search | build (wall, peak RSS) | queries/s | recall@10 | query peak RSS | on disk (MB) |")
    print("|---:|---|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r[0]:,} | " + " | ".join(r[1:]) + " |")


def measure(args, rows: list, n: int, kind: str, corpus: Path, out: Path, queries: Path, xq: np.ndarray,
            I_true: np.ndarray | None) -> np.ndarray:
    """Build one index type in a worker, query it in another; the exact row once per size."""
    from distill.index.search import knn_blocks, recall_at_k
    from distill.index.store import IndexFolder

    b = worker("build", student=args.student, corpus=corpus, out=out, dim=args.dim, index_type=kind)
    with IndexFolder(out) as ix:
        m = ix.manifest
        if I_true is None:
            t0 = time.perf_counter()
            _, I_true = knn_blocks(xq, ix.xb, 10)
            exact_s = time.perf_counter() - t0
            rows.append((n, "exact (flat, the stored vectors read in blocks)", "", f"{len(xq) / exact_s:,.1f}",
                         "1.000", "", f"{disk_mb(out, '*.npy'):,.0f}"))
    idx_mb = disk_mb(out, "*.faiss")
    p = m.index_params
    for nprobe in [0] + ([int(v) for v in args.nprobe.split(",") if v] if "nlist" in p else []):
        q = worker("query", out=out, queries=queries, result=args.work / "I.npy", dim=args.dim, nprobe_one=nprobe)
        recall = recall_at_k(I_true, np.load(args.work / "I.npy"), 10)
        what = m.index_type + (f" nlist {p['nlist']} nprobe {nprobe or p['nprobe']}, {p['rescore']} rescored"
                               if "nlist" in p else f" M{p['hnsw_m']} efSearch {p['ef_search']}" if "hnsw_m" in p
                               else "") + (" (built default)" if not nprobe else "")
        build = f"{b['seconds']:,.0f} s, peak {b['peak_mb'] / 1024:.2f} GB" if not nprobe else ""
        rows.append((n, what, build, f"{q['qps']:,.0f}", f"{recall:.3f}",
                     f"{q['peak_mb'] / 1024:.2f} GB ({q['file_mb'] / 1024:.2f} mapped)", f"{idx_mb:,.0f}"))
        print(rows[-1], flush=True)
    return I_true


if __name__ == "__main__":
    main()
