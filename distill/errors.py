"""Errors that users can act on. The CLI prints their message on one line and exits non-zero."""


class DistillError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class TeacherNotFoundError(DistillError):
    """A teacher spec that is neither a local folder, a cached Hugging Face id, nor downloadable."""


class CorpusError(DistillError):
    """A corpus that cannot be read: missing, empty, not UTF-8, missing its text column."""


class TrainingError(DistillError):
    """Training cannot go on (NaN loss, incompatible checkpoint, ...)."""
