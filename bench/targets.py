"""Throughput of `distill targets` against plain sentence-transformers on the same texts.

    python bench/targets.py [--n 2000] [--batch-size 64] [--repeats 2]

Both sides run the bundled all-MiniLM-L6-v2 on CPU with the same batch size; model loading is not
timed. ``distill targets`` is timed end to end as the library call ``label`` into a fresh
temporary cache (tokenize, length-sorted batches, forward passes, checksummed shard files).
Prints a markdown table and the padding waste of length-sorted vs unsorted batches.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import CORPUS

from distill.pipeline.corpus import read_corpus  # noqa: E402
from distill.pipeline.targets import label  # noqa: E402
from distill.teachers import load_teacher  # noqa: E402
from distill.teachers.registry import bundled_minilm_path  # noqa: E402

BROWN = CORPUS / "brown.txt"


def padding_waste(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Share of the padded (batch, width) cells that are padding when batches follow ``order``."""
    cells = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        cells += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / cells


def best_times(methods: dict, repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best wall time of each method, taking turns round-robin so that load from other jobs on a
    shared machine falls on every method alike."""
    best = dict.fromkeys(methods, float("inf"))
    results = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=BROWN)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="Time each method this many times; keep the best.")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = read_corpus(args.corpus, limit=args.n).texts
    bs = args.batch_size
    teacher = load_teacher("minilm", device="cpu")
    st = SentenceTransformer(str(bundled_minilm_path()), device="cpu")
    st.encode(texts[:bs], batch_size=bs)  # warm-up, both share the process
    teacher.embed_texts(texts[:bs], batch_size=bs)

    def ours() -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:  # a fresh cache each time: nothing is reused
            return label(teacher, "text", tmp, texts, batch_size=bs, progress=False).pooled()

    def st_encode() -> np.ndarray:
        return st.encode(texts, batch_size=bs, convert_to_numpy=True)

    def st_loop() -> np.ndarray:  # the naive loop: batches in corpus order
        return np.concatenate([st.encode(texts[i:i + bs], batch_size=bs, convert_to_numpy=True)
                               for i in range(0, len(texts), bs)])

    seconds, results = best_times({"distill targets (label)": ours,
                                   "SentenceTransformer.encode(all texts)": st_encode,
                                   f"SentenceTransformer.encode per {bs}-text chunk": st_loop}, args.repeats)
    rows = list(seconds.items())
    base = rows[1][1]
    ref = results["SentenceTransformer.encode(all texts)"]
    max_diff = max(float(np.abs(r - ref).max()) for r in results.values())

    print(f"{len(texts)} texts of {args.corpus.name}, batch size {bs}, all-MiniLM-L6-v2 on CPU "
          f"({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}), best of {args.repeats}\n")
    print("| method | texts | seconds | texts/s | ratio vs ST.encode |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {len(texts)} | {seconds:.2f} | {len(texts) / seconds:.1f} | {base / seconds:.2f}x |")
    print(f"\nmax abs difference between the methods' vectors: {max_diff:.2e}")

    seqs, n_truncated = teacher.tokenize(texts)
    lengths = [len(s) for s in seqs]
    by_length = sorted(range(len(seqs)), key=lambda i: -lengths[i])
    print(f"\ntokens per text: mean {np.mean(lengths):.1f}, max {max(lengths)}; {n_truncated} truncated\n")
    print("| batches | padding waste |")
    print("|---|---:|")
    print(f"| length-sorted (distill) | {padding_waste(lengths, by_length, bs):.1%} |")
    by_chars = sorted(range(len(seqs)), key=lambda i: -len(texts[i]))  # what ST.encode does
    print(f"| sorted by characters (ST.encode) | {padding_waste(lengths, by_chars, bs):.1%} |")
    print(f"| corpus order (unsorted) | {padding_waste(lengths, list(range(len(seqs))), bs):.1%} |")


if __name__ == "__main__":
    main()
