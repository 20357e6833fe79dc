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
