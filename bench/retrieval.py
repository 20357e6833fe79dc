"""Retrieval of finished runs' students on a BEIR task, side by side with their teacher and Model2Vec.

For each run folder: NDCG@10 of the student (queries and documents by the student), of the student's
queries against the teacher's documents rotated into the run's space (asymmetric), and of the teacher's
rotated prefixes, at each prefix size asked for; STS-B dev Spearman beside; queries per second of the
student and of the teacher, timed one after the other on the task's queries. Model2Vec distilled from the
same teacher (``pip install --no-deps model2vec skeletoken``) is scored as a peer, symmetric only.

    python bench/retrieval.py --runs runs/noarg,runs/depth3 --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import DATA

from distill.pipeline.evaluate import read_pairs, sts_scores
from distill.pipeline.retrieval import cached_vectors, read_task, retrieval_scores
from distill.pipeline.space import load_space
from distill.pipeline.stages import texts_per_second
from distill.students import load_student
from distill.teachers import load_teacher


def row(name: str, scores: dict, dims: list[int], sts: dict | None, qps: float | None, teacher: float) -> str:
    cells = [name]
    for key in ("symmetric", "asymmetric", "teacher_rotated"):
        for d in dims:
            m = scores.get(key, {}).get(str(d))
            cells.append(f"{m['ndcg@10']:.3f} ({100 * m['ndcg@10'] / teacher:.0f}%)" if m else "–")
    cells += [f"{sts[str(d)]['spearman']:.1f}" if sts and str(d) in sts else "–" for d in dims]
    cells.append(f"{qps:,.0f}" if qps else "–")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="comma list of finished run folders (one teacher)")
    p.add_argument("--task", type=Path, default=DATA / "retrieval" / "nfcorpus")
    p.add_argument("--split", default="test")
    p.add_argument("--sts", type=Path, default=DATA / "sts" / "sts-dev.csv")
    p.add_argument("--dims", default="64,256")
    p.add_argument("--cache", type=Path, default=Path("runs/targets"), help="where the teacher's task vectors are kept")
    p.add_argument("--model2vec", type=Path, default=None, help="a folder for Model2Vec distilled from the teacher")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",")]
    runs = [Path(r) for r in args.runs.split(",")]
    task = read_task(args.task, args.split)
    pairs = read_pairs(args.sts)
    config = json.loads((runs[0] / "config.json").read_text())
    teacher = load_teacher(config["teacher"], max_length=config.get("max_length"), prompt=config.get("prompt"))
    raw_docs = cached_vectors(teacher, task.documents, args.cache)
    raw_q = cached_vectors(teacher, task.queries, args.cache)
    full = retrieval_scores(raw_q, task, [teacher.dim], documents=raw_docs)[str(teacher.dim)]["ndcg@10"]
    teacher_qps = texts_per_second(lambda x: teacher.embed_texts(x), task.queries)
    results: dict = {"task": task.name, "split": args.split, "teacher": {"ndcg@10": full, "queries_per_s": teacher_qps}}
    head = ["model"] + [f"{k} @{d}" for k in ("symmetric", "asymmetric", "teacher rotated") for d in dims]
    lines = [f"NDCG@10 on {task.name} {args.split} ({len(task.queries)} queries, {len(task.documents)} documents); "
             f"% of the teacher at {teacher.dim} dims ({full:.3f}, {teacher_qps:,.0f} queries/s)", "",
             "| " + " | ".join(head + [f"STS-B dev @{d}" for d in dims] + ["queries/s"]) + " |",
             "|" + "---|" * (len(head) + len(dims) + 1)]
    for run in runs:
        space = load_space(run)
        student = load_student(run)
        docs, q = space.pca.transform(raw_docs), space.pca.transform(raw_q)
        kept = [d for d in dims if d <= student.dim]
        scores = {"symmetric": retrieval_scores(student, task, kept),
                  "asymmetric": retrieval_scores(student, task, kept, documents=docs[:, :student.dim]),
                  "teacher_rotated": retrieval_scores(q[:, :student.dim], task, kept, documents=docs[:, :student.dim])}
        sts = sts_scores(student, pairs, kept)
        qps = texts_per_second(lambda x, s=student: s.encode(x), task.queries)
        name = f"{run.name} ({student.kind})"
        results[name] = {**scores, "sts": sts, "queries_per_s": qps}
        lines.append(row(name, scores, dims, sts, qps, full))
    if args.model2vec is not None:
        sys.path.insert(0, str(Path(__file__).parent))
        from quality import model2vec_student

        m2v, _ = model2vec_student(teacher.source.path, args.model2vec, max(dims))
        scores = {"symmetric": retrieval_scores(m2v, task, dims)}
        sts = sts_scores(m2v, pairs, dims)
        qps = texts_per_second(lambda x: m2v.encode(x), task.queries)
        results["model2vec"] = {**scores, "sts": sts, "queries_per_s": qps}
        lines.append(row("Model2Vec (same teacher)", scores, dims, sts, qps, full))
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
