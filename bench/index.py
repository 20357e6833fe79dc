# ruff: noqa: E741  (faiss names: I ids)
"""Index benchmark: queries/s and recall@10 of exact, HNSW, IVF-PQ and funnel search.

    python bench/index.py                      # 100k synthetic vectors (a few minutes on 2 cores)
    python bench/index.py --with-1m            # and 1M synthetic vectors (much longer: HNSW build)
    python bench/index.py --real               # and MiniLM vectors of ../shared/data/corpus (about 2 min)
    python bench/index.py --n 0 --real         # real vectors only
    python bench/index.py --precision          # and float32 / int8 / binary codes: bytes, queries/s, recall
    python bench/index.py --add                # and the time and bytes an `add` of 1% writes
    python bench/index.py --no-methods --precision --add   # those two alone

Synthetic vectors are Matryoshka-like: a mixture of Gaussian clusters whose covariance is diagonal
with a power-law spectrum, variance of dim j proportional to j^-alpha (alpha 1 by default). That is
what PCA-ordered real embeddings look like, and what a Matryoshka student's prefixes are trained to be:
the leading dims carry most of the variance, so a short prefix already ranks neighbours roughly
right. Queries are fresh samples of the same distribution. Recall@10 is measured against exact
full-width search (IndexFlatIP at d dims), which therefore scores 1.0.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads starve
# everyone (a 4x slowdown of PQ training was measured under load). Must be set before faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from common import CORPUS

from distill.index.add import add_to_index  # noqa: E402
from distill.index.build import IndexParams, IndexType, build_index, make_index  # noqa: E402
from distill.index.precision import Precision, bytes_per_vector, index_search  # noqa: E402
from distill.index.search import funnel_search, knn, normalize_prefix, recall_at_k  # noqa: E402


def matryoshka_vectors(n: int, d: int, alpha: float = 1.0, n_clusters: int = 1000, spread: float = 0.7,
                       seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors (n, d): cluster centre + noise, both with variance j^-alpha along dim j."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, d + 1) ** (-alpha / 2)).astype(np.float32)  # (d,) std devs
    centres = np.random.default_rng(12345).standard_normal((n_clusters, d)).astype(np.float32) * scale
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        noise = rng.standard_normal((m, d), dtype=np.float32) * (spread * scale)
        out[start:start + m] = centres[rng.integers(0, n_clusters, m)] + noise
    return normalize_prefix(out)


def real_vectors(n: int, spec: str, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Vectors of up to ``n`` + ``nq`` lines of the shared corpus by model ``spec``, PCA-rotated.

    A teacher's dims are in no particular order, so its prefixes are poor embeddings; rotating its
    space by PCA (what distill's students are trained against) makes the prefixes meaningful.
    """
    from distill.models import load_model

    texts = []
    for path in sorted(CORPUS.glob("*.txt")):
        texts += [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if len(t.split()) >= 4]
    rng = np.random.default_rng(seed)
    texts = [texts[i] for i in rng.choice(len(texts), min(n + nq, len(texts)), replace=False)]
    model = load_model(spec)
    x = model.encode(texts, batch_size=128, progress=True)
    if hasattr(model, "dims"):  # a distill student: its prefixes are already trained to be embeddings
        return x[nq:], x[:nq], f"distill student ({model.dim}-d)"
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x[: min(len(x), 20_000)], full_matrices=False)  # (d, d) principal axes
    x = normalize_prefix(x @ vt.T)
    return x[nq:], x[:nq], f"{spec} ({model.dim}-d, PCA-rotated)"


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def bench(xb: np.ndarray, xq: np.ndarray, label: str, d_small: int, shortlists: list[int], k: int = 10,
          skip: set[str] = frozenset()) -> list[dict]:
    d = xb.shape[1]
    n, nq = len(xb), len(xq)
    rows = []

    def row(method, build_s, search_s, I):
        rows.append({"data": label, "n": n, "method": method, "build_s": build_s, "qps": nq / search_s,
                     "recall@10": recall_at_k(I_true, I, k)})

    _, I_true = knn(xq, xb, k)  # ground truth (and a warm-up)
    exact, t_build = timed(make_index, xb, IndexType.FLAT)
    (_, I), t = timed(exact[0].search, xq, k)
    row(f"exact flat {d}-d", t_build, t, I)
    xs, xqs = normalize_prefix(xb, d_small), normalize_prefix(xq, d_small)
    small, t_small = timed(make_index, xs, IndexType.FLAT)
    (_, I), t = timed(small[0].search, xqs, k)
    row(f"exact flat {d_small}-d prefix only", t_small, t, I)
    for s in shortlists:
        (_, I), t = timed(funnel_search, small[0], xb, xq, k, d_small, d, s)
        row(f"funnel {d_small}:{d}, shortlist {s}", t_small, t, I)
    if "hnsw" not in skip:
        (small_hnsw, _), t_small = timed(make_index, xs, IndexType.HNSW, IndexParams())
        for s in shortlists:
            (_, I), t = timed(funnel_search, small_hnsw, xb, xq, k, d_small, d, s)
            row(f"funnel {d_small}:{d} via hnsw-{d_small}, shortlist {s}", t_small, t, I)
        del small_hnsw
        (index, p), t_build = timed(make_index, xb, IndexType.HNSW, IndexParams())
        (_, I), t = timed(index.search, xq, k)
        row(f"hnsw {d}-d M{p['hnsw_m']} efSearch {p['ef_search']}", t_build, t, I)
        del index
    if "ivfpq" not in skip:
        (index, p), t_build = timed(make_index, xb, IndexType.IVFPQ, IndexParams())  # nprobe untuned here
        (_, I), t = timed(funnel_search, index, xb, xq, k, d, d, p["rescore"])  # as queries search it: rescored
        row(f"ivfpq {d}-d nlist {p['nlist']} PQ{p['pq_m']}x4fs spilled nprobe {p['nprobe']} rescore {p['rescore']}",
            t_build, t, I)
        del index
    exact_qps = rows[0]["qps"]
    for r in rows:
        r["speedup"] = r["qps"] / exact_qps
    return rows


def bench_precision(xb: np.ndarray, xq: np.ndarray, label: str, d_small: int, k: int = 10,
                    shortlists: tuple[int, ...] = (100,)) -> list[dict]:
    """Exact (flat) search over float32, int8 and binary codes at two prefix sizes, and each quantized index
    as the shortlist of a float re-ranking at full width; recall@10 against exact float32 full-width search."""
    d, nq = xb.shape[1], len(xq)
    _, I_true = knn(xq, xb, k)
    rows = []
    for precision in Precision:
        for dd in (d_small, d):
            (index, _), t_build = timed(make_index, normalize_prefix(xb, dd), IndexType.FLAT, IndexParams(), precision)
            (_, I), t = timed(index_search, index, normalize_prefix(xq, dd), k)
            code = bytes_per_vector(dd, precision)
            rows.append({"data": label, "method": f"{precision.value} flat {dd}-d", "bytes": code, "build_s": t_build,
                         "qps": nq / t, "recall@10": recall_at_k(I_true, I, k)})
            for shortlist in shortlists if precision is not Precision.FLOAT32 or dd < d else ():
                (_, I), t = timed(funnel_search, index, xb, xq, k, dd, d, shortlist)
                rows.append({"data": label, "method": f"{precision.value} {dd}-d shortlist {shortlist}, float {d}-d "
                             "re-rank", "bytes": code + 4 * d, "build_s": t_build, "qps": nq / t,
                             "recall@10": recall_at_k(I_true, I, k)})
            del index
    return rows


class ArrayModel:
    """Texts that are row numbers of ``x``: the index's storage path timed without a model."""

    def __init__(self, x: np.ndarray, dims: list[int]):
        self.x, self.dim, self.dims = x, x.shape[1], dims

    def identity(self) -> dict:
        return {"name": "array", "dim": self.dim}

    def encode(self, texts, batch_size=0, progress=False):
        return self.x[[int(t) for t in texts]]


def bench_add(n: int, d: int, d_small: int, n_add: int) -> dict:
    """Build an index of ``n`` vectors at prefix sizes d_small and d, then time an add of ``n_add``."""
    x = matryoshka_vectors(n + n_add, d, seed=2)
    model = ArrayModel(x, [d_small, d])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ix"
        _, t_build = timed(build_index, model, [str(i) for i in range(n)], folder)
        _, t_add = timed(add_to_index, folder, model, [str(i) for i in range(n, n + n_add)])
        gen = folder / (folder / "CURRENT").read_text().strip()
        mb = {p.name: p.stat().st_size / 2**20 for p in gen.iterdir()}
    faiss_mb = sum(v for k, v in mb.items() if k.endswith(".faiss"))
    # the build's chunk is hard-linked into the add's generation; the add wrote its own chunk and the FAISS files
    return {"n": n, "n_add": n_add, "build_s": t_build, "add_s": t_add, "faiss_mb": faiss_mb,
            "written_mb": faiss_mb + mb["vectors-000001.npy"], "linked_mb": mb["vectors-000000.npy"]}


def print_precision(rows: list[dict], label: str) -> None:
    exact = rows[0]["qps"]  # float32 flat at the smallest size first: find the full-width exact row
    exact = next((r["qps"] for r in rows if r["method"].startswith("float32 flat") and "shortlist" not in r["method"]
                  and r is not rows[0]), exact)
    print(f"\n| method ({label}) | bytes/vector | build s | queries/s | x exact full width | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['bytes']} | {r['build_s']:.1f} | {r['qps']:,.0f} | {r['qps'] / exact:.2f} "
              f"| {r['recall@10']:.3f} |")


def print_table(rows: list[dict]) -> None:
    head = (f"| {'data':<34} | {'n':>9} | {'method':<44} | {'build s':>7} | {'queries/s':>9} | {'x exact':>7} "
            "| recall@10 |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['data']:<34} | {r['n']:>9,} | {r['method']:<44} | {r['build_s']:>7.1f} | {r['qps']:>9,.0f} "
              f"| {r['speedup']:>7.2f} | {r['recall@10']:>9.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="synthetic database size (0: none)")
    ap.add_argument("--with-1m", action="store_true", help="also run 1M synthetic vectors (slow on 2 cores)")
    ap.add_argument("--d", type=int, default=256, help="full width of the synthetic vectors")
    ap.add_argument("--d-small", type=int, default=64, help="funnel shortlist prefix size")
    ap.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the synthetic spectrum")
    ap.add_argument("--nq", type=int, default=1000, help="queries per measurement (one batch)")
    ap.add_argument("--shortlists", default="50,100", help="funnel shortlist sizes")
    ap.add_argument("--real", action="store_true", help="also bench real vectors of the shared corpus")
    ap.add_argument("--real-model", default="minilm", help="model spec for --real (a student folder or teacher)")
    ap.add_argument("--real-n", type=int, default=20_000, help="texts for --real")
    ap.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all cores)")
    ap.add_argument("--precision", action="store_true", help="also float32 / int8 / binary codes (synthetic --n)")
    ap.add_argument("--add", action="store_true", help="also time an add of 1%% to an index of --n vectors")
    ap.add_argument("--methods", action=argparse.BooleanOptionalAction, default=True,
                    help="the exact / HNSW / IVF-PQ / funnel table (--no-methods: skip it)")
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    shortlists = [int(s) for s in args.shortlists.split(",")]
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {args.nq} queries, k=10")
    rows = []
    sizes = (([args.n] if args.n else []) + ([1_000_000] if args.with_1m else [])) if args.methods else []
    for n in sizes:
        xb = matryoshka_vectors(n, args.d, args.alpha, seed=0)
        xq = matryoshka_vectors(args.nq, args.d, args.alpha, seed=1)
        rows += bench(xb, xq, f"synthetic {args.d}-d, alpha {args.alpha:g}", args.d_small, shortlists)
        del xb
    if args.real:
        xb_real, xq_real, label = real_vectors(args.real_n, args.real_model, args.nq)
        if args.methods:
            rows += bench(xb_real, xq_real, label, args.d_small, shortlists,
                          skip={"ivfpq"} if len(xb_real) < 10_000 else set())
    if rows:
        print_table(rows)
    if args.precision and args.n:
        xb = matryoshka_vectors(args.n, args.d, args.alpha, seed=0)
        print_precision(bench_precision(xb, matryoshka_vectors(args.nq, args.d, args.alpha, seed=1), "synthetic",
                                        args.d_small), f"{args.n:,} synthetic {args.d}-d")
        del xb
    if args.precision and args.real:
        print_precision(bench_precision(xb_real, xq_real, label, args.d_small, shortlists=tuple(shortlists)),
                        f"{len(xb_real):,} {label}")
    if args.add and args.n:
        r = bench_add(args.n, args.d, args.d_small, max(1, args.n // 100))
        print(f"\nadd of {r['n_add']:,} to {r['n']:,} vectors (flat, dims {args.d_small},{args.d}): build "
              f"{r['build_s']:.1f} s, add {r['add_s']:.2f} s; the add wrote {r['written_mb']:.1f} MB (of which FAISS "
              f"files {r['faiss_mb']:.1f} MB) and hard-linked {r['linked_mb']:.1f} MB of stored vectors")


if __name__ == "__main__":
    main()
