"""Helpers shared by every CLI module: user errors as one line, comma lists of prefix sizes."""

from __future__ import annotations

import functools

import typer

from distill.errors import DistillError


def handle_errors(fn):
    """Turn user errors into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DistillError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_dims(value: str | None, option: str = "--dims", least: int = 1) -> list[int] | None:
    """``"64,256"`` -> ``[64, 256]``; None or empty -> None.

    :raises DistillError: on anything but integers of at least ``least``.
    """
    if not value:
        return None
    try:
        dims = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise DistillError(f"{option} takes comma-separated integers such as 64,256, got {value!r}") from None
    if not dims or min(dims) < least:
        raise DistillError(f"{option} takes integers of at least {least} such as 64,256, got {value!r}")
    return dims
