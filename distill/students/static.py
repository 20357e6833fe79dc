"""The static student: one vector per token and a learned per-token weight.

A text is the weighted mean of its tokens' vectors: tokenize, gather, weighted mean. Inference runs
no layers (one ``embedding_bag`` over a cached weighted table), so it is thousands of texts per
second on a laptop CPU, bound by the tokenizer.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from distill.students.base import Student, StudentConfig


def bag_means(table: np.ndarray, w: np.ndarray, seqs: list[list[int]]) -> np.ndarray:
    """Weighted means of token rows: ``sum_t table[t] / sum_t w[t]`` per sequence, where ``table``
    (V, D) already holds ``w[t] * E[t]``. Sequences without tokens get the zero vector.

    ``embedding_bag`` gathers and sums in one pass without materialising the (tokens, D) rows that
    numpy's gather + ``reduceat`` would: 25x faster on 10k sentences, the same numbers.
    """
    lengths = np.fromiter((len(q) for q in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((i for q in seqs for i in q), dtype=np.int64, count=int(lengths.sum()))
    return bag_means_flat(table, w, flat, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))


def bag_means_flat(table: np.ndarray, w: np.ndarray, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """:func:`bag_means` of sequences given as flat int64 ids and (B,) start offsets."""
    flat_t, offsets_t = torch.from_numpy(flat), torch.from_numpy(offsets)
    summed = F.embedding_bag(flat_t, torch.from_numpy(table), offsets_t, mode="sum")  # (B, D)
    norm = F.embedding_bag(flat_t, torch.from_numpy(w).unsqueeze(1), offsets_t, mode="sum")  # (B, 1)
    return (summed / norm.clamp(min=1e-12)).numpy().astype(np.float32, copy=False)


# Lower-cased ASCII text cut into the units the tokenizer treats alone: runs of word characters (the
# added-word matcher's boundaries: a whole added word is one run) and single punctuation marks. BertPreTokenizer
# splits a run at each "_", so a run's pieces are the pieces of its parts: the same sums as cutting at "_".
_ASCII_WORD = re.compile(r"[a-z0-9_]+|[!-/:-@\[-^`{-~]")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # removed by BertNormalizer: joins words


class WordCache:
    """Static vectors without the subword tokenizer for the words seen before.

    A text's vector is ``sum_t w_t E_t / sum_t w_t`` over its tokens; WordPiece splits each word on its
    own, so that is also ``sum_words S_word / sum_words W_word`` with each word's partial sums
    ``S = sum w_t E_t`` and ``W = sum w_t`` over its pieces. Words are cut as BERT's normalizer and
    pre-tokenizer cut lower-cased ASCII text (one regular expression); a word seen for the first time
    goes through the real tokenizer once. Texts the expression cannot cut exactly (non-ASCII, control
    characters, special-token strings such as ``[MASK]``) take the tokenizer path whole. Only for
    lower-casing WordPiece tokenizers (BERT uncased, MiniLM, ...): others keep the tokenizer path.

    Whole words added to the tokenizer (``--vocab-from-corpus``, see :mod:`distill.students.vocab`) need
    nothing special: the tokenizer matches one only as a whole run of word characters, which is a unit
    here, so the run goes through the tokenizer alone and comes back as that word's single row.
    """

    def __init__(self, tokenizer: Tokenizer, table: np.ndarray, w: np.ndarray, specials: list[str]):
        self.tokenizer, self.table, self.w = tokenizer, table, w
        self.index: dict[str, int] = {}
        self.sums = np.zeros((1024, table.shape[1]), dtype=np.float32)  # grows by doubling
        self.weights = np.zeros(1024, dtype=np.float32)
        self.counts = np.zeros(1024, dtype=np.int64)  # tokens of each word
        self.special = re.compile("|".join(re.escape(s.lower()) for s in specials)) if specials else None

    @classmethod
    def for_student(cls, student, table: np.ndarray, w: np.ndarray) -> WordCache | None:
        import json

        spec = json.loads(student.tokenizer.to_str())
        norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        if not (norm.get("type") == "BertNormalizer" and norm.get("lowercase") and norm.get("clean_text")
                and pre.get("type") == "BertPreTokenizer" and model.get("type") == "WordPiece"):
            return None
        # special tokens only: a text holding one takes the tokenizer path (added whole words do not)
        specials = [t["content"] for t in spec.get("added_tokens", []) if t.get("special")]
        return cls(student.tokenizer, table, w, specials)

    def _add(self, words: list[str]) -> None:
        start = len(self.index)
        if start + len(words) > len(self.weights):
            size = max(2 * len(self.weights), start + len(words))
            self.sums = np.resize(self.sums, (size, self.sums.shape[1]))
            self.weights = np.resize(self.weights, size)
            self.counts = np.resize(self.counts, size)
        for k, enc in enumerate(self.tokenizer.encode_batch(words, add_special_tokens=False)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            self.sums[start + k] = self.table[ids].sum(0)
            self.weights[start + k] = self.w[ids].sum()
            self.counts[start + k] = len(ids)
            self.index[words[k]] = start + k

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw vectors (N, D) of ``texts`` and (N,) the number of tokens the tokenizer makes of each."""
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        fallback, rows, word_ids, lengths = [], [], [], []
        index, findall, control, special = self.index, _ASCII_WORD.findall, _ASCII_CONTROL.search, self.special
        get = index.__getitem__
        for i, text in enumerate(texts):
            if not text.isascii() or control(text):
                fallback.append(i)
                continue
            lower = text.lower()
            if special is not None and special.search(lower):
                fallback.append(i)
                continue
            words = findall(lower)
            try:
                ids = list(map(get, words))
            except KeyError:  # words never seen: through the tokenizer once
                self._add([x for x in dict.fromkeys(words) if x not in index])
                ids = list(map(get, words))
            rows.append(i)
            lengths.append(len(ids))
            word_ids += ids
        n_tokens = np.zeros(len(texts), dtype=np.int64)
        if rows:
            starts = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
            owner = np.repeat(np.arange(len(rows)), lengths)  # the row each word belongs to
            n_tokens[rows] = np.bincount(owner, weights=self.counts[word_ids], minlength=len(rows)).astype(np.int64)
            flat = torch.from_numpy(np.asarray(word_ids, dtype=np.int64))
            starts = torch.from_numpy(starts)
            n = len(index)
            summed = F.embedding_bag(flat, torch.from_numpy(self.sums[:n]), starts, mode="sum")  # (B, D)
            norm = F.embedding_bag(flat, torch.from_numpy(self.weights[:n]).unsqueeze(1), starts, mode="sum")
            out[rows] = (summed / norm.clamp(min=1e-12)).numpy()
        if fallback:
            seqs = [e.ids for e in self.tokenizer.encode_batch([texts[i] for i in fallback],
                                                               add_special_tokens=False)]
            out[fallback] = bag_means(self.table, self.w, seqs)
            n_tokens[fallback] = [len(q) for q in seqs]
        return out, n_tokens


class StaticStudent(Student):
    kind = "static"

    def __init__(self, config: StudentConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        self.embedding = nn.Parameter(torch.zeros(config.vocab_size, config.dim))  # (V, D)
        self.log_weight = nn.Parameter(torch.zeros(config.vocab_size))  # (V,) a text is a softmax-weighted mean
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self._words: WordCache | None = None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Flat token ids (sum of lengths,) and (B,) start offsets -> (B, D) weighted means."""
        self._cache = None  # weights may change under training
        weight = self.log_weight.exp()  # (V,)
        summed = F.embedding_bag(ids, self.embedding, offsets, mode="sum", per_sample_weights=weight[ids])  # (B, D)
        norm = F.embedding_bag(ids, weight.unsqueeze(1), offsets, mode="sum")  # (B, 1)
        return summed / norm.clamp(min=1e-12)

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Weighted table (V, D) and weights (V,), cached for numpy inference."""
        if self._cache is None:
            w = self.log_weight.detach().float().exp().cpu().numpy()
            self._cache = (self.embedding.detach().float().cpu().numpy() * w[:, None], w)
        return self._cache

    def embed_ids(self, seqs: list[list[int]]) -> np.ndarray:
        table, w = self._tables()
        return bag_means(table, w, seqs)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Raw vectors (N, D) of texts: through the word cache where it applies, else the tokenizer."""
        return self.embed_texts_counted(texts)[0]

    def embed_texts_counted(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`embed_texts` and (N,) the tokens of each text (what the service reports as usage)."""
        table, w = self._tables()
        if self._words is None or self._words.table is not table:
            self._words = WordCache.for_student(self, table, w)
        if self._words is None:
            seqs = self.tokenize(texts)
            return bag_means(table, w, seqs), np.array([len(q) for q in seqs], dtype=np.int64)
        return self._words.embed(texts)

    def encode(self, texts, dim=None, batch_size: int = 1024, progress: bool = False, prompt_name: str | None = None,
               prompt: str | None = None) -> np.ndarray:
        """See :meth:`Student.encode` (``prompt_name``: a recorded prompt; left out, the default one)."""
        from distill.students.base import normalize

        dim = self.check_dim(dim)
        texts = self.with_prompt(texts, prompt_name, prompt)
        out = np.empty((len(texts), dim), dtype=np.float32)
        for start in range(0, len(texts), max(batch_size, 1)):
            out[start:start + batch_size] = normalize(self.embed_texts(texts[start:start + batch_size])[:, :dim])
        return out

    def train(self, mode: bool = True):
        self._cache = None
        self._words = None
        return super().train(mode)
