"""A run's space end to end on a tiny teacher: retrieval in the run, documents by the teacher and queries
by the student (embed, index, query, eval, the service), and every model of another space refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.index.errors import IndexMismatchError
from distill.index.search import normalize_prefix
from distill.index.store import Manifest
from distill.pipeline.pca import PCARotation
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig
from distill.students import load_student
from distill.teachers import load_teacher

runner = CliRunner()


def _task(folder, texts: list[str]):
    """Documents: 60 texts; each query is the first words of one of them, which is its relevant document
    (grade 2), and the next document is judged too (grade 1)."""
    (folder / "qrels").mkdir(parents=True)
    docs, n = texts[:60], 60
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                                 for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": " ".join(t.split()[:3])}) + "\n"
                                                  for i, t in enumerate(docs[:30])))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\r\n" + "".join(
        f"q{i}\td{i}\t2\r\nq{i}\td{(i + 1) % n}\t1\r\n" for i in range(30)))
    return folder


@pytest.fixture(scope="module")
def space_run(tmp_path_factory, tiny_bert_dir, tiny_corpus, tiny_texts):
    root = tmp_path_factory.mktemp("space-run")
    task = _task(root / "task", tiny_texts)
    cfg = RunConfig(out=str(root / "run"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                    dims=(8, 16, 32), targets_dir=str(root / "targets"), retrieval=str(task),
                    train=TrainConfig(epochs=1, batch_size=32))
    summary = run(cfg)
    return root, root / "run", task, summary


def test_the_run_scores_retrieval_beside_the_teacher(space_run):
    _, out, task, summary = space_run
    section = json.loads((out / "summary.json").read_text())["retrieval"]
    assert section == json.loads(json.dumps(summary["retrieval"]))
    assert section["task"] == "task" and section["split"] == "test" and section["queries"] == 30
    for who in ("student", "init", "asymmetric", "teacher_rotated"):
        assert set(section[who]) == {"8", "16", "32"}
        for m in section[who].values():
            assert 0 <= m["ndcg@10"] <= 1 and 0 <= m["recall@100"] <= 1 and m["queries"] == 30
    # the rotation keeps every cosine at full width (uncentered, unwhitened): the teacher's rotated 32 dims
    # rank exactly as the teacher does
    assert section["teacher_rotated"]["32"]["ndcg@10"] == pytest.approx(section["teacher"]["32"]["ndcg@10"], abs=1e-6)
    # queries are the documents' first words: the teacher finds them far above chance (1 in 60)
    assert section["teacher"]["32"]["mrr@10"] > 0.3


def test_students_record_their_space(space_run):
    _, out, _, _ = space_run
    fingerprint = PCARotation.load(out / "pca.npz").fingerprint()
    assert fingerprint.startswith("pca-") and len(fingerprint) == 20
    for name in ("student", "student-init"):
        student = load_student(out / name)
        assert student.config.space == fingerprint and student.identity()["space"] == fingerprint


def test_embed_in_a_space_gives_the_teachers_rotated_cut_normalised_vectors(space_run, tiny_bert_dir, tiny_texts,
                                                                            tmp_path):
    _, out, _, _ = space_run
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(tiny_texts[:50]) + "\n")
    r = runner.invoke(app, ["embed", "--model", str(tiny_bert_dir), "--space", str(out), "--corpus", str(corpus),
                            "--out", str(tmp_path / "v.npy"), "--dim", "16"])
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "v.npy")
    raw = load_teacher(tiny_bert_dir).embed_texts(tiny_texts[:50])
    want = normalize_prefix(PCARotation.load(out / "pca.npz").transform(raw), 16)
    assert got.shape == (50, 16) and np.abs(got - want).max() <= 1e-6


def test_asymmetric_index_is_queried_by_the_student_and_refuses_other_spaces(space_run, tiny_bert_dir, tiny_texts,
                                                                             tiny_corpus, tmp_path):
    root, out, _, _ = space_run
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(tiny_texts[:60]) + "\n")
    ix = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--space", str(out), "--corpus",
                            str(corpus), "--out", str(ix)])
    assert r.exit_code == 0, r.output
    m = Manifest.load(ix)
    assert m.space == load_student(out).config.space and m.dims == [8, 16, 32] and m.model["space"] == m.space
    # no --model: an index of a run's space is queried by that run's student
    r = runner.invoke(app, ["query", "--index", str(ix), "--json", tiny_texts[5]])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)[0]["hits"]
    assert len(hits) == 10 and all(h["text"] in tiny_texts[:60] for h in hits)
    student = load_student(out)
    from distill.index.query import query_index

    [res] = query_index(ix, [tiny_texts[5]], student, k=10)
    assert [h["id"] for h in res["hits"]] == [h["id"] for h in hits]
    # a student of another run is in another space: refused, naming both
    other = RunConfig(out=str(root / "other"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                      dims=(8, 16, 32), targets_dir=str(root / "targets"), pca_center=True,
                      train=TrainConfig(epochs=0))
    run(other, until="train")
    r = runner.invoke(app, ["query", "--index", str(ix), "--model", other.out, tiny_texts[5]])
    assert r.exit_code != 0
    assert m.space in r.output and load_student(other.out).config.space in r.output
    # adds come from the documents' model, in the space recorded in the manifest
    more = tmp_path / "more.txt"
    more.write_text("\n".join(tiny_texts[60:70]) + "\n")
    r = runner.invoke(app, ["index", "add", "--index", str(ix), "--corpus", str(more)])
    assert r.exit_code == 0, r.output
    assert Manifest.load(ix).count == 70
    with pytest.raises(IndexMismatchError, match="not"):  # a student cannot add to the teacher's documents
        from distill.index.add import add_to_index

        add_to_index(ix, student, ["a new text"])


def test_a_teacher_of_another_run_is_refused_a_space(space_run, tiny_gpt2_dir, tiny_corpus, tmp_path):
    _, out, _, _ = space_run
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_gpt2_dir), "--space", str(out), "--corpus",
                            str(tiny_corpus), "--out", str(tmp_path / "ix")])
    assert r.exit_code != 0 and "pass that run's teacher as --model" in r.output
    r = runner.invoke(app, ["embed", "--model", "x", "--space", str(tmp_path), "--corpus", "c.txt",
                            "--out", str(tmp_path / "v.npy")])
    assert r.exit_code != 0 and "not a prepared run folder" in r.output


def test_eval_retrieval_json_and_asymmetric_match_the_run(space_run, tiny_bert_dir, tmp_path):
    _, out, task, summary = space_run
    r = runner.invoke(app, ["eval", str(out), "--retrieval", str(task), "--teacher", str(tiny_bert_dir),
                            "--documents-by", str(tiny_bert_dir), "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["retrieval"]) == {"task"} and set(result["retrieval"]["task"]) == {"8", "16", "32"}
    assert set(result["retrieval"]["task"]["16"]) == {"ndcg@10", "recall@100", "mrr@10", "queries"}
    for d in ("8", "16", "32"):  # the same numbers as the run's own asymmetric and rotated-teacher scores
        for key in ("ndcg@10", "recall@100", "mrr@10"):
            assert result["retrieval"]["task"][d][key] == pytest.approx(summary["retrieval"]["asymmetric"][d][key])
            assert result["retrieval_teacher"]["task"][d][key] == pytest.approx(
                summary["retrieval"]["teacher_rotated"][d][key], abs=1e-6)
    r = runner.invoke(app, ["eval", str(out / "student"), "--retrieval", str(task)])
    assert r.exit_code == 0 and "NDCG@10" in r.output
    r = runner.invoke(app, ["eval", str(tiny_bert_dir), "--retrieval", str(task), "--documents-by", "x"])
    assert r.exit_code != 0 and "pass --space RUN" in r.output


def test_service_searches_an_asymmetric_index(space_run, tiny_bert_dir, tiny_texts, tmp_path):
    from distill.index import build_index
    from distill.models import load_model
    from distill.service.app import create_app
    from distill.service.settings import ServiceSettings

    _, out, _, _ = space_run
    ix = tmp_path / "ix"
    build_index(load_model(tiny_bert_dir, space=out), tiny_texts[:60], ix, spec=str(tiny_bert_dir), space_spec=out)
    with TestClient(create_app(ServiceSettings(model=out / "student", index=ix))) as c:
        r = c.post("/v1/search", json={"query": tiny_texts[7], "k": 5})
        assert r.status_code == 200, r.text
        hits = r.json()["data"][0]["hits"]
        # the student's vector of a text finds the teacher's vector of the same text first
        assert len(hits) == 5 and hits[0]["id"] == 7 and hits[0]["score"] > 0.9
    with pytest.raises(DistillError, match="space"):
        load_model(out / "student", space=tmp_path / "nope")


def test_a_bad_retrieval_task_fails_before_the_run_starts(tmp_path, tiny_bert_dir, tiny_corpus):
    task = _task(tmp_path / "task", [f"text number {i}" for i in range(60)])
    (task / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tmissing-doc\t1\n")
    cfg = RunConfig(out=str(tmp_path / "run"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                    targets_dir=str(tmp_path / "targets"), retrieval=str(task))
    with pytest.raises(DistillError, match="1 document ids absent from corpus.jsonl"):
        run(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "targets").exists()
