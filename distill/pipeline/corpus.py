"""Reading corpora lazily: .txt (one text per line), .jsonl / .csv / .tsv / .parquet with a text column
(.txt, .jsonl, .csv and .tsv also gzipped: ``.txt.gz``), a folder written by ``datasets.Dataset.save_to_disk``,
a Hugging Face dataset id (``hf:ID[:CONFIG][@SPLIT]``), or the name of the corpus shipped with distill
(``wikitext-2``: the default of ``distill run``).

A :class:`Corpus` is re-iterable and never holds the whole file: it yields one stripped, non-empty
text at a time and stops at ``limit`` while reading, so a corpus larger than memory works and
``--limit 1000`` of a 10 GB file reads only its beginning. Lines are split on ``\\n`` only (not on
the form feeds and Unicode separators ``str.splitlines`` also splits on), so line numbers in errors
are the file's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distill.errors import CorpusError

logger = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")
HF_PREFIX = "hf:"
# Shipped with the package: 4,772 English sentences of WikiText-2 (CC BY-SA 3.0), see distill/data/README.md
BUILTIN = {"wikitext-2": Path(__file__).resolve().parents[1] / "data" / "wikitext2.txt.gz"}
DEFAULT_CORPUS = "wikitext-2"


def resolve_source(source: str) -> str:
    """A corpus spec with the shipped corpora's names replaced by their files."""
    return str(BUILTIN[source]) if source in BUILTIN else source


def _format(path: Path) -> str:
    """The reader's key: the suffix, or the one before ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] == ".gz" else (suffixes[-1] if suffixes else "")


def _open(path: Path):
    """Binary file object, decompressing ``.gz`` on the fly."""
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")
_CHUNK_ROWS = 8192  # rows per read of the csv / parquet / datasets readers


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its newline), reading in binary so only ``\\n`` splits."""
    with _open(path) as f:
        offset = 0
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark would stick to the first text
                raw, offset = raw[3:], 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path}: not UTF-8 (byte {offset + e.start}, line {n}); "
                                  "re-encode the file as UTF-8") from e
            offset += len(raw)
            yield n, line.rstrip("\r\n")


def _missing_column(path, column: str, has) -> CorpusError:
    return CorpusError(f"{path}: no column {column!r} (it has: {', '.join(map(str, has))}); pass --text-column")


def _read_txt(path: Path, column: str) -> Iterator[object]:
    for _, line in _lines(path):
        yield line


def _read_jsonl(path: Path, column: str) -> Iterator[object]:
    for n, line in _lines(path):
        if not line.strip():  # a blank line is no record (an empty text field is)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}: line {n} is not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or column not in row:
            keys = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise CorpusError(f"{path}: row {n} has no column {column!r} (it has: {keys}); pass --text-column")
        yield row[column]


def _read_csv(path: Path, column: str) -> Iterator[object]:
    import pandas as pd

    sep = "\t" if _format(path) == ".tsv" else ","  # pandas decompresses .gz itself
    try:
        header = pd.read_csv(path, sep=sep, dtype=str, nrows=0, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 ({e.reason}); re-encode the file as UTF-8") from e
    except Exception as e:
        raise CorpusError(f"{path}: cannot parse as {path.suffix[1:]} ({e})") from e
    if column not in header.columns:
        raise _missing_column(path, column, header.columns)
    try:
        reader = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, usecols=[column],
                             chunksize=_CHUNK_ROWS, encoding="utf-8")
        for chunk in reader:
            yield from chunk[column].tolist()
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 ({e.reason}); re-encode the file as UTF-8") from e
    except (ValueError, pd.errors.ParserError) as e:
        raise CorpusError(f"{path}: cannot parse as {path.suffix[1:]} ({e})") from e


def _read_parquet(path: Path, column: str) -> Iterator[object]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as e:
        raise CorpusError(f"{path}: cannot read parquet ({e})") from e
    if column not in file.schema_arrow.names:
        raise _missing_column(path, column, file.schema_arrow.names)
    for batch in file.iter_batches(batch_size=_CHUNK_ROWS, columns=[column]):
        yield from batch.column(0).to_pylist()


def _read_dataset(dataset, where: str, column: str) -> Iterator[object]:
    names = dataset.column_names or []
    if column not in names:
        raise _missing_column(where, column, names)
    if hasattr(dataset, "iter"):  # a map-style Dataset: read in Arrow batches, one column
        for batch in dataset.select_columns([column]).iter(batch_size=_CHUNK_ROWS):
            yield from batch[column]
    else:  # an IterableDataset (streamed from the hub)
        for row in dataset:
            yield row[column]


def _load_saved_dataset(path: Path, split: str | None):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as e:
        raise CorpusError(f"{path}: cannot load as a saved dataset ({e})") from e
    if isinstance(dataset, DatasetDict):
        split = split or ("train" if "train" in dataset else next(iter(dataset)))
        if split not in dataset:
            raise CorpusError(f"{path}: no split {split!r} (it has: {', '.join(dataset)})")
        dataset = dataset[split]
    return dataset


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """``hf:ID[:CONFIG][@SPLIT]`` -> (id, config, split); split defaults to ``train``."""
    body = spec[len(HF_PREFIX):]
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name:
        raise CorpusError(f"{spec!r}: expected hf:DATASET_ID[:CONFIG][@SPLIT], "
                          "e.g. hf:wikitext:wikitext-2-raw-v1@train")
    return name, config or None, split or "train"


def _load_hub_dataset(spec: str):
    """A hub dataset, streamed where the hub is reachable, from the local cache otherwise; fails fast."""
    import datasets

    from distill.hub import hub_reachable

    name, config, split = parse_hub_spec(spec)
    advice = ("pass a local file (.txt, .jsonl, .csv, .parquet) or a folder written by "
              "datasets' save_to_disk instead")
    if hub_reachable():
        try:
            return datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as e:
            raise CorpusError(f"{spec}: cannot stream {name!r} ({type(e).__name__}: {e}); {advice}") from e
    previous = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True  # the hub is unreachable: do not let datasets retry it
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise CorpusError(f"{spec}: {name!r} is not in the local datasets cache and the hub cannot be "
                          f"reached; {advice}") from e
    finally:
        datasets.config.HF_HUB_OFFLINE = previous


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json",
                                                                 "dataset_dict.json"))


_READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv, ".tsv": _read_csv,
            ".parquet": _read_parquet}


@dataclass(frozen=True)
class Corpus:
    """A lazily read, re-iterable corpus. Iterating yields the stripped non-empty texts, at most ``limit``.

    After a complete iteration, :attr:`n_empty` holds the number of empty texts skipped on the way.
    """

    source: str
    text_column: str = "text"
    limit: int | None = None
    split: str | None = None  # saved DatasetDict folders
    keep_empty: bool = False  # yield "" for an empty record instead of skipping it (rows that line up)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_stats", {"n_empty": 0})
        object.__setattr__(self, "source", resolve_source(self.source))
        if self.limit is not None and self.limit < 1:
            raise CorpusError(f"--limit must be a positive number of texts, got {self.limit}")
        if self.source.startswith(HF_PREFIX):
            parse_hub_spec(self.source)
            return
        path = Path(self.source)
        if _is_saved_dataset(path):
            return
        if not path.is_file():
            raise CorpusError(f"corpus {path} does not exist")
        if _format(path) not in _READERS or (path.suffix.lower() == ".gz" and _format(path) == ".parquet"):
            raise CorpusError(f"{path}: unknown corpus format {''.join(path.suffixes[-2:]).lower()!r} (use one of "
                              f"{', '.join(SUFFIXES)} (gzipped too, but for parquet), a saved dataset folder, "
                              f"hf:DATASET_ID or {', '.join(BUILTIN)})")

    @property
    def n_empty(self) -> int:
        return self._stats["n_empty"]

    def _raw(self) -> Iterator[object]:
        if self.source.startswith(HF_PREFIX):
            return _read_dataset(_load_hub_dataset(self.source), self.source, self.text_column)
        path = Path(self.source)
        if path.is_dir():
            return _read_dataset(_load_saved_dataset(path, self.split), str(path), self.text_column)
        return _READERS[_format(path)](path, self.text_column)

    def __iter__(self) -> Iterator[str]:
        n_texts = n_empty = 0
        for value in self._raw():
            text = value.strip() if isinstance(value, str) else ""
            if not text:
                n_empty += 1
                if not self.keep_empty:
                    continue
            yield text
            n_texts += bool(text)
            if self.limit is not None and n_texts + (n_empty if self.keep_empty else 0) >= self.limit:
                break
        self._stats["n_empty"] = n_empty
        if n_texts == 0:
            raise CorpusError(f"corpus {self.source} holds no texts ({n_empty} empty)")

    def chunks(self, size: int) -> Iterator[list[str]]:
        """The texts in lists of ``size`` (the last one shorter)."""
        chunk: list[str] = []
        for text in self:
            chunk.append(text)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


@dataclass(frozen=True)
class CorpusTexts:
    texts: list[str]
    n_empty: int  # blank lines / empty texts that were skipped
    path: Path


def read_corpus(path: str | Path, text_column: str = "text", limit: int | None = None) -> CorpusTexts:
    """Read the texts of a (small) corpus into memory, skipping (and counting) empty ones.

    For corpora of any size, iterate a :class:`Corpus` instead.

    :raises CorpusError: missing file, unknown format, non-UTF-8 bytes, missing column, no texts.
    """
    corpus = Corpus(str(path), text_column=text_column, limit=limit)
    texts = list(corpus)
    return CorpusTexts(texts, corpus.n_empty, Path(path))
