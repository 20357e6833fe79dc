"""Progressive growth (issue 12): a student grown k -> 2k layers halfway through training against the same
student at 2k layers from the start, on the shipped WikiText-2 sentences.

    python bench/grow.py --sts ../shared/data/sts/sts-dev.csv --targets-dir /tmp/grow-bench/targets \\
        --out /tmp/grow-bench

Pairs (each: the 2k-layer student from the start, the k-layer student grown to 2k with ``--grow-at 0.5``;
``--shallow`` adds the k-layer student trained throughout, the floor):

- ``layers``: MiniLM's own layers (``--student layers``): depth 2 (teacher layers 2, 5) from the start against
  depth 1 (layer 5) grown to 2 (layer 5 twice);
- ``transformer``: the transformer student (width 256, 4 heads): 4 layers from the start against 2 grown to 4.

Every run: 2 epochs, batch 64, lr 3e-3, text targets only (``--no-token-targets``), 4,295 training sentences,
the same seed (so the same batches in the same order), evaluated on the same 477 held-out sentences.

Compute: the sum over optimizer steps of the student's layer count (forward + backward of a layer costs
the same at any step; the embeddings, head and loss, the same for every run, are left out). Grown at
halfway, a 2k-layer run costs 0.5 k + 0.5 * 2k = 75% of the from-start run's. Measured training seconds
are given too (a shared machine: noisy).

Columns: the final held-out loss (the training loss, MSE + cosine + relational at every prefix, on the
held-out sentences in fixed batches of 64, no dropout), overlap@10 and STS-B dev Spearman x100 at full
width, the loss before and after the growth step (same batch, no dropout: exact duplication is not
function-preserving), and the compute at which the grown run's training loss (mean of 5 logged points,
10 steps) first reaches the from-start run's final training loss (same smoothing), if it does.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the cores are shared
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

logger = logging.getLogger("bench.grow")
SMOOTH = 5  # logged points averaged for the training-curve comparison


def run_config(args, name: str, student: str, start: int, grow: bool):
    from distill.pipeline.run import RunConfig
    from distill.pipeline.train import TrainConfig

    train = TrainConfig(epochs=args.epochs, batch_size=64, lr=3e-3, log_every=2, checkpoint_every=1000,
                        grow_at=(0.5,) if grow else None)
    shape = {"depth": start} if student == "layers" else {"n_layers": start, "width": 256, "n_heads": 4}
    return RunConfig(out=str(Path(args.out) / name), teacher="minilm", student=student, token_targets=False,
                     targets_dir=args.targets_dir, limit=args.limit, train=train, **shape)


def held_out(out: Path):
    """The held-out texts and their teacher vectors (raw, and rotated as the trainer's targets are)."""
    from distill.pipeline.folder import RunFolder
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.targets import TargetView

    data = RunFolder(out).data
    texts = [json.loads(line) for line in (data / "holdout.jsonl").read_text().splitlines()]
    x_teacher = TargetView.load(data, "targets").pooled(np.load(data / "split.npz")["held"])
    return texts, x_teacher, PCARotation.load(out / "pca.npz").transform(x_teacher)


def held_out_loss(student, texts: list[str], target: np.ndarray, batch: int = 64) -> float:
    """The training loss's text terms on the held-out texts, in fixed batches, in eval mode (no dropout)."""
    from distill.students.losses import NestedLoss

    loss_fn = NestedLoss(student.dims)
    x = student.embed_ids(student.tokenize(texts))  # (N, D) raw pooled vectors
    values = []
    batch = min(batch, len(texts))
    with torch.no_grad():
        for i in range(0, len(texts) - batch + 1, batch):
            loss, _ = loss_fn(torch.from_numpy(x[i:i + batch]), torch.from_numpy(target[i:i + batch]))
            values.append(float(loss))
    return float(np.mean(values))


def smoothed(records: list[dict]) -> list[tuple[int, float]]:
    steps = [(r["step"], r["loss"]) for r in records if "loss" in r]
    return [(steps[i][0], float(np.mean([v for _, v in steps[i - SMOOTH + 1:i + 1]])))
            for i in range(SMOOTH - 1, len(steps))]


def layer_steps(step: int, start: int, growth: list[dict]) -> int:
    """The compute of the first ``step`` optimizer steps: sum of the layer count over them."""
    total, depth, last = 0, start, 0
    for g in growth:
        if g["step"] >= step:
            break
        total += depth * (g["step"] - last)
        depth, last = g["layers"][1], g["step"]
    return total + depth * (step - last)


def measure(args, pairs) -> dict:
    from distill.pipeline.evaluate import agreement, read_pairs, sts_scores
    from distill.pipeline.run import run
    from distill.students import load_student

    sts = read_pairs(args.sts) if args.sts else None
    results = {}
    for family, student, k in pairs:
        names = [(f"{family}-{2 * k}", 2 * k, False), (f"{family}-{k}-grown", k, True)]
        if args.shallow:
            names.append((f"{family}-{k}", k, False))
        for name, start, grow in names:
            cfg = run_config(args, name, student, start, grow)
            t0 = time.perf_counter()
            run(cfg, resume=(Path(cfg.out) / "checkpoints").is_dir(), until="train")
            out = Path(cfg.out)
            info = json.loads((out / "train.json").read_text())
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            model = load_student(out)
            texts, x_teacher, target = held_out(out)
            growth = info.get("growth", [])
            final = len(model.config.layers) if model.config.layers else model.config.n_layers
            row = {"family": family, "ref": names[0][0], "start": start, "final": final, "steps": info["steps"],
                   "compute": layer_steps(info["steps"], start, growth),
                   "train_seconds": info["seconds"], "growth": growth, "curve": smoothed(records),
                   "held_out_loss": held_out_loss(model, texts, target),
                   "overlap@10": agreement(model.encode(texts), x_teacher, [model.dim])[str(model.dim)]["overlap@10"]}
            if sts is not None:
                row["sts"] = sts_scores(model, sts, [model.dim])[str(model.dim)]["spearman"]
            logger.info("%s: %s (%.0f s)", name, {k: v for k, v in row.items() if k not in ("curve", "growth")},
                        time.perf_counter() - t0)
            results[name] = row
            Path(args.out, args.results).write_text(json.dumps(results, indent=1))
    return results


def table(results: dict) -> str:
    lines = ["| run | layers | compute (layer-steps) | share of from-start | train s | held-out loss | overlap@10 "
             "| STS-B dev | loss at growth: before → after | grown run reaches from-start's final training loss at |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, row in results.items():
        ref = results.get(row["ref"], row)
        share = row["compute"] / ref["compute"]
        jump = "; ".join(f"{g['loss_before']:.4f} → {g['loss_after']:.4f}" for g in row["growth"]) or "–"
        reach = "–"
        if row["growth"] and ref is not row and ref["curve"] and row["curve"]:
            goal = ref["curve"][-1][1]
            hit = next((step for step, v in row["curve"] if v <= goal), None)
            reach = (f"step {hit}, {layer_steps(hit, row['start'], row['growth']) / ref['compute']:.0%} of its compute"
                     if hit is not None else f"never (final {row['curve'][-1][1]:.4f} vs {goal:.4f})")
        layers = f"{row['start']} → {row['final']}" if row["growth"] else str(row["start"])
        sts = f"{row['sts']:.1f}" if "sts" in row else "–"
        lines.append(f"| {name} | {layers} | {row['compute']:,} | {share:.0%} | {row['train_seconds']:.0f} | "
                     f"{row['held_out_loss']:.4f} | {row['overlap@10']:.3f} | {sts} | {jump} | {reach} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/grow-bench", help="folder of the run folders and the results")
    p.add_argument("--targets-dir", default="/tmp/grow-bench/targets", help="teacher target cache (shared)")
    p.add_argument("--sts", default=None, help="STS pairs file (STS-B dev) to score each student on")
    p.add_argument("--results", default="grow.json", help="file name of the results, in --out")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N texts of the corpus")
    p.add_argument("--only", default="transformer,layers", help="pairs to run: transformer, layers")
    p.add_argument("--shallow", action="store_true", help="also train the k-layer student throughout")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    wanted = args.only.split(",")
    pairs = [p for p in (("transformer", "transformer", 2), ("layers", "layers", 1)) if p[0] in wanted]
    t0 = time.perf_counter()
    results = measure(args, pairs)
    print(f"# {datetime.date.today()}, {platform.machine()} {platform.system()}, torch {torch.__version__}, "  # noqa: T201
          f"{time.perf_counter() - t0:.0f} s; {' '.join(sys.argv)}")
    print(table(results))  # noqa: T201


if __name__ == "__main__":
    main()
