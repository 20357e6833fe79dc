"""``--vocab-from-corpus``: whole corpus words as rows of their own (tiny teachers and tokenizers, offline)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

import distill
from distill.errors import DistillError
from distill.students import StaticStudent, StudentConfig
from distill.students.static import WordCache, bag_means
from distill.students.vocab import add_words, added_words, count_words, pick_words, special_tokens

# words the tiny tokenizers cut into pieces, most frequent first in the domain corpus
DOMAIN = ("wombats", "zeppelins", "marmalade")


@pytest.fixture(scope="module")
def domain_texts(tiny_texts) -> list[str]:
    """The synthetic sentences, a third with "wombats", a fifth "zeppelins", a seventh "marmalade"."""
    out = []
    for i, t in enumerate(tiny_texts):
        tail = "".join(f" with {w}" for w, k in zip(DOMAIN, (3, 5, 7)) if i % k == 0)
        out.append(t[:-1] + tail + t[-1])
    return out


@pytest.fixture(scope="module")
def domain_corpus(tmp_path_factory, domain_texts):
    path = tmp_path_factory.mktemp("domain") / "domain.txt"
    path.write_text("\n".join(domain_texts) + "\n", encoding="utf-8")
    return path


def _bert(tiny_bert_dir) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_bert_dir / "tokenizer.json"))


def _gpt2(tiny_gpt2_dir) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_gpt2_dir / "tokenizer.json"))


def _unigram(texts) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer (Metaspace pre-tokenizer, as T5 and XLM-R have)."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=150, special_tokens=["<unk>"],
                                                            unk_token="<unk>", show_progress=False))
    return tok


@pytest.fixture(params=["wordpiece", "byte-level-bpe", "unigram"])
def tokenizer(request, tiny_bert_dir, tiny_gpt2_dir, tiny_texts) -> Tokenizer:
    return {"wordpiece": lambda: _bert(tiny_bert_dir), "byte-level-bpe": lambda: _gpt2(tiny_gpt2_dir),
            "unigram": lambda: _unigram(tiny_texts)}[request.param]()


# ---- the tokenizer ---------------------------------------------------------------------------------------------
def test_an_added_word_is_one_row_and_the_rest_keeps_the_teachers_pieces(tokenizer):
    base = Tokenizer.from_str(tokenizer.to_str())
    assert len(base.encode("wombats", add_special_tokens=False).ids) >= 2
    (wid,) = add_words(tokenizer, ["wombats"])
    assert wid == base.get_vocab_size(with_added_tokens=True)
    for text in ("the cat sees wombats today", "the cat sees wombats", "wombats sees the cat", "a dog, wombats and"):
        start = text.index("wombats")
        before = base.encode(text, add_special_tokens=False)
        # the word's pieces (with the space before it: GPT-2's Ġ, a Metaspace ▁) become its one id; the rest stays
        kept = [(i, a) for i, (a, b) in zip(before.ids, before.offsets) if b <= start - 1 or a >= start + 7]
        expected = [i for i, a in kept if a < start] + [wid] + [i for i, a in kept if a > start]
        assert tokenizer.encode(text, add_special_tokens=False).ids == expected, text
    # an unknown word, and the word inside a longer one, keep the teacher's pieces
    for text in ("quokka", "wombatsx", "xwombats", "wombats_x", "wombats2"):
        assert tokenizer.encode(text, add_special_tokens=False).ids == base.encode(text, add_special_tokens=False).ids
    # the words are saved with the tokenizer, as non-special tokens
    again = Tokenizer.from_str(tokenizer.to_str())
    assert again.encode("the cat sees wombats", add_special_tokens=False).ids[-1] == wid
    assert added_words(again) == ["wombats"] and "wombats" not in special_tokens(again)


def test_words_are_counted_as_the_normalizer_writes_them_and_picked_when_split(tiny_bert_dir):
    tok = _bert(tiny_bert_dir)
    counts = count_words(tok, ["The Wombats, wombats!", "Zeppelins and wombats mp3 foo_bar 1997 café"])
    assert counts == Counter({"wombats": 3, "zeppelins": 1, "the": 1, "and": 1, "cafe": 1})  # lower-cased, no accents
    # "the", "and" are tokens already; most frequent first, ties by name; fewer when fewer split
    assert pick_words(tok, counts, 2) == ["wombats", "cafe"]
    assert pick_words(tok, counts, 10) == ["wombats", "cafe", "zeppelins"]


def test_a_gpt2_word_is_picked_by_its_pieces_inside_a_text(tiny_gpt2_dir):
    tok = _gpt2(tiny_gpt2_dir)
    counts = count_words(tok, ["the cat sees the dog and wombats"] * 2 + ["Wombats"])
    assert counts["Wombats"] == 1 and counts["wombats"] == 2  # byte-level BPE keeps the case
    picked = pick_words(tok, counts, 10)
    assert "wombats" in picked and picked.index("wombats") < picked.index("Wombats")
    assert all(len(tok.encode(" " + w, add_special_tokens=False).ids) >= 2 for w in picked)


def test_the_word_cache_keeps_added_words_and_gives_the_tokenizers_vectors(tiny_bert_dir):
    tok = _bert(tiny_bert_dir)
    add_words(tok, list(DOMAIN))
    torch.manual_seed(0)
    s = StaticStudent(StudentConfig(kind="static", vocab_size=tok.get_vocab_size(), dim=16, dims=[8, 16]), tok)
    with torch.no_grad():
        s.embedding.normal_()
        s.log_weight.normal_(std=0.5)
    s.eval()
    texts = ["the cat sees wombats today", "Wombats! ZEPPELINS, marmalade.", "wombats_x wombats2 xwombats wombatsx",
             "wombats-zeppelins (marmalade)", "[MASK] wombats", "the wömbats", "a dog likes the long bridge",
             "marmalade", "", "tab\twombats\nnewline"]
    table, w = s._tables()
    cache = WordCache.for_student(s, table, w)
    assert cache is not None and cache.special.pattern.count("|") == len(special_tokens(tok)) - 1
    via_cache = s.embed_texts(texts)
    via_tokenizer = bag_means(table, w, s.tokenize(texts))
    np.testing.assert_allclose(via_cache, via_tokenizer, atol=1e-6)
    assert s.embed_texts_counted(texts)[1].tolist() == [len(q) for q in s.tokenize(texts)]  # the service's usage
    wid = tok.token_to_id("wombats")
    np.testing.assert_allclose(s.embed_texts(["wombats"])[0], table[wid] / w[wid], rtol=1e-5)


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_a_one_piece_words_target_is_its_tokens_vocabulary_target(which, tiny_bert_dir, tiny_gpt2_dir, tmp_path):
    """Words are framed as vocabulary tokens are (GPT-2's: after <|endoftext|>, not pooled), so a word the
    tokenizer keeps whole gets exactly its token's target, and a split word's row starts where the others do."""
    from distill.pipeline.targets import TargetKind, label, vocab_targets
    from distill.teachers import load_teacher

    teacher = load_teacher(str(tiny_bert_dir if which == "bert" else tiny_gpt2_dir), device="cpu")
    vocab = vocab_targets(label(teacher, TargetKind.VOCAB, tmp_path, progress=False))
    ids = {w: teacher.tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("cat", "the", "a", "and")}
    word = next(w for w, i in ids.items() if len(i) == 1)  # kept whole at a text's start
    words, one = [word, "wombats"], ids[word][0]
    got = label(teacher, TargetKind.WORD, tmp_path, words, progress=False).pooled()
    np.testing.assert_allclose(got[0], vocab.pooled[list(vocab.ids).index(one)], atol=1e-5)
    assert len(list(tmp_path.glob("word-v2-*"))) == 1  # a store of its own: never mixed with text targets
    assert not np.allclose(got[1], got[0], atol=1e-3)


# ---- the run ---------------------------------------------------------------------------------------------------
def _cfg(tmp_path, teacher_dir, corpus, out="run", **kw):
    from distill.pipeline.run import RunConfig
    from distill.pipeline.train import TrainConfig

    return RunConfig(out=str(tmp_path / out), teacher=str(teacher_dir), corpus=str(corpus), dims=(8, 16, 32),
                     holdout=20, targets_dir=str(tmp_path / "targets"), device="cpu",
                     train=TrainConfig(epochs=1, batch_size=16), **kw)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory, tiny_bert_dir, domain_corpus):
    """A static student of the tiny BERT with the corpus's split words added (prepared, trained, evaluated)."""
    from distill.pipeline import stages

    tmp = tmp_path_factory.mktemp("word-run")
    cfg = _cfg(tmp, tiny_bert_dir, domain_corpus, vocab_from_corpus=5)
    for stage in (stages.prepare, stages.train, stages.evaluate):
        stage(cfg)
    return tmp / "run"


def test_the_run_adds_the_split_words_as_rows_of_the_student(word_run, tiny_bert_dir):
    student = distill.load(word_run / "student")
    base = _bert(tiny_bert_dir)
    n = base.get_vocab_size(with_added_tokens=True)
    # only three words of the corpus split: all three, most frequent first, after the teacher's rows
    assert student.config.corpus_words == 3 and student.config.vocab_size == n + 3
    assert [student.tokenizer.token_to_id(w) for w in DOMAIN] == [n, n + 1, n + 2]
    assert student.tokenize(["the wombats", "quokka"]) == [[base.token_to_id("the"), n],
                                                           base.encode("quokka", add_special_tokens=False).ids]
    summary = json.loads((word_run / "summary.json").read_text())
    assert summary["corpus_words"]["requested"] == 5 and summary["corpus_words"]["added"] == 3
    assert summary["corpus_words"]["examples"] == list(DOMAIN)


def test_a_new_row_starts_from_the_teachers_vector_of_the_word(word_run, tiny_bert_dir):
    """Every row of the initial table is the teacher's vector of its token (or word, as a text) rotated by the
    run's PCA and mapped by one linear map: recover the map from the teacher's rows, check the words' rows."""
    from safetensors.numpy import load_file

    from distill.pipeline.pca import PCARotation
    from distill.pipeline.prepare import load_vocab
    from distill.teachers import load_teacher

    table = load_file(str(word_run / "student-init" / "model.safetensors"))["embedding"]  # (V, 32)
    pca = PCARotation.load(word_run / "pca.npz")
    vocab = load_vocab(word_run)
    own = vocab.ids < _bert(tiny_bert_dir).get_vocab_size()
    x = pca.transform(vocab.pooled[own])[:, :32]
    linear, *_ = np.linalg.lstsq(x, table[vocab.ids[own]], rcond=None)
    np.testing.assert_allclose(x @ linear, table[vocab.ids[own]], atol=1e-4)
    teacher = load_teacher(str(tiny_bert_dir), device="cpu")
    words = pca.transform(teacher.embed_texts(list(DOMAIN)))[:, :32]  # the teacher's output for each word as a text
    ids = [distill.load(word_run / "student").tokenizer.token_to_id(w) for w in DOMAIN]
    np.testing.assert_allclose(table[ids], words @ linear, atol=1e-4)
    assert np.abs(table[ids]).max() > 0.01  # not the zero rows of unlabeled tokens


def test_the_words_travel_with_the_exports_and_the_service(word_run, tmp_path):
    from fastapi.testclient import TestClient
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    from distill.service import ServiceSettings, create_app
    from distill.students.export import export_student

    student = distill.load(word_run / "student")
    texts = ["the cat sees wombats today", "Zeppelins and marmalade", "a quokka near the wombats", "the market"]
    want = student.encode(texts)
    export_student(student, tmp_path / "m2v", "model2vec")
    np.testing.assert_allclose(StaticModel.from_pretrained(tmp_path / "m2v").encode(texts), want, atol=1e-5)
    export_student(student, tmp_path / "st", "sentence-transformers")
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    np.testing.assert_allclose(st.encode(texts, normalize_embeddings=True), want, atol=1e-5)
    export_student(student, tmp_path / "int8", "native", dtype="int8")
    assert distill.load(tmp_path / "int8").tokenize(["wombats"]) == student.tokenize(["wombats"])
    with TestClient(create_app(ServiceSettings(model=word_run / "student"))) as client:
        r = client.post("/v1/embeddings", json={"input": texts[:1]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], want[0], atol=1e-6)
        assert r.json()["usage"]["prompt_tokens"] == len(student.tokenize(texts[:1])[0]) == 5


def test_a_student_folder_without_the_field_still_loads(word_run, tmp_path):
    import shutil

    folder = shutil.copytree(word_run / "student", tmp_path / "old")
    config = json.loads((folder / "distill_student.json").read_text())
    del config["corpus_words"]
    (folder / "distill_student.json").write_text(json.dumps(config))
    old = distill.load(folder)
    assert old.config.corpus_words == 0 and old.tokenize(["wombats"]) == distill.load(word_run / "student").tokenize(
        ["wombats"])


@pytest.mark.parametrize(("kw", "match"), [
    ({"vocab_from_corpus": 0}, "takes a positive number of words"),
    ({"vocab_from_corpus": -3}, "takes a positive number of words"),
    ({"vocab_from_corpus": 5, "student": "transformer"}, "a transformer student cannot take new words"),
    ({"vocab_from_corpus": 5, "student": "layers"}, "pass --student static"),
    ({"vocab_from_corpus": 5, "corpus": None}, "pass a --corpus"),
    ({"vocab_from_corpus": 5, "tokenizer": "char"}, "not to --tokenizer char"),
])
def test_refusals(kw, match):
    from distill.pipeline.run import RunConfig

    with pytest.raises(DistillError, match=match):
        RunConfig(out="o", **kw)


def test_the_cli_refuses_with_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    for args, match in ((["--vocab-from-corpus", "0"], "takes a positive number"),
                        (["--vocab-from-corpus", "10", "--corpus", "none"], "pass a --corpus")):
        result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "r"), *args])
        assert result.exit_code == 2 and match in result.output, result.output
