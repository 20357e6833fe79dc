"""Static encoding speed: the word cache against the subword tokenizer path and Model2Vec, one run.

    python bench/static_speed.py --student runs/<run> --corpus ../shared/data/corpus/brown.txt --n 20000

Model2Vec loads the same student exported in its format (same vocabulary, same vectors), so the three
differ only in how a text becomes a vector. Each is timed --repeats times on the same texts, after one
warm-up pass (the word cache's warm-up fills it: a long-running service or a big `distill embed` job
is in that state after its first batches); the median is reported, with the largest difference of the
cache's vectors from the tokenizer path's.
"""

import argparse
import statistics
import tempfile
import time

import numpy as np

from distill.students import load_student
from distill.students.base import normalize
from distill.students.export import export_model2vec
from distill.students.static import bag_means


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from model2vec import StaticModel

    texts = [t for t in open(args.corpus, encoding="utf-8").read().splitlines() if t.strip()][: args.n]
    student = load_student(args.student)
    table, w = student._tables()
    with tempfile.TemporaryDirectory() as tmp:
        export_model2vec(student, tmp)
        m2v = StaticModel.from_pretrained(tmp)
    t_tok, ref = timed(lambda: normalize(bag_means(table, w, student.tokenize(texts))), args.repeats)
    t_cache, got = timed(lambda: student.encode(texts, batch_size=4096), args.repeats)
    t_m2v, _ = timed(lambda: m2v.encode(texts, batch_size=4096), args.repeats)
    n = len(texts)
    print("| path | sentences/s | vs Model2Vec |\n|---|---:|---:|")
    for name, t in (("Model2Vec (same student, its format)", t_m2v), ("distill, subword tokenizer", t_tok),
                    ("distill, word cache (warm)", t_cache)):
        print(f"| {name} | {n / t:,.0f} | {t_m2v / t:.2f}x |")
    print(f"\n{n} texts; word cache vs tokenizer path: max |difference| {np.abs(got - ref).max():.1e}")


if __name__ == "__main__":
    main()
