"""Resolving a model spec: a student folder or a teacher (alias, Hugging Face id, model folder).

Above the index, report and service packages, which take the model this returns.
"""

from __future__ import annotations

from pathlib import Path

from distill.index.models import EmbeddingModel

STUDENT_MARKER = "distill_student.json"


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
