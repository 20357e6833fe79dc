"""Deterministic crash points for fault-injection tests: ``maybe_crash("name")`` between the steps of a writer.

With ``DISTILL_FAULT_AT`` unset (always, outside tests) it does nothing. Set to an integer N, the N-th
call in the process kills it with SIGKILL, as a power cut or the OOM killer would: no ``finally``,
no atexit, no flushing of Python buffers. Set to a name, the first call with that name does; to
``NAME@K``, the K-th call with that name. A test
runs a command once per crash point, then reruns it and checks the result equals an uninterrupted run.

This is the one place that reads the environment below the CLI: a crash point must reach code that
takes no test-only arguments, and the variable is read at call time, never at import.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "DISTILL_FAULT_AT"
_calls = 0
_named: dict[str, int] = {}


def maybe_crash(point: str) -> None:
    """Kill this process with SIGKILL here if ``DISTILL_FAULT_AT`` names this call (its number or ``point``)."""
    global _calls
    target = os.environ.get(FAULT_ENV)
    if not target:
        return
    _calls += 1
    _named[point] = _named.get(point, 0) + 1
    name, _, nth = target.partition("@")
    if (target.isdigit() and int(target) == _calls) or (name == point and _named[point] == int(nth or 1)):
        os.kill(os.getpid(), signal.SIGKILL)
