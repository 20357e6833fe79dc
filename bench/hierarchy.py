"""The cost of the hierarchy term: one static student trained with and without emergent groups.

Same teacher, corpus, seed and options; only ``--emergent`` differs. Prints a markdown table of
STS-B (Spearman x100) and holdout overlap@10 per prefix size, the within/between-group cosine gap
at each level's prefix, and the groups found (most typical tokens) at the two smallest prefixes.

    python bench/hierarchy.py --corpus ../shared/data/corpus/movie_reviews.txt --limit 10000 \
        --sts ../shared/data/sts/sts-dev.csv --targets-dir /tmp/hier-targets --out /tmp/hier-bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from distill.hierarchy import HierarchyConfig
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--sts", required=True)
    p.add_argument("--targets-dir", default="/tmp/hier-targets")
    p.add_argument("--out", default="/tmp/hier-bench")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--branching", default="4,4")
    args = p.parse_args()
    out = Path(args.out)
    branching = tuple(int(b) for b in args.branching.split(","))
    results = {}
    for name, hierarchy in (("without", HierarchyConfig()),
                            ("with", HierarchyConfig(emergent=True, weight=args.weight, branching=branching))):
        folder = out / name
        cfg = RunConfig(out=str(folder), teacher="minilm", corpus=args.corpus, limit=args.limit, sts=args.sts,
                        targets_dir=args.targets_dir, hierarchy=hierarchy, train=TrainConfig(epochs=args.epochs))
        t0 = time.perf_counter()
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() \
            else run(cfg)
        results[name] = summary
        print(f"{name}: {time.perf_counter() - t0:.0f} s")
    dims = results["with"]["dims"]
    print("\n| prefix | STS-B dev without | with | overlap@10 without | with |")
    print("|---:|---:|---:|---:|---:|")
    for d in dims:
        s = [results[k]["sts"]["student"][str(d)]["spearman"] for k in ("without", "with")]
        o = [results[k]["holdout"]["student"][str(d)]["overlap@10"] for k in ("without", "with")]
        print(f"| {d} | {s[0]:.2f} | {s[1]:.2f} | {o[0]:.3f} | {o[1]:.3f} |")
    teacher_sts = results["with"]["sts"]["teacher"]
    print(f"\nteacher STS-B dev (full width): {teacher_sts[str(dims[-1])]['spearman']:.2f}")

    from distill.hierarchy import Hierarchy, cohesion
    from distill.students import load_student

    groups = json.loads((out / "with" / "groups.json").read_text())
    levels = Hierarchy.from_json(groups).levels
    print("\n| level prefix | groups | gap teacher | gap without | gap with |")
    print("|---:|---:|---:|---:|---:|")
    rows = {k: load_student(out / k).embedding.detach().numpy() for k in ("without", "with")}
    for lv, entry in zip(levels, results["with"]["hierarchy"]["levels"]):
        gaps = [cohesion(rows[k][:, :lv.prefix], *lv.labels())["gap"] for k in ("without", "with")]
        print(f"| {lv.prefix} | {len(lv.groups)} | {entry['teacher']['gap']:.3f} | {gaps[0]:.3f} | {gaps[1]:.3f} |")
    for entry in groups["levels"][:2]:
        print(f"\nprefix {entry['prefix']}:")
        for g in entry["groups"]:
            print(f"- `{g['name']}` ({g['size']} tokens): {' '.join(g['typical'])}")


if __name__ == "__main__":
    main()
