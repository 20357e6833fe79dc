# ruff: noqa: E741  (faiss names: I ids)
"""Retrieval evaluation: metrics against references, BEIR parsing and its errors, scoring a model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from distill.errors import DistillError
from distill.index.retrieval import query_metrics, retrieval_metrics
from distill.pipeline.retrieval import read_task, retrieval_scores, search_task


def _brute(ranked: list[int], grades: dict[int, float]) -> dict[str, float]:
    """The textbook definitions, written out loop by loop."""
    dcg = sum(grades.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    relevant = [doc for doc, g in grades.items() if g >= 1]
    recall = sum(1 for doc in relevant if doc in ranked[:100]) / len(relevant)
    mrr = 0.0
    for rank, doc in enumerate(ranked[:10]):
        if grades.get(doc, 0) >= 1:
            mrr = 1 / (rank + 1)
            break
    return {"ndcg@10": dcg / idcg, "recall@100": recall, "mrr@10": mrr}


def _random_case(seed: int, graded: bool):
    rng = np.random.default_rng(seed)
    n_docs, nq = 300, 25
    I = np.stack([rng.permutation(n_docs)[:100] for _ in range(nq)])
    qrels = []
    for _ in range(nq):
        judged = rng.choice(n_docs, size=rng.integers(1, 30), replace=False)
        grades = rng.integers(0, 3, size=len(judged)) if graded else np.ones(len(judged), dtype=int)
        if not (grades >= 1).any():
            grades[0] = 1
        # some judged documents at the top (no id twice), so the metrics are not all near zero
        top = [int(d) for d in judged[:3]]
        I[len(qrels)] = (top + [int(d) for d in I[len(qrels)] if d not in top])[:100]
        qrels.append({int(d): float(g) for d, g in zip(judged, grades)})
    return I, qrels


@pytest.mark.parametrize("graded", [True, False])
def test_metrics_equal_brute_force_and_pytrec_eval(graded):
    import pytrec_eval

    I, qrels = _random_case(3 if graded else 4, graded)
    got = retrieval_metrics(I, qrels)
    ref = [_brute([int(i) for i in row if i >= 0], grades) for row, grades in zip(I, qrels)]
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        assert got[key] == pytest.approx(np.mean([r[key] for r in ref]), abs=1e-12)
    # trec_eval's own numbers (what BEIR and MTEB call): ndcg_cut_10, recall_100, recip_rank at 10
    run = {f"q{q}": {f"d{int(d)}": float(100 - r) for r, d in enumerate(row)} for q, row in enumerate(I)}
    judged = {f"q{q}": {f"d{d}": int(g) for d, g in grades.items()} for q, grades in enumerate(qrels)}
    trec = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    assert got["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in trec.values()]), abs=1e-6)
    assert got["recall@100"] == pytest.approx(np.mean([v["recall_100"] for v in trec.values()]), abs=1e-6)
    assert 0.05 < got["ndcg@10"] < 0.95  # a case that can tell a wrong formula from a right one


def test_metrics_on_a_hand_made_ranking():
    # relevant: doc 5 (grade 2) at rank 2, doc 9 (grade 1) at rank 4; doc 7 (grade 2) never retrieved
    grades = {5: 2.0, 9: 1.0, 7: 2.0, 3: 0.0}
    m = query_metrics(np.array([3, 5, 1, 9, -1]), grades)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["recall@100"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx(1 / 2)
    assert query_metrics(np.array([1, 2]), {4: 0.0}) is None  # no relevant document: not counted
    assert retrieval_metrics(np.array([[1, 2], [4, 1]]), [{4: 0.0}, {1: 1.0}])["queries"] == 1


def write_task(folder: Path, docs: list[dict], queries: list[dict], qrels: dict[str, list[tuple]],
               crlf: bool = True) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    end = "\r\n" if crlf else "\n"
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore" + end + "".join(f"{q}\t{d}\t{s}{end}" for q, d, s in rows))
    return folder


DOCS = [{"_id": "d1", "title": "Cats", "text": "cats purr and sleep"},
        {"_id": "d2", "text": "dogs bark at the mail carrier"},  # no title: BEIR allows it
        {"_id": "d3", "title": "", "text": "the stock market fell today"},
        {"_id": "q2", "title": "Fish", "text": "fish swim in the sea"}]
QUERIES = [{"_id": "q1", "text": "which animal purrs"}, {"_id": "q2", "text": "animals of the sea"},
           {"_id": "q3", "text": "unjudged query"}]


def test_read_task_parses_beir_layout(tmp_path):
    task = read_task(write_task(tmp_path / "mini", DOCS, QUERIES,
                                {"test": [("q1", "d1", 2), ("q1", "d2", 0), ("q2", "q2", 1), ("q2", "d2", 1)],
                                 "dev": [("q1", "d3", 1)]}))
    assert task.name == "mini"
    assert task.documents == ["Cats cats purr and sleep", "dogs bark at the mail carrier",
                              "the stock market fell today", "Fish fish swim in the sea"]
    assert task.query_ids == ["q1", "q2"] and task.queries == ["which animal purrs", "animals of the sea"]
    assert task.qrels == [{0: 2.0, 1: 0.0}, {3: 1.0, 1: 1.0}]
    assert read_task(tmp_path / "mini", split="dev").qrels == [{2: 1.0}]


def test_search_leaves_out_the_querys_own_id(tmp_path):
    task = read_task(write_task(tmp_path / "mini", DOCS, QUERIES, {"test": [("q1", "d1", 1), ("q2", "q2", 1)]}))
    xb = np.eye(4, dtype=np.float32)
    xq = xb[[0, 3]]  # each query is exactly its document
    I = search_task(xq, xb, task, 4)
    assert I[0, 0] == 0  # q1 finds d1 first
    assert 3 not in I[1]  # q2's own id (a document named q2) is never among its results, as in BEIR
    assert (I[0, 4:] == -1).all() and (I[1, 3:] == -1).all()  # 4 documents (3 for q2): the rest is empty


@pytest.mark.parametrize("case, match", [
    ("no_corpus", "corpus.jsonl does not exist"),
    ("no_split", r"dev.tsv does not exist \(splits here: test\)"),
    ("absent_ids", "1 query ids absent from queries.jsonl and 2 document ids absent from corpus.jsonl"),
    ("empty_split", "no query has a relevant document"),
    ("bad_json", "line 2 is not valid JSON"),
    ("no_id", "line 1 needs the fields _id, text"),
    ("bad_qrels", r"line 2 is not `query-id<TAB>corpus-id<TAB>score`"),
    ("not_utf8", "not UTF-8"),
])
def test_read_task_errors(tmp_path, case, match):
    folder = write_task(tmp_path / "t", DOCS, QUERIES, {"test": [("q1", "d1", 1)]})
    split = "test"
    if case == "no_corpus":
        (folder / "corpus.jsonl").unlink()
    elif case == "no_split":
        split = "dev"
    elif case == "absent_ids":
        write_task(folder, DOCS, QUERIES, {"test": [("q1", "d1", 1), ("q9", "d8", 1), ("q1", "d7", 1)]})
    elif case == "empty_split":
        write_task(folder, DOCS, QUERIES, {"test": [("q1", "d1", 0)]})
    elif case == "bad_json":
        (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": \n')
    elif case == "no_id":
        (folder / "corpus.jsonl").write_text('{"text": "a"}\n')
    elif case == "bad_qrels":
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    elif case == "not_utf8":
        (folder / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    with pytest.raises(DistillError, match=match):
        read_task(folder, split=split)


class _Lookup:
    """A model whose vectors are given: a query or document text maps to a fixed vector."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode(self, texts, batch_size=64, progress=False):
        x = np.stack([self.table[t] for t in texts]).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_retrieval_scores_per_prefix_and_with_other_documents(tmp_path):
    task = read_task(write_task(tmp_path / "t", DOCS[:3], QUERIES[:2], {"test": [("q1", "d1", 1), ("q2", "d2", 1)]}))
    # the first dim separates the queries' documents only in the wrong order; all 4 dims get both right
    vec = {"which animal purrs": [0, 1, 0, 0], "animals of the sea": [1, 0, 1, 0],
           task.documents[0]: [1, 1, 0, 0], task.documents[1]: [0.1, 0, 1, 0], task.documents[2]: [1, 0, 0, 1]}
    model = _Lookup({t: np.asarray(v, dtype=np.float32) for t, v in vec.items()})
    scores = retrieval_scores(model, task, [1, 4])
    assert scores["4"]["ndcg@10"] == pytest.approx(1.0) and scores["4"]["mrr@10"] == pytest.approx(1.0)
    assert scores["1"]["mrr@10"] < 1.0
    docs = model.encode(task.documents)
    assert retrieval_scores(model, task, [1, 4], documents=docs) == scores
    with pytest.raises(DistillError, match="do not cover 3 documents and 2 queries at 4 dims"):
        retrieval_scores(model, task, [4], documents=docs[:, :2])
