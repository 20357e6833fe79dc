"""Conv-merging student vs the derived (layers) student of the same depth, on long texts.

    python bench/conv.py --work /tmp/conv-bench
    python bench/conv.py --work /tmp/conv-bench --depth 3 --merge 4 --merge-after 1 --epochs 2

Both students keep the same MiniLM layers (``--depth 3`` of 6: layers 1, 3, 5), start from the teacher's
weights and a head from the run's PCA rotation, and train the same epochs on the same texts (the first
``--paragraphs`` WikiText-2 validation paragraphs, cut at the teacher's 256 tokens) with text targets only,
through ``distill run`` (``until="train"``) with one shared target cache. The conv student merges every
``--merge`` token states after its first ``--merge-after`` layers.

Scored on held-out long texts (WikiText-2 test paragraphs of at least ``--min-tokens`` tokens): overlap@10
with the teacher per prefix size, and STS-B dev Spearman. Speed in sentences/s on the long texts and on
short ones (STS-B dev sentences): the two students timed side by side in this process, interleaved, best of
``--repeats``, one thread (the cores are shared). A finished run folder is reused, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the cores are shared

import numpy as np  # noqa: E402
from common import DATA

DIMS = (32, 64, 128, 256)


def paragraphs(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_student(kind: str, args, corpus: Path) -> Path:
    """``distill run --student KIND`` up to training; skipped when its student exists."""
    from distill.pipeline.folder import RunFolder
    from distill.pipeline.run import RunConfig, run
    from distill.pipeline.train import TrainConfig

    out = args.work / kind
    if not RunFolder(out).trained():
        cfg = RunConfig(out=str(out), teacher="minilm", corpus=str(corpus), student=kind, depth=args.depth,
                        merge=args.merge, merge_after=args.merge_after, token_targets=False,
                        max_length=args.max_length, holdout=args.holdout, dims=DIMS,
                        targets_dir=str(args.work / "targets"),
                        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0, log_every=5))
        t = time.perf_counter()
        run(cfg, until="train")
        print(f"{kind}: trained in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def rate(encode, texts: list[str]) -> float:
    t = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - t)


def speeds(students: dict, texts: list[str], repeats: int) -> dict[str, float]:
    """Best sentences/s of each student over ``repeats`` interleaved passes (after a warm-up batch)."""
    best = {name: 0.0 for name in students}
    for s in students.values():
        s.encode(texts[:32])
    for _ in range(repeats):
        for name, s in students.items():
            best[name] = max(best[name], rate(s.encode, texts))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/conv-bench"))
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--merge", type=int, default=4)
    parser.add_argument("--merge-after", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--min-tokens", type=int, default=256, help="held-out texts: at least this many tokens")
    parser.add_argument("--holdout", type=int, default=50, help="the runs' own held-out texts (not scored here)")
    parser.add_argument("--short", type=int, default=1000, help="STS-B dev sentences timed as short texts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=Path, default=DATA / "corpus" / "wikitext2-valid.txt")
    parser.add_argument("--paragraphs", type=int, default=1000, help="training texts: the first N of --train")
    parser.add_argument("--only-train", default=None, help="train these students (layers,conv) and stop")
    parser.add_argument("--test", type=Path, default=DATA / "corpus" / "wikitext2-test.txt")
    parser.add_argument("--sts", type=Path, default=DATA / "sts" / "sts-dev.csv")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    from distill.pipeline.evaluate import agreement, read_pairs, sts_scores
    from distill.pipeline.folder import RunFolder
    from distill.students import load_student
    from distill.teachers import load_teacher

    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / "train.txt"
    if not corpus.is_file():
        corpus.write_text("\n".join(paragraphs(args.train)[:args.paragraphs]) + "\n", encoding="utf-8")
    if args.only_train:
        for kind in args.only_train.split(","):
            train_student(kind, args, corpus)
        return
    runs = {kind: train_student(kind, args, corpus) for kind in ("layers", "conv")}
    students = {kind: load_student(out) for kind, out in runs.items()}
    inits = {kind: load_student(RunFolder(out).student_init) for kind, out in runs.items()}

    # held-out long texts: the test paragraphs of at least --min-tokens tokens (as the student counts them)
    test = paragraphs(args.test)
    tok = students["layers"].tokenizer
    n_tokens = np.array([len(e.ids) for e in tok.encode_batch(test, add_special_tokens=True)])
    long_texts = [t for t, n in zip(test, n_tokens) if n >= args.min_tokens]
    pairs = read_pairs(args.sts)
    short = sorted(set(pairs.first) | set(pairs.second))[:args.short]
    print(f"{len(long_texts)} held-out texts of >= {args.min_tokens} tokens (cut at {args.max_length}); "
          f"{len(short)} short texts, {np.mean([len(e.ids) for e in tok.encode_batch(short)]):.1f} tokens on average",
          flush=True)

    teacher = load_teacher("minilm", device="cpu", max_length=args.max_length)
    cached = args.work / f"teacher-long-{args.min_tokens}.npy"
    if not cached.is_file():
        np.save(cached, teacher.embed_texts(long_texts, batch_size=32))
    x_teacher = np.load(cached)
    result: dict = {"texts": len(long_texts), "short": len(short), "args": {k: str(v) for k, v in vars(args).items()}}
    for kind in students:
        result[kind] = {"overlap": agreement(students[kind].encode(long_texts), x_teacher, list(DIMS)),
                        "init_overlap": agreement(inits[kind].encode(long_texts), x_teacher, list(DIMS)),
                        "sts": sts_scores(students[kind], pairs, list(DIMS))}
    result["teacher_sts"] = sts_scores(teacher, pairs, [DIMS[-1]])

    torch.set_num_threads(1)  # one thread: less at the mercy of the other jobs on the shared cores
    result["speed_long"] = speeds(students, long_texts, args.repeats)
    result["speed_short"] = speeds(students, short, args.repeats)
    result["speed_long"]["teacher"] = rate(lambda x: teacher.embed_texts(x, batch_size=32), long_texts)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))

    top = str(DIMS[-1])
    lines = [f"| | {' | '.join(map(str, DIMS))} dims |", "|---|" + "---:|" * len(DIMS)]
    for kind in students:
        for what, key in (("overlap@10 on long texts", "overlap"), ("the same, as initialised", "init_overlap")):
            lines.append(f"| {what}, {kind} | " + " | ".join(f"{result[kind][key][str(d)]['overlap@10']:.3f}"
                                                             for d in DIMS) + " |")
        lines.append(f"| STS-B dev Spearman x100, {kind} | " + " | ".join(
            f"{result[kind]['sts'][str(d)]['spearman']:.1f}" for d in DIMS) + " |")
    sl, ss = result["speed_long"], result["speed_short"]
    lines += ["", "| sentences/s (1 thread) | layers | conv | conv / layers |", "|---|---:|---:|---:|",
              f"| {len(long_texts)} long texts (>= {args.min_tokens} tokens, cut at {args.max_length}) | "
              f"{sl['layers']:.1f} | {sl['conv']:.1f} | {sl['conv'] / sl['layers']:.2f}x |",
              f"| {len(short)} STS-B dev sentences | {ss['layers']:.1f} | {ss['conv']:.1f} | "
              f"{ss['conv'] / ss['layers']:.2f}x |",
              "", f"teacher on the long texts: {sl['teacher']:.1f} sentences/s; teacher STS-B dev Spearman x100 at "
              f"{top} dims: {result['teacher_sts'][top]['spearman']:.1f}",
              f"overlap@10 at {top} dims, conv - layers: "
              f"{result['conv']['overlap'][top]['overlap@10'] - result['layers']['overlap'][top]['overlap@10']:+.3f}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
