"""The retrieval recipe ablation: one `distill run` per setting, scored by the run itself on a BEIR task.

Each setting is a static student of the bundled MiniLM with some options changed; the run's own eval stage
(`--retrieval`, `--sts`) writes NDCG@10 of the student (symmetric), of its queries against the teacher's
rotated documents (asymmetric) and of the teacher's rotated prefixes, and STS-B dev, into summary.json; this
script runs the settings one after the other and prints one table. Tune on dev, report test:

    python bench/recipe.py --split dev                       # every setting (about 2-4 min each on 2 cores)
    python bench/recipe.py --split test --only noarg,docs_vocab,default_docs_vocab

Corpora are built into --work from ../shared/data: WikiText-2 paragraphs, Brown, movie reviews, and the task's
own documents (title + text, one per line: the "documents you will search" setting, no queries or judgements).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, ROOT


def corpora(work: Path, task: Path) -> dict[str, Path]:
    """The training corpora of the settings, written once into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    default = gzip.open(ROOT / "distill" / "data" / "wikitext2.txt.gz", "rt", encoding="utf-8").read().splitlines()
    paras = (DATA / "corpus" / "wikitext2-valid.txt").read_text(encoding="utf-8").splitlines()
    docs = [" ".join((str(d.get("title") or "") + " " + str(d["text"])).split())
            for d in map(json.loads, (task / "corpus.jsonl").read_text(encoding="utf-8").splitlines())]
    movies = (DATA / "corpus" / "movie_reviews.txt").read_text(encoding="utf-8").splitlines()[:25_000]
    made = {"paras": default + paras, "docs": docs, "default_docs": default + docs, "narrow30k": movies + default}
    out = {}
    for name, texts in made.items():
        out[name] = work / f"{name}.txt"
        if not out[name].is_file():
            out[name].write_text("\n".join(t for t in texts if t.strip()) + "\n", encoding="utf-8")
    return out


def settings(c: dict[str, Path]) -> dict[str, list[str]]:
    return {
        "noarg": [],
        "paras": ["--corpus", str(c["paras"])],
        "whiten": ["--whiten"],
        "pca_center": ["--pca-center"],
        "epochs10": ["--epochs", "10"],
        "dim_weights_64": ["--dim-weights", "1,2,1,1"],
        "narrow30k": ["--corpus", str(c["narrow30k"])],
        "docs": ["--corpus", str(c["docs"])],
        "docs_vocab": ["--corpus", str(c["docs"]), "--vocab-from-corpus", "10000"],
        "default_docs_vocab": ["--corpus", str(c["default_docs"]), "--vocab-from-corpus", "10000"],
    }


def row(name: str, summary: dict, seconds: float) -> str:
    r = summary["retrieval"]
    full = next(iter(r["teacher"].values()))["ndcg@10"]

    def cell(who: str, d: str) -> str:
        x = r[who][d]["ndcg@10"]
        return f"{x:.3f} ({100 * x / full:.0f}%)"

    return (f"| {name} | {cell('student', '64')} | {cell('student', '256')} | {cell('asymmetric', '64')} | "
            f"{cell('asymmetric', '256')} | {cell('teacher_rotated', '256')} | "
            f"{summary['sts']['student']['256']['spearman']:.1f} | {seconds:.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="dev")
    p.add_argument("--task", type=Path, default=DATA / "retrieval" / "nfcorpus")
    p.add_argument("--sts", type=Path, default=DATA / "sts" / "sts-dev.csv")
    p.add_argument("--work", type=Path, default=Path("runs/recipe"))
    p.add_argument("--only", default=None, help="comma list of setting names")
    p.add_argument("--targets-dir", type=Path, default=None, help="the teacher label cache (default: WORK/targets)")
    args = p.parse_args(argv)
    table = settings(corpora(args.work, args.task))
    names = args.only.split(",") if args.only else list(table)
    print(f"NDCG@10 on {args.task.name} {args.split}, % of the teacher at full width; MiniLM, static students\n")
    print("| setting | symmetric @64 | symmetric @256 | asymmetric @64 | asymmetric @256 | teacher rotated @256 | "
          "STS-B dev @256 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        out = args.work / "runs" / f"{name}-{args.split}"
        targets = args.targets_dir or args.work / "targets"
        if not (out / "summary.json").is_file():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "distill.cli", "run", *table[name], "--out", str(out),
                            "--targets-dir", str(targets), "--retrieval", str(args.task),
                            "--retrieval-split", args.split, "--sts", str(args.sts)], check=True,
                           stdout=subprocess.DEVNULL)
            (out / "bench-seconds.txt").write_text(f"{time.perf_counter() - t:.1f}")
        seconds = float((out / "bench-seconds.txt").read_text()) if (out / "bench-seconds.txt").is_file() else 0.0
        print(row(name, json.loads((out / "summary.json").read_text()), seconds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
