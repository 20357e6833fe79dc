"""Word-level checks of token embeddings: word-pair similarity (Spearman) and analogies (3CosAdd).

Both work on a token space: the vocabulary's strings and one vector per token, (V, D). A word
counts only when it is a single token of the vocabulary (as written, else lower-cased); pairs and
questions with a word outside it are skipped and counted, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from distill.errors import DistillError
from distill.index.search import normalize_prefix

_CHUNK = 1024  # analogy questions scored at once: bounds the (chunk, V) score matrix


@dataclass(frozen=True)
class TokenSpace:
    strings: list[str]  # (V,) token strings
    vectors: np.ndarray  # (V, D) one vector per token, full width

    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.strings)}


def _lookup(index: dict[str, int], word: str) -> int | None:
    i = index.get(word)
    return index.get(word.lower()) if i is None else i


def read_word_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``word1 word2 score`` lines (spaces, tabs or commas); ``#`` comments and a non-numeric header skipped.

    :raises DistillError: on a missing file, a short line or no pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"word-pair file {path} does not exist")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 3:
            raise DistillError(f"{path}: line {n} needs `word1 word2 score`, got {line!r}")
        try:
            score = float(fields[2])
        except ValueError:
            if not pairs:
                continue  # a header row
            raise DistillError(f"{path}: line {n} has a non-numeric score {fields[2]!r}") from None
        pairs.append((fields[0], fields[1], score))
    if not pairs:
        raise DistillError(f"{path} holds no word pairs")
    return pairs


def read_analogies(path: str | Path) -> dict[str, list[tuple[str, str, str, str]]]:
    """The word2vec ``questions-words.txt`` format: ``: section`` headers, then ``a b c d`` lines.

    :raises DistillError: on a missing file, a line that is not four words, or no questions.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"analogy file {path} does not exist")
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    current = "all"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            current = line[1:].strip() or "all"
            continue
        words = line.split()
        if len(words) != 4:
            raise DistillError(f"{path}: line {n} needs four words `a b c d`, got {line!r}")
        sections.setdefault(current, []).append((words[0], words[1], words[2], words[3]))
    if not sections:
        raise DistillError(f"{path} holds no analogy questions")
    return sections


def word_similarity(space: TokenSpace, pairs: list[tuple[str, str, float]], dims: list[int]) -> dict[str, dict]:
    """Per prefix size: Spearman and Pearson (x100) of cosine vs gold score over the in-vocabulary pairs."""
    index = space.index()
    found = [(_lookup(index, a), _lookup(index, b), s) for a, b, s in pairs]
    found = [(a, b, s) for a, b, s in found if a is not None and b is not None]
    out = {}
    for d in dims:
        row = {"n": len(found), "oov": len(pairs) - len(found), "spearman": float("nan"), "pearson": float("nan")}
        if len(found) >= 3:
            x = normalize_prefix(space.vectors, d)
            a, b, gold = (np.array(v) for v in zip(*found))
            cos = np.einsum("nd,nd->n", x[a], x[b])
            row["spearman"] = 100 * float(spearmanr(cos, gold).statistic)
            row["pearson"] = 100 * float(pearsonr(cos, gold).statistic)
        out[str(d)] = row
    return out


def analogy_accuracy(space: TokenSpace, sections: dict[str, list[tuple[str, str, str, str]]],
                     dims: list[int]) -> dict[str, dict]:
    """3CosAdd accuracy per prefix size: ``a : b :: c : ?`` is right when the token nearest
    ``b - a + c`` (unit vectors, cosine), among all tokens but a, b and c, is ``d``.

    Only questions whose four words are in the vocabulary are asked. Returns per prefix size
    ``{"accuracy", "correct", "n", "oov", "sections": {name: accuracy}}`` (accuracy in %).
    """
    index = space.index()
    asked, names, n_all = [], [], 0
    for name, questions in sections.items():
        for q in questions:
            n_all += 1
            ids = [_lookup(index, w) for w in q]
            if None not in ids:
                asked.append(ids)
                names.append(name)
    q = np.array(asked, dtype=np.int64).reshape(-1, 4)  # (Q, 4) a, b, c, d
    out = {}
    for d in dims:
        x = normalize_prefix(space.vectors, d)  # (V, d)
        hit = np.zeros(len(q), dtype=bool)
        for start in range(0, len(q), _CHUNK):
            qa, qb, qc, qd = q[start:start + _CHUNK].T
            target = x[qb] - x[qa] + x[qc]  # (C, d)
            scores = target @ x.T  # (C, V)
            rows = np.arange(len(qa))
            for col in (qa, qb, qc):
                scores[rows, col] = -np.inf
            hit[start:start + len(qa)] = scores.argmax(axis=1) == qd
        per_section = {}
        for name in sections:
            mask = np.array([n == name for n in names], dtype=bool)
            if mask.any():
                per_section[name] = 100 * float(hit[mask].mean())
        out[str(d)] = {"accuracy": 100 * float(hit.mean()) if len(q) else float("nan"), "correct": int(hit.sum()),
                       "n": len(q), "oov": n_all - len(q), "sections": per_section}
    return out


def token_space(model, batch_size: int = 1024) -> TokenSpace:
    """One vector per usable vocabulary token: a student's token vectors or a teacher's vocab targets.

    A student's vector for token ``t`` is its embedding of the one-token sequence ``[t]`` (for a
    static student, the row of its table); a teacher's is its pooled output for ``t`` alone.
    """
    if hasattr(model, "vocab_targets"):  # a teacher
        ids, strings = model.vocab()
        return TokenSpace(strings, model.vocab_targets(ids, batch_size=batch_size))
    vocab = model.tokenizer.get_vocab(with_added_tokens=False)  # string -> id
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    ids = [i for _, i in ordered]
    vectors = np.concatenate([model.embed_ids([[i] for i in ids[s:s + batch_size]])
                              for s in range(0, len(ids), batch_size)])
    return TokenSpace([s for s, _ in ordered], vectors)
