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
    gen = (folder / "CURRENT").read_text().strip()
    m = json.loads((folder / gen / "manifest.json").read_text())
    assert m["model"] == model.identity() and m["model_spec"] == "fake"
    assert m["dims"] == [8, 16, 32] and m["count"] == len(texts) and m["index_type"] == "flat"
    assert (m["metric"], m["precision"], m["chunks"], m["format"]) == ("cos", "float32", [len(texts)], 2)
    assert sorted(p.name for p in (folder / gen).iterdir()) == [
        "index-16.faiss", "index-32.faiss", "index-8.faiss", "manifest.json", "vectors-000000.npy"]
    assert not any(p.suffix in {".pkl", ".pickle"} for p in folder.rglob("*"))


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
    assert estimate_recall(index, xb, nq=100, rescore=params.get("rescore", 0)) > 0.5


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
    monkeypatch.setattr(distill, "load", lambda path, device=None: ("student", path))
    assert load_model(tmp_path) == ("student", tmp_path)
    run = tmp_path / "run"  # a run folder: its student/ (what README's example session hands around)
    (run / "student").mkdir(parents=True)
    (run / "student" / "distill_student.json").write_text("{}")
    assert load_model(run) == ("student", run / "student")
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


# ---- generations: add writes only what is new ---------------------------------------------------------
def live_gen(folder):
    return folder / (folder / "CURRENT").read_text().strip()


def test_add_links_earlier_chunks_and_leaves_one_generation(built, model):
    folder, texts = built
    old = live_gen(folder)
    inode = (old / "vectors-000000.npy").stat().st_ino
    add_to_index(folder, model, ["A purple walrus sings opera at midnight"])
    add_to_index(folder, model, ["A green heron reads poems", "Another new line"])
    gen = live_gen(folder)
    assert gen.name == "gen-000003" and [p.name for p in folder.glob("gen-*")] == ["gen-000003"]
    assert (gen / "vectors-000000.npy").stat().st_ino == inode  # hard-linked, never copied
    assert [np.load(gen / f"vectors-00000{i}.npy").shape for i in range(3)] == [(len(texts), 32), (1, 32), (2, 32)]
    assert not [p for p in folder.rglob("*.tmp")]


def test_stored_vectors_span_chunks_with_row_access(built, model):
    folder, texts = built
    new = ["A purple walrus sings opera at midnight", "A green heron reads poems", "Another new line"]
    add_to_index(folder, model, new[:1])
    add_to_index(folder, model, new[1:])
    every = texts + new
    with IndexFolder(folder) as ix:
        xb = ix.xb
        assert xb.shape == (len(every), 32) and len(ix.xb.chunks) == 3
        want = model.encode(every)
        ids = np.array([len(every) - 1, 0, len(texts), 7, len(texts) + 1, 7])
        np.testing.assert_allclose(xb[ids, :16], want[ids, :16], rtol=1e-5)
        np.testing.assert_allclose(xb[len(texts) - 1:], want[len(texts) - 1:], rtol=1e-5)
        np.testing.assert_allclose(xb[-1], want[-1], rtol=1e-5)
        np.testing.assert_allclose(np.asarray(xb), want, rtol=1e-5)
    # funnel re-ranking reads rows of every chunk: with the whole shortlist it equals exact search
    exact = query_index(folder, new + texts[:3], model, k=5, dim=32)
    funnel = query_index(folder, new + texts[:3], model, k=5, funnel=Funnel(8, 32, shortlist=len(every)))
    assert [[h["id"] for h in r["hits"]] for r in exact] == [[h["id"] for h in r["hits"]] for r in funnel]
    assert exact[0]["hits"][0]["id"] == len(texts)


def test_an_open_reader_keeps_its_generation_through_an_add(built, model):
    folder, texts = built
    with IndexFolder(folder) as ix:
        add_to_index(folder, model, ["A purple walrus sings opera at midnight"])
        assert not ix.generation.exists()  # removed by the add, still open here
        D, I = search_index(ix, model.encode([texts[4]]), k=3, dim=16)  # FAISS file read only now
        assert I[0, 0] == 4 and ix.manifest.count == len(texts) and len(ix.docs) == len(texts)
        assert ix.docs.get([len(texts)]) == {}  # the new row is past this reader's count
    with IndexFolder(folder) as ix:
        assert ix.manifest.count == len(texts) + 1 and ix.docs.get([len(texts)])


def test_rerun_of_the_last_add_adds_nothing(built, model):
    folder, texts = built
    new = ["A purple walrus sings opera at midnight", "Another new line"]
    assert add_to_index(folder, model, new) == (len(texts), len(texts) + 2)
    assert add_to_index(folder, model, new) == (len(texts), len(texts) + 2)  # a retry: no duplicates
    assert live_gen(folder).name == "gen-000002"
    assert add_to_index(folder, model, new[:1]) == (len(texts) + 2, len(texts) + 3)  # other texts: added
    with IndexFolder(folder) as ix:
        assert len(ix.docs) == ix.index(8).ntotal == len(texts) + 3


def test_an_add_interrupted_in_process_is_completed_by_a_rerun(built, model, monkeypatch):
    from distill import faults

    folder, texts = built
    new = ["A purple walrus sings opera at midnight", "Another new line"]

    def fail_at(point):
        if point == "add:index-16":
            raise KeyboardInterrupt

    monkeypatch.setattr(faults, "maybe_crash", fail_at)
    with pytest.raises(KeyboardInterrupt):
        add_to_index(folder, model, ["Something else first"] * 3)
    assert (folder / "gen-000002").is_dir()  # the partial generation, not live
    with IndexFolder(folder) as ix:
        assert ix.manifest.count == len(ix.docs) == len(texts)
    monkeypatch.undo()
    assert add_to_index(folder, model, new) == (len(texts), len(texts) + 2)
    assert [p.name for p in folder.glob("gen-*")] == ["gen-000002"]
    with IndexFolder(folder) as ix:
        assert ix.docs.get(range(len(texts), len(texts) + 3)) == {len(texts): new[0], len(texts) + 1: new[1]}
        assert len(ix.docs) == len(texts) + 2
    import sqlite3

    with sqlite3.connect(folder / "docs.sqlite") as conn:  # the crashed add's third row is gone too
        assert conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0] == len(texts) + 2


def test_old_format_and_interrupted_build_are_clear_errors(tmp_path, model, tiny_texts):
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": 1, "count": 3}))
    with pytest.raises(IndexNotFoundError, match="format 1.*rebuild it with `distill index build --overwrite`"):
        IndexFolder(old)
    half = tmp_path / "half"
    (half / "gen-000001").mkdir(parents=True)
    with pytest.raises(IndexNotFoundError, match="interrupted build.*run its `distill index build` again"):
        IndexFolder(half)
    with pytest.raises(DistillError, match="--overwrite"):
        build_index(model, tiny_texts[:20], old)
    assert build_index(model, tiny_texts[:20], half).count == 20  # an interrupted build: the same call again
    assert build_index(model, tiny_texts[:20], old, overwrite=True).count == 20


def test_a_second_writer_is_refused(built, model):
    from distill.index.store import writer_lock

    folder, _ = built
    with writer_lock(folder), pytest.raises(DistillError, match="being written by another"):
        add_to_index(folder, model, ["new"])


# ---- metric and precision -------------------------------------------------------------------------------
def brute_force(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    S = xq @ xb.T  # (nq, N)
    I = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, I, axis=1), I


def test_dot_metric_ranks_by_raw_dot_product(tmp_path, model, tiny_texts):
    m = build_index(model, tiny_texts, tmp_path / "ix", spec="fake", metric="dot")
    assert m.metric == "dot"
    queries = tiny_texts[:5] + ["the cat", "a dog sees the long bridge again and again, slowly and happily"]
    xb, xq = model.encode(tiny_texts, normalize=False), model.encode(queries, normalize=False)
    for d in (8, 32):
        D_true, I_true = brute_force(xq[:, :d], xb[:, :d], 10)
        res = query_index(tmp_path / "ix", queries, model, k=10, dim=d)
        assert [[h["id"] for h in r["hits"]] for r in res] == I_true.tolist()
        np.testing.assert_allclose([[h["score"] for h in r["hits"]] for r in res], D_true, rtol=1e-4)
        _, I_cos = brute_force(normalize_prefix(xq, d), normalize_prefix(xb, d), 10)
        assert (I_cos != I_true).any()  # the two metrics do rank differently here
    # funnel re-ranking at the raw prefix too
    res = query_index(tmp_path / "ix", queries, model, k=10, funnel=Funnel(8, 32, shortlist=len(tiny_texts)))
    assert [[h["id"] for h in r["hits"]] for r in res] == brute_force(xq, xb, 10)[1].tolist()


def sq8_decode(index, x: np.ndarray) -> np.ndarray:
    """x as an int8 (QT_8bit) index stores it: 256 levels between each dim's calibrated min and max."""
    import faiss

    trained = faiss.vector_to_array(index.sq.trained)
    vmin, vdiff = trained[:x.shape[1]], trained[x.shape[1]:]
    codes = np.floor(np.clip((x - vmin) / vdiff, 0, 1) * 255)
    return (vmin + (codes + 0.5) / 255 * vdiff).astype(np.float32)


@pytest.mark.parametrize("metric", ["cos", "dot"])
def test_int8_index_returns_the_exact_neighbours_of_its_codes(tmp_path, model, tiny_texts, metric):
    from distill.index.search import prefix

    folder = tmp_path / "ix"
    build_index(model, tiny_texts[:150], folder, spec="fake", metric=metric, precision="int8")
    add_to_index(folder, model, tiny_texts[150:])  # added with the build's calibration
    raw = metric == "dot"
    xb, xq = model.encode(tiny_texts, normalize=not raw), model.encode(tiny_texts[:30], normalize=not raw)
    with IndexFolder(folder) as ix:
        assert ix.manifest.precision == "int8" and ix.manifest.index_params["calibrated_on"] == 150
        for d in (8, 32):
            xd = prefix(xb, d, metric)
            trained = __import__("faiss").vector_to_array(ix.index(d).sq.trained)
            # calibration: per-dim min and max of the vectors of the build
            np.testing.assert_allclose(trained[:d], xd[:150].min(0), rtol=1e-6)
            np.testing.assert_allclose(trained[:d] + trained[d:], xd[:150].max(0), rtol=1e-5)
            D_true, I_true = brute_force(prefix(xq, d, metric), sq8_decode(ix.index(d), xd), 10)
            D, I = search_index(ix, xq, k=10, dim=d)
            np.testing.assert_array_equal(I, I_true)
            np.testing.assert_allclose(D, D_true, rtol=1e-4, atol=1e-5)


def test_binary_index_returns_the_exact_hamming_neighbours(tmp_path, model, tiny_texts):
    folder = tmp_path / "ix"
    build_index(model, tiny_texts[:150], folder, spec="fake", dims=[12, 32], precision="binary")
    add_to_index(folder, model, tiny_texts[150:])
    xb, xq = model.encode(tiny_texts), model.encode(tiny_texts[:30] + ["a strange noise"])
    with IndexFolder(folder) as ix:
        assert ix.index(12).d == 16 and ix.index(32).d == 32  # 12 bits padded to 2 bytes
        for d in (12, 32):
            sb, sq = np.where(xb[:, :d] > 0, 1.0, -1.0), np.where(xq[:, :d] > 0, 1.0, -1.0)
            S = sq @ sb.T / d  # sign agreement = 1 - 2 hamming / d, (nq, N)
            D, I = search_index(ix, xq, k=10, dim=d)
            # exact up to ties: the scores are the true top 10, and each id has the score given
            np.testing.assert_allclose(D, -np.sort(-S, axis=1)[:, :10], atol=1e-6)
            np.testing.assert_allclose(np.take_along_axis(S, I, axis=1), D, atol=1e-6)
            assert all(len(set(row)) == 10 for row in I.tolist())
        # a binary shortlist re-ranked with the stored float vectors: the whole shortlist gives exact search
        D, I = search_index(ix, xq, k=5, funnel=Funnel(12, 32, shortlist=len(tiny_texts)))
        np.testing.assert_array_equal(I, knn(xq, xb, 5)[1])


def test_quantized_ivfpq_is_refused(tmp_path, model, tiny_texts):
    with pytest.raises(DistillError, match="--precision int8 works with --index-type flat or hnsw"):
        build_index(model, tiny_texts, tmp_path / "ix", index_type="ivfpq", precision="int8")
    assert not (tmp_path / "ix").exists()


def test_hnsw_int8_and_binary_indexes_record_recall(tmp_path, model, tiny_texts):
    for precision in ("int8", "binary"):
        m = build_index(model, tiny_texts, tmp_path / precision, dims=[32], index_type="hnsw", precision=precision)
        assert m.index_type == "hnsw" and m.index_params["hnsw_m"] == 32
        assert 0.0 < m.recall_at_10["32"] <= 1.0
        [res] = query_index(tmp_path / precision, [tiny_texts[7]], model, k=3)
        assert res["hits"][0]["text"] == tiny_texts[7]


def test_compare_precisions_rows(tiny_texts):
    from distill.index import compare_precisions

    x_t = FakeModel(dim=32).encode(tiny_texts)
    x_s = FakeModel(dim=32, seed=3).encode(tiny_texts)
    rows = compare_precisions(x_t, x_s, [8, 32], ["float32", "int8", "binary"], k=10)
    got = {(r["dim"], r["precision"]): r for r in rows}
    assert [(r["dim"], r["precision"], r["bytes_per_vector"]) for r in rows] == [
        (8, "float32", 32), (8, "int8", 8), (8, "binary", 1), (32, "float32", 128), (32, "int8", 32),
        (32, "binary", 4)]
    from distill.index import neighbour_overlap

    assert got[(32, "float32")]["overlap"] == neighbour_overlap(x_t, x_s, 10)
    assert abs(got[(32, "int8")]["overlap"] - got[(32, "float32")]["overlap"]) < 0.05
    assert got[(32, "binary")]["overlap"] < got[(32, "int8")]["overlap"]
    same = {(r["dim"], r["precision"]): r["overlap"] for r in compare_precisions(x_t, x_t, [32], k=10)}
    assert same[(32, "float32")] == 1.0 and 0.9 < same[(32, "int8")] < 1.0 and same[(32, "binary")] < 0.9


def test_cli_build_metric_precision_and_compare_precision(tmp_path, tiny_bert_dir, tiny_corpus, tiny_texts):
    from distill.models import load_model

    out = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                            "--dims", "16,32", "--out", str(out), "--metric", "dot"])
    assert r.exit_code == 0, r.output
    assert "200 texts, flat index at dims 16,32 (dot, float32)" in r.output
    r = runner.invoke(app, ["query", tiny_texts[3], "--index", str(out), "-k", "3", "--json", "--dim", "16"])
    [res] = json.loads(r.output)
    raw = load_model(tiny_bert_dir).embed_texts(tiny_texts + [tiny_texts[3]])[:, :16]  # the teacher's raw vectors
    D_true, I_true = brute_force(raw[-1:], raw[:-1], 3)
    assert [h["id"] for h in res["hits"]] == I_true[0].tolist()
    np.testing.assert_allclose([h["score"] for h in res["hits"]], D_true[0], rtol=1e-4)
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                            "--dims", "16,32", "--out", str(tmp_path / "b"), "--precision", "binary"])
    assert r.exit_code == 0 and "(cos, binary)" in r.output and "recall@10" in r.output, r.output
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                            "--out", str(tmp_path / "x"), "--precision", "int4"])
    assert r.exit_code == 2 and "int4" in r.output
    r = runner.invoke(app, ["compare", "--teacher", str(tiny_bert_dir), "--student", str(tiny_bert_dir), "--corpus",
                            str(tiny_corpus), "-k", "5", "--dims", "8,32", "--limit", "120", "--pairs", "500",
                            "--precision", "float32,binary", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["precisions"]
    assert [(x["dim"], x["precision"], x["bytes_per_vector"]) for x in rows] == [
        (8, "float32", 32), (8, "binary", 1), (32, "float32", 128), (32, "binary", 4)]
    assert rows[2]["overlap"] == 1.0 and rows[3]["overlap"] < 1.0
    r = runner.invoke(app, ["compare", "--teacher", str(tiny_bert_dir), "--student", str(tiny_bert_dir), "--corpus",
                            str(tiny_corpus), "-k", "5", "--dims", "32", "--limit", "120", "--pairs", "500",
                            "--precision", "int8"])
    assert r.exit_code == 0 and "bytes/vector" in r.output, r.output
    r = runner.invoke(app, ["compare", "--teacher", "x", "--student", "y", "--corpus", str(tiny_corpus),
                            "--precision", "fp16"])
    assert r.exit_code == 2 and "--precision takes a comma list of float32, int8, binary" in r.output
