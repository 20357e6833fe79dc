"""Character-level mode: the student's tokens are the single characters of the corpus.

Each character's target is the teacher's pooled vector of that character alone, labeled by the
pipeline through the ordinary target cache (as a tiny text set), so it is computed once and reused. This is for small
demonstrations: vowels drift apart from consonants, digits from letters, letters from symbols.
"""

from __future__ import annotations

from collections import Counter

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from distill.errors import DistillError

UNK = "[UNK]"


def frequent_chars(counts: Counter, min_count: int = 2) -> list[str]:
    """Characters seen at least ``min_count`` times, most frequent first (ties by character).

    :raises DistillError: when fewer than two remain.
    """
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    if len(chars) < 2:
        raise DistillError(f"the corpus has {len(chars)} characters seen {min_count}+ times; need at least 2")
    return chars


def corpus_chars(texts, min_count: int = 2) -> list[str]:
    """Non-space characters of ``texts`` seen at least ``min_count`` times, most frequent first."""
    return frequent_chars(Counter(c for t in texts for c in t if not c.isspace()), min_count)


def char_tokenizer(chars: list[str]) -> Tokenizer:
    """A WordLevel tokenizer over ``[UNK]`` (id 0) and ``chars`` (ids 1..): one token per non-space char."""
    vocab = {UNK: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex("."), behavior="isolated")])
    return tok
