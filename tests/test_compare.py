"""Comparing meaning spaces: overlap, Spearman, CKA, mutual-kNN, lost/gained neighbours, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_index_fakes import FakeModel
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.index import compare_models, linear_cka, mutual_knn, neighbour_overlap, normalize_prefix
from distill.index.compare import lost_gained, pairwise_spearman


def random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    return normalize_prefix(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def test_a_space_against_itself_scores_one():
    x = random_unit(300, 24)
    assert neighbour_overlap(x, x, 10) == 1.0
    assert mutual_knn(x, x, 10) == 1.0
    assert pairwise_spearman(x, x, 5000) == pytest.approx(1.0)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert all(not q["lost"] and not q["gained"] for q in lost_gained(x, x, [0, 5], 10))


def test_a_rotated_copy_keeps_every_metric_at_one():
    x = random_unit(300, 24)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((24, 24)))  # random orthogonal (24, 24)
    xr = (x @ q).astype(np.float32)
    assert linear_cka(x, xr) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 3.0 * xr) == pytest.approx(1.0, abs=1e-6)  # and scale
    assert neighbour_overlap(x, xr, 10) == 1.0
    assert pairwise_spearman(x, xr, 5000) == pytest.approx(1.0, abs=1e-6)


def test_unrelated_spaces_score_low():
    x, y = random_unit(400, 24), random_unit(400, 24, seed=7)
    assert neighbour_overlap(x, y, 10) < 0.1
    assert mutual_knn(x, y, 10) < 0.1
    assert abs(pairwise_spearman(x, y, 5000)) < 0.1
    assert linear_cka(x, y) < 0.2
    [ex] = lost_gained(x, y, [3], 10)
    assert len(ex["lost"]) == len(ex["gained"]) > 5


def test_compare_models_itself_and_a_random_model(tiny_texts):
    teacher = FakeModel()
    same = compare_models(teacher, FakeModel(), tiny_texts[:150], k=5)
    full = {(r["model"], r["dim"]): r for r in same["rows"]}
    assert full[("student", 32)]["overlap"] == 1.0 and full[("student", 32)]["cka"] == pytest.approx(1.0)
    # the teacher's own prefixes are the baseline; a perfect copy matches it dim by dim
    for d in (8, 16):
        assert full[("student", d)]["overlap"] == full[("teacher-prefix", d)]["overlap"] < 1.0
    assert ("teacher-prefix", 32) not in full  # the teacher's full width is the reference itself
    rand = compare_models(teacher, FakeModel(semantic=False), tiny_texts[:150], k=5)
    for r in rand["rows"]:
        if r["model"] == "student":
            assert r["overlap"] < 0.2 and r["mutual_knn"] < 0.2
    assert len(rand["examples"]) == 3 and all(len(e["queries"]) == 3 for e in rand["examples"])
    assert all(isinstance(t, str) for q in rand["examples"][-1]["queries"] for t in q["lost"])


def test_compare_models_checks_its_inputs(tiny_texts):
    with pytest.raises(DistillError, match="--dims must be"):
        compare_models(FakeModel(), FakeModel(), tiny_texts[:50], dims=[64])
    with pytest.raises(DistillError, match="needs more than 10 texts"):
        compare_models(FakeModel(), FakeModel(), tiny_texts[:5], k=10)


def test_cli_compare_json_csv_and_table(tmp_path, tiny_bert_dir, tiny_corpus):
    runner = CliRunner()
    csv = tmp_path / "cmp.csv"
    args = ["compare", "--teacher", str(tiny_bert_dir), "--student", str(tiny_bert_dir), "--corpus",
            str(tiny_corpus), "-k", "5", "--dims", "8,16,32", "--limit", "120"]
    r = runner.invoke(app, args + ["--json", "--csv", str(csv)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    rows = {(x["model"], x["dim"]): x for x in report["rows"]}
    assert rows[("student", 32)]["overlap"] == 1.0 and report["reference"]["n_texts"] == 120
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["model", "dim", "overlap", "spearman", "cka", "mutual_knn", "k"]
    assert len(frame) == 5  # student at 8, 16, 32; teacher prefixes at 8, 16
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "teacher-prefix" in r.output and "overlap@5" in r.output and "lost and gained" in r.output


def test_compare_holds_the_student_against_the_rotated_teacher(tmp_path, tiny_bert_dir, tiny_corpus, tiny_texts):
    """With the run's PCA, the rotated teacher's prefixes are a row of their own, and they keep more of the
    teacher than its raw dimensions cut (the weaker line the report used to show alone)."""
    from distill.pipeline.pca import PCARotation
    from distill.teachers import load_teacher

    teacher = load_teacher(tiny_bert_dir, device="cpu")
    PCARotation.fit(teacher.embed_texts(tiny_texts)).save(tmp_path / "pca.npz")
    r = CliRunner().invoke(app, ["compare", "--teacher", str(tiny_bert_dir), "--student", str(tiny_bert_dir),
                                 "--corpus", str(tiny_corpus), "-k", "5", "--dims", "4,8,32", "--limit", "150",
                                 "--pca", str(tmp_path / "pca.npz"), "--json"])
    assert r.exit_code == 0, r.output
    rows = {(x["model"], x["dim"]): x for x in json.loads(r.output)["rows"]}
    for d in (4, 8):
        assert rows[("teacher-rotated", d)]["spearman"] > rows[("teacher-prefix", d)]["spearman"]
    bad = CliRunner().invoke(app, ["compare", "--teacher", str(tiny_bert_dir), "--student", str(tiny_bert_dir),
                                   "--corpus", str(tiny_corpus), "--pca", str(tmp_path / "nope.npz")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
