"""Reading corpora: formats, empty lines, and one clear CorpusError for each kind of bad file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill.errors import CorpusError
from distill.pipeline.corpus import read_corpus


def test_txt_skips_and_counts_empty_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("  first text \n\n   \nsecond\r\n\t\nthird one\n", encoding="utf-8")
    corpus = read_corpus(path)
    assert corpus.texts == ["first text", "second", "third one"]
    assert corpus.n_empty == 3
    assert read_corpus(path, limit=2).texts == ["first text", "second"]


def test_txt_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello\nworld\n".encode())
    assert read_corpus(path).texts == ["hello", "world"]


def test_tiny_corpus_fixture(tiny_corpus):
    corpus = read_corpus(tiny_corpus)
    assert len(corpus.texts) == 200 and corpus.n_empty == 0
    assert len(set(corpus.texts)) > 150  # varied


def test_jsonl_csv_tsv_parquet(tmp_path):
    rows = [{"id": 1, "body": "alpha beta"}, {"id": 2, "body": ""}, {"id": 3, "body": "gamma, \"delta\""}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "c.tsv", index=False, sep="\t")
    pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet")
    for suffix in ("jsonl", "csv", "tsv", "parquet"):
        corpus = read_corpus(tmp_path / f"c.{suffix}", text_column="body")
        assert corpus.texts == ["alpha beta", 'gamma, "delta"'], suffix
        assert corpus.n_empty == 1, suffix


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.txt", b"", r"holds no texts \(0 empty\)"),
        ("blank.txt", b"\n  \n\t\n", r"holds no texts \(3 empty\)"),
        ("latin1.txt", "good line\ncaf\u00e9\n".encode("latin-1"), r"not UTF-8 \(byte 13, line 2\)"),
        ("latin1.csv", "text\ncaf\u00e9\n".encode("latin-1"), r"not UTF-8"),
        ("nocol.jsonl", b'{"body": "x"}\n', r"row 1 has no column 'text' \(it has: body\); pass --text-column"),
        ("list.jsonl", b'["x"]\n', r"row 1 has no column 'text' \(it has: list\)"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": broken\n', r"line 2 is not valid JSON"),
        ("nocol.csv", b"body,id\nhello,1\n", r"no column 'text' \(it has: body, id\); pass --text-column"),
        ("empty.csv", b"", r"cannot parse as csv"),
        ("corpus.docx", b"PK\x03\x04", r"unknown corpus format '\.docx'"),
    ],
)
def test_bad_corpora_raise(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=match):
        read_corpus(path)


def test_parquet_missing_column(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"body": ["x"]}).to_parquet(path)
    with pytest.raises(CorpusError, match=r"no column 'text' \(it has: body\)"):
        read_corpus(path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(CorpusError, match="cannot read parquet"):
        read_corpus(bad)


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus .*nope\.txt does not exist"):
        read_corpus(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path)  # a folder is not a corpus file


def test_limit_is_applied_while_reading(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"one\ntwo\nthree\n\xff\xfe broken later\n")
    assert read_corpus(path, limit=3).texts == ["one", "two", "three"]  # never reaches the bad line
    with pytest.raises(CorpusError, match=r"not UTF-8 \(byte 14, line 4\)"):
        read_corpus(path)


def test_only_newlines_split_texts(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\x0cb\u2028c\r\nsecond\x1cline\n", encoding="utf-8")
    assert read_corpus(path).texts == ["a\x0cb\u2028c", "second\x1cline"]


def test_a_corpus_is_read_lazily_and_again(tmp_path):
    from distill.pipeline.corpus import Corpus

    path = tmp_path / "c.txt"
    path.write_text("".join(f"text {i}\n" for i in range(10)), encoding="utf-8")
    corpus = Corpus(str(path), limit=7)
    first = iter(corpus)
    assert next(first) == "text 0"  # nothing else was read yet
    assert list(corpus) == [f"text {i}" for i in range(7)] == list(corpus)
    assert [len(c) for c in corpus.chunks(3)] == [3, 3, 1]
    with pytest.raises(CorpusError, match="--limit must be a positive number"):
        Corpus(str(path), limit=0)


def test_a_saved_dataset_folder_is_a_corpus(tmp_path):
    from datasets import Dataset, DatasetDict

    from distill.pipeline.corpus import Corpus

    Dataset.from_dict({"body": ["alpha", "", "beta", "gamma"], "n": [1, 2, 3, 4]}).save_to_disk(tmp_path / "ds")
    corpus = Corpus(str(tmp_path / "ds"), text_column="body")
    assert list(corpus) == ["alpha", "beta", "gamma"] and corpus.n_empty == 1
    with pytest.raises(CorpusError, match=r"no column 'text' \(it has: body, n\)"):
        list(Corpus(str(tmp_path / "ds")))
    DatasetDict({"train": Dataset.from_dict({"text": ["t1", "t2"]}),
                 "test": Dataset.from_dict({"text": ["x"]})}).save_to_disk(tmp_path / "dd")
    assert list(Corpus(str(tmp_path / "dd"))) == ["t1", "t2"]
    assert list(Corpus(str(tmp_path / "dd"), split="test")) == ["x"]
    with pytest.raises(CorpusError, match=r"no split 'dev' \(it has: train, test\)"):
        list(Corpus(str(tmp_path / "dd"), split="dev"))


def test_an_unreachable_hub_dataset_fails_fast_with_what_to_pass(tmp_path, monkeypatch):
    import time

    from distill.pipeline.corpus import Corpus, parse_hub_spec

    assert parse_hub_spec("hf:wikitext:wikitext-2-raw-v1@validation") == ("wikitext", "wikitext-2-raw-v1",
                                                                          "validation")
    assert parse_hub_spec("hf:org/name") == ("org/name", None, "train")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    t0 = time.perf_counter()
    with pytest.raises(CorpusError, match="not in the local datasets cache and the hub cannot be reached; pass a "
                                          "local file"):
        list(Corpus("hf:no-such-org/no-such-dataset"))
    assert time.perf_counter() - t0 < 10
