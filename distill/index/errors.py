"""Errors of the index package: user-actionable, printed on one line by the CLI."""

from distill.errors import DistillError


class IndexNotFoundError(DistillError):
    """A folder that holds no index (no manifest), or one whose files are missing or inconsistent."""


class IndexMismatchError(DistillError):
    """A query or an `add` with another model or another dim than the index was built with."""
