"""The speed-quality frontier of one teacher: every kind of student, trained on the same texts, side by side.

    python bench/frontier.py                                    # MiniLM (bundled), 10k training texts
    python bench/frontier.py --students static,derived-3 --train 2000 --quick   # a smoke run
    python bench/frontier.py --teacher "$(../shared/scripts/get-teacher mpnet)" --train 2000 \\
        --students static,derived-3,derived-6 --work /tmp/frontier-mpnet --plot docs/frontier-mpnet.png

Rows: the teacher, the teacher's own PCA-rotated prefixes, Model2Vec distilled from the same teacher
folder, and each student of ``--students``: the static student, the transformer student, teacher-derived
students (``derived-k``: ``--student layers --depth k``), and the extra kinds the run options offer
(a grown student, a conv-merging one). Every student trains on the same ``--train`` texts (movie
reviews: the training domain) for the same ``--epochs``, through ``distill.pipeline.run`` -- what
``distill run`` does. One more static row, ``static, all but Brown``, trains on every corpus text
except Brown's and the held-out ones: the out-of-domain check.

Quality, per row: STS-B dev Spearman x100 at 64 dims and at full width; overlap@10 with the full-width
teacher among held-out texts (exact neighbours, FAISS flat) in the training domain (movie reviews),
out of it (Brown sentences: no student trained on Brown) and on long texts (WikiText-2 paragraphs of
at least 256 teacher tokens, which the teacher and the contextual students cut at their limit).
Speed: sentences/s of ``encode`` on short texts (the STS-B dev sentences) and on the long paragraphs,
every model timed in one phase at the end, side by side (static models batch 1024 best of 3, the
rest batch 64, once).

The teacher labels every text once into ``--targets-dir`` (content-addressed per text: reruns are
free); the runs find their targets there. A finished run folder with the same config is reused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from common import DATA
from quality import Precomputed, model2vec_student, run_corpus, timed_encode, train_student  # noqa: E402

SHARED = DATA
K = 10
LONG_TOKENS = 256

logger = logging.getLogger("bench.frontier")

# name -> (RunConfig options, TrainConfig options); "derived-k" are made on the fly
STUDENTS: dict[str, tuple[dict, dict]] = {
    "static": ({"student": "static"}, {"batch_size": 256}),
    "transformer": ({"student": "transformer", "width": 256, "n_layers": 2, "n_heads": 4}, {"batch_size": 64}),
}


def student_spec(name: str, extra: dict[str, tuple[dict, dict]]) -> tuple[dict, dict]:
    if name in extra:
        return extra[name]
    if name in STUDENTS:
        return STUDENTS[name]
    if name.startswith("derived-"):
        return {"student": "layers", "depth": int(name.split("-", 1)[1])}, {"batch_size": 64}
    raise SystemExit(f"unknown student {name!r}: static, transformer, derived-K, or one given with --extra")


# ---- texts ------------------------------------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    from distill.pipeline.corpus import read_corpus

    return list(dict.fromkeys(read_corpus(path).texts))


def shuffled(texts: list[str], seed: int) -> list[str]:
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]


def split_texts(corpus_dir: Path, teacher, n_train: int, n_holdout: int, n_long: int, seed: int) -> dict:
    """Held-out in-domain (movie reviews), out-of-domain (Brown), long (WikiText-2 paragraphs of at least
    ``LONG_TOKENS`` teacher tokens) texts; the shared training texts (movie reviews); and every other
    non-Brown text for the out-of-domain static row."""
    reviews = shuffled(read_lines(corpus_dir / "movie_reviews.txt"), seed)
    brown = shuffled(read_lines(corpus_dir / "brown.txt"), seed)
    paragraphs = read_lines(corpus_dir / "wikitext2-valid.txt") + read_lines(corpus_dir / "wikitext2-test.txt")
    n_tokens = [len(s) for s in teacher.tokenizer(paragraphs, add_special_tokens=True)["input_ids"]]
    long = shuffled([p for p, n in zip(paragraphs, n_tokens) if n >= LONG_TOKENS], seed)[:n_long]
    held = reviews[:n_holdout]
    train = reviews[n_holdout:n_holdout + n_train]
    taken = set(long)
    everything = reviews[n_holdout:] + [p for p in paragraphs if p not in taken]
    return {"holdout": held, "brown": brown[:n_holdout], "long": long, "train": train,
            "all_but_brown": shuffled(everything, seed + 1)}


# ---- measurements -----------------------------------------------------------------------------------
def overlap(x: np.ndarray, teacher_nn: np.ndarray, d: int | None = None) -> float:
    from distill.index.search import normalize_prefix, self_knn

    nn = self_knn(normalize_prefix(x, d), K)
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(nn, teacher_nn)]))


def score(model, sets: dict, teacher_nn: dict, pairs, dims: list[int], vectors: dict | None = None) -> dict:
    """STS-B dev at every prefix size and overlap@K on each held-out set (full width, and in-domain per prefix)."""
    from distill.pipeline.evaluate import sts_scores

    vectors = vectors or {name: model.encode(texts, batch_size=64) for name, texts in sets.items()}
    sts = sts_scores(model, pairs, dims)
    out = {"sts": {d: sts[str(d)]["spearman"] for d in dims},
           "overlap": {d: overlap(vectors["holdout"], teacher_nn["holdout"], d) for d in dims}}
    for name in sets:
        out[f"overlap_{name}"] = overlap(vectors[name], teacher_nn[name])
    return out


def speeds(model, short: list[str], long: list[str], static: bool) -> dict:
    batch, repeats = (1024, 3) if static else (64, 1)
    _, s = timed_encode(model, short, batch, repeats)
    _, lg = timed_encode(model, long, batch, repeats)
    return {"short": s["sentences_per_s"], "long": lg["sentences_per_s"], "loadavg": s["loadavg_1min"]}


# ---- tables and plot --------------------------------------------------------------------------------
def markdown(results: dict) -> str:
    full = results["meta"]["teacher_dim"]
    t = results["rows"]["teacher"]
    t_short, t_long, t_sts = t["speed"]["short"], t["speed"]["long"], t["quality"]["sts"][full]
    lines = ["| model | STS 64 | STS full | % teacher | ov@10 64 | ov@10 full | ov@10 Brown | ov@10 long "
             "| short sent/s | × teacher | long sent/s | × teacher |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in results["rows"].items():
        q, sp = row["quality"], row.get("speed") or {}
        width = max(q["sts"])
        cells = [f"{q['sts'][64]:.1f}", f"{q['sts'][width]:.1f}", f"{100 * q['sts'][width] / t_sts:.1f}%",
                 f"{q['overlap'][64]:.3f}", f"{q['overlap'][width]:.3f}", f"{q['overlap_brown']:.3f}",
                 f"{q['overlap_long']:.3f}"]
        if sp:
            cells += [f"{sp['short']:,.0f}", f"{sp['short'] / t_short:,.1f}", f"{sp['long']:,.1f}",
                      f"{sp['long'] / t_long:,.1f}"]
        else:
            cells += ["(teacher's)"] + [""] * 3
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = results["meta"]["teacher_dim"]
    rows = {n: r for n, r in results["rows"].items() if r.get("speed")}
    t = results["rows"]["teacher"]
    panels = [("short", lambda q: 100 * q["sts"][max(q["sts"])] / t["quality"]["sts"][full],
               "STS-B dev Spearman, % of the teacher's (full width)"),
              ("short", lambda q: q["overlap"][max(q["overlap"])], "overlap@10 with the teacher, held-out reviews"),
              ("long", lambda q: q["overlap_long"], "overlap@10 with the teacher, long paragraphs")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (speed, value, label) in zip(axes, panels):
        for name, row in rows.items():
            x, y = row["speed"][speed], value(row["quality"])
            marker = {"teacher": "*", "model2vec": "s"}.get(row["kind"], "o")
            ax.scatter([x], [y], marker=marker, s=80 if marker == "*" else 40)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        pca = results["rows"].get("teacher, PCA-rotated")
        if pca is not None and speed == "short":  # the teacher's own prefixes: its speed, each width's quality
            x = t["speed"][speed]
            for d in results["meta"]["dims"][:-1]:
                q = {"sts": {d: pca["quality"]["sts"][d]}, "overlap": {d: pca["quality"]["overlap"][d]}}
                ax.scatter([x], [value(q)], marker="x", color="grey", s=30)
                ax.annotate(f"teacher PCA-{d}", (x, value(q)), textcoords="offset points", xytext=(4, -10),
                            fontsize=7, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel(f"sentences/s on {'STS-B sentences' if speed == 'short' else 'paragraphs of 256+ tokens'} "
                      "(log)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    m = results["meta"]
    fig.suptitle(f"{m['teacher_name']}: students trained on {m['train']:,} movie-review texts, {m['epochs']} epochs "
                 f"({m['date']}, {m['machine']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main -------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="minilm", help="minilm (bundled) or a local model folder")
    p.add_argument("--students", default="static,transformer,derived-1,derived-2,derived-3",
                   help="comma-separated: static, transformer, derived-K, or names given with --extra")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=JSON",
                   help='another student: NAME={"run": {RunConfig options}, "train": {TrainConfig options}}')
    p.add_argument("--train", type=int, default=10000, help="training texts (movie reviews), the same for all")
    p.add_argument("--epochs", type=int, default=2, help="epochs, the same for every student")
    p.add_argument("--holdout", type=int, default=1000, help="held-out texts per domain")
    p.add_argument("--long", type=int, default=300, help="long held-out paragraphs")
    p.add_argument("--no-all-but-brown", action="store_true", help="skip the static row trained on every "
                   "non-Brown text")
    p.add_argument("--all-but-brown-limit", type=int, default=None,
                   help="train that row on the first N of them only (a random sample: they are shuffled)")
    p.add_argument("--no-token-targets", action="store_true", help="contextual students learn text targets only")
    p.add_argument("--skip-model2vec", action="store_true")
    p.add_argument("--dims", default="32,64,128,256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus-dir", default=str(SHARED / "corpus"))
    p.add_argument("--sts", default=str(SHARED / "sts" / "sts-dev.csv"))
    p.add_argument("--targets-dir", default="/tmp/distill-frontier-targets")
    p.add_argument("--work", default="/tmp/distill-frontier", help="run folders (a finished one is reused)")
    p.add_argument("--out", default=None, help="write every number to this JSON file")
    p.add_argument("--plot", default=None, help="write the frontier plot (PNG) here")
    p.add_argument("--label-only", action="store_true", help="label every text the benchmark needs and stop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import torch

    import distill
    from distill.index.search import normalize_prefix, self_knn
    from distill.pipeline.evaluate import read_pairs
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.run import RunConfig
    from distill.pipeline.targets import TargetKind, label
    from distill.pipeline.train import TrainConfig
    from distill.teachers import load_teacher

    t_start = time.perf_counter()
    extra = {}
    for item in args.extra:
        name, _, spec = item.partition("=")
        spec = json.loads(spec)
        extra[name] = (spec.get("run", {}), spec.get("train", {}))
    names = [s for s in args.students.split(",") if s]
    specs = {name: student_spec(name, extra) for name in names}
    teacher = load_teacher(args.teacher)
    sets = split_texts(Path(args.corpus_dir), teacher, args.train, args.holdout, args.long, args.seed)
    pairs = read_pairs(args.sts)
    sts_texts = sorted(set(pairs.first) | set(pairs.second))
    sets["all_but_brown"] = sets["all_but_brown"][:args.all_but_brown_limit]
    logger.info("%d training texts; held out: %d reviews, %d Brown, %d long paragraphs; %d non-Brown texts",
                len(sets["train"]), len(sets["holdout"]), len(sets["brown"]), len(sets["long"]),
                len(sets["all_but_brown"]))
    targets = Path(args.targets_dir)
    evals = {"holdout": sets["holdout"], "brown": sets["brown"], "long": sets["long"]}
    contextual = any(run.get("student", "static") != "static" for run, _ in specs.values())
    label(teacher, TargetKind.TEXT, targets, [t for v in evals.values() for t in v] + sets["train"], batch_size=64)
    if contextual and not args.no_token_targets:
        label(teacher, TargetKind.TOKEN, targets, sets["train"] + sets["holdout"][:200], batch_size=64)
    if not args.no_all_but_brown:
        label(teacher, TargetKind.TEXT, targets, sets["all_but_brown"], batch_size=64)
    if args.label_only:
        return 0

    full = teacher.dim
    dims = sorted({d for d in (int(x) for x in args.dims.split(",")) if d <= full} | {64})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    seed = TrainConfig().seed

    # ---- train ----
    runs = [(name, *specs[name], sets["train"]) for name in names]
    if not args.no_all_but_brown:
        runs.append(("static, all but Brown", *STUDENTS["static"], sets["all_but_brown"]))
    students = {}
    for name, run_opts, train_opts, train in runs:
        slug = name.replace(" ", "-").replace(",", "")
        run_held = sets["holdout"][:200]
        kind = run_opts.get("student", "static")
        token = kind != "static" and not args.no_token_targets
        cfg = RunConfig(out=str(work / slug), teacher=args.teacher, corpus=str(work / f"corpus-{slug}.txt"),
                        dims=tuple(dims), holdout=len(run_held), targets_dir=str(targets),
                        token_targets=token, **run_opts,
                        train=TrainConfig(**{"epochs": args.epochs, **train_opts}))
        t0 = time.perf_counter()
        summary = train_student(name, cfg, run_corpus(run_held, train, seed), None, None)
        students[name] = (distill.load(Path(cfg.out) / "student"), {
            "kind": kind, "train_texts": len(train), "options": {**run_opts, **train_opts},
            "train": summary.get("train", {}), "wall_s": time.perf_counter() - t0})

    # ---- score and time, side by side ----
    teacher_vectors = {n: label(teacher, TargetKind.TEXT, targets, texts, batch_size=64).pooled()
                       for n, texts in evals.items()}
    teacher_nn = {n: self_knn(normalize_prefix(x), K) for n, x in teacher_vectors.items()}
    logger.info("teacher: encoding %d STS-B sentences", len(sts_texts))
    t_sts = teacher.encode(sts_texts, batch_size=64)
    results = {"meta": {
        "date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "teacher": teacher.identity(), "teacher_name": teacher.source.name, "teacher_dim": full, "dims": dims,
        "train": args.train, "epochs": args.epochs, "token_targets": not args.no_token_targets,
        "sizes": {n: len(v) for n, v in sets.items()}, "k": K}, "rows": {}}
    logger.info("timing the teacher")
    results["rows"]["teacher"] = {"kind": "teacher", "speed": speeds(teacher, sts_texts, sets["long"], False),
                                  "quality": score(Precomputed(sts_texts, t_sts), evals, teacher_nn, pairs,
                                                   dims + [full], teacher_vectors)}
    pca = PCARotation.fit(label(teacher, TargetKind.TEXT, targets, sets["train"], batch_size=64).pooled())
    results["rows"]["teacher, PCA-rotated"] = {"kind": "teacher", "quality": score(
        Precomputed(sts_texts, pca.transform(t_sts)), evals, teacher_nn, pairs, dims + [full],
        {n: pca.transform(x) for n, x in teacher_vectors.items()})}
    if not args.skip_model2vec:
        m2v, _ = model2vec_student(teacher.source.path, work / "model2vec", dims[-1])
        students["model2vec"] = (m2v, {"kind": "model2vec"})
    for name, (model, info) in students.items():
        logger.info("timing and scoring %s", name)
        static = info["kind"] in ("static", "model2vec")
        results["rows"][name] = {**info, "speed": speeds(model, sts_texts, sets["long"], static),
                                 "quality": score(model, evals, teacher_nn, pairs, dims)}
    results["meta"]["seconds"] = time.perf_counter() - t_start
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    if args.plot:
        plot(results, Path(args.plot))
        logger.info("plot written to %s", args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
