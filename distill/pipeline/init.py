"""Starting points for students, built from the teacher's targets before any gradient step."""

from __future__ import annotations

import logging

import numpy as np
import torch

from distill.memory import trim_heap
from distill.pipeline.config import TokenWeighting
from distill.pipeline.data import TokenArrays
from distill.pipeline.pca import PCARotation
from distill.pipeline.targets import TargetView
from distill.students import StaticStudent, TransformerStudent
from distill.students.static import bag_means_flat

logger = logging.getLogger(__name__)
_UNUSED_LOG_WEIGHT = -20.0  # tokens with no teacher target barely count in a weighted mean


def sif_log_weights(counts: np.ndarray, a: float = 1e-3) -> np.ndarray:
    """log of the SIF weight a / (a + p(token)), p from the (V,) token ``counts`` of the training texts (add-one)."""
    p = (counts + 1) / (counts.sum() + len(counts))
    return np.log(a / (a + p)).astype(np.float32)


def bm25_log_weights(df: np.ndarray, n_texts: int) -> np.ndarray:
    """log of BM25's IDF, log(1 + (N - df + 0.5) / (df + 0.5)), from the (V,) document frequencies ``df``
    of ``n_texts`` texts. Always > 0 (the 1 + keeps a token found in every text from a negative weight)."""
    idf = np.log1p((n_texts - df + 0.5) / (df + 0.5))
    return np.log(idf).astype(np.float32)


def document_frequencies(tokens: TokenArrays, rows: np.ndarray, vocab_size: int, chunk: int = 65536) -> np.ndarray:
    """(V,) number of the texts ``rows`` that hold each token id at least once (in chunks of texts, as
    :meth:`TokenArrays.token_counts` counts: memory stays at a chunk)."""
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(rows), chunk):
        flat, offsets = tokens.flat(rows[start:start + chunk])
        lengths = np.diff(np.append(offsets, len(flat)))
        text = np.repeat(np.arange(len(offsets), dtype=np.int64), lengths)  # (n_tokens,) text of each token
        keep = flat < vocab_size  # as token_counts: ids past the table count for nothing
        pairs = np.unique(text[keep] * vocab_size + flat[keep])  # each (text, token) once
        df += np.bincount(pairs % vocab_size, minlength=vocab_size)[:vocab_size]
    return df


def initial_log_weights(weighting: TokenWeighting | str, tokens: TokenArrays, rows: np.ndarray, vocab_size: int,
                        counts: np.ndarray | None = None) -> np.ndarray:
    """(V,) initial log pooling weights of every token id from the training texts ``rows``.

    :raises DistillError: for an unknown ``weighting``.
    """
    weighting = TokenWeighting.parse(weighting)
    if weighting is TokenWeighting.SIF:
        return sif_log_weights(tokens.token_counts(rows, vocab_size) if counts is None else counts)
    if weighting is TokenWeighting.BM25:
        return bm25_log_weights(document_frequencies(tokens, rows, vocab_size), len(rows))
    return np.zeros(vocab_size, dtype=np.float32)


def init_static(student: StaticStudent | TransformerStudent, vocab_ids: np.ndarray, vocab_targets: np.ndarray,
                pca: PCARotation, tokens: TokenArrays | None = None, rows: np.ndarray | None = None,
                targets: TargetView | None = None, counts: np.ndarray | None = None, ridge: float = 1e-3,
                chunk: int = 16384, weighting: TokenWeighting | str = TokenWeighting.SIF) -> None:
    """Token table = the teacher's vocab targets, PCA-rotated and cut to the student's width.

    Used for static students and for the static part of transformer students.

    With training texts (``tokens`` of the texts ``rows``, their teacher vectors in ``targets``): pooling
    weights from them (``weighting``: SIF from token counts, BM25 IDF, or none), then one least-squares
    linear map from the student's text vectors to the rotated text targets (a weighted mean commutes
    with a linear map, so the map folds into the table). The normal equations are summed chunk by
    chunk: memory stays at a chunk, whatever the corpus.

    :param counts: (V,) token counts of the texts ``rows``, when the caller has them already
        (otherwise counted here, one more pass over the token ids).
    :param weighting: sif | bm25 | none; tokens without a teacher target weigh next to nothing whatever it is.
    :raises DistillError: for an unknown ``weighting``.
    """
    weighting = TokenWeighting.parse(weighting)
    D = student.dim
    V = student.config.vocab_size
    table = np.zeros((V, D), dtype=np.float32)
    table[vocab_ids] = pca.transform(vocab_targets)[:, :D]
    log_w = np.full(V, _UNUSED_LOG_WEIGHT, dtype=np.float32)
    log_w[vocab_ids] = 0.0
    texts = tokens is not None and rows is not None and len(rows) > 0
    if texts:
        log_w[vocab_ids] = initial_log_weights(weighting, tokens, rows, V, counts=counts)[vocab_ids]
    with torch.no_grad():
        student.embedding.copy_(torch.from_numpy(table))
        student.log_weight.copy_(torch.from_numpy(log_w))
    if not texts or targets is None:
        return
    w = np.exp(log_w)
    weighted = table * w[:, None]
    xx, xy = np.zeros((D, D)), np.zeros((D, D))
    sq_x = sq_y = cross = 0.0
    for start in range(0, len(rows), chunk):
        idx = rows[start:start + chunk]
        flat, offsets = tokens.flat(idx)
        x = bag_means_flat(weighted, w, flat, offsets).astype(np.float64)  # (n, D)
        y = pca.transform(targets.pooled(idx))[:, :D].astype(np.float64)  # (n, D)
        xx += x.T @ x
        xy += x.T @ y
        sq_x, sq_y, cross = sq_x + np.sum(x * x), sq_y + np.sum(y * y), cross + np.sum(x * y)
        trim_heap()
    n = len(rows)
    gram = xx + ridge * np.eye(D) * np.trace(xx) / D
    linear = np.linalg.solve(gram, xy)  # (D, D)
    before = (sq_x - 2 * cross + sq_y) / n
    # |xL - y|^2 summed = tr(L' xx L) - 2 tr(L' xy) + |y|^2
    after = (np.trace(linear.T @ xx @ linear) - 2 * np.trace(linear.T @ xy) + sq_y) / n
    logger.info("linear map of the token table: text MSE %.4g -> %.4g", before, after)
    with torch.no_grad():
        student.embedding.copy_(torch.from_numpy((table @ linear).astype(np.float32)))
    student.train()  # drop the numpy cache


def init_transformer(student: TransformerStudent, input_embeddings: np.ndarray, vocab_ids: np.ndarray) -> None:
    """Encoder token embeddings = the teacher's input-embedding rows, projected onto their top principal axes.

    (The static rows and weights of a transformer student are set by :func:`init_static`.)
    """
    W = student.config.width
    pca = PCARotation.fit(input_embeddings, center=True)
    rows = pca.transform(input_embeddings)[:, :W]  # (V, min(D_in, W))
    rows = rows / (rows.std() + 1e-8) * 0.02  # the usual init scale of a token embedding
    with torch.no_grad():
        weight = student.token_embedding.weight
        weight[torch.as_tensor(np.array(vocab_ids)), : rows.shape[1]] = torch.from_numpy(rows.astype(np.float32).copy())
