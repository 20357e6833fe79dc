"""Export students to other formats: a sentence-transformers folder (``SentenceTransformer(path)``)."""

from __future__ import annotations

from pathlib import Path

import torch

from distill.errors import DistillError
from distill.students.base import Student
from distill.students.static import StaticStudent


def export_sentence_transformers(student: Student, folder: str | Path) -> Path:
    """Write a folder that ``SentenceTransformer(folder, truncate_dim=d)`` loads, giving our vectors.

    A static student becomes StaticEmbedding + Normalize. StaticEmbedding takes a plain mean of the
    token rows, so the learned per-token weights are folded into the rows: the mean of ``w_t * E_t``
    points the same way as our weighted mean, and the vectors agree after normalization. Truncating a
    normalized vector keeps the direction of the truncated raw vector, so ``truncate_dim`` agrees too.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    if not isinstance(student, StaticStudent):
        raise DistillError(f"sentence-transformers export supports static students, not {student.kind!r}; "
                           "use the native folder with distill.load")
    table, _ = student._tables()
    module = StaticEmbedding(student.tokenizer, embedding_weights=torch.from_numpy(table.copy()))
    model = SentenceTransformer(modules=[module, Normalize()], device="cpu")
    folder = Path(folder)
    model.save(str(folder))
    return folder
