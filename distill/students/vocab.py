"""Whole words of a corpus as tokens of their own: a static student's vocabulary grown from the user's texts.

A word the teacher's tokenizer cuts into several pieces (``wombats`` -> ``w ##om ##bat ##s``) loses its
meaning in a static student, whose text vector is a weighted mean of its pieces' rows. Here the most
frequent such words of the training texts become rows of their own:

- :func:`count_words` counts the words of texts as the tokenizer's normalizer sees them;
- :func:`pick_words` keeps the most frequent that the tokenizer splits into two pieces or more;
- :func:`add_words` adds them to the tokenizer as non-special ``AddedToken``s, so it looks a whole word
  up first and falls back to the teacher's pieces for everything else.

The words live in ``tokenizer.json``, so every consumer of the student (``distill.load``, the Model2Vec,
sentence-transformers and ONNX exports, the service) cuts texts the same way without knowing about them.

What a word is. The tokenizer matches an added word only between non-word characters (``\\w``) of the
normalized text (``single_word``), so a word is counted the same way: a maximal run of word characters of
``normalizer.normalize_str(text)``. Only runs of letters are kept (``str.isalpha``): numbers are open-ended
and rarely a unit of meaning (``1997``, ``2h``), and a run with a digit or ``_`` (``mp3``, ``foo_bar``) is
cut differently by different pre-tokenizers (GPT-2 splits letters from digits, BERT does not), so its
occurrences would not line up with the pieces it stands for. Whether a word splits is decided by the
tokenizer's own pre-tokenizer and model on the word as it appears inside a text (`` word``: GPT-2's
``Ġword``, a SentencePiece ``▁word``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer

from distill.errors import DistillError

_WORD = re.compile(r"\w+")  # the added-token matcher's word characters (Unicode letters, digits, _)


def check_tokenizer(tokenizer: Tokenizer) -> None:
    """:raises DistillError: a tokenizer without a pre-tokenizer (SentencePiece-style, spaces made ``▁`` by
        its normalizer), where a whole word inside the text would leave its ``▁`` behind as a piece."""
    if tokenizer.pre_tokenizer is None:
        raise DistillError("--vocab-from-corpus needs a tokenizer with a pre-tokenizer (WordPiece, byte-level BPE, "
                           "Unigram or BPE with Metaspace); this teacher's tokenizer has none")


def count_words(tokenizer: Tokenizer, texts: Iterable[str]) -> Counter:
    """How often each alphabetic word occurs in ``texts``, as the tokenizer's normalizer writes it
    (lower-cased and accent-free for BERT uncased, as is for GPT-2)."""
    normalize = tokenizer.normalizer.normalize_str if tokenizer.normalizer is not None else (lambda s: s)
    counts: Counter = Counter()
    findall = _WORD.findall
    for text in texts:
        counts.update(w for w in findall(normalize(text)) if w.isalpha())
    return counts


def pieces(tokenizer: Tokenizer, word: str) -> int:
    """How many tokens the tokenizer cuts ``word`` into inside a text (after a space), added words aside."""
    split = tokenizer.pre_tokenizer.pre_tokenize_str(" " + word)
    return sum(len(tokenizer.model.tokenize(piece)) for piece, (_, end) in split if end > 1)


def pick_words(tokenizer: Tokenizer, counts: Counter, n: int) -> list[str]:
    """The ``n`` most frequent words of ``counts`` that the tokenizer splits into two pieces or more (fewer
    when the corpus has fewer). Words the vocabulary holds as a token already (GPT-2's ``word`` at a text's
    start, where ``Ġword`` inside a text splits) are left out: the tokenizer would reuse that token's row."""
    check_tokenizer(tokenizer)
    out = []
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):  # ties in a fixed order
        if len(out) == n:
            break
        if tokenizer.token_to_id(word) is None and pieces(tokenizer, word) >= 2:
            out.append(word)
    return out


def add_words(tokenizer: Tokenizer, words: list[str]) -> list[int]:
    """Add ``words`` to ``tokenizer`` (in place) as whole-word tokens; returns their ids, in order.

    ``single_word``: matched only between non-word characters (``wombats`` inside ``wombatsx`` is not);
    ``normalized``: matched in the normalized text (``Wombats`` is ``wombats`` for BERT uncased);
    ``lstrip``: the space before the word goes with it, so byte-level BPE and Metaspace tokenizers leave no
    lone ``Ġ``/``▁`` piece behind. Not special: decoding keeps them, and they are not stripped as special.

    :raises DistillError: when a word is already a token (see :func:`pick_words`).
    """
    start = tokenizer.get_vocab_size(with_added_tokens=True)
    taken = [w for w in words if tokenizer.token_to_id(w) is not None]
    if taken:
        raise DistillError(f"{len(taken)} words are tokens already (e.g. {taken[0]!r}); pick them with pick_words")
    tokenizer.add_tokens([AddedToken(w, single_word=True, lstrip=True, normalized=True, special=False)
                          for w in words])
    ids = [tokenizer.token_to_id(w) for w in words]
    if ids != list(range(start, start + len(words))):  # new rows at the end of the table, in order
        raise DistillError(f"the tokenizer numbered the added words from {ids[0]}, not from {start} right after its "
                           "vocabulary (its ids have gaps?): --vocab-from-corpus cannot extend this tokenizer")
    return ids


def special_tokens(tokenizer: Tokenizer) -> list[str]:
    """The contents of the tokenizer's special added tokens ([CLS], [MASK], <|endoftext|>, ...), not its words."""
    return [t["content"] for t in json.loads(tokenizer.to_str()).get("added_tokens", []) if t.get("special")]


def added_words(tokenizer: Tokenizer) -> list[str]:
    """The whole words added by :func:`add_words` (the non-special added tokens)."""
    return [t["content"] for t in json.loads(tokenizer.to_str()).get("added_tokens", []) if not t.get("special")]
