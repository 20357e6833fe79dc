"""Quality numbers for any model with ``encode(texts, dim)``: STS Spearman and agreement with a teacher."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from distill.errors import DistillError
from distill.index.compare import neighbour_overlap, pairwise_spearman
from distill.index.search import normalize_prefix


@dataclass(frozen=True)
class Pairs:
    first: list[str]
    second: list[str]
    scores: np.ndarray  # (N,) gold similarity


def read_pairs(path: str | Path) -> Pairs:
    """STS-B format (tab-separated, score in field 5, sentences in 6-7) or .jsonl/.csv with
    ``sentence1, sentence2, score`` columns.

    :raises DistillError: on a missing file, an unparsable score or no pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"pairs file {path} does not exist")
    first, second, scores = [], [], []
    try:
        lines = path.read_bytes().decode("utf-8-sig").split("\n")  # \n only: no splitting on form feeds etc.
    except UnicodeDecodeError as e:
        raise DistillError(f"{path}: not UTF-8 (byte {e.start}); re-encode the file as UTF-8") from e
    lines = [ln.rstrip("\r") for ln in lines]
    if lines and not lines[-1]:
        lines.pop()
    if path.suffix == ".jsonl":
        rows = json_records(path, lines, ("sentence1", "sentence2", "score"), require=False)
    elif path.suffix == ".csv" and lines and "sentence1" in lines[0] and "\t" not in lines[0]:
        rows = list(csv.DictReader(lines))
    else:  # STS-B: split on tabs (quotes inside sentences break csv readers)
        rows = []
        for n, ln in enumerate(lines, start=1):
            fields = ln.split("\t")
            if len(fields) < 7:
                raise DistillError(f"{path}: line {n} has {len(fields)} tab-separated fields, STS-B needs 7")
            rows.append({"score": fields[4], "sentence1": fields[5], "sentence2": fields[6]})
    for n, row in enumerate(rows, start=1):
        try:
            scores.append(float(row["score"]))
            first.append(str(row["sentence1"]))
            second.append(str(row["sentence2"]))
        except (KeyError, ValueError, TypeError) as e:
            raise DistillError(f"{path}: row {n} needs sentence1, sentence2 and a numeric score ({e})") from e
    if not scores:
        raise DistillError(f"{path} holds no pairs")
    return Pairs(first, second, np.asarray(scores, dtype=np.float64))


def json_records(path: Path, lines: list[str], fields: tuple[str, ...], require: bool = True) -> list[dict]:
    """The JSON objects of a .jsonl file's ``lines`` (blank lines skipped).

    :param require: every object must hold ``fields`` (otherwise only objects are checked; missing fields
        are the caller's error to name).
    :raises DistillError: a line that is not valid JSON, not an object, or lacks a field.
    """
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DistillError(f"{path}: line {n} is not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or (require and any(f not in row for f in fields)):
            what = "needs the fields" if require and isinstance(row, dict) else "is not a JSON object with"
            raise DistillError(f"{path}: line {n} {what} {', '.join(fields)}")
        rows.append(row)
    return rows


def sts_scores(model, pairs: Pairs, dims: list[int | None], batch_size: int = 256) -> dict[str, dict]:
    """Spearman and Pearson (x100) of cosine similarity vs gold scores, per prefix size."""
    texts = sorted(set(pairs.first) | set(pairs.second))
    row = {t: i for i, t in enumerate(texts)}
    full = model.encode(texts, batch_size=batch_size)  # (U, D), normalized
    a, b = [row[t] for t in pairs.first], [row[t] for t in pairs.second]
    out = {}
    for d in dims:
        x = normalize_prefix(full, d)
        cos = np.sum(x[a] * x[b], axis=1)
        out[str(d or full.shape[1])] = {"spearman": 100 * float(spearmanr(cos, pairs.scores).statistic),
                                        "pearson": 100 * float(pearsonr(cos, pairs.scores).statistic)}
    return out


def agreement(x_student: np.ndarray, x_teacher: np.ndarray, dims: list[int], k: int = 10) -> dict[str, dict]:
    """Per prefix size: overlap@k and similarity Spearman of the student prefix vs the full teacher."""
    teacher = normalize_prefix(x_teacher)
    out = {}
    for d in dims:
        prefix = normalize_prefix(x_student, d)
        out[str(d)] = {f"overlap@{k}": neighbour_overlap(prefix, teacher, k),
                       "sim_spearman": pairwise_spearman(prefix, teacher)}
    return out
