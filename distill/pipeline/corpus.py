"""Reading corpora: .txt (one text per line), .jsonl / .csv / .parquet with a text column."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distill.errors import CorpusError

SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    n_empty: int  # blank lines / empty texts that were skipped
    path: Path


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark would otherwise stick to the first text
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}: not UTF-8 (byte {e.start}, line {line}); re-encode the file as UTF-8") from e


def _column(rows: list[dict], column: str, path: Path, first_line: int = 1) -> list[object]:
    values = []
    for n, row in enumerate(rows, start=first_line):
        if not isinstance(row, dict) or column not in row:
            keys = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise CorpusError(f"{path}: row {n} has no column {column!r} (it has: {keys}); pass --text-column")
        values.append(row[column])
    return values


def read_corpus(path: str | Path, text_column: str = "text", limit: int | None = None) -> Corpus:
    """Read the texts of a corpus file, skipping (and counting) empty ones.

    :raises CorpusError: missing file, unknown format, non-UTF-8 bytes, missing column, no texts.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        raw: list[object] = _decode(path).splitlines()
    elif suffix == ".jsonl":
        rows = []
        for n, line in enumerate(_decode(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}: line {n} is not valid JSON ({e.msg})") from e
        raw = _column(rows, text_column, path)
    elif suffix in (".csv", ".tsv"):
        import pandas as pd

        _decode(path)  # a clear error for non-UTF-8 bytes before pandas sees them
        try:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        except Exception as e:
            raise CorpusError(f"{path}: cannot parse as {suffix[1:]} ({e})") from e
        if text_column not in frame.columns:
            raise CorpusError(f"{path}: no column {text_column!r} (it has: {', '.join(frame.columns)}); "
                              "pass --text-column")
        raw = frame[text_column].tolist()
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise CorpusError(f"{path}: cannot read parquet ({e})") from e
        if text_column not in table.column_names:
            raise CorpusError(f"{path}: no column {text_column!r} (it has: {', '.join(table.column_names)}); "
                              "pass --text-column")
        raw = table.column(text_column).to_pylist()
    else:
        raise CorpusError(f"{path}: unknown corpus format {suffix!r} (use one of {', '.join(SUFFIXES)})")
    texts = [t.strip() for t in raw if isinstance(t, str) and t.strip()]
    n_empty = len(raw) - len(texts)
    if not texts:
        raise CorpusError(f"corpus {path} holds no texts ({n_empty} empty)")
    if limit is not None:
        texts = texts[:limit]
    return Corpus(texts, n_empty, path)
