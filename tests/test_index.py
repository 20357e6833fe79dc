"""Index folders: build, query, funnel search, add, save/load and the manifest checks."""
# ruff: noqa: E741

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_index_fakes import FakeModel
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import CorpusError, DistillError
from distill.index import (
    Funnel,
    IndexFolder,
    IndexMismatchError,
    IndexNotFoundError,
    IndexType,
    add_to_index,
    build_index,
    funnel_search,
    knn,
    make_index,
    normalize_prefix,
    query_index,
    recall_at_k,
    search_index,
)
from distill.index.build import estimate_recall

PLANTED = "The zebra plays a xylophone on the quartz mountain"
NEAR_DUP = "The zebra plays the xylophone on a quartz mountain!"


@pytest.fixture(scope="module")
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def built(tmp_path, model, tiny_texts):
    texts = tiny_texts[:100] + [PLANTED] + tiny_texts[100:]
    build_index(model, texts, tmp_path / "ix", spec="fake")
    return tmp_path / "ix", texts


def matryoshka_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered Gaussian vectors with a power-law spectrum over the dims, normalized."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, d + 1) ** -0.5
    centres = rng.standard_normal((64, d)) * scale
    x = centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, d)) * scale
    return normalize_prefix(x.astype(np.float32))


def test_planted_near_duplicate_is_rank_one(built, model):
    folder, texts = built
    [res] = query_index(folder, [NEAR_DUP], model, k=5)
    assert res["hits"][0]["text"] == PLANTED
    assert res["hits"][0]["id"] == texts.index(PLANTED)
    assert [h["rank"] for h in res["hits"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in res["hits"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]


def test_manifest_records_model_dims_count_and_type(built, model):
    folder, texts = built
    m = json.loads((folder / "manifest.json").read_text())
    assert m["model"] == model.identity() and m["model_spec"] == "fake"
    assert m["dims"] == [8, 16, 32] and m["count"] == len(texts) and m["index_type"] == "flat"
    assert not any(p.suffix in {".pkl", ".pickle"} for p in folder.iterdir())


def test_saved_index_gives_identical_results_after_load_and_move(built, model, tmp_path):
    folder, texts = built
    xq = model.encode(texts[:20])
    for d in (8, 32):
        D_true, I_true = knn(normalize_prefix(xq, d), model.encode(texts, dim=d), 5)
        with IndexFolder(folder) as ix:
            D, I = search_index(ix, xq, k=5, dim=d)
        np.testing.assert_array_equal(I, I_true)
        np.testing.assert_allclose(D, D_true, rtol=1e-5)
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    assert query_index(moved, texts[:3], model, k=4) == query_index(folder, texts[:3], model, k=4)


def test_add_then_query_finds_the_new_text_and_keeps_ids(built, model):
    folder, texts = built
    before = query_index(folder, texts[:3], model, k=3)
    first, count = add_to_index(folder, model, ["A purple walrus sings opera at midnight", "Another new line"])
    assert (first, count) == (len(texts), len(texts) + 2)
    [res] = query_index(folder, ["a purple walrus singing opera at midnight"], model, k=3)
    assert res["hits"][0]["text"] == "A purple walrus sings opera at midnight"
    assert res["hits"][0]["id"] == len(texts)
    assert query_index(folder, texts[:3], model, k=3) == before  # old ids and texts unchanged
    with IndexFolder(folder) as ix:
        assert ix.manifest.count == count and ix.index(8).ntotal == count and len(ix.docs) == count


def test_other_model_or_dim_is_refused(built, model):
    folder, _ = built
    with pytest.raises(IndexMismatchError, match="built with fake-0-ngram"):
        query_index(folder, ["x"], FakeModel(seed=1), k=3)
    with pytest.raises(IndexMismatchError, match=r"prefix sizes \[8, 16, 32\], not 12"):
        query_index(folder, ["x"], model, k=3, dim=12)
    with pytest.raises(IndexMismatchError, match="built with"):
        add_to_index(folder, FakeModel(seed=1), ["new"])
    with IndexFolder(folder) as ix, pytest.raises(IndexMismatchError, match="queries have 16 dims"):
        search_index(ix, model.encode(["x"], dim=16), k=3)


def test_empty_corpus_and_missing_index_are_clear_errors(tmp_path, model):
    with pytest.raises(CorpusError, match="no texts"):
        build_index(model, [], tmp_path / "ix")
    with pytest.raises(IndexNotFoundError, match="not an index folder"):
        IndexFolder(tmp_path)
    with pytest.raises(DistillError, match="--dims must be"):
        build_index(model, ["a", "b"], tmp_path / "ix2", dims=[8, 64])


def test_funnel_with_whole_shortlist_equals_exact_search(built, model):
    folder, texts = built
    exact = query_index(folder, texts[:5], model, k=5, dim=32)
    funnel = query_index(folder, texts[:5], model, k=5, funnel=Funnel(8, 32, shortlist=len(texts)))
    for a, b in zip(exact, funnel, strict=True):
        assert [h["id"] for h in a["hits"]] == [h["id"] for h in b["hits"]]
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], rtol=1e-5)
    # re-ranking below the stored width re-normalizes the prefixes
    exact16 = query_index(folder, texts[:5], model, k=5, dim=16)
    funnel16 = query_index(folder, texts[:5], model, k=5, funnel=Funnel(8, 16, shortlist=len(texts)))
    for a, b in zip(exact16, funnel16, strict=True):
        assert [h["id"] for h in a["hits"]] == [h["id"] for h in b["hits"]]
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], rtol=1e-5)
    with pytest.raises(IndexMismatchError, match="not 12"):
        query_index(folder, ["x"], model, funnel=Funnel(12, 32))


def test_funnel_parse():
    assert Funnel.parse("64:256", 300) == Funnel(64, 256, 300)
    for bad in ("64", "256:64", "a:b"):
        with pytest.raises(DistillError, match="--funnel"):
            Funnel.parse(bad)


def test_funnel_recall_on_matryoshka_vectors():
    xb, xq = matryoshka_vectors(5000, 64), matryoshka_vectors(100, 64, seed=1)
    _, I_true = knn(xq, xb, 10)
    index, _ = make_index(normalize_prefix(xb, 16), IndexType.FLAT)
    _, I = funnel_search(index, xb, xq, 10, 16, 64, shortlist=100)
    assert recall_at_k(I_true, I) > 0.9
    _, I_small = knn(normalize_prefix(xq, 16), normalize_prefix(xb, 16), 10)
    assert recall_at_k(I_true, I) > recall_at_k(I_true, I_small)  # the re-ranking is what buys recall


@pytest.mark.parametrize("index_type", [IndexType.HNSW, IndexType.IVFPQ])
def test_approximate_indexes_have_useful_recall(index_type):
    xb = matryoshka_vectors(10_000, 32)
    index, params = make_index(xb, index_type)
    assert params["type"] == index_type.value
    assert estimate_recall(index, xb, nq=100) > 0.5


def test_ivfpq_needs_enough_vectors():
    with pytest.raises(DistillError, match="ivfpq needs at least"):
        make_index(matryoshka_vectors(500, 32), IndexType.IVFPQ)


def test_hnsw_index_folder_records_recall(tmp_path, model, tiny_texts):
    m = build_index(model, tiny_texts, tmp_path / "ix", dims=[16, 32], index_type="hnsw")
    assert m.index_type == "hnsw" and set(m.recall_at_10) == {"16", "32"}
    assert all(0.5 < r <= 1.0 for r in m.recall_at_10.values())
    [res] = query_index(tmp_path / "ix", [tiny_texts[7]], model, k=3)
    assert res["hits"][0]["text"] == tiny_texts[7]


def test_load_model_dispatches_on_the_student_marker(tmp_path, monkeypatch, tiny_bert_dir):
    import distill
    from distill.models import load_model
    from distill.teachers import Teacher

    (tmp_path / "distill_student.json").write_text("{}")
    monkeypatch.setattr(distill, "load", lambda path: ("student", path))
    assert load_model(tmp_path) == ("student", tmp_path)
    assert isinstance(load_model(tiny_bert_dir), Teacher)


runner = CliRunner()


def test_cli_build_query_add_with_a_real_teacher(tmp_path, tiny_bert_dir, tiny_corpus, tiny_texts):
    out = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                            "--dims", "16,32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "200 texts, flat index at dims 16,32" in r.output
    r = runner.invoke(app, ["query", tiny_texts[3], "--index", str(out), "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    [res] = json.loads(r.output)
    assert res["hits"][0]["text"] == tiny_texts[3] and res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    queries = tmp_path / "q.txt"
    queries.write_text(f"{tiny_texts[5]}\n{tiny_texts[6]}\n")
    r = runner.invoke(app, ["query", "--queries", str(queries), "--index", str(out), "-k", "2", "--funnel", "16:32"])
    assert r.exit_code == 0, r.output
    assert "rank" in r.output and tiny_texts[5][:20] in r.output and tiny_texts[6][:20] in r.output
    extra = tmp_path / "extra.txt"
    extra.write_text("The cat builds a blue boat with great care.\n")
    r = runner.invoke(app, ["index", "add", "--corpus", str(extra), "--index", str(out)])
    assert r.exit_code == 0 and "added ids 200..200" in r.output, r.output
    r = runner.invoke(app, ["query", "--index", str(out), "--dim", "24", "x"])
    assert r.exit_code == 2 and "not 24" in r.output


def test_cli_refuses_another_model_and_an_empty_corpus(tmp_path, model, tiny_texts, tiny_bert_dir):
    build_index(model, tiny_texts[:50], tmp_path / "ix", spec="fake")
    r = runner.invoke(app, ["query", "hello", "--index", str(tmp_path / "ix"), "--model", str(tiny_bert_dir)])
    assert r.exit_code == 2 and "built with fake-0-ngram" in r.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(empty),
                            "--out", str(tmp_path / "ix2")])
    assert r.exit_code == 2 and "holds no texts" in r.output
    assert "Traceback" not in r.output


def test_estimated_recall_does_not_count_a_query_finding_itself():
    import faiss

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)

    class SelfOnly:  # an index that finds each vector itself, then nothing useful
        def search(self, xq, k):
            own = np.array([np.flatnonzero((xb == q).all(1))[0] for q in xq])
            I = np.stack([np.concatenate([[i], (i + 1 + np.arange(k - 1)) % len(xb)]) for i in own])
            return np.zeros_like(I, dtype=np.float32), I

    assert estimate_recall(SelfOnly(), xb, k=10, nq=50) < 0.1  # was 0.1 + chance with the self-hit counted
    exact = faiss.IndexFlatIP(16)
    exact.add(xb)
    assert estimate_recall(exact, xb, k=10, nq=50) == 1.0
