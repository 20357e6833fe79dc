"""Errors that users can act on. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


class DistillError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class TeacherNotFoundError(DistillError):
    """A teacher spec that is neither a local folder, a cached Hugging Face id, nor downloadable."""


class CorpusError(DistillError):
    """A corpus that cannot be read: missing, empty, not UTF-8, missing its text column."""


class TrainingError(DistillError):
    """Training cannot go on (NaN loss, incompatible checkpoint, ...)."""


def choice(enum: type[E], value, what: str) -> E:
    """``enum(value)``, or a :class:`DistillError` naming ``what`` and the choices: the one way a bad option
    value is refused ("unknown pooling 'avg' (choose from mean, cls, last, max)")."""
    try:
        return enum(value)
    except ValueError:
        raise DistillError(f"unknown {what} {value!r} (choose from {', '.join(str(e.value) for e in enum)})") from None
