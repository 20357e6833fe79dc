"""Fault injection: `distill targets` and `distill run` killed with SIGKILL at seeded random moments, then rerun.

Each command runs as a child forked from one process that imported distill once (tests/zygote.py),
so a kill and its rerun cost the work, not torch's import. ``DISTILL_FAULT_AT`` picks the crash
point (distill/faults.py): the N-th of all of them, or the K-th call of a named one. Kills are
chained: each rerun continues what the killed one left and is killed again, ten times or more,
then a last rerun finishes. The result must equal an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent


class Zygote:
    def __init__(self, logs: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, str(TESTS / "zygote.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.logs, self.n = logs, 0

    def run(self, args: list[str], fault: str | None = None) -> tuple[int, str]:
        self.n += 1
        log = self.logs / f"{self.n:03d}.log"
        job = {"args": [str(a) for a in args], "env": {"DISTILL_FAULT_AT": fault or ""}, "log": str(log)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        rc = json.loads(self.proc.stdout.readline())["rc"]
        return rc, log.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote-logs"))
    yield z
    z.close()


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with the sha256 of its content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_chain(zygote: Zygote, args: list[str], faults, min_kills: int = 10, max_tries: int = 40) -> int:
    """Run ``args`` killed at ``faults()`` moments again and again until ``min_kills`` kills, then to the end."""
    kills = 0
    for _ in range(max_tries):
        if kills >= min_kills:
            break
        fault = faults()
        rc, log = zygote.run(args, fault)
        if rc == 0:  # finished before the crash point: start over is not needed, the chain goes on
            continue
        assert rc == -9, f"DISTILL_FAULT_AT={fault}: exit {rc}, not a kill\n{log[-3000:]}"
        kills += 1
    rc, log = zygote.run(args)
    assert rc == 0, log[-3000:]
    return kills


def test_targets_killed_ten_times_end_as_one_uninterrupted_labeling(zygote, tmp_path, tiny_bert_dir, tiny_corpus):
    def args(out):
        return ["targets", "--corpus", tiny_corpus, "--out", out, "--teacher", tiny_bert_dir, "--kinds",
                "vocab,text,token", "--shard-size", "10", "--batch-size", "10"]

    rc, log = zygote.run(args(tmp_path / "straight"))
    assert rc == 0, log
    rng = np.random.default_rng(0)
    kills = kill_chain(zygote, args(tmp_path / "killed"), lambda: str(rng.integers(1, 12)))
    assert kills >= 10
    straight, killed = _files(tmp_path / "straight"), _files(tmp_path / "killed")
    assert killed == straight  # same shards, same bytes; no temporary file of a killed writer left


def test_a_run_killed_ten_times_in_training_ends_with_the_same_student(zygote, tmp_path, tiny_bert_dir,
                                                                       tiny_corpus):
    def args(out):
        return ["run", "--teacher", tiny_bert_dir, "--corpus", tiny_corpus, "--out", out, "--targets-dir",
                tmp_path / "targets", "--dims", "8,16,32", "--holdout", "20", "--epochs", "4", "--batch-size",
                "16", "--checkpoint-every", "3", "--resume", "--until", "train"]

    rc, log = zygote.run(args(tmp_path / "straight"))
    assert rc == 0, log
    rng = np.random.default_rng(1)
    # kills after an optimizer step or inside a file write (a checkpoint, the student, data files)
    def fault() -> str:
        point = "train:step" if rng.random() < 0.6 else "write:before-rename"
        return f"{point}@{rng.integers(1, 6)}"

    kills = kill_chain(zygote, args(tmp_path / "killed"), fault)
    assert kills >= 10
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _files(killed / "student") == _files(straight / "student")
    def steps(run: Path) -> list[int]:
        return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert steps(killed) == steps(straight)  # each logged step once, none lost
    assert not [p.name for p in killed.rglob("*.tmp")]
