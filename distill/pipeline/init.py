"""Starting points for students, built from the teacher's targets before any gradient step."""

from __future__ import annotations

import logging

import numpy as np
import torch

from distill.pipeline.pca import PCARotation
from distill.students import StaticStudent, TransformerStudent
from distill.students.static import bag_means

logger = logging.getLogger(__name__)
_UNUSED_LOG_WEIGHT = -20.0  # tokens with no teacher target barely count in a weighted mean


def sif_log_weights(vocab_size: int, seqs: list[list[int]], a: float = 1e-3) -> np.ndarray:
    """log of the SIF weight a / (a + p(token)), with p counted on the training texts (add-one)."""
    counts = np.bincount(np.fromiter((i for s in seqs for i in s), dtype=np.int64), minlength=vocab_size)
    p = (counts[:vocab_size] + 1) / (counts.sum() + vocab_size)
    return np.log(a / (a + p)).astype(np.float32)


def init_static(student: StaticStudent | TransformerStudent, vocab_ids: np.ndarray, vocab_targets: np.ndarray,
                pca: PCARotation, seqs: list[list[int]] | None = None, text_targets: np.ndarray | None = None,
                ridge: float = 1e-3) -> None:
    """Token table = the teacher's vocab targets, PCA-rotated and cut to the student's width.

    Used for static students and for the static part of transformer students.

    With training texts: SIF weights from their token counts, then one least-squares linear map from
    the student's text vectors to the rotated text targets (a weighted mean commutes with a linear
    map, so the map folds into the table).
    """
    D = student.dim
    table = np.zeros((student.config.vocab_size, D), dtype=np.float32)
    table[vocab_ids] = pca.transform(vocab_targets)[:, :D]
    log_w = np.full(student.config.vocab_size, _UNUSED_LOG_WEIGHT, dtype=np.float32)
    log_w[vocab_ids] = 0.0
    if seqs:
        log_w[vocab_ids] = sif_log_weights(student.config.vocab_size, seqs)[vocab_ids]
    with torch.no_grad():
        student.embedding.copy_(torch.from_numpy(table))
        student.log_weight.copy_(torch.from_numpy(log_w))
    if seqs and text_targets is not None:
        x = bag_means(table * np.exp(log_w)[:, None], np.exp(log_w), seqs).astype(np.float64)  # (N, D)
        y = pca.transform(text_targets)[:, :D].astype(np.float64)  # (N, D)
        gram = x.T @ x + ridge * len(x) * np.eye(D) * np.trace(x.T @ x) / (D * len(x))
        linear = np.linalg.solve(gram, x.T @ y)  # (D, D)
        before = np.mean(np.sum((x - y) ** 2, 1))
        after = np.mean(np.sum((x @ linear - y) ** 2, 1))
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
