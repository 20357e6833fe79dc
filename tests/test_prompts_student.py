"""Prompts: the teacher's named prompts reach the student's config, its encode, the service and the exports."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import distill
from distill.errors import DistillError
from distill.service import ServiceSettings, create_app
from distill.students import StaticStudent, StudentConfig, TransformerStudent
from distill.students.base import CONFIG_NAME

WORDS = ("query passage : the cat a dog sees likes red blue house bridge old man young girl builds paints garden "
         "river").split()
TEXTS = ["the cat sees a red house", "a dog likes the blue bridge", "old man paints the garden",
         "a young girl builds a house", "the river"]
PROMPTS = {"query": "query: ", "passage": "passage: "}
LIMIT = 8  # the transformer student's max length: [CLS] + 6 tokens + [SEP]
LONG = "the old man sees a red house and the young girl builds a blue bridge over the river"


def _tokenizer(framed: bool = False) -> Tokenizer:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # "query:" -> "query", ":"
    if framed:
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def _random(student):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every weight random: context and the prompt's tokens change the vectors
        for p in student.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return student.eval()


def _static(prompts: dict | None = None, default: str | None = None) -> StaticStudent:
    cfg = StudentConfig(kind="static", vocab_size=len(WORDS) + 4, dim=16, dims=[8, 16], prompts=dict(prompts or {}),
                        default_prompt_name=default)
    return _random(StaticStudent(cfg, _tokenizer()))


def _transformer(prompts: dict | None = None, default: str | None = None) -> TransformerStudent:
    cfg = StudentConfig(kind="transformer", vocab_size=len(WORDS) + 4, dim=16, dims=[8, 16], width=16, n_layers=1,
                        n_heads=2, max_length=LIMIT, cls_id=2, sep_id=3, prompts=dict(prompts or {}),
                        default_prompt_name=default)
    return _random(TransformerStudent(cfg, _tokenizer(framed=True)))


# ---- encode ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_static, _transformer])
def test_encode_with_a_prompt_name_is_encode_of_the_prefixed_texts(tmp_path, make):
    from distill.students.long import encode as long_encode

    s = make(PROMPTS, "query")
    bare = s.encode(TEXTS, prompt_name="none")
    passage = s.encode(TEXTS, prompt_name="passage")
    np.testing.assert_array_equal(passage, s.encode(["passage: " + t for t in TEXTS], prompt_name="none"))
    np.testing.assert_array_equal(s.encode(TEXTS, prompt="passage: "), passage)  # a prompt text, as given
    np.testing.assert_array_equal(s.encode(TEXTS, prompt=""), bare)
    assert np.abs(passage - bare).max() > 1e-2  # the prompt's tokens change the vectors
    # no prompt_name: the default (the prompt the training texts had), as SentenceTransformer.encode does
    query = s.encode(TEXTS, dim=8, prompt_name="query")
    np.testing.assert_array_equal(s.encode(TEXTS, dim=8), query)
    np.testing.assert_array_equal(query, s.encode(["query: " + t for t in TEXTS], dim=8, prompt_name="none"))
    np.testing.assert_allclose(long_encode(s, TEXTS, prompt_name="passage")[0], passage, atol=1e-6)  # distill embed

    loaded = distill.load(s.save(tmp_path / "s"))  # the prompts survive the folder
    assert loaded.prompts == PROMPTS and loaded.config.default_prompt_name == "query"
    np.testing.assert_allclose(loaded.encode(TEXTS, prompt_name="passage"), passage, atol=1e-6)
    np.testing.assert_allclose(loaded.encode(TEXTS), s.encode(TEXTS), atol=1e-6)


def test_a_student_folder_without_prompts_loads_and_encodes_bare(tmp_path):
    s = _static(PROMPTS, "query")
    folder = s.save(tmp_path / "s")
    data = json.loads((folder / CONFIG_NAME).read_text())
    assert data["prompts"] == PROMPTS and data["default_prompt_name"] == "query"
    del data["prompts"], data["default_prompt_name"]  # a folder written before students recorded prompts
    (folder / CONFIG_NAME).write_text(json.dumps(data))
    old = distill.load(folder)
    assert old.prompts == {} and old.config.default_prompt_name is None
    np.testing.assert_allclose(old.encode(TEXTS), s.encode(TEXTS, prompt_name="none"), atol=1e-6)
    np.testing.assert_allclose(old.encode(TEXTS, prompt_name="none"), old.encode(TEXTS), atol=0)


def test_unknown_prompt_names_are_clear_errors():
    with pytest.raises(DistillError, match="no prompt named 'doc' \\(its prompts: 'query', 'passage'\\)"):
        _static(PROMPTS).encode(TEXTS, prompt_name="doc")
    with pytest.raises(DistillError, match="no prompt named 'query': it records no prompts"):
        _transformer().encode(TEXTS, prompt_name="query")
    with pytest.raises(DistillError, match="default_prompt_name 'doc' is not one of the prompts"):
        StudentConfig(kind="static", vocab_size=4, dim=4, dims=[4], prompts=PROMPTS, default_prompt_name="doc")


# ---- the run: the teacher's prompts reach the student ------------------------------------------------------
def _st_teacher(src, dst, **prompts):
    shutil.copytree(src, dst)
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (dst / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    return dst


# ---- sentence-transformers export -------------------------------------------------------------------------
def test_sentence_transformers_export_carries_the_prompts(tmp_path):
    from sentence_transformers import SentenceTransformer

    from distill.students.export import export_student

    s = _static(PROMPTS, "query")
    export_student(s, tmp_path / "st", "sentence-transformers")
    saved = json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())
    assert {k: saved["prompts"][k] for k in PROMPTS} == PROMPTS and saved["default_prompt_name"] == "query"
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    for name in ("query", "passage", None):
        got = st.encode(TEXTS, prompt_name=name, normalize_embeddings=True)
        np.testing.assert_allclose(got, s.encode(TEXTS, prompt_name=name), atol=1e-5)
    card = (tmp_path / "st" / "README.md").read_text()
    assert '`passage`: `"passage: "`' in card and "Texts get `query` unless another is named" in card


# ---- the service ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory):
    return _static(PROMPTS, "query").save(tmp_path_factory.mktemp("prompts") / "prompted")


def _vectors(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def _error(r, status: int, match: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert match in err["message"], err["message"]
    return err


def test_service_input_type_puts_the_models_prompt_before_each_text(prompted_dir):
    s = distill.load(prompted_dir)
    with TestClient(create_app(ServiceSettings(model=prompted_dir))) as c:
        query = _vectors(c.post("/v1/embeddings", json={"input": TEXTS, "input_type": "query"}))
        np.testing.assert_allclose(query, s.encode(TEXTS, prompt_name="query"), atol=1e-6)
        document = _vectors(c.post("/v1/embeddings", json={"input": TEXTS, "input_type": "document", "dimensions": 8}))
        np.testing.assert_allclose(document, s.encode(TEXTS, dim=8, prompt_name="passage"), atol=1e-6)  # E5's name
        r = c.post("/v1/embeddings", json={"input": TEXTS})  # no input_type: the default prompt, as encode
        np.testing.assert_allclose(_vectors(r), s.encode(TEXTS), atol=1e-6)
        assert r.json()["usage"]["prompt_tokens"] == sum(map(len, s.tokenize(["query: " + t for t in TEXTS])))
        [model] = c.get("/v1/models").json()["data"]
        assert model["prompts"] == PROMPTS and model["default_prompt_name"] == "query"
        assert model["input_types"] == ["query", "document"]

        err = _error(c.post("/v1/embeddings", json={"input": TEXTS, "input_type": "passage"}), 422, "input_type")
        assert err["param"] == "input_type"
        ids = s.tokenize(TEXTS[:1])
        err = _error(c.post("/v1/embeddings", json={"input": ids, "input_type": "query"}), 400, "token-id inputs")
        assert err["param"] == "input_type" and err["code"] == "invalid_input_type"


def test_service_input_type_without_such_a_prompt(tmp_path):
    query_only = _static({"query": "query: "}).save(tmp_path / "q")  # bge / arctic: documents go bare
    with TestClient(create_app(ServiceSettings(model=query_only))) as c:
        got = _vectors(c.post("/v1/embeddings", json={"input": TEXTS, "input_type": "document"}))
        np.testing.assert_allclose(got, distill.load(query_only).encode(TEXTS, prompt_name="none"), atol=1e-6)
    bare = _static().save(tmp_path / "bare")
    with TestClient(create_app(ServiceSettings(model=bare))) as c:
        err = _error(c.post("/v1/embeddings", json={"input": TEXTS, "input_type": "query"}), 400,
                     "input_type 'query' needs a prompt named 'query'")
        assert "records no prompts" in err["message"] and err["code"] == "invalid_input_type"
        assert c.get("/v1/models").json()["data"][0]["input_types"] == []


def test_search_queries_get_their_prompt_and_long_ones_are_counted(tmp_path):
    from distill.index import build_index
    from distill.students.long import encode as long_encode

    folder = _transformer(PROMPTS, "query").save(tmp_path / "tr")
    s = distill.load(folder)
    build_index(s, TEXTS, tmp_path / "index", spec=folder)
    xb = s.encode(TEXTS)
    n_long = len(s.tokenizer.encode("query: " + LONG).ids)  # the prompt's tokens count against the limit
    assert n_long > LIMIT
    with TestClient(create_app(ServiceSettings(model=folder, index=tmp_path / "index"))) as c:
        def scores(body: dict) -> tuple[np.ndarray, dict]:
            r = c.post("/v1/search", json={"k": len(TEXTS), **body})
            assert r.status_code == 200, r.text
            hits = sorted(r.json()["data"][0]["hits"], key=lambda h: h["id"])
            return np.array([h["score"] for h in hits]), r.json()["usage"]

        got, usage = scores({"query": LONG})  # cut to the limit and counted, as /v1/embeddings counts it
        np.testing.assert_allclose(got, xb @ s.encode([LONG])[0], atol=1e-5)
        assert usage["truncated_texts"] == 1 and usage["truncated_tokens"] == n_long - LIMIT
        assert usage["prompt_tokens"] == LIMIT
        got, usage = scores({"queries": [LONG], "long": "chunk", "input_type": "document"})
        np.testing.assert_allclose(got, xb @ long_encode(s, [LONG], long="chunk", prompt_name="passage")[0][0],
                                   atol=1e-5)
        assert usage["truncated_texts"] == 0
        err = _error(c.post("/v1/search", json={"query": LONG, "truncate": False}), 400, "queries[0] has")
        assert err["param"] == "queries" and err["code"] == "input_too_long"
        metrics = c.get("/metrics").text
        assert "distill_truncated_texts_total 1.0" in metrics
        assert f"distill_truncated_tokens_total {n_long - LIMIT}.0" in metrics
        assert "distill_chunked_texts_total 1.0" in metrics


def test_a_run_records_the_teachers_prompts_and_its_student_starts_as_the_teacher_with_each(tmp_path, tiny_gpt2_dir,
                                                                                             tiny_corpus, tiny_texts):
    from sentence_transformers import SentenceTransformer

    from distill.pipeline import stages
    from distill.pipeline.corpus import Corpus
    from distill.pipeline.data import TokenArrays
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.run import RunConfig
    from distill.pipeline.train import TrainConfig
    from distill.teachers import load_teacher

    teacher = _st_teacher(tiny_gpt2_dir, tmp_path / "e5", prompts=PROMPTS, default_prompt_name="query")
    # a layers student of every teacher layer, untrained: the teacher itself, rotated and cut. Text targets:
    # the student's token ids are its own tokenizer's, the path every static student takes
    cfg = RunConfig(out=str(tmp_path / "run"), teacher=str(teacher), corpus=str(tiny_corpus), holdout=20, dims=(8, 16),
                    targets_dir=str(tmp_path / "targets"), student="layers", token_targets=False, device="cpu",
                    train=TrainConfig(epochs=0))
    for stage in (stages.prepare, stages.train, stages.export):  # (evaluate and its report: not needed here)
        stage(cfg)
    data = tmp_path / "run" / "data"
    config = json.loads((data / "student.json").read_text())
    assert config["prompts"] == PROMPTS and config["default_prompt_name"] == "query"
    assert config["teacher"]["prompt"] == "query: "  # the targets were labeled with it
    student = distill.load(tmp_path / "run")
    tokens = TokenArrays(data)  # the student learns from the texts as the teacher saw them: prompt first
    first = list(Corpus(str(tiny_corpus)))[:3]
    assert [tokens.seq(i).tolist() for i in range(3)] == student.tokenize(["query: " + t for t in first])

    pca = PCARotation.load(tmp_path / "run" / "pca.npz")
    texts = tiny_texts[:20]
    st = SentenceTransformer(str(tmp_path / "run" / "student-st"), device="cpu")
    for name in (None, "passage"):  # None: the default, "query: ", the prompt the targets had
        t = load_teacher(teacher, device="cpu", prompt=name)
        assert t.prompts == PROMPTS and t.prompt_name == (name or "query")
        rotated = pca.transform(t.embed_texts(texts))[:, :16]
        got = student.encode(texts, prompt_name=name)
        np.testing.assert_allclose(got, rotated / np.linalg.norm(rotated, axis=1, keepdims=True), atol=1e-5)
        np.testing.assert_allclose(st.encode(texts, prompt_name=name, normalize_embeddings=True), got, atol=1e-5)
    assert np.abs(student.encode(texts, prompt_name="none") - got).max() > 1e-3
    assert load_teacher(teacher, device="cpu", prompt="none").prompt_name is None
