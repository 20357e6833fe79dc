"""Scale: `distill run` at 100k, 300k and 1M texts, and a +1% rerun. Prints a markdown table.

A tiny random BERT teacher (2 layers, width 128, the bundled MiniLM's tokenizer) keeps labeling cheap,
so what is measured is distill's own cost: per stage, seconds per 100k texts; the peak RSS of each run
(a fresh process each, ``ru_maxrss``); the disk used by the target cache. Texts are unique and built
from the lines of ``../shared/data/corpus/`` (each line cut to 12 words, paired with another line, so
a million of them are all different). Token targets are on (a transformer student, 1 epoch).

Then the 1M corpus plus 1% new texts is labeled again into the same cache (``--until targets``):
how many texts were labeled, and how long it took next to the first labeling.

With ``--teacher minilm --real``, the same on the bundled MiniLM over every distinct line of
``../shared/data/corpus/`` (about 125k texts; ``--sizes`` is then capped at that).

With ``--default-student``, the run's own default student instead (``RunConfig``'s and ``TrainConfig``'s
defaults: a transformer of width 256 and 2 layers, token targets, 4 epochs; ``--batch-size`` and
``--epochs`` change those two), and peak RSS **per stage**: each stage runs in a fresh process on the same
run folder (``until="targets"``, then ``until="train"`` on the prepared data, then eval, report and export),
so each process's ``ru_maxrss`` is that stage's peak. No +1% rerun in this mode.

    python bench/scale.py --sizes 100000,300000,1000000 --work /tmp/distill-scale
    python bench/scale.py --teacher minilm --real --sizes 125000 --work /tmp/distill-scale-minilm
    python bench/scale.py --default-student --sizes 30000,120000 --work /tmp/distill-mem
    python bench/scale.py --default-student --sizes 30000 --batch-size 512 --work /tmp/distill-mem
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "corpus"


def make_teacher(folder: Path) -> Path:
    """A random 2-layer, width-128 BERT with the bundled MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from distill.teachers.registry import bundled_minilm_path

    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def base_lines() -> list[str]:
    lines = []
    for name in ("brown.txt", "movie_reviews.txt", "wikitext2-valid.txt", "wikitext2-test.txt"):
        for line in (DATA / name).read_text(encoding="utf-8").split("\n"):
            words = line.split()[:12]
            if len(words) >= 3:
                lines.append(" ".join(words))
    return sorted(set(lines))


def real_lines() -> list[str]:
    """Every distinct non-empty line of the shared corpora, in file order."""
    seen: dict[str, None] = {}
    for name in ("brown.txt", "movie_reviews.txt", "wikitext2-valid.txt", "wikitext2-test.txt"):
        for line in (DATA / name).read_text(encoding="utf-8").split("\n"):
            if line.strip():
                seen.setdefault(line.strip(), None)
    return list(seen)


def write_corpus(path: Path, n: int, start: int = 0) -> None:
    """Texts ``start .. start + n`` of the unique pairs (line a, line b); each i gives a distinct pair."""
    lines = base_lines()
    L = len(lines)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            a = i % L
            b = (a + 1 + i // L) % L
            f.write(f"{lines[a]} {lines[b]}\n")


def dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def worker_config(args):
    """The run a worker makes: the bench-sized student, or (``--default-student``) the run's defaults."""
    from distill.pipeline.run import RunConfig
    from distill.pipeline.train import TrainConfig

    if args.default_student:  # every student and training option at its default but batch size and epochs
        defaults = TrainConfig()
        train = TrainConfig(epochs=args.epochs if args.epochs is not None else defaults.epochs,
                            batch_size=args.batch_size or defaults.batch_size)
        return RunConfig(out=args.out, teacher=args.teacher, corpus=args.corpus, student="transformer",
                         targets_dir=args.targets, token_targets=True, train=train)
    return RunConfig(out=args.out, teacher=args.teacher, corpus=args.corpus, student="transformer", dims=(32, 64, 128),
                     targets_dir=args.targets, width=64, n_layers=1, n_heads=2, teacher_batch_size=256,
                     holdout=1000, train=TrainConfig(epochs=1, batch_size=256, checkpoint_every=1000, log_every=50))


def worker(args) -> None:
    """One `distill run` (up to ``--until``) in this process; prints its stage seconds and peak RSS as JSON."""
    from distill.memory import peak_rss_mb
    from distill.pipeline.run import run

    cfg = worker_config(args)
    t0 = time.perf_counter()
    run(cfg, resume=args.resume, until=args.until)
    total = time.perf_counter() - t0
    out = Path(args.out)
    meta = json.loads((out / "data" / "meta.json").read_text())
    summary_path, train_path = out / "summary.json", out / "train.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    train = json.loads(train_path.read_text()) if train_path.is_file() else {}
    print(json.dumps({"total": total, "prepare": meta["seconds"], "stages": summary.get("stage_seconds", {}),
                      "train": {k: train.get(k) for k in ("steps", "seconds", "final_loss")},
                      "maxrss_mb": peak_rss_mb()}))


def run_worker(teacher: Path, corpus: Path, out: Path, targets: Path, until: str = "export",
               extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--teacher", str(teacher), "--corpus", str(corpus), "--out", str(out),
           "--targets", str(targets), "--until", until, *(extra or [])]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0  # the whole process: imports and teacher loads included
    return result


STAGE_PROCESSES = (("targets", "targets"), ("train", "train"), ("eval+export", "export"))


def default_student(args, teacher: Path, sizes: list[int], work: Path) -> None:
    """``--default-student``: each stage of each size in a fresh process; a table of peak RSS per stage."""
    extra = ["--default-student"]
    if args.batch_size:
        extra += ["--batch-size", str(args.batch_size)]
    if args.epochs is not None:
        extra += ["--epochs", str(args.epochs)]
    tag = f"b{args.batch_size}" if args.batch_size else "bdefault"
    results = {}
    for n in sizes:
        corpus = work / f"corpus-{n}.txt"
        if not corpus.is_file():
            write_corpus(corpus, n)
        targets, out = work / f"targets-{n}", work / f"run-{n}-{tag}"
        if not args.keep_targets:
            shutil.rmtree(targets, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        results[n] = {}
        for k, (name, until) in enumerate(STAGE_PROCESSES):  # a trained run folder is only reopened with resume
            r = run_worker(teacher, corpus, out, targets, until=until, extra=extra + (["--resume"] if k else []))
            results[n][name] = r
            print(f"{n} {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
    from distill.pipeline.train import TrainConfig

    defaults = TrainConfig()
    batch = args.batch_size or defaults.batch_size
    epochs = args.epochs if args.epochs is not None else defaults.epochs
    print(f"\n`python bench/scale.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} CPUs, torch {__import__('torch').__version__}, "
          f"teacher {args.teacher or 'tiny random BERT'}; the default transformer student (width 256, 2 layers, "
          f"token targets), batch {batch}, {epochs} epochs\n")
    print("| texts | stage | peak RSS GB | process wall s | stage s | detail |")
    print("|---:|---|---:|---:|---:|---|")
    for n, by_stage in results.items():
        for name, r in by_stage.items():
            if name == "targets":
                s = r["prepare"]
                stage_s = sum(s.values())
                detail = ", ".join(f"{k} {v:.1f}" for k, v in s.items())
            elif name == "train":
                stage_s = r["train"]["seconds"] or 0.0
                detail = f"{r['train']['steps']} steps, final loss {r['train']['final_loss']:.4f}"
            else:
                stage_s = r["stages"].get("eval", 0.0)
                detail = "eval (the report and export follow in the same process)"
            print(f"| {n:,} | {name} | {r['maxrss_mb'] / 1024:.2f} | {r['wall']:.1f} | {stage_s:.1f} | {detail} |")
    if len(sizes) >= 2:
        big, small = sizes[-1], sizes[0]
        peak = {n: max(r["maxrss_mb"] for r in results[n].values()) for n in sizes}
        print(f"\n| peak RSS (the largest stage's) at {big:,} vs {small:,} | "
              f"{peak[big] / 1024:.2f} GB vs {peak[small] / 1024:.2f} GB: {peak[big] / peak[small]:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,300000,1000000")
    p.add_argument("--work", default="/tmp/distill-scale")
    p.add_argument("--grow", type=float, default=0.01, help="share of new texts in the rerun")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--teacher", help="a teacher spec (default: the tiny random BERT built here)")
    p.add_argument("--real", action="store_true", help="the shared corpora's own lines instead of built pairs")
    p.add_argument("--corpus"), p.add_argument("--out"), p.add_argument("--targets")
    p.add_argument("--until", default="export")
    p.add_argument("--default-student", action="store_true",
                   help="the run's default student config (transformer, width 256, 2 layers, token targets), "
                        "peak RSS per stage")
    p.add_argument("--batch-size", type=int, help="--default-student: texts per batch (default: TrainConfig's)")
    p.add_argument("--epochs", type=int, help="--default-student: epochs (default: TrainConfig's)")
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # a worker reopening its run folder
    p.add_argument("--keep-targets", action="store_true",
                   help="--default-student: reuse the target cache of an earlier run of the same size")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    teacher = args.teacher or make_teacher(work / "teacher")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.default_student:
        return default_student(args, teacher, sizes, work)
    lines = real_lines() if args.real else None
    if lines is not None:
        sizes = [min(n, len(lines) - int(len(lines) * args.grow)) for n in sizes]
    results = {}
    for n in sizes:
        corpus = work / f"corpus-{n}.txt"
        if lines is not None:
            corpus.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
        elif not corpus.is_file():
            write_corpus(corpus, n)
        targets, out = work / f"targets-{n}", work / f"run-{n}"
        shutil.rmtree(targets, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        r = run_worker(teacher, corpus, out, targets)
        r["cache_gb"] = dir_size(targets) / 1e9
        results[n] = r
        print(f"{n}: {json.dumps(r)}", file=sys.stderr, flush=True)
    per = {n: 1e5 / n for n in sizes}
    print(f"\n`python bench/scale.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} CPUs, torch {__import__('torch').__version__}, "
          f"teacher {args.teacher or 'tiny random BERT'}\n")
    print("| texts | teacher load s | vocab s | labeling s/100k | PCA s/100k | token ids s/100k | train s/100k "
          "| eval s | peak RSS GB | cache GB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in results.items():
        s = r["prepare"]
        print(f"| {n:,} | {s['teacher']:.1f} | {s['vocab']:.1f} | {s['labeling'] * per[n]:.1f} "
              f"| {s['pca'] * per[n]:.2f} | {s['tokens'] * per[n]:.1f} "
              f"| {r['stages'].get('train', 0) * per[n]:.1f} | {r['stages'].get('eval', 0):.1f} "
              f"| {r['maxrss_mb'] / 1024:.2f} | {r['cache_gb']:.2f} |")
    big, small = sizes[-1], sizes[0]
    print("\n| ratio | value |\n|---|---:|")
    for stage in ("labeling", "pca", "tokens"):
        a = results[big]["prepare"][stage] * per[big]
        b = results[small]["prepare"][stage] * per[small]
        print(f"| {stage} s/100k at {big:,} vs {small:,} | {a / max(b, 1e-9):.2f}x |")
    a = results[big]["stages"].get("train", 0) * per[big]
    b = results[small]["stages"].get("train", 0) * per[small]
    print(f"| train s/100k at {big:,} vs {small:,} | {a / max(b, 1e-9):.2f}x |")
    if len(sizes) >= 2:
        print(f"| peak RSS at {big:,} vs {sizes[-2]:,} | "
              f"{results[big]['maxrss_mb'] / results[sizes[-2]]['maxrss_mb']:.2f}x |")

    # the corpus grows by --grow: only the new texts are labeled
    extra = int(big * args.grow)
    grown = work / f"corpus-{big}-grown.txt"
    shutil.copy(work / f"corpus-{big}.txt", grown)
    tail = work / "tail.txt"
    if lines is not None:
        tail.write_text("\n".join(lines[big:big + extra]) + "\n", encoding="utf-8")
    else:
        write_corpus(tail, extra, start=big)
    with open(grown, "a", encoding="utf-8") as f:
        f.write(tail.read_text(encoding="utf-8"))
    out = work / f"run-{big}-grown"
    shutil.rmtree(out, ignore_errors=True)
    before = len(list((work / f"targets-{big}").glob("token-*/shard-*.json")))
    r = run_worker(teacher, grown, out, work / f"targets-{big}", until="targets")
    after = len(list((work / f"targets-{big}").glob("token-*/shard-*.json")))
    from distill.pipeline.targets import TargetStore

    (store_dir,) = (work / f"targets-{big}").glob("token-*")
    store = TargetStore.open(store_dir)
    counts = {n: json.loads((store.folder / f"{n}.json").read_text())["count"] for n in store.shard_names()}
    labeled = sum(counts.values()) - big
    print(f"\n+{args.grow:.0%} rerun ({big + extra:,} texts, {extra:,} new; shards {before} -> {after}):\n")
    print("| | value |\n|---|---:|")
    print(f"| texts labeled again | {labeled:,} ({labeled / (big + extra):.2%} of the corpus) |")
    first = results[big]["prepare"]["labeling"]
    print(f"| labeling seconds: rerun vs first | {r['prepare']['labeling']:.1f} s vs {first:.1f} s "
          f"({r['prepare']['labeling'] / first:.1%}) |")
    print(f"| whole targets stage of the rerun | {r['total']:.1f} s, peak RSS {r['maxrss_mb'] / 1024:.2f} GB |")


if __name__ == "__main__":
    main()
