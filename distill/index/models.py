"""What an index holds vectors of: any model with ``encode(texts, dim)`` and ``identity()``.

Students and teachers both follow this contract, so both can be indexed. The index package takes
models (or arrays) passed in: resolving a spec to a teacher or a student is
:func:`distill.models.load_model`'s job, one level up, so this package imports neither.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from distill.errors import DistillError
from distill.index.precision import Metric
from distill.index.search import normalize_prefix


class EmbeddingModel(Protocol):
    dim: int

    def encode(self, texts: list[str], dim: int | None = None, batch_size: int = ...,
               progress: bool = False) -> np.ndarray: ...

    def identity(self) -> dict: ...


def model_spec(spec: str | Path) -> str:
    """The spec to store in a manifest: local folders as absolute paths, so queries work from anywhere."""
    return str(Path(spec).resolve()) if Path(spec).is_dir() else str(spec)


def model_dims(model: EmbeddingModel) -> list[int]:
    """The model's nested prefix sizes (students), or just its full width (teachers)."""
    dims = getattr(model, "dims", None)
    return sorted(int(d) for d in dims) if dims else [int(model.dim)]


def model_identity(model: EmbeddingModel) -> dict:
    """The model's identity as plain JSON types, so it compares equal after a manifest round trip."""
    return json.loads(json.dumps(model.identity(), sort_keys=True, default=str))


def describe_identity(identity: dict) -> str:
    name = identity.get("name", "?")
    weights = identity.get("weights") or identity.get("fingerprint")
    return f"{name} (weights {weights})" if weights else str(name)


def raw_vectors(model: EmbeddingModel, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """The model's full-width vectors before L2 normalization, for the ``dot`` metric: (N, dim) float32.

    A model whose ``encode`` takes ``normalize=False`` is asked for them; otherwise a teacher's
    ``embed_texts`` and a student's ``tokenize`` + ``embed_ids`` (both raw) are used.
    :raises DistillError: a model that can only give normalized vectors.
    """
    if "normalize" in inspect.signature(model.encode).parameters:
        x = model.encode(texts, batch_size=batch_size, progress=progress, normalize=False)
    elif hasattr(model, "embed_texts"):  # a teacher: raw pooled output
        x = model.embed_texts(texts, batch_size=batch_size, progress=progress)
    elif hasattr(model, "embed_ids") and hasattr(model, "tokenize"):  # a student: its default prompt, as encode
        seqs = model.tokenize(model.with_prompt(texts) if hasattr(model, "with_prompt") else texts)
        x = np.concatenate([np.asarray(model.embed_ids(seqs[i:i + batch_size]))
                            for i in range(0, len(seqs), batch_size)])
    else:
        raise DistillError(f"--metric dot needs the model's raw vectors, but {type(model).__name__} gives only "
                           "normalized ones; use --metric cos")
    return np.asarray(x, dtype=np.float32)


def embed(model: EmbeddingModel, texts: list[str], width: int, metric: Metric | str = Metric.COS,
          batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Vectors of ``texts`` as an index stores them, ``width`` dims wide: (N, width) float32.

    ``cos``: L2-normalized at ``width`` (one pass at full width: the contract says ``encode(texts,
    dim=d)`` is the re-normalized prefix of that). ``dot``: the raw prefix.
    :raises DistillError: the model returned vectors of another shape.
    """
    if Metric(metric) is Metric.DOT:
        x = raw_vectors(model, texts, batch_size, progress)
    else:
        x = np.asarray(model.encode(texts, batch_size=batch_size, progress=progress), dtype=np.float32)
    if x.ndim != 2 or len(x) != len(texts) or x.shape[1] < width:
        raise DistillError(f"the model returned vectors of shape {x.shape} for {len(texts)} texts, "
                           f"expected ({len(texts)}, >= {width})")
    if Metric(metric) is Metric.DOT:
        return np.ascontiguousarray(x[:, :width])
    return normalize_prefix(x, width)
