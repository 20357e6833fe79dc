"""Character-level mode: the student's tokens are the single characters of the corpus.

Each character's target is the teacher's pooled vector of that character alone, labeled through the
ordinary target cache (as a tiny text set), so it is computed once and reused. This is for small
demonstrations: vowels drift apart from consonants, digits from letters, letters from symbols.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from distill.errors import DistillError
from distill.pipeline.targets import TargetKind, TargetSet, build_targets, load_targets

UNK = "[UNK]"


def corpus_chars(texts: list[str], min_count: int = 2) -> list[str]:
    """Non-space characters seen at least ``min_count`` times, most frequent first."""
    counts = Counter(c for t in texts for c in t if not c.isspace())
    return [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


def char_tokenizer(chars: list[str]) -> Tokenizer:
    """A WordLevel tokenizer over ``[UNK]`` (id 0) and ``chars`` (ids 1..): one token per non-space char."""
    vocab = {UNK: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex("."), behavior="isolated")])
    return tok


def char_vocab(teacher, texts: list[str], targets_dir: str | Path, batch_size: int = 256,
               min_count: int = 2) -> tuple[Tokenizer, TargetSet]:
    """The character tokenizer of ``texts`` and its vocabulary targets (ids, strings, pooled)."""
    if not texts:
        raise DistillError("--tokenizer char needs --corpus: the characters come from its texts")
    chars = corpus_chars(texts, min_count)
    if len(chars) < 2:
        raise DistillError(f"the corpus has {len(chars)} characters seen {min_count}+ times; need at least 2")
    labeled = load_targets(build_targets(teacher, TargetKind.TEXT, targets_dir, texts=chars, batch_size=batch_size,
                                         progress=False))
    vocab = TargetSet(labeled.path, labeled.manifest, pooled=np.asarray(labeled.pooled),
                      ids=np.arange(1, len(chars) + 1, dtype=np.int64), strings=chars)
    return char_tokenizer(chars), vocab
