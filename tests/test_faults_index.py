"""Fault injection: `distill index add` killed with SIGKILL at each of its crash points, then run again.

The killed add runs in a subprocess: the CLI command itself (`distill index add`), with the fake
model of test_index_fakes in place of `load_model` so that it starts in about a second (the slow
tests run the real `python -m distill.cli` with a tiny BERT teacher). ``DISTILL_FAULT_AT`` names the
crash point (distill/faults.py). After each kill the index must answer as before the add or as after
it, nothing in between; after a rerun it must answer exactly as an uninterrupted add, with the right
counts, no duplicate docs and nothing left of the crashed attempt.
"""
# ruff: noqa: E741

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_index_fakes import FakeModel
from typer.testing import CliRunner

from distill.index import Funnel, IndexFolder, build_index, search_index
from distill.index_cli import index_app


def _write(k: int) -> list[str]:  # the crash points of the k-th atomic write (distill/io.py)
    return [f"write:before-rename@{k}", f"write:after-rename@{k}"]


# every crash point of an add to an index at dims 8, 16, 32, in order (NAME@K: the K-th call of NAME)
STEPS = ["add:cleaned", "add:docs", "add:linked", *_write(1), "add:chunk", *_write(2), "add:index-8", *_write(3),
         "add:index-16", *_write(4), "add:index-32", *_write(5), "add:manifest", *_write(6), "add:switched",
         "add:done"]
SWITCHED = STEPS.index("write:after-rename@6")  # CURRENT renamed: from here on a killed add has taken effect
POINTS = [p for p in STEPS if p.startswith("add:")]  # those of the add itself
FAST = POINTS + _write(6)  # and the switch's own write; the other writes' points run with -m slow
TESTS = Path(__file__).parent
ROOT = TESTS.parent  # subprocesses start here, so that they import this checkout of distill

# `distill index add` as the CLI runs it, with the fake model: argv = [tests dir, command args...]
DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
import distill.models
from test_index_fakes import FakeModel
distill.models.load_model = lambda spec, **_: FakeModel()
from distill.index_cli import index_app
index_app(sys.argv[2:], prog_name="distill index")
"""


def run_killed(args: list[str], fault: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL_FAULT_AT": fault or ""}
    return subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def answers(folder: Path, queries: np.ndarray) -> dict:
    """What the index answers: counts, every doc, and top-10 ids and scores at each prefix size (and a funnel)."""
    with IndexFolder(folder) as ix:
        m = ix.manifest
        out = {"count": m.count, "ntotal": [ix.index(d).ntotal for d in m.dims], "docs_len": len(ix.docs)}
        docs = ix.docs.get(np.arange(m.count + 10))
        out["docs"] = [docs.get(i) for i in range(m.count)]
        out["docs_past_count"] = [i for i in docs if i >= m.count]
        for d in m.dims:
            out[d] = search_index(ix, queries, k=10, dim=d)
        out["funnel"] = search_index(ix, queries, k=10, funnel=Funnel(8, 32, shortlist=40))
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], tuple):  # (D, I)
            np.testing.assert_array_equal(a[key][1], b[key][1], err_msg=f"ids at {key}")
            np.testing.assert_allclose(a[key][0], b[key][0], rtol=0, atol=1e-6, err_msg=f"scores at {key}")
        else:
            assert a[key] == b[key], key


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def rows_in_docstore(folder: Path) -> int:
    with sqlite3.connect(folder / "docs.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_texts):
    """A built index (150 texts), a corpus of 50 more, and the answers before and after an uninterrupted add."""
    from distill import faults

    root = tmp_path_factory.mktemp("faults")
    model = FakeModel()
    base = root / "base"
    build_index(model, tiny_texts[:150], base, spec="fake")
    corpus = root / "new.txt"
    corpus.write_text("\n".join(tiny_texts[150:]) + "\n")
    queries = model.encode(tiny_texts[140:160] + ["a dog remembers the winter sky"])
    ref = root / "ref"
    shutil.copytree(base, ref)
    seen: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("distill.models.load_model", lambda spec, **_: model)
        mp.setattr(faults, "maybe_crash", seen.append)
        mp.setattr("distill.io.maybe_crash", seen.append)
        r = CliRunner().invoke(index_app, ["add", "--corpus", str(corpus), "--index", str(ref)])
    assert r.exit_code == 0 and "added ids 150..199, 200 texts in all" in r.output, r.output
    # the crash points an uninterrupted add passes, in order
    assert [f"{p}@{seen[:i + 1].count(p)}" if p.startswith("write:") else p for i, p in enumerate(seen)] == STEPS
    return {"base": base, "corpus": corpus, "queries": queries, "root": root, "model": model,
            "before": answers(base, queries), "after": answers(ref, queries), "listing": listing(ref)}


def rerun_and_check(setup: dict, folder: Path, monkeypatch) -> None:
    monkeypatch.setattr("distill.models.load_model", lambda spec, **_: setup["model"])
    r = CliRunner().invoke(index_app, ["add", "--corpus", str(setup["corpus"]), "--index", str(folder)])
    assert r.exit_code == 0, r.output
    assert "150..199" in r.output and "200 texts in all" in r.output
    after = answers(folder, setup["queries"])
    assert_same(after, setup["after"])
    assert after["count"] == after["docs_len"] == 200 and after["ntotal"] == [200, 200, 200]
    assert rows_in_docstore(folder) == 200  # no duplicate and no stray rows
    assert listing(folder) == setup["listing"]  # one generation, no temporary files


def fresh_copy(setup: dict, name: str) -> Path:
    folder = setup["root"] / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(setup["base"], folder)
    return folder


def check_all_or_nothing(setup: dict, folder: Path) -> None:
    now = answers(folder, setup["queries"])
    try:
        assert_same(now, setup["before"])
    except AssertionError:
        assert_same(now, setup["after"])


def kill_then_rerun(setup: dict, point: str, monkeypatch) -> None:
    folder = fresh_copy(setup, "kill-" + point.replace(":", "-").replace("@", "-"))
    r = run_killed(["add", "--corpus", str(setup["corpus"]), "--index", str(folder)], point)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    # killed: the index answers as before the add, or (once switched) as after it
    assert_same(answers(folder, setup["queries"]), setup["after" if STEPS.index(point) >= SWITCHED else "before"])
    rerun_and_check(setup, folder, monkeypatch)


@pytest.mark.parametrize("point", FAST)
def test_add_killed_at_each_point_then_rerun_equals_an_uninterrupted_add(setup, point, monkeypatch):
    kill_then_rerun(setup, point, monkeypatch)


def test_a_rerun_killed_too_is_completed_by_the_next(setup, monkeypatch):
    folder = fresh_copy(setup, "kill-twice")
    args = ["add", "--corpus", str(setup["corpus"]), "--index", str(folder)]
    assert run_killed(args, "add:index-16").returncode == -signal.SIGKILL
    assert run_killed(args, "add:linked").returncode == -signal.SIGKILL  # while redoing the first one
    check_all_or_nothing(setup, folder)
    rerun_and_check(setup, folder, monkeypatch)


def test_fault_hook_counts_calls_or_matches_a_name(tmp_path):
    code = ("from distill.faults import maybe_crash\n"
            "for p in ['a', 'b', 'c']:\n    print(p, flush=True)\n    maybe_crash(p)\n")
    runs = {at: subprocess.run([sys.executable, "-c", code], env={**os.environ, "DISTILL_FAULT_AT": at},
                               capture_output=True, text=True, cwd=ROOT) for at in ("", "2", "c")}
    assert (runs[""].returncode, runs[""].stdout.split()) == (0, ["a", "b", "c"])
    assert (runs["2"].returncode, runs["2"].stdout.split()) == (-signal.SIGKILL, ["a", "b"])
    assert (runs["c"].returncode, runs["c"].stdout.split()) == (-signal.SIGKILL, ["a", "b", "c"])


# ---- slow: more kill moments ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("point", [p for p in STEPS if p not in FAST])
def test_add_killed_inside_each_atomic_write_then_rerun(setup, point, monkeypatch):
    kill_then_rerun(setup, point, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_an_add_killed_at_two_random_points_in_a_row(setup, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    first, second = rng.choice(STEPS[:SWITCHED], 2)
    folder = fresh_copy(setup, f"kill-pair-{seed}")
    args = ["add", "--corpus", str(setup["corpus"]), "--index", str(folder)]
    assert run_killed(args, str(first)).returncode == -signal.SIGKILL
    assert run_killed(args, str(second)).returncode == -signal.SIGKILL
    assert_same(answers(folder, setup["queries"]), setup["before"])
    rerun_and_check(setup, folder, monkeypatch)


@pytest.mark.slow
def test_add_killed_at_seeded_random_moments(setup, monkeypatch):
    """SIGKILL after a random delay across an add's measured duration (12 seeded moments), not at a hook."""
    args = ["add", "--corpus", str(setup["corpus"]), "--index"]
    t0 = time.perf_counter()
    assert run_killed([*args, str(fresh_copy(setup, "timed"))], None).returncode == 0
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(1234)
    for i, delay in enumerate(rng.uniform(0.3 * duration, duration, 12)):
        folder = fresh_copy(setup, f"timed-{i}")
        p = subprocess.Popen([sys.executable, "-c", DRIVER, str(TESTS), *args, str(folder)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        check_all_or_nothing(setup, folder)
        rerun_and_check(setup, folder, monkeypatch)


@pytest.mark.slow
def test_real_cli_add_killed_then_rerun(tmp_path, tiny_bert_dir, tiny_texts):
    """`python -m distill.cli index add` with a tiny BERT teacher, killed at three seeded crash points."""
    from distill.models import load_model

    teacher = load_model(tiny_bert_dir)
    base = tmp_path / "base"
    build_index(teacher, tiny_texts[:150], base, dims=[8, 16, 32], spec=tiny_bert_dir)
    corpus = tmp_path / "new.txt"
    corpus.write_text("\n".join(tiny_texts[150:]) + "\n")
    queries = teacher.encode(tiny_texts[140:160])

    def add(folder: Path, fault: str = "") -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "distill.cli", "index", "add", "--corpus", str(corpus), "--index", str(folder)]
        return subprocess.run(cmd, env={**os.environ, "DISTILL_FAULT_AT": fault}, capture_output=True, text=True,
                              cwd=ROOT)

    ref = tmp_path / "ref"
    shutil.copytree(base, ref)
    assert add(ref).returncode == 0
    want = answers(ref, queries)
    for point in np.random.default_rng(7).choice(POINTS, 3, replace=False):
        folder = tmp_path / f"kill-{point}".replace(":", "-")
        shutil.copytree(base, folder)
        r = add(folder, str(point))
        assert r.returncode == -signal.SIGKILL, r.stderr
        r = add(folder)
        assert r.returncode == 0 and "200 texts in all" in r.stdout, r.stderr
        assert_same(answers(folder, queries), want)
        assert rows_in_docstore(folder) == 200 and listing(folder) == listing(ref)


def test_a_build_killed_anywhere_is_built_again_by_the_same_command(tmp_path, tiny_bert_dir, tiny_texts):
    """`distill index build` killed with SIGKILL at seeded moments, then run again unchanged (no --overwrite):
    the index equals an uninterrupted build's. A folder with a file of the user's is still refused."""
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(tiny_texts[:150]) + "\n")

    def build(folder: Path, fault: str = "") -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "distill.cli", "index", "build", "--model", str(tiny_bert_dir), "--corpus",
               str(corpus), "--out", str(folder), "--dims", "8,32"]
        return subprocess.run(cmd, env={**os.environ, "DISTILL_FAULT_AT": fault}, capture_output=True, text=True,
                              cwd=ROOT)

    ref = tmp_path / "ref"
    assert build(ref).returncode == 0
    from distill.models import load_model

    queries = load_model(tiny_bert_dir).encode(tiny_texts[140:160])
    want = answers(ref, queries)
    # seeded call numbers, the manifest in place, and the CURRENT file written but not renamed (the switch)
    for fault in ("2", "5", "write:after-rename@4", "write:before-rename@5"):
        folder = tmp_path / f"kill-{fault}".replace(":", "-").replace("@", "-")
        r = build(folder, fault)
        assert r.returncode == -signal.SIGKILL, (fault, r.stderr[-2000:])
        assert not (folder / "CURRENT").is_file()
        r = build(folder)
        assert r.returncode == 0, (fault, r.stderr[-2000:])
        assert_same(answers(folder, queries), want)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    r = build(mine)
    assert r.returncode != 0 and "pass --overwrite" in r.stderr + r.stdout
    assert (mine / "notes.txt").read_text() == "the user's"
