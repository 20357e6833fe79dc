"""Texts past a contextual student's limit: counted cuts, refusals, and chunked windows (embed CLI and service)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import distill
from distill.service import ServiceSettings, create_app
from distill.students import StudentConfig, TransformerStudent
from distill.students.base import normalize
from distill.students.long import LongTextError, encode, max_input_tokens, plan_texts, windows

WORDS = "the cat a dog sees likes red blue house bridge old man young girl builds paints garden river".split()
LIMIT = 8  # [CLS] + 6 content tokens + [SEP]
SHORT = ["the cat sees a red house", "a dog", "old man paints the garden"]
LONG = ("the old man sees a red house and the young girl builds a blue bridge over the river "
        "a dog likes the cat the cat likes the garden")


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for w in dict.fromkeys(WORDS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                               ("[SEP]", 3)])
    return tok


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    tok = _tokenizer()
    cfg = StudentConfig(kind="transformer", vocab_size=tok.get_vocab_size(), dim=32, dims=[16, 32], width=32,
                        n_layers=1, n_heads=2, max_length=LIMIT, cls_id=2, sep_id=3)
    s = TransformerStudent(cfg, tok)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every weight random, the head too: context changes the vectors
        for p in s.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return s.save(tmp_path_factory.mktemp("long") / "tr")


@pytest.fixture(scope="module")
def student(student_dir):
    return distill.load(student_dir)


def test_windows_keep_the_framing_tokens_and_slide_by_half():
    seq = [2, *range(10, 20), 3]  # [CLS] 10 content tokens [SEP]
    got = windows(seq, 6, cls_id=2, sep_id=3)  # 4 content tokens a window, stride 2
    assert got == [([2, 10, 11, 12, 13, 3], 4), ([2, 12, 13, 14, 15, 3], 4), ([2, 14, 15, 16, 17, 3], 4),
                   ([2, 16, 17, 18, 19, 3], 4)]
    assert windows([5, 6, 7, 8, 9], 4) == [([5, 6, 7, 8], 4), ([7, 8, 9], 3)]  # no framing: plain windows
    assert windows([2, 5, 3], 6, cls_id=2, sep_id=3) == [([2, 5, 3], 1)]


def test_plan_cuts_as_tokenize_does_and_counts_the_cuts(student):
    texts = [*SHORT, LONG]
    p = plan_texts(student, texts)
    assert p.seqs == student.tokenize(texts)
    n_long = len(student.tokenizer.encode(LONG).ids)
    assert n_long > 3 * LIMIT
    assert (p.truncated_texts, p.truncated_tokens) == (1, n_long - LIMIT)
    assert p.n_tokens == sum(len(s) for s in p.seqs)
    with pytest.raises(LongTextError, match=f"input 3 has {n_long} tokens, past the student's limit of {LIMIT}"):
        plan_texts(student, texts, truncate=False)
    plan_texts(student, SHORT, truncate=False)  # texts that fit are no error


def test_a_text_that_fits_chunked_is_the_plain_vector(student):
    x, p = encode(student, SHORT, long="chunk")
    assert p.chunked_texts == 0 and len(p.seqs) == len(SHORT)
    np.testing.assert_allclose(x, student.encode(SHORT), atol=1e-6)
    mixed, p = encode(student, [*SHORT, LONG], dim=16, long="chunk")  # beside a chunked text, still plain
    assert p.chunked_texts == 1
    np.testing.assert_allclose(mixed[:3], student.encode(SHORT, dim=16), atol=1e-6)


def test_a_long_text_chunked_is_the_token_weighted_mean_of_its_windows(student):
    ids = student.tokenizer.encode(LONG).ids
    content = ids[1:-1]
    width = LIMIT - 2
    wins, weights = [], []
    for start in range(0, len(content), width // 2):
        part = content[start:start + width]
        wins.append([ids[0], *part, ids[-1]])
        weights.append(len(part))
        if start + width >= len(content):
            break
    raw = np.stack([student.embed_ids([w])[0] for w in wins])  # each window alone: no padding
    mean = (raw * np.array(weights)[:, None]).sum(0) / sum(weights)
    for dim in (16, 32):
        chunked, p = encode(student, [LONG], dim=dim, long="chunk")
        np.testing.assert_allclose(chunked[0], normalize(mean[None, :dim])[0], atol=1e-5)
        truncated = student.encode([LONG], dim=dim)[0]
        assert np.abs(chunked[0] - truncated).max() > 1e-2
    assert p.n_tokens == len(ids) and p.truncated_texts == 0


def test_static_students_have_no_limit(tmp_path):
    from tests.test_service import TEXTS, make_student

    static = distill.load(make_student(tmp_path / "static"))
    assert max_input_tokens(static) is None
    long_text = " ".join(TEXTS * 20)
    x, p = encode(static, [long_text], long="chunk", truncate=False)
    assert (p.truncated_texts, p.chunked_texts, len(p.seqs)) == (0, 0, 1)
    np.testing.assert_array_equal(x, static.encode([long_text]))


# ---- service ---------------------------------------------------------------------------------------


def test_service_refuses_counts_and_chunks_long_texts(student_dir, student):
    n_long = len(student.tokenizer.encode(LONG).ids)
    with TestClient(create_app(ServiceSettings(model=student_dir))) as c:
        [model] = c.get("/v1/models").json()["data"]
        assert model["max_input_tokens"] == LIMIT

        r = c.post("/v1/embeddings", json={"input": [*SHORT, LONG], "truncate": False})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "input_too_long" and err["param"] == "input"
        assert f"input[3] has {n_long} tokens" in err["message"] and f"limit of {LIMIT}" in err["message"]

        r = c.post("/v1/embeddings", json={"input": [*SHORT, LONG, LONG], "dimensions": 16})
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert usage["truncated_texts"] == 2 and usage["truncated_tokens"] == 2 * (n_long - LIMIT)
        assert usage["prompt_tokens"] == sum(len(s) for s in student.tokenize([*SHORT, LONG, LONG]))
        got = np.array([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(got, student.encode([*SHORT, LONG, LONG], dim=16), atol=1e-5)

        r = c.post("/v1/embeddings", json={"input": [LONG, SHORT[0]], "long": "chunk", "truncate": False})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["truncated_texts"] == 0 and r.json()["usage"]["prompt_tokens"] == n_long + len(
            student.tokenize([SHORT[0]])[0])
        got = np.array([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(got, encode(student, [LONG, SHORT[0]], long="chunk")[0], atol=1e-5)

        ids = list(range(4, 4 + 12))  # token-id input past the limit
        r = c.post("/v1/embeddings", json={"input": [ids], "truncate": False})
        assert r.status_code == 400 and "input[0] has 12 tokens" in r.json()["error"]["message"]
        r = c.post("/v1/embeddings", json={"input": [ids]})
        assert r.json()["usage"]["truncated_tokens"] == 12 - LIMIT

        metrics = c.get("/metrics").text
        assert "distill_truncated_texts_total 3.0" in metrics
        assert f"distill_truncated_tokens_total {2 * (n_long - LIMIT) + 12 - LIMIT}.0" in metrics
        assert "distill_chunked_texts_total 1.0" in metrics
        r = c.post("/v1/embeddings", json={"input": "a cat", "long": "windows"})
        assert r.status_code == 422


# ---- distill embed ---------------------------------------------------------------------------------


def test_embed_cli_no_truncate_and_chunk(tmp_path, student_dir, student, caplog):
    from typer.testing import CliRunner

    from distill.cli import app

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join([SHORT[0], "", LONG, SHORT[1]]) + "\n", encoding="utf-8")
    n_long = len(student.tokenizer.encode(LONG).ids)

    def embed(*flags):
        return CliRunner().invoke(app, ["embed", "--model", str(student_dir), "--corpus", str(corpus),
                                        "--out", str(tmp_path / "v.npy"), *flags])

    result = embed("--no-truncate")
    assert result.exit_code == 2  # a DistillError: one line, no traceback
    assert f"record 3 of {corpus} has {n_long} tokens, past the student's max length of {LIMIT}" in result.output
    assert not (tmp_path / "v.npy").exists()

    with caplog.at_level(logging.WARNING, logger="distill"):
        result = embed()
    assert result.exit_code == 0, result.output
    assert f"1 of 4 records were longer than the student's max length of {LIMIT}" in caplog.text
    assert f"({n_long - LIMIT} tokens dropped)" in caplog.text
    np.testing.assert_allclose(np.load(tmp_path / "v.npy")[[0, 2, 3]], student.encode([SHORT[0], LONG, SHORT[1]]),
                               atol=1e-6)

    result = embed("--long", "chunk", "--dim", "16")
    assert result.exit_code == 0, result.output
    want = encode(student, [SHORT[0], LONG, SHORT[1]], dim=16, long="chunk")[0]
    x = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(x[[0, 2, 3]], want, atol=1e-6)
    assert not x[1].any()
    assert embed("--long", "windows").exit_code != 0
