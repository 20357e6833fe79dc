"""Quality benchmark: STS-B dev Spearman, neighbour overlap@10 with the teacher, and sentences/s.

    python bench/quality.py                                   # MiniLM (bundled), 10k/30k/100k texts
    python bench/quality.py --teacher "$(../shared/scripts/get-teacher mpnet)" \\
        --train-sizes 10000 --holdout 2000 --skip-transformer --out /tmp/quality-mpnet.json

Rows: the teacher truncated to each prefix size (raw dims, as-is, and PCA-rotated with the rotation
the students are trained against), the static student at each training size, the transformer
student, and Model2Vec distilled from the same teacher folder. Columns per prefix size: STS-B dev
Spearman x100 and overlap@10 (for each held-out sentence, its 10 exact nearest neighbours among the
held-out set under the model's prefix vs under the full-width teacher; FAISS IndexFlatIP). Speed:
sentences/s of ``encode`` over the same held-out texts, every model timed in one phase at the end
of the run, side by side (batch 1024 for static models, 64 for the teacher and the transformer).

Texts: the four files of ../shared/data/corpus/, mixed, shuffled with a fixed seed and de-duplicated;
the first ``--holdout`` are held out, training sets are prefixes of the rest (10k within 30k within
100k), so every row is evaluated on the same held-out texts, disjoint from all training texts.

Labeling is the slow part (MiniLM: ~100-200 texts/s on 2 cores). The teacher labels every text once
-- held-out + the largest training set -- into ``--targets-dir`` (content-addressed: reruns are free);
each run's own target set (its corpus is a different list of texts, hence a different cache key) is
then filled from those labels by a stand-in teacher with the same identity instead of running the
model again. The transformer student needs contextual token states, which are labeled only for the
first ``--token-texts`` training texts.

Model2Vec is a benchmark-only dependency: ``pip install --no-deps model2vec skeletoken`` (its
``distill`` extra pins an old transformers; its distill function runs fine on ours).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the cores are shared
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from common import DATA, STS_DEV

from distill.vectors import normalize  # noqa: E402

SHARED = DATA
CORPUS_FILES = ("brown.txt", "movie_reviews.txt", "wikitext2-valid.txt", "wikitext2-test.txt")
K = 10

logger = logging.getLogger("bench.quality")


# ---- texts ------------------------------------------------------------------------------------------
def load_texts(corpus_dir: Path, seed: int) -> list[str]:
    """All corpus texts, mixed, shuffled with ``seed``, de-duplicated (first occurrence kept)."""
    from distill.pipeline.corpus import read_corpus

    texts: list[str] = []
    for name in CORPUS_FILES:
        texts += read_corpus(corpus_dir / name).texts
    order = np.random.default_rng(seed).permutation(len(texts))
    return list(dict.fromkeys(texts[i] for i in order))


def run_corpus(holdout: list[str], train: list[str], seed: int) -> list[str]:
    """Lay out ``holdout`` + ``train`` so that ``distill.pipeline.run``'s own hold-out split (a
    permutation seeded with the training seed; its first ``len(holdout)`` positions) is exactly
    ``holdout``: the run's summary is then measured on our held-out texts too."""
    n = len(holdout) + len(train)
    order = np.random.default_rng(seed).permutation(n)
    texts: list[str] = [""] * n
    for pos, t in zip(order[:len(holdout)], holdout):
        texts[pos] = t
    for pos, t in zip(np.sort(order[len(holdout):]), train):
        texts[pos] = t
    return texts


# ---- labels -----------------------------------------------------------------------------------------
class Labels:
    """Teacher vectors of every text the benchmark uses, labeled once into the per-text target cache.

    Every text gets text targets; the transformer's texts get token targets too. The runs of the
    benchmark then find all their targets in the same cache and label nothing.
    """

    def __init__(self, teacher, targets_dir: Path, holdout: list[str], train: list[str], n_token: int):
        from distill.pipeline.targets import TargetKind, label

        self.teacher = teacher
        t0 = time.perf_counter()
        texts = holdout + train
        logger.info("labeling %d texts (text targets; token targets for %d) with the teacher, cached in %s",
                    len(texts), n_token, targets_dir)
        self.text = label(teacher, TargetKind.TEXT, targets_dir, texts, batch_size=64)
        self.row = {t: i for i, t in enumerate(texts)}
        self.token = label(teacher, TargetKind.TOKEN, targets_dir, train[:n_token], batch_size=64) if n_token else None
        self.token_row = {t: i for i, t in enumerate(train[:n_token])}
        logger.info("  labeled in %.0f s", time.perf_counter() - t0)

    def pooled(self, texts: list[str]) -> np.ndarray:
        return self.text.pooled(np.array([self.row[t] for t in texts], dtype=np.int64))

    def tokens(self, text: str) -> np.ndarray:
        if text not in self.token_row:
            raise KeyError(f"no token targets for {text[:40]!r}")
        _, states = self.token.token_slices(np.array([self.token_row[text]]))
        return states[0]


# ---- models -----------------------------------------------------------------------------------------


class Precomputed:
    """``encode`` over a fixed set of texts whose vectors are already known (teacher rows)."""

    def __init__(self, texts: list[str], vectors: np.ndarray):
        self.rows, self.vectors = {t: i for i, t in enumerate(texts)}, normalize(vectors)

    def encode(self, texts, dim=None, batch_size=None, **_):
        return normalize(self.vectors[[self.rows[t] for t in texts]][:, :dim])


class Model2VecModel:
    """Model2Vec's StaticModel behind the ``encode(texts, dim, batch_size)`` contract (one process,
    like ours: its default forks workers above 10,000 texts)."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts, dim=None, batch_size=1024, **_):
        x = self.model.encode(list(texts), batch_size=batch_size, use_multiprocessing=False)
        return normalize(np.asarray(x)[:, :dim])


class LengthSorted:
    """Encode texts in order of token count and put the vectors back in input order: what the
    teacher's ``encode`` does inside (it sorts the whole input by length before batching), while a
    student's ``encode`` cuts the input into batches first and sorts only within each batch."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts, dim=None, batch_size=64, **_):
        texts = list(texts)
        order = np.argsort([len(s) for s in self.model.tokenize(texts)], kind="stable")[::-1]
        x = self.model.encode([texts[i] for i in order], dim=dim, batch_size=batch_size)
        out = np.empty_like(x)
        out[order] = x
        return out


def model2vec_student(teacher_path: Path, folder: Path, dim: int) -> tuple[Model2VecModel, float]:
    """Model2Vec distilled from the teacher folder (cached in ``folder``); returns (model, distill seconds)."""
    from model2vec import StaticModel

    info = folder / "bench.json"
    if info.is_file() and json.loads(info.read_text()).get("teacher") == str(teacher_path):
        return Model2VecModel(StaticModel.from_pretrained(folder)), json.loads(info.read_text())["seconds"]
    from model2vec.distill import distill

    t0 = time.perf_counter()
    model = distill(model_name=str(teacher_path), pca_dims=dim)
    seconds = time.perf_counter() - t0
    model.save_pretrained(folder)
    info.write_text(json.dumps({"teacher": str(teacher_path), "seconds": seconds, "pca_dims": dim}))
    return Model2VecModel(model), seconds


def train_student(name: str, cfg, corpus: list[str], labels: Labels, kind) -> dict:
    """``distill.pipeline.run`` on ``corpus`` (its target set filled from the labels); a run folder
    holding the same finished config is reused."""
    from dataclasses import asdict

    from distill.pipeline.run import run

    out = Path(cfg.out)
    same = ((out / "summary.json").is_file() and (out / "config.json").is_file()
            and json.loads((out / "config.json").read_text()) == json.loads(json.dumps(asdict(cfg))))
    if same:
        logger.info("%s: reusing the finished run in %s", name, out)
        return json.loads((out / "summary.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    Path(cfg.corpus).write_text("".join(t + "\n" for t in corpus), encoding="utf-8")
    logger.info("%s: training (%d texts) into %s", name, len(corpus) - cfg.holdout, out)
    t0 = time.perf_counter()
    summary = run(cfg)
    logger.info("%s: done in %.0f s", name, time.perf_counter() - t0)
    return summary


def loss_curve(run_dir: Path) -> list[dict]:
    """Mean logged loss per epoch (from metrics.jsonl)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    by_epoch: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        m = json.loads(line)
        if "event" in m:  # a growth record (--grow-at), not a logged step
            continue
        by_epoch.setdefault(m["epoch"], []).append(m["loss"])
    return [{"epoch": e, "mean_loss": float(np.mean(v)), "last_loss": v[-1]} for e, v in sorted(by_epoch.items())]


# ---- measurements -----------------------------------------------------------------------------------
def timed_encode(model, texts: list[str], batch_size: int, repeats: int) -> tuple[np.ndarray, dict]:
    """Full-width vectors and the best-of-``repeats`` sentences/s of ``model.encode`` over ``texts``."""
    model.encode(texts[:64], batch_size=batch_size)  # warm-up (lazy tables, thread pools)
    best, x = float("inf"), None
    load = os.getloadavg()[0]
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = model.encode(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - t0)
    return x, {"sentences_per_s": len(texts) / best, "seconds": best, "batch_size": batch_size,
               "repeats": repeats, "n_texts": len(texts), "loadavg_1min": round(load, 2)}


def quality(model, x_holdout: np.ndarray, teacher_nn: np.ndarray, pairs, dims: list[int]) -> dict:
    """STS-B Spearman x100 and overlap@K per prefix size; ``teacher_nn``: the full teacher's exact
    neighbours of the held-out texts (``distill.index.search.self_knn``, as ``neighbour_overlap`` computes them)."""
    from distill.index.search import normalize_prefix, self_knn
    from distill.pipeline.evaluate import sts_scores

    sts = sts_scores(model, pairs, dims)
    out = {}
    for d in dims:
        nn = self_knn(normalize_prefix(x_holdout, d), K)
        overlap = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(nn, teacher_nn)]))
        out[str(d)] = {"sts": sts[str(d)]["spearman"], f"overlap@{K}": overlap}
    return out


# ---- tables -----------------------------------------------------------------------------------------
def _cell(row: dict, d: int, key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    v = row["quality"].get(str(d), {}).get(key)
    return "" if v is None else fmt.format(v * scale)


def markdown(results: dict) -> str:
    dims, full = results["meta"]["dims"], results["meta"]["teacher_dim"]
    cols = dims + [full]
    t_speed = results["rows"]["teacher"]["speed"]["sentences_per_s"]
    lines = [f"STS-B dev Spearman x100 / overlap@{K} with the full-width teacher over {results['meta']['holdout']:,} "
             f"held-out texts, per prefix size; sentences/s of encode over the held-out texts.", "",
             "| model | train texts | " + " | ".join(f"STS {d}" for d in cols) + " | "
             + " | ".join(f"ov@{K} {d}" for d in cols) + " | sent/s | x teacher |",
             "|---|---:|" + "---:|" * (2 * len(cols) + 2)]
    for name, row in results["rows"].items():
        speed = row.get("speed")
        lines.append(f"| {name} | {row.get('train_texts') or '-'} | "
                     + " | ".join(_cell(row, d, "sts") for d in cols) + " | "
                     + " | ".join(_cell(row, d, f"overlap@{K}", fmt="{:.3f}") for d in cols) + " | "
                     + (f"{speed['sentences_per_s']:,.0f} | {speed['sentences_per_s'] / t_speed:,.1f}" if speed
                        else " | ") + " |")
    growth = [(n, r) for n, r in results["rows"].items() if r.get("kind") == "static"]
    if growth:
        lines += ["", "Static student vs number of training texts:", "",
                  "| run | train texts | STS 64 | STS 256 | ov@10 64 | ov@10 256 | train s | loss first -> last |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, r in growth:
            tr = r.get("train") or {}
            loss = (f"{tr['first_loss']:.3f} -> {tr['final_loss']:.3f}" if tr.get("first_loss") is not None else "-")
            lines.append(f"| {name} | {r['train_texts']} | {_cell(r, 64, 'sts')} | {_cell(r, dims[-1], 'sts')} | "
                         f"{_cell(r, 64, f'overlap@{K}', fmt='{:.3f}')} | "
                         f"{_cell(r, dims[-1], f'overlap@{K}', fmt='{:.3f}')} | "
                         f"{tr.get('seconds', 0):.0f} | {loss} |")
    if results.get("goals"):
        lines += ["", "Goals (teacher = its full width):", ""]
        lines += [f"- {'MET ' if g['met'] else 'MISSED'} {g['goal']}: {g['value']}" for g in results["goals"]]
    return "\n".join(lines)


def goals(results: dict) -> list[dict]:
    rows, dims, full = results["rows"], results["meta"]["dims"], results["meta"]["teacher_dim"]
    D = dims[-1]
    teacher = rows["teacher"]
    t_sts, t_speed = teacher["quality"][str(full)]["sts"], teacher["speed"]["sentences_per_s"]
    out = []
    statics = [(n, r) for n, r in rows.items() if r.get("kind") == "static" and r.get("train", {}).get("steps")]
    if statics:
        name, s = max(statics, key=lambda nr: nr[1]["train_texts"])
        s_sts = s["quality"][str(D)]["sts"]
        out.append({"goal": f"static ({name}) STS@{D} >= 90% of teacher STS@{full}", "met": s_sts >= 0.9 * t_sts,
                    "value": f"{s_sts:.1f} / {t_sts:.1f} = {100 * s_sts / t_sts:.1f}%"})
        if "model2vec" in rows:
            m, o = rows["model2vec"]["quality"][str(D)][f"overlap@{K}"], s["quality"][str(D)][f"overlap@{K}"]
            out.append({"goal": f"static overlap@{K} at {D} >= 2x Model2Vec's", "met": o >= 2 * m,
                        "value": f"{o:.3f} / {m:.3f} = {o / m:.2f}x"})
        if s.get("speed"):
            r = s["speed"]["sentences_per_s"] / t_speed
            out.append({"goal": "static sentences/s >= 100x teacher", "met": r >= 100, "value": f"{r:.0f}x"})
        s64 = s["quality"].get("64", {}).get("sts")
        if s64 is not None:
            out.append({"goal": f"static STS@64 >= 95% of its own STS@{D}", "met": s64 >= 0.95 * s_sts,
                        "value": f"{s64:.1f} / {s_sts:.1f} = {100 * s64 / s_sts:.1f}%"})
    for name, r in rows.items():
        if r.get("kind") == "transformer":
            x_sts = r["quality"][str(D)]["sts"]
            out.append({"goal": f"{name} STS@{D} >= 95% of teacher STS@{full}", "met": x_sts >= 0.95 * t_sts,
                        "value": f"{x_sts:.1f} / {t_sts:.1f} = {100 * x_sts / t_sts:.1f}%"})
        if r.get("kind", "").startswith("transformer") and r.get("speed"):
            ratio = r["speed"]["sentences_per_s"] / t_speed
            out.append({"goal": f"{name} sentences/s >= 5x teacher", "met": ratio >= 5, "value": f"{ratio:.1f}x"})
    return out


# ---- main -------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="minilm", help="minilm (bundled) or a local model folder")
    p.add_argument("--train-sizes", default="10000,30000,100000", help="static student training sizes")
    p.add_argument("--holdout", type=int, default=10000, help="held-out texts for overlap@10 and speed")
    p.add_argument("--epochs", type=int, default=4, help="static student epochs")
    p.add_argument("--no-init-row", action="store_true", help="skip the untrained (init only) static row")
    p.add_argument("--skip-transformer", action="store_true")
    p.add_argument("--skip-model2vec", action="store_true")
    p.add_argument("--token-texts", type=int, default=30000,
                   help="label contextual token states for this many training texts (the transformer's pool)")
    p.add_argument("--transformer-train", type=int, default=10000, help="training texts of the transformer")
    p.add_argument("--transformer-max-tokens", type=int, default=64,
                   help="transformer training texts: at most this many teacher tokens (the trainer pads each "
                        "random batch to its longest text, so long paragraphs multiply the cost)")
    p.add_argument("--transformer-epochs", type=int, default=1)
    p.add_argument("--transformer-batch", type=int, default=64)
    p.add_argument("--transformer-lr", type=float, default=None,
                   help="transformer learning rate (default: TrainConfig's default)")
    p.add_argument("--transformer-width", type=int, default=256)
    p.add_argument("--transformer-layers", type=int, default=2)
    p.add_argument("--dims", default="32,64,128,256")
    p.add_argument("--seed", type=int, default=0, help="corpus shuffle seed")
    p.add_argument("--speed-texts", type=int, default=None,
                   help="time the teacher on the first N held-out texts only (default: all)")
    p.add_argument("--corpus-dir", default=str(SHARED / "corpus"))
    p.add_argument("--sts", default=str(STS_DEV))
    p.add_argument("--targets-dir", default="/tmp/distill-bench-targets", help="persistent teacher-label cache")
    p.add_argument("--work-dir", default="/tmp/distill-bench-runs",
                   help="run folders; a finished run with the same config is reused")
    p.add_argument("--out", default=None, help="write every number to this JSON file")
    p.add_argument("--label-only", action="store_true", help="only label the texts (fill the cache) and stop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import hashlib

    import torch

    import distill
    from distill.pipeline.evaluate import read_pairs
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.run import RunConfig
    from distill.pipeline.targets import TargetKind
    from distill.pipeline.train import TrainConfig
    from distill.teachers import load_teacher

    t_start = time.perf_counter()
    sizes = sorted(int(s) for s in args.train_sizes.split(",") if s)
    texts = load_texts(Path(args.corpus_dir), args.seed)
    holdout, pool = texts[:args.holdout], texts[args.holdout:]
    if sizes[-1] > len(pool):
        raise SystemExit(f"only {len(pool)} training texts after a hold-out of {args.holdout}")
    train = pool[:sizes[-1]]
    n_token = 0 if args.skip_transformer else min(args.token_texts, len(train))
    logger.info("%d distinct texts: %d held out, training sets %s", len(texts), len(holdout), sizes)
    teacher = load_teacher(args.teacher)
    labels = Labels(teacher, Path(args.targets_dir), holdout, train, n_token)
    if args.label_only:
        return 0

    full = teacher.dim
    dims = sorted(d for d in (int(x) for x in args.dims.split(",")) if d <= full)
    pairs = read_pairs(args.sts)
    tag = hashlib.sha256(json.dumps(teacher.identity(), sort_keys=True).encode()).hexdigest()[:10]
    work = Path(args.work_dir) / f"{Path(teacher.source.name).name}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    seed = TrainConfig().seed
    results: dict = {"meta": {
        "date": datetime.date.today().isoformat(), "command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "distill": str(Path(distill.__file__).parent),
        "teacher": teacher.identity(), "teacher_dim": full, "dims": dims, "holdout": len(holdout),
        "train_sizes": sizes, "corpus": list(CORPUS_FILES), "sts": str(args.sts), "k": K}, "rows": {}}

    # ---- train the students (a finished run with the same config is reused) ----
    students: dict[str, tuple[object, dict]] = {}
    runs = [(f"static {n // 1000}k", "static", n, args.epochs) for n in sizes]
    if not args.no_init_row:
        runs.append((f"static {sizes[-1] // 1000}k, init only", "static", sizes[-1], 0))
    for name, kind, n, epochs in runs:
        slug = name.replace(" ", "-").replace(",", "")
        run_held = holdout[:n]  # run() needs as many training texts as held-out ones
        cfg = RunConfig(out=str(work / slug), teacher=args.teacher, corpus=str(work / f"corpus-static-{n}.txt"),
                        dims=tuple(dims), holdout=len(run_held), targets_dir=args.targets_dir,
                        train=TrainConfig(epochs=epochs, batch_size=256))
        summary = train_student(name, cfg, run_corpus(run_held, train[:n], seed), labels, TargetKind.TEXT)
        students[name] = (distill.load(Path(cfg.out) / "student"), {
            "kind": kind, "train_texts": n, "epochs": epochs, "train": summary.get("train", {}),
            "loss_curve": loss_curve(Path(cfg.out)), "run_holdout": summary.get("holdout", {}).get("student")})
    if not args.skip_transformer:
        pool_t = [t for t in train[:n_token] if len(labels.tokens(t)) <= args.transformer_max_tokens]
        chosen = pool_t[:args.transformer_train]
        # run() holds out part of its corpus and needs token targets for all of it: its own small
        # hold-out comes from the token-labeled pool (our 10k held-out texts have pooled labels only)
        run_held = pool_t[args.transformer_train:args.transformer_train + 1000]
        w, L = args.transformer_width, args.transformer_layers
        name = f"transformer {L}x{w}"
        cfg = RunConfig(out=str(work / f"transformer-{L}x{w}"), teacher=args.teacher, student="transformer",
                        corpus=str(work / "corpus-transformer.txt"), dims=tuple(dims), holdout=len(run_held),
                        targets_dir=args.targets_dir, width=w, n_layers=L, n_heads=4,
                        train=TrainConfig(epochs=args.transformer_epochs, batch_size=args.transformer_batch,
                                          **({} if args.transformer_lr is None else {"lr": args.transformer_lr})))
        summary = train_student(name, cfg, run_corpus(run_held, chosen, seed), labels, TargetKind.TOKEN)
        students[name] = (distill.load(Path(cfg.out) / "student"), {
            "kind": "transformer", "train_texts": len(chosen), "epochs": args.transformer_epochs,
            "max_tokens": args.transformer_max_tokens, "lr": cfg.train.lr, "train": summary.get("train", {}),
            "loss_curve": loss_curve(Path(cfg.out)), "run_holdout": summary.get("holdout", {}).get("student")})
    m2v = None
    if not args.skip_model2vec:
        m2v, m2v_seconds = model2vec_student(teacher.source.path, work / "model2vec", dims[-1])

    # ---- the teacher's rows, then every model timed side by side and scored ----
    from distill.index.search import normalize_prefix, self_knn

    x_teacher = labels.pooled(holdout)
    teacher_nn = self_knn(normalize_prefix(x_teacher), K)
    sts_texts = sorted(set(pairs.first) | set(pairs.second))
    logger.info("teacher: encoding %d STS sentences", len(sts_texts))
    t_sts = teacher.encode(sts_texts, batch_size=64)
    pca = PCARotation.fit(labels.pooled(train))  # what the largest static run is trained against
    n_speed = min(args.speed_texts or len(holdout), len(holdout))
    logger.info("timing the teacher on %d held-out texts (batch 64)", n_speed)
    x_check, t_speed = timed_encode(teacher, holdout[:n_speed], 64, 1)
    t_speed["max_abs_diff_vs_cached_labels"] = float(np.abs(x_check - normalize(x_teacher[:n_speed])).max())
    results["rows"]["teacher"] = {"kind": "teacher", "speed": t_speed, "quality": quality(
        Precomputed(sts_texts, t_sts), x_teacher, teacher_nn, pairs, dims + [full])}
    results["rows"]["teacher, PCA-rotated"] = {"kind": "teacher", "quality": quality(
        Precomputed(sts_texts, pca.transform(t_sts)), pca.transform(x_teacher), teacher_nn, pairs, dims + [full])}
    for name, (model, info) in students.items():
        batch, repeats = (1024, 3) if info["kind"] == "static" else (64, 1)
        logger.info("timing and scoring %s", name)
        x, speed = timed_encode(model, holdout, batch, repeats)
        results["rows"][name] = {**info, "speed": speed, "quality": quality(model, x, teacher_nn, pairs, dims)}
        if info["kind"] == "transformer":
            logger.info("timing %s with length-sorted batches", name)
            x_sorted, speed = timed_encode(LengthSorted(model), holdout, batch, repeats)
            results["rows"][f"{name}, length-sorted batches"] = {
                **info, "kind": "transformer-sorted", "speed": speed, "quality": results["rows"][name]["quality"],
                "max_abs_diff_vs_unsorted": float(np.abs(x_sorted - x).max())}
    if m2v is not None:
        logger.info("timing and scoring model2vec")
        x, speed = timed_encode(m2v, holdout, 1024, 3)
        results["rows"]["model2vec"] = {"kind": "model2vec", "distill_seconds": m2v_seconds, "pca_dims": dims[-1],
                                        "speed": speed, "quality": quality(m2v, x, teacher_nn, pairs, dims)}
    results["goals"] = goals(results)
    results["meta"]["seconds"] = time.perf_counter() - t_start
    table = markdown(results)
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        logger.info("numbers written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
