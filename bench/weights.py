"""Static token weights: the default run under each ``--token-weights`` choice, trained and as initialised.

    python bench/weights.py --work /tmp/weights-bench                # sif, bm25, none
    python bench/weights.py --work /tmp/weights-bench --weights sif,none

Each choice is the no-argument default run (bundled MiniLM teacher, the shipped WikiText-2 corpus, static
student) with ``--token-weights X --sts STS-B-dev``; all share one target cache under ``--work``, so the
first run labels and the others reuse its targets. A finished run folder is scored again, not rerun.
Printed: STS-B dev Spearman (x100) and held-out overlap@10 at 64 and 256 dims, for the trained student and
for the student as initialised (``student-init/``, whose STS is scored here; its overlap is summary.json's
``holdout.init``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, STS_DEV

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the cores are shared

DIMS = ("64", "256")


def run_one(weights: str, work: Path, sts: Path) -> tuple[dict, float]:
    """The default run with ``--token-weights weights`` (skipped when its summary exists); its summary and seconds."""
    out = work / weights
    t0 = time.perf_counter()
    if not (out / "summary.json").is_file():
        subprocess.run([sys.executable, "-m", "distill.cli", "run", "--token-weights", weights, "--sts", str(sts),
                        "--targets-dir", str(work / "targets"), "--out", str(out)], check=True, cwd=ROOT)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - t0


def init_sts(out: Path, sts: Path) -> dict:
    from distill.pipeline.evaluate import read_pairs, sts_scores
    from distill.pipeline.folder import RunFolder
    from distill.students import load_student

    return sts_scores(load_student(RunFolder(out).student_init), read_pairs(sts), [int(d) for d in DIMS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/weights-bench"))
    parser.add_argument("--weights", default="sif,bm25,none")
    parser.add_argument("--sts", type=Path, default=STS_DEV)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for weights in args.weights.split(","):
        summary, seconds = run_one(weights, args.work, args.sts)
        held = summary["holdout"]
        rows.append({"weights": weights, "seconds": round(seconds),
                     "sts": {d: summary["sts"]["student"][d]["spearman"] for d in DIMS},
                     "sts_init": {d: v["spearman"] for d, v in init_sts(args.work / weights, args.sts).items()},
                     "overlap": {d: held["student"][d]["overlap@10"] for d in DIMS},
                     "overlap_init": {d: held["init"][d]["overlap@10"] for d in DIMS}})
        print(f"{weights}: done in {seconds:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("| weights | STS 64 trained (init) | STS 256 trained (init) | overlap@10 64 trained (init) "
          "| overlap@10 256 trained (init) | run s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r['sts'][d]:.1f} ({r['sts_init'][d]:.1f})" for d in DIMS]
        cells += [f"{r['overlap'][d]:.3f} ({r['overlap_init'][d]:.3f})" for d in DIMS]
        print(f"| {r['weights']} | " + " | ".join(cells) + f" | {r['seconds']} |")


if __name__ == "__main__":
    main()
