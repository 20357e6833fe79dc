"""What an index holds vectors of: any model with ``encode(texts, dim)`` and ``identity()``.

Students (folders written by ``student.save``, marked by ``distill_student.json``) and teachers
(aliases, Hugging Face ids, model folders) both follow this contract, so both can be indexed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

STUDENT_MARKER = "distill_student.json"


class EmbeddingModel(Protocol):
    dim: int

    def encode(self, texts: list[str], dim: int | None = None, batch_size: int = ...,
               progress: bool = False) -> np.ndarray: ...

    def identity(self) -> dict: ...


def is_student_folder(spec: str | Path) -> bool:
    return Path(spec).is_dir() and (Path(spec) / STUDENT_MARKER).is_file()


def load_model(spec: str | Path) -> EmbeddingModel:
    """A student folder (it holds ``distill_student.json``) or a teacher spec (alias, HF id, folder).

    :raises TeacherNotFoundError: a teacher spec that can be had neither locally nor from the hub.
    """
    if is_student_folder(spec):
        import distill

        return distill.load(spec)
    from distill.teachers import load_teacher

    return load_teacher(spec)


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
