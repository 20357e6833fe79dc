"""The embedding service: httpx against create_app, and the official openai client against a real uvicorn."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import distill
from distill.index import build_index
from distill.index.errors import IndexMismatchError
from distill.service import ServiceSettings, create_app
from distill.service.embedder import Batcher
from distill.students import StaticStudent, StudentConfig

WORDS = ("the cat a dog my neighbour old man young girl teacher our team river small bird engineer her brother "
         "city council sees likes paints follows builds remembers describes crosses finds answers visits sells red "
         "house long bridge an apple quiet garden three letters market strange noise new machine empty room winter "
         "sky blue boat map today in morning before storm with great care near station for first time again and "
         "without word after dinner slowly happily").split()
TEXTS = ["the cat sees a red house", "a dog likes the long bridge", "my neighbour paints an apple today",
         "the old man follows the quiet garden", "a young girl builds three letters in the morning",
         "the teacher remembers the market", "our team describes a strange noise", "the river crosses the new machine",
         "a small bird finds an empty room", "the engineer answers the winter sky", "her brother visits a blue boat",
         "the city council sells the map again and again"]


def make_student(folder, seed: int = 0, dim: int = 64, dims=(16, 32, 64)):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[UNK]": 0}
    for w in dict.fromkeys(WORDS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    s = StaticStudent(StudentConfig(kind="static", vocab_size=tok.get_vocab_size(), dim=dim, dims=list(dims)), tok)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        s.embedding.copy_(torch.randn(s.embedding.shape, generator=g))
        s.log_weight.copy_(0.3 * torch.randn(s.log_weight.shape, generator=g))
    return s.save(folder)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    return make_student(tmp_path_factory.mktemp("svc") / "tiny")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, student_dir):
    out = tmp_path_factory.mktemp("svc-index") / "index"
    build_index(distill.load(student_dir), TEXTS, out, spec=student_dir)
    return out


@pytest.fixture(scope="module")
def student(student_dir):
    return distill.load(student_dir)


@pytest.fixture(scope="module")
def client(student_dir, index_dir):
    with TestClient(create_app(ServiceSettings(model=student_dir, index=index_dir))) as c:
        yield c


def limited_client(student_dir, **kw) -> TestClient:
    return TestClient(create_app(ServiceSettings(model=student_dir, **kw)))


def assert_openai_error(r: httpx.Response, status: int, match: str = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert match.lower() in err["message"].lower(), err["message"]
    return err


# ---- /v1/embeddings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [16, 32, 64])
def test_embeddings_equal_encode_at_every_nested_size(client, student, dim):
    r = client.post("/v1/embeddings", json={"input": TEXTS[:5], "model": "tiny", "dimensions": dim})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [d["index"] for d in body["data"]] == list(range(5))
    x = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert x.shape == (5, dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x, student.encode(TEXTS[:5], dim=dim), atol=1e-6)
    n_tokens = sum(len(s) for s in student.tokenize(TEXTS[:5]))
    assert body["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "truncated_texts": 0,
                             "truncated_tokens": 0}


def test_default_is_full_width_and_string_input_is_one_text(client, student):
    r = client.post("/v1/embeddings", json={"input": TEXTS[0]})
    assert r.status_code == 200
    [item] = r.json()["data"]
    np.testing.assert_allclose(item["embedding"], student.encode([TEXTS[0]])[0], atol=1e-6)


def test_base64_decodes_to_the_float_vectors(client):
    floats = client.post("/v1/embeddings", json={"input": TEXTS, "dimensions": 32}).json()["data"]
    b64 = client.post("/v1/embeddings", json={"input": TEXTS, "dimensions": 32, "encoding_format": "base64"})
    assert b64.status_code == 200
    for f, b in zip(floats, b64.json()["data"]):
        assert isinstance(b["embedding"], str)
        v = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(v, np.asarray(f["embedding"], dtype=np.float32))


def test_token_id_inputs_equal_text_inputs(client, student):
    ids = student.tokenize(TEXTS[:3])
    many = client.post("/v1/embeddings", json={"input": ids, "dimensions": 16}).json()
    np.testing.assert_allclose([d["embedding"] for d in many["data"]], student.encode(TEXTS[:3], dim=16), atol=1e-6)
    assert many["usage"]["prompt_tokens"] == sum(map(len, ids))
    one = client.post("/v1/embeddings", json={"input": ids[1], "dimensions": 16}).json()
    np.testing.assert_allclose(one["data"][0]["embedding"], many["data"][1]["embedding"], atol=1e-7)


@pytest.mark.parametrize("dim", [0, 8, 48, 65, 1000, -16])
def test_dimensions_outside_the_nested_sizes_is_a_400_naming_them(client, dim):
    err = assert_openai_error(client.post("/v1/embeddings", json={"input": "a cat", "dimensions": dim}), 400,
                              "must be one of 16, 32, 64")
    assert err["param"] == "dimensions" and err["code"] == "invalid_dimensions"


def test_unknown_model_is_a_404(client):
    assert_openai_error(client.post("/v1/embeddings", json={"input": "a cat", "model": "text-embedding-3-small"}),
                        404, "serves 'tiny'")


@pytest.mark.parametrize("payload, status, match", [
    ({"input": []}, 422, "empty"),
    ({"input": ""}, 422, "empty string"),
    ({"input": ["a cat", ""]}, 422, "input[1]"),
    ({"input": [[]]}, 422, "empty token list"),
    ({"input": 5}, 422, "must be a string"),
    ({"input": ["a cat", 1]}, 422, "must be a string"),
    ({"input": [1.5, 2]}, 422, "must be a string"),
    ({"input": None}, 422, "must be a string"),
    ({"input": "a cat", "dimensions": "16"}, 422, "dimensions"),
    ({"input": "a cat", "dimensions": 16.0}, 422, "dimensions"),
    ({"input": "a cat", "encoding_format": "hex"}, 422, "encoding_format"),
    ({"dimensions": 16}, 422, "input"),
    ([1, 2, 3], 422, "json object"),
    ({"input": [[1, 2, 10_000]]}, 422, "token ids outside"),
    ({"input": [-1]}, 422, "token ids outside"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client, payload, status, match):
    assert_openai_error(client.post("/v1/embeddings", json=payload), status, match)
    assert client.post("/v1/embeddings", json={"input": "a cat"}).status_code == 200


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"input": "a cat",}', b"\xff\xfe"])
def test_malformed_json_is_a_400(client, raw):
    r = client.post("/v1/embeddings", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "not valid json")
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("path, raw, param", [
    ("/v1/embeddings", b'{"input": "a cat \\ud800"}', "input"),
    ("/v1/embeddings", b'{"input": ["a cat", "\\udfff dog"]}', "input"),
    ("/v1/search", b'{"query": "\\ud83d a cat"}', "queries"),
    ("/v1/search", b'{"queries": ["a cat", "\\udc00"]}', "queries"),
])
def test_a_text_with_a_lone_surrogate_is_a_422_not_a_500(client, path, raw, param):
    """JSON may escape half of a UTF-16 pair (``"\\ud800"``); Python keeps it, the tokenizer cannot take it.
    Found while building bench/soak.py's malformed requests: it was an unhandled TypeError, a 500."""
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    err = assert_openai_error(r, 422, "lone surrogate")
    assert err["param"] == param and err["code"] == "invalid_text"
    assert client.post(path, json={"input": "a cat", "query": "a cat"}).status_code == 200


def test_fuzzed_requests_from_the_openapi_schema_get_no_5xx(student_dir, index_dir):
    """Bodies generated from the service's own /openapi.json by schemathesis (valid and schema-breaking)
    and texts of any Unicode category (lone surrogates included), in process: every answer is a 2xx or an
    OpenAI-shaped 4xx. The real-server version under load is bench/soak.py."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app = create_app(ServiceSettings(model=student_dir, index=index_dir))
    schema = schemathesis.openapi.from_dict(app.openapi())

    def from_case(case) -> tuple[str, str, bytes | None, dict]:
        kw = case.as_transport_kwargs(base_url="")
        body = json.dumps(kw["json"]).encode() if "json" in kw else kw.get("data")
        return kw["method"], kw["url"], body, {k: v for k, v in kw["headers"].items() if k.lower() == "content-type"}

    # lone surrogates are 0.2% of the code points: draw them as often as all the others together
    texts = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), min_size=1, max_size=12)
    requests = st.one_of(
        st.one_of(schema.as_strategy(mode) for mode in schemathesis.GenerationMode).map(from_case),
        st.tuples(st.just("POST"), st.sampled_from(["/v1/embeddings", "/v1/search"]),
                  st.lists(texts, min_size=1, max_size=3).map(lambda t: json.dumps({"input": t, "queries": t})
                                                              .encode()),
                  st.just({"content-type": "application/json"})))
    statuses = collections.Counter()

    with TestClient(app, raise_server_exceptions=False) as c:
        @settings(max_examples=100, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(requests)
        def fuzz(request):
            method, path, body, headers = request
            r = c.request(method, path, content=body, headers=headers)
            statuses[r.status_code] += 1
            assert r.status_code < 500, f"{method} {path} {body!r:.300} -> {r.status_code} {r.text:.300}"
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}

        fuzz()
    assert statuses[200] > 0 and sum(n for code, n in statuses.items() if 400 <= code < 500) > 0, statuses


# ---- limits and the API key -----------------------------------------------------------------------


def test_limits(student_dir):
    with limited_client(student_dir, max_inputs=3, max_input_chars=20, max_input_tokens=4,
                        max_body_bytes=300) as c:
        assert c.post("/v1/embeddings", json={"input": ["a cat"] * 3}).status_code == 200
        assert_openai_error(c.post("/v1/embeddings", json={"input": ["a cat"] * 4}), 413, "too many inputs")
        assert_openai_error(c.post("/v1/embeddings", json={"input": [[1]] * 4}), 413, "too many inputs")
        assert c.post("/v1/embeddings", json={"input": "x" * 20}).status_code == 200
        assert_openai_error(c.post("/v1/embeddings", json={"input": ["a", "x" * 21]}), 422, "21 characters")
        assert_openai_error(c.post("/v1/embeddings", json={"input": [[1, 2, 3, 4, 5]]}), 422, "5 tokens")
        big = json.dumps({"input": "a", "user": "u" * 300}).encode()
        assert_openai_error(c.post("/v1/embeddings", content=big), 413, "larger than 300 bytes")

        def chunks():  # no Content-Length: the limit is counted while reading
            yield big[:100]
            yield big[100:]

        assert_openai_error(c.post("/v1/embeddings", content=chunks()), 413, "larger than 300 bytes")
        assert c.post("/v1/embeddings", json={"input": "a cat"}).status_code == 200


def test_api_key(student_dir):
    with limited_client(student_dir, api_key="s3cret") as c:
        err = assert_openai_error(c.post("/v1/embeddings", json={"input": "a cat"}), 401, "missing api key")
        assert err["code"] == "invalid_api_key"
        bad = {"Authorization": "Bearer nope"}
        assert_openai_error(c.post("/v1/embeddings", json={"input": "a cat"}, headers=bad), 401, "invalid api key")
        assert_openai_error(c.post("/v1/embeddings", content=b"{", headers=bad), 401, "invalid api key")
        assert_openai_error(c.get("/v1/models"), 401, "missing")
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/embeddings", json={"input": "a cat"}, headers=good).status_code == 200
        assert c.get("/v1/models", headers=good).status_code == 200
        assert c.get("/health").status_code == 200  # probes and scrapers need no key
        assert c.get("/metrics").status_code == 200
        for page in ("/docs", "/redoc", "/openapi.json"):  # the API's description is behind the key too
            assert_openai_error(c.get(page), 401, "missing")
            assert c.get(page, headers=good).status_code == 200


# ---- search, health, models, metrics ----------------------------------------------------------------


def test_search_finds_the_planted_text_at_each_dim(client):
    for dim in (16, 32, 64):
        r = client.post("/v1/search", json={"queries": [TEXTS[3], TEXTS[7]], "k": 3, "dimensions": dim})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dimensions"] == dim
        for q, want in zip(body["data"], (3, 7)):
            assert len(q["hits"]) == 3
            assert q["hits"][0]["id"] == want and q["hits"][0]["text"] == TEXTS[want]
            assert q["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
            assert [h["rank"] for h in q["hits"]] == [1, 2, 3]
    one = client.post("/v1/search", json={"query": TEXTS[0], "k": 100}).json()
    assert one["dimensions"] == 64 and len(one["data"][0]["hits"]) == len(TEXTS)


@pytest.mark.parametrize("payload, status, match", [
    ({"query": "a cat", "dimensions": 48}, 400, "one of 16, 32, 64"),
    ({"query": "a cat", "k": 0}, 422, "k must be between 1 and 100"),
    ({"query": "a cat", "k": 101}, 422, "k must be"),
    ({}, 422, "exactly one"),
    ({"query": "a", "queries": ["b"]}, 422, "exactly one"),
    ({"queries": []}, 422, "empty"),
    ({"query": 3}, 422, "query"),
])
def test_search_errors(client, payload, status, match):
    assert_openai_error(client.post("/v1/search", json=payload), status, match)


def test_search_without_index_is_a_404(student_dir):
    with limited_client(student_dir) as c:
        assert_openai_error(c.post("/v1/search", json={"query": "a cat"}), 404, "no index")


def test_an_index_of_another_model_is_refused(tmp_path, index_dir):
    other = make_student(tmp_path / "other", seed=1)
    with pytest.raises(IndexMismatchError, match="built with"):
        with TestClient(create_app(ServiceSettings(model=other, index=index_dir))):
            pass


def test_health_models_and_metrics(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["dims"] == [16, 32, 64] and h["index"]["count"] == len(TEXTS)
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["data"][0]["dimensions"] == [16, 32, 64]
    assert models["data"][0]["max_input_tokens"] is None  # a static student takes texts of any length
    long_text = " ".join(TEXTS * 30)
    r = client.post("/v1/embeddings", json={"input": [long_text], "truncate": False, "long": "chunk"})
    assert r.status_code == 200 and r.json()["usage"]["truncated_texts"] == 0  # no limit: no effect
    client.post("/v1/embeddings", json={"input": TEXTS})
    client.post("/v1/embeddings", json={"input": 5})
    text = client.get("/metrics").text
    assert 'distill_requests_total{endpoint="/v1/embeddings",status="200"}' in text
    assert 'distill_requests_total{endpoint="/v1/embeddings",status="422"}' in text
    assert "distill_request_seconds_bucket" in text and "distill_batch_size_bucket" in text
    assert "distill_texts_total" in text and "distill_texts_per_second" in text
    assert client.get("/nope").status_code == 404


# ---- dynamic batching -------------------------------------------------------------------------------


def _run_batcher(merge: bool, sizes: list[int], max_batch: int = 8, fail_first: bool = False):
    calls: list[int] = []

    def core(seqs):
        calls.append(len(seqs))
        if fail_first and len(calls) == 1:
            raise RuntimeError("boom")
        return np.array([[s[0], len(s)] for s in seqs], dtype=np.float32)

    async def main():
        b = Batcher(core, max_batch=max_batch, max_wait_s=0.2, merge=merge)
        b.start()
        jobs = [[[i * 100 + j] * (j + 1) for j in range(n)] for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(b.embed(j) for j in jobs), return_exceptions=True)
        await b.stop()
        return jobs, results

    jobs, results = asyncio.run(main())
    return calls, jobs, results


def test_batcher_merges_concurrent_requests_and_routes_results_back():
    calls, jobs, results = _run_batcher(True, [1, 2, 3, 1, 4])
    assert calls == [7, 4]  # the 4-text job did not fit the first pass of at most 8
    for job, out in zip(jobs, results):
        np.testing.assert_array_equal(out[:, 0], [s[0] for s in job])
        np.testing.assert_array_equal(out[:, 1], [len(s) for s in job])


def test_batcher_without_merging_runs_one_request_per_pass():
    calls, _, _ = _run_batcher(False, [1, 2, 3, 1, 4])
    assert calls == [1, 2, 3, 1, 4]


def test_a_failed_forward_pass_fails_its_requests_only():
    calls, _, results = _run_batcher(False, [1, 2, 3], fail_first=True)
    assert isinstance(results[0], RuntimeError) and results[1].shape == (2, 2) and results[2].shape == (3, 2)


def test_a_full_queue_and_a_slow_pass_are_503_with_retry_after():
    import threading

    release = threading.Event()

    def slow_core(seqs):
        release.wait(5)
        return np.zeros((len(seqs), 2), dtype=np.float32)

    async def main():
        from distill.service.embedder import Overloaded

        b = Batcher(slow_core, max_batch=4, max_wait_s=0.0, max_pending=6, timeout_s=0.3)
        b.start()
        first = asyncio.ensure_future(b.embed([[1]] * 4))  # in the forward pass
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.embed([[2]] * 2))  # queued: 6 texts held
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="holds 6 texts already"):
            await b.embed([[3]])
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert all(isinstance(o, Overloaded) and "waited more than 0.3 s" in str(o) for o in outcomes)
        assert b.pending == 0  # nothing held for requests that gave up
        release.set()
        assert (await b.embed([[4]])).shape == (1, 2)  # and the server goes on
        await b.stop()

    asyncio.run(main())


def test_overload_reaches_the_client_as_503(student_dir, monkeypatch):
    from distill.service.embedder import Overloaded

    async def refuse(self, seqs):
        raise Overloaded("the server holds 16384 texts already (at most 16384); retry shortly")

    monkeypatch.setattr(Batcher, "embed", refuse)
    with limited_client(student_dir) as c:
        r = c.post("/v1/embeddings", json={"input": "a cat"})
        err = assert_openai_error(r, 503, "retry shortly")
        assert err["code"] == "overloaded" and r.headers["retry-after"] == "1"


def test_requests_past_max_concurrent_get_a_503_at_once_without_being_read(student_dir, monkeypatch):
    """Found by bench/soak.py: at 3x capacity the batcher's limits refused nothing (every request was parsed
    and tokenized first; the backlog grew in the sockets, p99 70 s). Now the middleware refuses embeddings and
    search requests past ``max_concurrent`` before reading them; probes stay open."""
    from distill.service.embedder import Embedder

    release = threading.Event()
    real_core = Embedder.core

    def held_core(self, seqs):
        release.wait(10)
        return real_core(self, seqs)

    monkeypatch.setattr(Embedder, "core", held_core)
    app = create_app(ServiceSettings(model=student_dir, max_concurrent=2, max_wait_ms=0))

    def in_flight() -> float:
        return app.state.metrics.in_flight.collect()[0].samples[0].value

    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                held = [asyncio.ensure_future(c.post("/v1/embeddings", json={"input": t})) for t in TEXTS[:2]]
                while in_flight() < 2:
                    await asyncio.sleep(0.01)
                start = time.perf_counter()
                refused = await c.post("/v1/embeddings", content=b"{")  # refused unread: not a 400
                search = await c.post("/v1/search", json={"query": "a cat"})  # refused before its 404 (no index)
                took = time.perf_counter() - start
                probes = [await c.get(p) for p in ("/health", "/v1/models", "/metrics")]
                release.set()
                done = await asyncio.gather(*held)
                after = await c.post("/v1/embeddings", json={"input": "a cat"})
        return refused, search, took, probes, done, after

    refused, search, took, probes, done, after = asyncio.run(main())
    for r in (refused, search):
        err = assert_openai_error(r, 503, "handling 2 requests already, the oldest for")
        assert err["code"] == "overloaded" and r.headers["retry-after"] == "1"
    assert took < 2.0  # at once, not after request_timeout_s
    assert [p.status_code for p in probes] == [200, 200, 200]
    assert [r.status_code for r in done] == [200, 200] and after.status_code == 200
    assert in_flight() == 0


def test_concurrent_requests_share_forward_passes_through_the_app(student_dir, student):
    app = create_app(ServiceSettings(model=student_dir, max_wait_ms=100))

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                rs = await asyncio.gather(*(c.post("/v1/embeddings", json={"input": t, "dimensions": 32})
                                            for t in TEXTS))
        return rs

    rs = asyncio.run(main())
    x = np.array([r.json()["data"][0]["embedding"] for r in rs])
    np.testing.assert_allclose(x, student.encode(TEXTS, dim=32), atol=1e-6)
    passes = app.state.metrics.batch_size.collect()[0]
    count = next(s.value for s in passes.samples if s.name.endswith("_count"))
    assert count < len(TEXTS)  # 12 requests, fewer forward passes


# ---- settings and the CLI ---------------------------------------------------------------------------


def test_settings_come_from_distill_env_and_arguments_win(monkeypatch, student_dir):
    monkeypatch.setenv("DISTILL_MODEL", str(student_dir))
    monkeypatch.setenv("DISTILL_MAX_BATCH", "17")
    monkeypatch.setenv("DISTILL_BATCHING", "false")
    monkeypatch.setenv("DISTILL_API_KEY", "zq-secret-zq")
    s = ServiceSettings(max_batch=5)
    assert s.model == student_dir and s.max_batch == 5 and s.batching is False
    assert s.api_key.get_secret_value() == "zq-secret-zq" and "zq-secret-zq" not in repr(s)
    assert s.served_name == "tiny"


def test_serve_cli_errors_are_one_line(monkeypatch, tmp_path, index_dir):
    from typer.testing import CliRunner

    from distill.cli import app

    monkeypatch.delenv("DISTILL_MODEL", raising=False)
    r = CliRunner().invoke(app, ["serve"])
    assert r.exit_code == 2 and "pass --model" in r.output
    r = CliRunner().invoke(app, ["serve", "--model", str(tmp_path)])
    assert r.exit_code == 2 and "not a distill student folder" in r.output
    other = make_student(tmp_path / "other", seed=2)
    r = CliRunner().invoke(app, ["serve", "--model", str(other), "--index", str(index_dir)])
    assert r.exit_code == 2 and "built with" in r.output


# ---- the official openai client against a real server -------------------------------------------------


@pytest.fixture(scope="module")
def server(student_dir, index_dir):
    """A real uvicorn server on 127.0.0.1 (a free port), in a thread, stopped at the end."""
    import uvicorn

    settings = ServiceSettings(model=student_dir, index=index_dir, api_key="test-key", access_log=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()
    assert not thread.is_alive()


def test_openai_client_gets_the_students_vectors(server, student_dir):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="test-key", max_retries=0, timeout=10)
    want = distill.load(student_dir).encode(TEXTS, dim=64)
    r = client.embeddings.create(model="tiny", input=TEXTS, dimensions=64)  # the client asks for base64
    x = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert x.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x, want, atol=1e-6)
    assert r.usage.prompt_tokens == sum(len(t.split()) for t in TEXTS)
    floats = client.embeddings.create(model="tiny", input=TEXTS[0], dimensions=16, encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, distill.load(student_dir).encode(TEXTS[0], dim=16)[0],
                               atol=1e-6)
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_openai_client_errors(server):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="test-key", max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError, match="must be one of 16, 32, 64"):
        client.embeddings.create(model="tiny", input="a cat", dimensions=48)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="a cat")
    with pytest.raises(openai.UnprocessableEntityError, match="empty"):
        client.embeddings.create(model="tiny", input=[])
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        wrong.embeddings.create(model="tiny", input="a cat")
    r = httpx.post(f"{server}/v1/search", json={"query": TEXTS[5], "k": 2},
                   headers={"Authorization": "Bearer test-key"}, timeout=10)
    assert r.status_code == 200 and r.json()["data"][0]["hits"][0]["id"] == 5
    assert httpx.get(f"{server}/health", timeout=10).json()["status"] == "ok"


def test_transformer_student_cuts_long_token_id_inputs_to_its_max_length(tmp_path):
    from distill.students import TransformerStudent
    from distill.students.base import load_tokenizer

    tok = load_tokenizer(make_student(tmp_path / "static"))
    cfg = StudentConfig(kind="transformer", vocab_size=tok.get_vocab_size(), dim=32, dims=[16, 32], width=32,
                        n_layers=1, n_heads=2, max_length=8)
    folder = TransformerStudent(cfg, tok).save(tmp_path / "tr")
    ids = list(range(1, 20))  # 19 ids: past the 8 positions the student has
    with limited_client(folder) as c:
        r = c.post("/v1/embeddings", json={"input": [ids, ids[:8]], "dimensions": 16})
        assert r.status_code == 200, r.text
        a, b = (np.array(d["embedding"]) for d in r.json()["data"])
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert r.json()["usage"]["prompt_tokens"] == 16  # the tokens actually embedded
        assert r.json()["usage"]["truncated_texts"] == 1 and r.json()["usage"]["truncated_tokens"] == 11
        texts = TEXTS + ["a cat", "the city council sells the map again and again and again with great care"]
        r = c.post("/v1/embeddings", json={"input": texts, "dimensions": 32})
        want = distill.load(folder).encode(texts, dim=32)
        np.testing.assert_allclose([d["embedding"] for d in r.json()["data"]], want, atol=1e-5)


def test_forward_chunks_cover_every_row_once_within_the_token_budget(tmp_path):
    from distill.service.embedder import Embedder
    from distill.students import TransformerStudent
    from distill.students.base import load_tokenizer

    tok = load_tokenizer(make_student(tmp_path / "static"))
    padded = TransformerStudent(StudentConfig(kind="transformer", vocab_size=tok.get_vocab_size(), dim=4, dims=[4],
                                              width=8, n_layers=1, n_heads=2, max_length=64), tok)
    rng = np.random.default_rng(0)
    seqs = [[1] * int(n) for n in rng.integers(1, 60, 300)]
    chunks = Embedder(padded, max_batch=16, max_batch_tokens=128).chunks(seqs)
    assert sorted(i for c in chunks for i in c) == list(range(300))
    for c in chunks:
        widest = max(len(seqs[i]) for i in c)
        assert len(c) <= 16 and (len(c) == 1 or len(c) * widest <= 128)


def test_workers_serve_the_same_vectors_from_several_processes(student_dir, index_dir, tmp_path):
    """`distill serve --workers 2`: two processes share the port, each loads the student and the index from the
    settings the parent hands down (as DISTILL_* variables: the API key among them)."""
    import os
    import subprocess
    import sys

    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DISTILL_API_KEY": "k", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "--model", str(student_dir), "--index",
                             str(index_dir), "--port", str(port), "--workers", "2", "--no-access-log"], env=env,
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("wb"))
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the workers did not start"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200 and len(
                        psutil.Process(proc.pid).children()) >= 2:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        want = distill.load(student_dir).encode(TEXTS, dim=32)
        with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
            for _ in range(8):  # new connections: the kernel spreads them over the workers
                with httpx.Client(base_url=base, headers=auth, timeout=30) as fresh:
                    r = fresh.post("/v1/embeddings", json={"input": TEXTS, "dimensions": 32})
                    assert r.status_code == 200, r.text
                    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
                    np.testing.assert_allclose(got, want, atol=1e-6)
            assert c.post("/v1/search", json={"query": TEXTS[0], "k": 1}).json()["data"][0]["hits"][0]["text"] \
                == TEXTS[0]
            assert httpx.post(f"{base}/v1/embeddings", json={"input": "a"}).status_code == 401  # the key came along
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_a_static_students_texts_take_its_word_cache_in_the_batcher(tiny_bert_dir, tmp_path):
    """Static texts reach the batcher's core untokenized and go through the word cache there: merged with
    non-ASCII texts (the tokenizer path) and token-id inputs, each gets ``encode``'s vector and its token count."""
    import torch
    from tokenizers import Tokenizer

    from distill.service.embedder import Embedder
    from distill.students import StaticStudent, StudentConfig

    tok = Tokenizer.from_file(str(tiny_bert_dir / "tokenizer.json"))
    torch.manual_seed(0)
    s = StaticStudent(StudentConfig(kind="static", vocab_size=tok.get_vocab_size(), dim=16, dims=[8, 16]), tok)
    with torch.no_grad():
        s.embedding.normal_()
        s.log_weight.normal_(std=0.5)
    folder = s.save(tmp_path / "bert-static")
    student = distill.load(folder)
    texts = ["the cat sees a red house", "the wömbat, naïve café", "A DOG likes the long bridge!"]
    ids = student.tokenize(["my neighbour paints an apple"])[0]
    e = Embedder(student)
    plan = e.plan_texts(texts)
    assert plan.seqs == texts  # not tokenized in the request
    raw, tokens = e.core([texts[0], ids, texts[1], texts[2]])
    want = np.concatenate([student.encode(texts[:1]), Embedder.post(student.embed_ids([ids]), 16),
                           student.encode(texts[1:])])
    np.testing.assert_allclose(Embedder.post(raw, 16), want, atol=1e-6)
    assert tokens.tolist() == [len(student.tokenize([texts[0]])[0]), len(ids), *map(len, student.tokenize(texts[1:]))]
    assert student._words is not None and "cat" in student._words.index  # the cache did the ASCII texts
    with TestClient(create_app(ServiceSettings(model=folder))) as c:
        r = c.post("/v1/embeddings", json={"input": texts, "encoding_format": "float"})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([d["embedding"] for d in r.json()["data"]], student.encode(texts), atol=1e-6)
        assert r.json()["usage"]["prompt_tokens"] == sum(map(len, student.tokenize(texts)))
