"""What an index holds vectors of: any model with ``encode(texts, dim)`` and ``identity()``.

Students and teachers both follow this contract, so both can be indexed. The index package takes
models (or arrays) passed in: resolving a spec to a teacher or a student is
:func:`distill.models.load_model`'s job, one level up, so this package imports neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np


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
