"""`distill targets` and `distill teachers` through the CLI: user errors are one line, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.pipeline.targets import TargetStore


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


BAD_CORPORA = [
    ("empty.txt", b"", "holds no texts"),
    ("blank.txt", b"\n \n\n", "holds no texts (3 empty)"),
    ("latin1.txt", "caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ("nocol.jsonl", b'{"body": "x"}\n', "no column 'text'"),
    ("bad.jsonl", b'{"text": "a"}\nnot json\n', "line 2 is not valid JSON"),
    ("nocol.csv", b"body\nx\n", "no column 'text'"),
    ("corpus.xml", b"<x/>", "unknown corpus format"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_CORPORA)
def test_bad_corpus_exits_with_one_line(tmp_path, tiny_bert_dir, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    result = _invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(path), "--out", str(tmp_path / "o"))
    _assert_one_line_error(result, message, name)
    assert not (tmp_path / "o").exists()  # failed before any work


def test_parquet_missing_column_and_missing_file(tmp_path, tiny_bert_dir):
    import pandas as pd

    path = tmp_path / "c.parquet"
    pd.DataFrame({"body": ["x"]}).to_parquet(path)
    out = str(tmp_path / "o")
    _assert_one_line_error(_invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(path), "--out", out),
                           "no column 'text' (it has: body)")
    _assert_one_line_error(_invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(tmp_path / "x.txt"),
                                   "--out", out), "does not exist")


def test_other_user_errors(tmp_path, tiny_bert_dir, tiny_corpus):
    out = str(tmp_path / "o")
    _assert_one_line_error(_invoke("targets", "--teacher", str(tiny_bert_dir), "--out", out),
                           "text and token targets need --corpus")
    _assert_one_line_error(_invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                                   "--out", out, "--kinds", "text,words"), "unknown target kind")
    _assert_one_line_error(_invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                                   "--out", out, "--pooling", "avg"), "unknown pooling 'avg'")
    _assert_one_line_error(_invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(tiny_corpus),
                                   "--out", out, "--layer", "7"), "layer 7 out of range")
    _assert_one_line_error(_invoke("targets", "--teacher", "no-such-org/nothing", "--corpus", str(tiny_corpus),
                                   "--out", out), "teacher 'no-such-org/nothing' not found", "local model folder")


def test_targets_command_skips_empty_lines(tmp_path, tiny_bert_dir, tiny_texts):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tiny_texts[:12]) + "\n\n  \n" + "\n".join(tiny_texts[12:20]) + "\n", encoding="utf-8")
    out = tmp_path / "cache"
    result = _invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(out),
                     "--kinds", "text,vocab", "--shard-size", "8", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert set(lines) == {"text", "vocab"}
    assert lines["text"].startswith("20 targets in ") and lines["vocab"].startswith("159 targets in ")
    store = TargetStore.open(lines["text"].removeprefix("20 targets in "))
    assert len(store.shard_names()) == 3
    assert all(np.isfinite(store.files(n).pooled).all() for n in store.shard_names())
    again = _invoke("targets", "--teacher", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(out),
                    "--kinds", "text", "--shard-size", "8", "--device", "cpu")
    assert again.exit_code == 0 and again.stdout.strip() == f"text: {lines['text']}"
    assert len(store.shard_names()) == 3  # nothing new


def test_teachers_lists_aliases():
    result = _invoke("teachers")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert {"minilm", "bert-base", "bert-large", "gpt2", "distilgpt2", "mpnet"} <= set(rows)
    assert "yes" in rows["minilm"] and "bundled" in rows["minilm"]
