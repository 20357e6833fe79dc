"""``--vocab-from-corpus N``: the run's side of a vocabulary grown from the training texts.

The words are picked from the training texts only (the held-out texts the run is scored on play no part),
labeled by the teacher as whole-word targets (:attr:`TargetKind.WORD`: each word alone, framed as a
vocabulary token is, in a store of its own) and appended to the vocabulary targets, so the student's
new rows start, like every other row, from the teacher's own vector PCA-rotated into the student's space.
The tokenizer side is :mod:`distill.students.vocab`. Run folder::

    data/words.json, words.rows.npy   the teacher's targets of the added words (a view of the word store)
    data/words-items.json             their ids and strings, and how many were asked for
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from distill.io import save_json
from distill.pipeline.corpus import Corpus
from distill.pipeline.targets import TargetKind, TargetView, VocabTargets, label
from distill.students.vocab import add_words, check_tokenizer, count_words, pick_words

logger = logging.getLogger(__name__)
WORDS = "words"  # the name of the words' target view in data/
ITEMS = "words-items.json"


def training_texts(corpus: Corpus, train: np.ndarray, chunk: int = 16_384) -> Iterator[str]:
    """The texts of ``corpus`` at the (sorted) positions ``train``, streamed."""
    keep = np.zeros(int(train.max()) + 1 if len(train) else 0, dtype=bool)
    keep[train] = True
    position = 0
    for texts in corpus.chunks(chunk):
        for k, text in enumerate(texts, start=position):
            if k < len(keep) and keep[k]:
                yield text
        position += len(texts)


def add_corpus_words(cfg, teacher, corpus: Corpus, train: np.ndarray, tokenizer: Tokenizer, vocab: VocabTargets,
                     data: Path, state) -> tuple[VocabTargets, int]:
    """Add the ``cfg.vocab_from_corpus`` most frequent words of the training texts that the tokenizer splits
    to ``tokenizer`` (in place) and their teacher targets to ``vocab``; returns (vocab, words added).

    Every rank labels its share of the words (``state``: the command's distributed state); the main process
    writes ``data/``.
    """
    main = state.is_main_process
    check_tokenizer(tokenizer)
    counts = count_words(tokenizer, training_texts(corpus, train))
    words = pick_words(tokenizer, counts, cfg.vocab_from_corpus)
    if len(words) < cfg.vocab_from_corpus:
        logger.warning("--vocab-from-corpus %d: the training texts hold only %d words (of %d distinct) that the "
                       "tokenizer splits; adding those", cfg.vocab_from_corpus, len(words), len(counts))
    if not words:
        if main:
            save_json(data / ITEMS, {"requested": cfg.vocab_from_corpus, "ids": [], "words": []})
        return vocab, 0
    view = label(teacher, TargetKind.WORD, cfg.targets_dir, words, batch_size=max(256, cfg.teacher_batch_size),
                 state=state)
    ids = add_words(tokenizer, words)
    n_covered = sum(counts[w] for w in words)
    logger.info("added %d whole words of the corpus to the vocabulary (%d occurrences, %.1f%% of its words), "
                "e.g. %s", len(words), n_covered, 100 * n_covered / max(sum(counts.values()), 1),
                ", ".join(words[:5]))
    if main:
        view.save(data, WORDS)
        save_json(data / ITEMS, {"requested": cfg.vocab_from_corpus, "ids": ids, "words": words,
                                 "occurrences": n_covered}, indent=None)
    return extend(vocab, np.asarray(ids, np.int64), words, view.pooled()), len(words)


def extend(vocab: VocabTargets, ids: np.ndarray, words: list[str], pooled: np.ndarray) -> VocabTargets:
    """``vocab`` with the added words' rows after its own. The words have no input-embedding row (only a
    transformer student would use one, and it cannot take added words), so that part is left empty."""
    all_ids = np.concatenate([vocab.ids, ids])
    return VocabTargets(all_ids, list(vocab.strings) + list(words), np.concatenate([vocab.pooled, pooled]),
                        np.zeros((len(all_ids), 0), np.float32))


def with_corpus_words(data: Path, vocab: VocabTargets) -> VocabTargets:
    """The vocabulary targets of a prepared run (``data/``), with the added words when it has them."""
    path = Path(data) / ITEMS
    if not path.is_file():
        return vocab
    items = json.loads(path.read_text())
    if not items["ids"]:
        return vocab
    return extend(vocab, np.asarray(items["ids"], np.int64), items["words"], TargetView.load(data, WORDS).pooled())


def words_summary(data: Path) -> dict | None:
    """What ``--vocab-from-corpus`` did, for ``summary.json``: words asked for and added, and how often the
    added words occur in the training texts; None when the run did not ask for it."""
    path = Path(data) / ITEMS
    if not path.is_file():
        return None
    items = json.loads(path.read_text())
    return {"requested": items["requested"], "added": len(items["ids"]), "occurrences": items.get("occurrences", 0),
            "examples": items["words"][:10]}
