"""Texts longer than a contextual student's ``max_length``: cut them (counted, or refused), or embed them in windows.

A contextual student has a position table of ``max_length`` rows, so its ``tokenize`` cuts longer
texts. Here that cut is said out loud: a :class:`Plan` counts the texts and tokens cut, refuses them
when truncation is off, or, in ``chunk`` mode, lays each long text out as overlapping windows of the
limit (stride half a window), each framed by the special tokens the student's ``tokenize`` keeps
([CLS] … [SEP] for BERT-like ids). The text's vector is the mean of its windows' full-width pooled
vectors weighted by their content tokens; prefix and normalization come after, as for any text.
A text that fits is one row, exactly what ``tokenize`` gives: its vector is the plain one.
Static students have no limit: nothing is cut, nothing is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from distill.errors import DistillError
from distill.students.base import ContextualStudent, Student, normalize


class LongMode(str, Enum):
    TRUNCATE = "truncate"  # cut to the limit, as the student's tokenize does
    CHUNK = "chunk"  # overlapping windows of the limit, token-weighted mean


class LongTextError(DistillError):
    """A text past the student's limit while truncation is off."""

    def __init__(self, index: int, n_tokens: int, limit: int):
        super().__init__(f"input {index} has {n_tokens} tokens, past the student's limit of {limit} "
                         "(truncate it, or embed it in windows with long=chunk)")
        self.index, self.n_tokens, self.limit = index, n_tokens, limit


@dataclass
class Plan:
    """The forward-pass rows of a list of texts and how to fold them back into one vector per text."""

    seqs: list[list[int]]  # rows of the forward pass: one per text, or one per window of a chunked text
    owner: np.ndarray  # (R,) the text each row belongs to
    weight: np.ndarray  # (R,) content tokens of each window (1.0 for a text that is one row)
    n_texts: int
    n_tokens: int  # tokens embedded: what is kept of a cut text, every token of a chunked one
    truncated_texts: int = 0
    truncated_tokens: int = 0  # tokens dropped by the cuts
    chunked_texts: int = 0

    def combine(self, raw: np.ndarray) -> np.ndarray:
        """(R, D) raw row vectors -> (N, D) raw text vectors: the content-token-weighted mean of each text's rows."""
        if len(self.seqs) == self.n_texts:  # no windows: row i is text i
            return raw
        out = np.zeros((self.n_texts, raw.shape[1]), dtype=np.float64)  # (N, D)
        np.add.at(out, self.owner, raw * self.weight[:, None])
        total = np.bincount(self.owner, weights=self.weight, minlength=self.n_texts)  # (N,)
        return (out / total[:, None]).astype(np.float32)


def max_input_tokens(student: Student) -> int | None:
    """The student's token limit; ``None`` for a static student (a table lookup has no positions)."""
    return int(student.config.max_length) if isinstance(student, ContextualStudent) else None


def full_ids(student: Student, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as the student's ``tokenize`` makes them, without the cut."""
    if student.config.lowercase:  # layers students lower-case first, as their teacher does
        texts = [t.lower() for t in texts]
    return [e.ids for e in student.tokenizer.encode_batch(list(texts), add_special_tokens=True)]


def windows(seq: list[int], limit: int, cls_id: int | None = None,
            sep_id: int | None = None) -> list[tuple[list[int], int]]:
    """Overlapping windows of at most ``limit`` ids over ``seq``, each with its number of content tokens.

    A leading ``cls_id`` and a trailing ``sep_id`` frame the text: every window keeps them, and only
    the content between them is slid over, ``limit - framing`` tokens at a time, by half that.
    """
    head = seq[:1] if cls_id is not None and seq and seq[0] == cls_id else []
    tail = seq[-1:] if sep_id is not None and len(seq) > len(head) and seq[-1] == sep_id else []
    content = seq[len(head): len(seq) - len(tail)]
    width = max(1, limit - len(head) - len(tail))
    stride = max(1, width // 2)
    out = []
    start = 0
    while True:
        part = content[start:start + width]
        out.append((head + part + tail, len(part)))
        if start + width >= len(content):
            return out
        start += stride


def plan(full: list[list[int]], cut: list[list[int]], limit: int | None, long: LongMode | str = LongMode.TRUNCATE,
         truncate: bool = True, cls_id: int | None = None, sep_id: int | None = None) -> Plan:
    """The rows to embed for texts whose whole ids are ``full`` and whose cut ids (as ``tokenize`` gives) ``cut``.

    :param limit: the student's ``max_length``; ``None``: no limit (static students).
    :raises LongTextError: a text past ``limit`` when ``long`` is ``truncate`` and ``truncate`` is off.
    """
    long = LongMode(long)
    seqs: list[list[int]] = []
    owner: list[int] = []
    weight: list[float] = []
    p = Plan([], np.empty(0), np.empty(0), len(full), 0)
    for i, (f, c) in enumerate(zip(full, cut)):
        if limit is None or len(f) <= limit:
            rows = [(c, 1)]
            p.n_tokens += len(c)
        elif long is LongMode.CHUNK:
            rows = windows(f, limit, cls_id, sep_id)
            p.n_tokens += len(f)
            p.chunked_texts += 1
        elif not truncate:
            raise LongTextError(i, len(f), limit)
        else:
            rows = [(c, 1)]
            p.n_tokens += len(c)
            p.truncated_texts += 1
            p.truncated_tokens += len(f) - len(c)
        for ids, n in rows:
            seqs.append(ids)
            owner.append(i)
            weight.append(float(n))
    p.seqs, p.owner, p.weight = seqs, np.asarray(owner, dtype=np.int64), np.asarray(weight, dtype=np.float64)
    return p


def plan_texts(student: Student, texts: list[str], long: LongMode | str = LongMode.TRUNCATE,
               truncate: bool = True) -> Plan:
    """:func:`plan` for texts: ``tokenize`` gives the rows of the texts that fit (and the cuts)."""
    cut = student.tokenize(list(texts))
    limit = max_input_tokens(student)
    if limit is None:
        return plan(cut, cut, None)
    full = list(cut)
    maybe_long = [i for i, s in enumerate(cut) if len(s) >= limit]  # only a text cut to the limit can be longer
    for i, ids in zip(maybe_long, full_ids(student, [texts[i] for i in maybe_long])):
        full[i] = ids
    return plan(full, cut, limit, long, truncate, student.config.cls_id, student.config.sep_id)


def plan_ids(student: Student, seqs: list[list[int]], long: LongMode | str = LongMode.TRUNCATE,
             truncate: bool = True) -> Plan:
    """:func:`plan` for token-id inputs: the cut keeps the first ``max_length`` ids."""
    limit = max_input_tokens(student)
    cut = seqs if limit is None else [s[:limit] for s in seqs]
    return plan(seqs, cut, limit, long, truncate, student.config.cls_id, student.config.sep_id)


def encode(student: Student, texts: list[str], dim: int | None = None, batch_size: int = 1024,
           long: LongMode | str = LongMode.TRUNCATE, truncate: bool = True,
           prompt_name: str | None = None) -> tuple[np.ndarray, Plan]:
    """``student.encode`` that says what it cut: (N, dim) L2-normalized float32 vectors and the :class:`Plan`.

    The prompt (``prompt_name``, else the student's default, as ``student.encode``) is part of each text:
    its tokens count against the limit.
    :raises LongTextError: a text past the limit with ``truncate`` off (and ``long`` = ``truncate``).
    """
    dim = student.check_dim(dim)
    p = plan_texts(student, student.with_prompt(texts, prompt_name), long, truncate)
    raw = np.empty((len(p.seqs), student.dim), dtype=np.float32)  # (R, D)
    order = np.argsort([-len(s) for s in p.seqs], kind="stable")  # similar lengths together: little padding
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        raw[idx] = student.embed_ids([p.seqs[i] for i in idx])
    return normalize(p.combine(raw)[:, :dim]).astype(np.float32, copy=False), p
