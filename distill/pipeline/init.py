"""Starting points for students, built from the teacher's targets before any gradient step."""

from __future__ import annotations

import logging

import numpy as np
import torch

from distill.memory import trim_heap
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


def init_static(student: StaticStudent | TransformerStudent, vocab_ids: np.ndarray, vocab_targets: np.ndarray,
                pca: PCARotation, tokens: TokenArrays | None = None, rows: np.ndarray | None = None,
                targets: TargetView | None = None, counts: np.ndarray | None = None, ridge: float = 1e-3,
                chunk: int = 16384) -> None:
    """Token table = the teacher's vocab targets, PCA-rotated and cut to the student's width.

    Used for static students and for the static part of transformer students.

    With training texts (``tokens`` of the texts ``rows``, their teacher vectors in ``targets``): SIF
    weights from their token counts, then one least-squares linear map from the student's text
    vectors to the rotated text targets (a weighted mean commutes with a linear map, so the map
    folds into the table). The normal equations are summed chunk by chunk: memory stays at a
    chunk, whatever the corpus.

    :param counts: (V,) token counts of the texts ``rows``, when the caller has them already
        (otherwise counted here, one more pass over the token ids).
    """
    D = student.dim
    V = student.config.vocab_size
    table = np.zeros((V, D), dtype=np.float32)
    table[vocab_ids] = pca.transform(vocab_targets)[:, :D]
    log_w = np.full(V, _UNUSED_LOG_WEIGHT, dtype=np.float32)
    log_w[vocab_ids] = 0.0
    texts = tokens is not None and rows is not None and len(rows) > 0
    if texts:
        counts = tokens.token_counts(rows, V) if counts is None else counts
        log_w[vocab_ids] = sif_log_weights(counts)[vocab_ids]
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
