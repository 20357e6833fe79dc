"""The Qdrant backend in Qdrant's embedded local mode (no server here): build, query and the funnel against
FAISS flat and a brute-force reference, add, kill-and-rerun of an ingest (SIGKILL in a subprocess at the
crash points of distill/faults.py), `distill index info`, the service, and the errors that say what to do.
"""
# ruff: noqa: E741

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_index_fakes import FakeModel
from typer.testing import CliRunner

from distill.cli import app
from distill.index import Funnel, build_index, search_index
from distill.index.errors import IndexMismatchError
from distill.index.qdrant import LOCAL_DIR, PENDING, QdrantError, add_qdrant, build_qdrant, connect
from distill.index.query import describe_index, open_index, query_index
from distill.index.search import knn, prefix

pytest.importorskip("qdrant_client")

TESTS = Path(__file__).parent
ROOT = TESTS.parent
N = 300  # texts in the main index: local mode commits each point to SQLite, a few ms each

# `distill index ARGS` as the CLI runs it, with the fake model in place of load_model: argv = [tests dir, args...]
DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
import distill.models
from test_index_fakes import FakeModel
distill.models.load_model = lambda spec, **_: FakeModel()
from distill.index_cli import index_app
index_app(sys.argv[2:], prog_name="distill index")
"""


SLOW_COMMITS = """
import time
from qdrant_client.local.persistence import CollectionPersistence
_persist = CollectionPersistence.persist
def _slow(self, point):
    time.sleep(0.02)
    _persist(self, point)
CollectionPersistence.persist = _slow
"""


def overlap(I: np.ndarray, J: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, J)]))


def run_killed(args: list[str], fault: str) -> subprocess.CompletedProcess:
    """``distill index ARGS`` (args[0] == "index") in a subprocess, killed with SIGKILL at the crash point ``fault``."""
    assert args[0] == "index"
    env = {**os.environ, "DISTILL_FAULT_AT": fault}
    return subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), *args[1:]], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def cli(monkeypatch, args: list[str], model=None):
    monkeypatch.setattr("distill.models.load_model", lambda spec, **_: model or FakeModel())
    return CliRunner().invoke(app, args)


def points(folder: Path) -> dict[int, tuple[str, int]]:
    """Every point of a local-mode index: id -> (text, row), read straight from the collection."""
    m = json.loads((folder / (folder / "CURRENT").read_text().strip() / "manifest.json").read_text()) if (
        folder / "CURRENT").is_file() else {"collection": json.loads((folder / PENDING).read_text())["collection"]}
    client = connect(folder, None)
    try:
        out, offset = {}, None
        while True:
            got, offset = client.scroll(m["collection"], limit=1000, offset=offset, with_payload=True)
            for p in got:
                assert int(p.id) not in out
                out[int(p.id)] = (p.payload["text"], p.payload["row"])
            if offset is None:
                return out
    finally:
        client.close()


@pytest.fixture(scope="module")
def corpus():
    from conftest import synthetic_sentences

    return synthetic_sentences(N + 60, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):
    """A Qdrant index and a FAISS flat one of the same N texts (dims 8, 16, 32), and queries."""
    root = tmp_path_factory.mktemp("qdrant")
    model = FakeModel()
    qd, fa = root / "qd", root / "fa"
    build_qdrant(model, corpus[:N], qd, spec="fake")
    build_index(model, corpus[:N], fa, spec="fake", index_type="flat")
    xq = model.encode(corpus[N:N + 50] + ["a dog remembers the winter sky"])
    return {"root": root, "qd": qd, "fa": fa, "xq": xq, "model": model}


def test_search_at_every_prefix_size_agrees_with_faiss_flat(built):
    with open_index(built["qd"]) as q, open_index(built["fa"]) as f:
        assert q.manifest.backend == "qdrant" and f.manifest.backend == "faiss"
        for d in (8, 16, 32):
            D, I, texts = q.search(built["xq"], k=10, dim=d)
            D_ref, I_ref = search_index(f, built["xq"], k=10, dim=d)
            assert overlap(I, I_ref) >= 0.98, d
            np.testing.assert_allclose(np.sort(D, axis=1), np.sort(D_ref, axis=1), atol=1e-5)
            docs = f.docs.get(I)
            assert all(texts[int(i)] == docs[int(i)] for i in I.ravel())


def test_funnel_in_qdrant_matches_the_brute_force_funnel_and_keeps_recall(built):
    funnel = Funnel(8, 32, shortlist=60)
    with open_index(built["qd"]) as q, open_index(built["fa"]) as f:
        _, I, _ = q.search(built["xq"], k=10, funnel=funnel)
        _, I_funnel = search_index(f, built["xq"], k=10, funnel=funnel)  # shortlist in FAISS, re-ranked in numpy
        _, I_exact = knn(prefix(built["xq"], 32), prefix(np.asarray(f.xb), 32), 10)  # brute force, full width
    assert overlap(I, I_funnel) >= 0.98
    assert overlap(I, I_exact) >= 0.90


def test_the_funnel_is_one_query_api_request_with_a_prefetch(built, monkeypatch):
    with open_index(built["qd"]) as q:
        calls = []
        real = q._client.query_points
        monkeypatch.setattr(q._client, "query_points", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
        monkeypatch.setattr(q._client, "query_batch_points", lambda *a, **kw: pytest.fail("a second request"))
        _, I, _ = q.search(built["xq"][:1], k=5, funnel=Funnel(8, 32, shortlist=40))
    (kw,) = calls
    assert kw["using"] == "d32" and kw["limit"] == 5 and len(kw["query"]) == 32
    assert kw["prefetch"].using == "d8" and kw["prefetch"].limit == 40 and len(kw["prefetch"].query) == 8
    assert (I >= 0).all()


def test_cli_build_query_info(tmp_path, monkeypatch, corpus):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:80]) + "\n")
    ix = tmp_path / "ix"
    r = cli(monkeypatch, ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs),
                          "--out", str(ix), "--precision", "int8", "--metric", "dot", "--collection", "things"])
    assert r.exit_code == 0 and "80 texts in Qdrant collection things" in r.output, r.output
    assert sorted(p.name for p in ix.iterdir()) == [".lock", "CURRENT", "gen-000001", LOCAL_DIR]
    r = cli(monkeypatch, ["query", corpus[3], "--index", str(ix), "--funnel", "8:32", "--json", "-k", "3"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)[0]["hits"]
    assert hits[0]["text"] == corpus[3] and hits[0]["id"] == 3 and len(hits) == 3
    r = cli(monkeypatch, ["query", corpus[3], "--index", str(ix), "--dim", "16", "--json"])
    scores = [h["score"] for h in json.loads(r.output)[0]["hits"]]  # raw dot products: longer texts score higher
    assert r.exit_code == 0 and len(scores) == 10 and scores == sorted(scores, reverse=True), r.output
    r = cli(monkeypatch, ["index", "info", str(ix), "--json"])
    info = json.loads(r.output)
    assert info["backend"] == "qdrant" and info["count"] == info["points"] == 80 and info["dims"] == [8, 16, 32]
    assert info["metric"] == "dot" and info["precision"] == "int8" and info["generation"] == 1
    assert info["collection"] == "things" and str(ix / LOCAL_DIR) in info["location"]
    assert info["model"].startswith("fake-0") and info["space"] is None
    r = cli(monkeypatch, ["index", "info", str(ix)])
    assert r.exit_code == 0 and "backend:" in r.output and "qdrant" in r.output, r.output
    client = connect(ix, None)  # the collection: one named vector per size, DOT, scalar int8 quantization
    try:
        vectors = client.get_collection("things").config.params.vectors
    finally:
        client.close()
    assert {k: v.size for k, v in vectors.items()} == {"d8": 8, "d16": 16, "d32": 32}
    assert vectors["d32"].distance.value == "Dot" and vectors["d32"].quantization_config.scalar.type.value == "int8"
    # the same build on FAISS, for info's other backend
    r = cli(monkeypatch, ["index", "build", "--model", "fake", "--corpus", str(docs), "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    info = json.loads(cli(monkeypatch, ["index", "info", str(tmp_path / "f"), "--json"]).output)
    assert info["backend"] == "faiss" and info["count"] == 80 and info["generation"] == 1


def test_add_appends_and_a_rerun_adds_nothing(built, tmp_path, monkeypatch, corpus):
    ix = tmp_path / "ix"
    shutil.copytree(built["qd"], ix)
    more = tmp_path / "more.txt"
    more.write_text("\n".join(corpus[N:N + 40]) + "\n")
    r = cli(monkeypatch, ["index", "add", "--corpus", str(more), "--index", str(ix)])
    assert r.exit_code == 0 and f"added ids {N}..{N + 39}, {N + 40} texts in all" in r.output, r.output
    r = cli(monkeypatch, ["index", "add", "--corpus", str(more), "--index", str(ix)])
    assert r.exit_code == 0 and "nothing added" in r.output, r.output
    info = describe_index(ix)
    assert info["count"] == info["points"] == N + 40 and info["generation"] == 2
    assert sorted(p.name for p in ix.glob("gen-*")) == ["gen-000002"]
    hits = query_index(ix, [corpus[N + 7]], FakeModel(), k=1)[0]["hits"]
    assert hits[0]["id"] == N + 7 and hits[0]["text"] == corpus[N + 7]
    got = points(ix)
    assert got == {i: (t, i) for i, t in enumerate(corpus[:N + 40])}


# after the collection is made; after the second upsert; the manifest written, not CURRENT; CURRENT renamed
@pytest.mark.parametrize("fault", ["qdrant:created", "qdrant:batch@2", "qdrant:manifest", "write:after-rename@3"])
def test_a_build_killed_anywhere_and_rerun_holds_every_text_once(fault, tmp_path, monkeypatch, corpus):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:60]) + "\n")
    ix = tmp_path / "ix"
    args = ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs), "--out", str(ix),
            "--upsert-batch", "20"]
    killed = run_killed(args, fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    if fault != "write:after-rename@3":  # the third write is CURRENT: renamed, the build has taken effect
        assert not (ix / "CURRENT").exists()
        r = cli(monkeypatch, ["index", "info", str(ix)])
        assert r.exit_code == 2 and "interrupted Qdrant build" in r.output and "run the same" in r.output
        if fault == "qdrant:batch@2":
            assert len(points(ix)) == 40  # two upserts of 20 made it
    r = cli(monkeypatch, args)  # the same command again
    assert r.exit_code == 0 and "60 texts" in r.output, r.output
    assert points(ix) == {i: (t, i) for i, t in enumerate(corpus[:60])}
    assert not (ix / PENDING).exists() and describe_index(ix)["count"] == 60


def test_a_build_killed_in_the_middle_of_an_upsert_and_rerun_holds_every_text_once(tmp_path, monkeypatch, corpus):
    """Not at a crash point: SIGKILL from outside while local mode commits the points of one upsert one by one."""
    import signal
    import sqlite3

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:200]) + "\n")
    ix = tmp_path / "ix"
    args = ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs), "--out", str(ix),
            "--upsert-batch", "200"]
    env = {**os.environ, "DISTILL_FAULT_AT": ""}
    # each point's commit slowed to 20 ms, so the upsert of 200 lasts about 4 s whatever the machine's load: the
    # kill lands inside it, not after the build has finished (which a loaded CI machine allowed)
    slow = SLOW_COMMITS + DRIVER
    proc = subprocess.Popen([sys.executable, "-c", slow, str(TESTS), *args[1:]], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = ix / LOCAL_DIR / "collection" / "ix" / "storage.sqlite"
    seen, deadline = 0, time.monotonic() + 60
    while seen < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
        try:
            with sqlite3.connect(f"file:{storage}?mode=ro", uri=True, timeout=0.1) as conn:
                seen = conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        except sqlite3.Error:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen >= 5 and not (ix / "CURRENT").exists(), seen
    before = len(points(ix))
    assert before < 200, (seen, before)  # killed inside the one upsert of 200
    r = cli(monkeypatch, args)
    assert r.exit_code == 0 and "200 texts" in r.output, r.output
    assert points(ix) == {i: (t, i) for i, t in enumerate(corpus[:200])}


def test_a_rerun_with_other_texts_is_refused(tmp_path, monkeypatch, corpus):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:40]) + "\n")
    ix = tmp_path / "ix"
    args = ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs), "--out", str(ix),
            "--upsert-batch", "10"]
    assert run_killed(args, "qdrant:batch@1").returncode == -9
    r = cli(monkeypatch, [*args, "--limit", "20"])
    assert r.exit_code == 2 and "interrupted build of other texts" in r.output, r.output
    r = cli(monkeypatch, [*args, "--limit", "20", "--overwrite"])
    assert r.exit_code == 0 and len(points(ix)) == 20, r.output
    r = cli(monkeypatch, args)
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_an_add_killed_is_invisible_then_completed_by_a_rerun(built, tmp_path, monkeypatch, corpus):
    ix = tmp_path / "ix"
    shutil.copytree(built["qd"], ix)
    more = tmp_path / "more.txt"
    more.write_text("\n".join(corpus[N:N + 50]) + "\n")
    args = ["index", "add", "--corpus", str(more), "--index", str(ix), "--upsert-batch", "20"]
    killed = run_killed(args, "qdrant:batch@2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    info = describe_index(ix)
    assert info["count"] == N and info["points"] == N + 40 and info["generation"] == 1  # two upserts, not live
    with open_index(ix) as q:  # readers see only rows below the manifest's count
        _, I, _ = q.search(FakeModel().encode(corpus[N:N + 50]), k=10, dim=32)
        assert I.max() < N
    r = cli(monkeypatch, args)
    assert r.exit_code == 0 and f"added ids {N}..{N + 49}" in r.output, r.output
    assert points(ix) == {i: (t, i) for i, t in enumerate(corpus[:N + 50])}
    # another add after a killed one: what the killed one left is deleted first
    other = tmp_path / "other.txt"
    other.write_text("\n".join(corpus[:5]) + "\n")
    more.write_text("\n".join(corpus[N + 50:N + 60]) + "\n")
    assert run_killed(["index", "add", "--corpus", str(more), "--index", str(ix)], "qdrant:batch@1").returncode == -9
    assert describe_index(ix)["points"] == N + 60
    r = cli(monkeypatch, ["index", "add", "--corpus", str(other), "--index", str(ix)])
    assert r.exit_code == 0 and f"added ids {N + 50}..{N + 54}" in r.output, r.output
    got = points(ix)
    assert len(got) == N + 55 and [got[N + 50 + i][0] for i in range(5)] == corpus[:5]


@pytest.fixture
def fake_server(tmp_path, monkeypatch):
    """``--url`` served by a local-mode store standing in for a server (the code takes its server paths)."""
    import distill.index.qdrant as qd
    import distill.index.qdrant_search as qs

    real, store, urls = qd.connect, tmp_path / "server", []

    def connect(folder, url):
        urls.append(url)
        return real(store, None) if url else real(folder, None)

    monkeypatch.setattr(qd, "connect", connect)
    monkeypatch.setattr(qs, "connect", connect)
    return lambda: real(store, None), urls


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_a_server_index_keeps_only_its_manifest_in_the_folder(fake_server, tmp_path, monkeypatch, corpus):
    server, urls = fake_server
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:40]) + "\n")
    url = "http://qdrant.example:6333"
    args = ["index", "build", "--backend", "qdrant", "--url", url, "--collection", "docs", "--model", "fake",
            "--corpus", str(docs), "--out", str(tmp_path / "ix")]
    r = cli(monkeypatch, args)
    assert r.exit_code == 0 and f"collection docs ({url})" in r.output, r.output
    assert set(urls) == {url}
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == [".lock", "CURRENT", "gen-000001"]
    info = describe_index(tmp_path / "ix")
    assert info["location"] == url and info["collection"] == "docs" and info["points"] == 40
    assert info["index_type"] == "hnsw"
    more = tmp_path / "more.txt"
    more.write_text("\n".join(corpus[40:50]) + "\n")
    r = cli(monkeypatch, ["index", "add", "--corpus", str(more), "--index", str(tmp_path / "ix")])
    assert r.exit_code == 0 and "added ids 40..49, 50 texts in all" in r.output, r.output
    with open_index(tmp_path / "ix") as q:  # a server is always asked for rows below the manifest's count
        assert q._filter is not None
        _, I, texts = q.search(FakeModel().encode([corpus[45]]), k=3, funnel=Funnel(8, 32, shortlist=20))
        assert I[0, 0] == 45 and texts[45] == corpus[45]
    # the collection is on the server: another folder may not take it over, --overwrite replaces it
    other = [*args[:-1], str(tmp_path / "ix2")]
    r = cli(monkeypatch, other)
    assert r.exit_code == 2 and "collection docs already exists" in r.output and "--overwrite" in r.output
    r = cli(monkeypatch, [*args, "--overwrite", "--limit", "7"])
    assert r.exit_code == 0, r.output
    client = server()
    try:
        assert client.count("docs").count == 7
    finally:
        client.close()


def test_the_api_key_comes_from_qdrant_api_key(monkeypatch, tmp_path):
    import qdrant_client

    made = []
    monkeypatch.setattr(qdrant_client, "QdrantClient", lambda **kw: made.append(kw))
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    connect(tmp_path, "https://cluster.example:6333")
    assert made[0]["api_key"] == "s3cret" and made[0]["url"] == "https://cluster.example:6333"
    assert made[0]["timeout"] <= 30


def test_a_server_that_refuses_the_key_says_to_set_it(tmp_path):
    from qdrant_client.http.exceptions import UnexpectedResponse

    from distill.index.qdrant import guarded

    with pytest.raises(QdrantError, match="set QDRANT_API_KEY"):
        with guarded(tmp_path, "http://q:6333"):
            raise UnexpectedResponse(401, "Unauthorized", b"", None)


def test_an_asymmetric_index_records_its_space_and_refuses_other_spaces(tmp_path, corpus):
    class InSpace(FakeModel):
        def __init__(self, name: str, space: str, **kw):
            super().__init__(**kw)
            self.name, self.space = name, space

        def identity(self) -> dict:
            return {**super().identity(), "name": self.name, "space": self.space}

    teacher = InSpace("teacher", "pca-abc")
    m = build_qdrant(teacher, corpus[:30], tmp_path / "ix", space_spec=tmp_path)
    assert m.space == "pca-abc" and m.space_spec == str(tmp_path.resolve())
    student = InSpace("student", "pca-abc")
    assert query_index(tmp_path / "ix", [corpus[4]], student, k=1)[0]["hits"][0]["id"] == 4
    with pytest.raises(IndexMismatchError, match="space pca-abc"):
        query_index(tmp_path / "ix", [corpus[4]], InSpace("other", "pca-zzz"), k=1)
    with pytest.raises(IndexMismatchError):
        add_qdrant(tmp_path / "ix", student, corpus[30:35])  # documents are the teacher's


def test_the_service_searches_a_qdrant_index(tmp_path):
    from fastapi.testclient import TestClient
    from test_service import TEXTS, make_student

    import distill
    from distill.service import ServiceSettings, create_app

    student_dir = make_student(tmp_path / "tiny")
    ix = tmp_path / "ix"
    build_qdrant(distill.load(student_dir), TEXTS, ix, spec=student_dir)
    with TestClient(create_app(ServiceSettings(model=student_dir, index=ix))) as c:
        for dim in (16, 64):
            r = c.post("/v1/search", json={"queries": [TEXTS[5], TEXTS[2]], "k": 3, "dimensions": dim})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert [d["hits"][0]["text"] for d in data] == [TEXTS[5], TEXTS[2]] and len(data[0]["hits"]) == 3
        assert c.get("/health").json()["index"]["backend"] == "qdrant"


def test_a_missing_qdrant_client_names_the_extra(tmp_path, monkeypatch, corpus, built):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:5]) + "\n")
    monkeypatch.setitem(sys.modules, "qdrant_client", None)  # `import qdrant_client` raises ImportError
    r = cli(monkeypatch, ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs),
                          "--out", str(tmp_path / "ix")])
    assert r.exit_code == 2 and 'pip install "distill[qdrant]"' in r.output and len(r.output.splitlines()) == 1
    r = cli(monkeypatch, ["query", "a dog", "--index", str(built["qd"])])
    assert r.exit_code == 2 and 'pip install "distill[qdrant]"' in r.output, r.output


def test_an_unreachable_server_fails_within_seconds_saying_what_to_do(tmp_path, monkeypatch, corpus):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:5]) + "\n")
    start = time.monotonic()
    r = cli(monkeypatch, ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs),
                          "--out", str(tmp_path / "ix"), "--url", "http://127.0.0.1:9"])
    assert time.monotonic() - start < 10
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "cannot reach Qdrant at http://127.0.0.1:9" in r.output and "docker run" in r.output
    # nothing was written: the same command, once a server runs, builds the index; another one is not refused
    assert [p.name for p in (tmp_path / "ix").iterdir()] == [".lock"]
    r = cli(monkeypatch, ["index", "build", "--backend", "qdrant", "--model", "fake", "--corpus", str(docs),
                          "--out", str(tmp_path / "ix")])
    assert r.exit_code == 0 and "5 texts" in r.output, r.output


def test_options_that_do_not_fit_the_backend_are_refused(tmp_path, monkeypatch, corpus, built):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(corpus[:5]) + "\n")
    base = ["index", "build", "--model", "fake", "--corpus", str(docs), "--out", str(tmp_path / "ix")]
    r = cli(monkeypatch, [*base, "--url", "http://localhost:6333"])
    assert r.exit_code == 2 and "--backend qdrant" in r.output
    r = cli(monkeypatch, [*base, "--backend", "qdrant", "--index-type", "hnsw"])
    assert r.exit_code == 2 and "--index-type" in r.output
    r = cli(monkeypatch, ["query", "a dog", "--index", str(built["qd"]), "--dim", "12"])
    assert r.exit_code == 2 and "prefix sizes [8, 16, 32]" in r.output, r.output
    with pytest.raises(IndexMismatchError, match="named vectors"):
        with open_index(built["qd"]) as q:
            q.search(built["xq"], k=5, funnel=Funnel(8, 24))
    with pytest.raises(QdrantError, match="open in another process"):
        with open_index(built["qd"]):
            open_index(built["qd"])
