"""How many requests the service takes on at once: a limit that follows the latency of what it answers.

A fixed concurrency limit is either too high for a slow student or too low for a fast one. Past capacity,
a high one lets a queue stand inside the server: every admitted request waits nearly the whole request
timeout (bench/soak.py, 64-text requests at 3x capacity: p50 1.9 s, p99 2.6 s against a 2 s timeout;
with this limit p50 0.5 s, p99 1.5 s).
So the limit adapts, as adaptive-concurrency filters do (Envoy's, Netflix's concurrency-limits), with
the latency of answered requests as the congestion signal:

- every ``window_s`` seconds, the 90th percentile of the requests answered in the window is compared with
  ``target_s``;
- past it, the limit falls to what the server can hold by Little's law (the answers per second of the
  window times the target), and at least by a tenth;
- under it, and if the limit was reached in the window (there was more to take), it grows by a tenth
  (plus one);
- it stays between ``floor`` and ``ceiling`` (the ``max_concurrent`` setting).

It starts at the ceiling, so an idle server takes a burst whole. Everything runs on the event loop
(middleware calls), so there is no lock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable


class Admission:
    def __init__(self, ceiling: int, target_s: float, floor: int = 2, window_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor ({floor}) <= ceiling ({ceiling})")
        self.ceiling, self.floor, self.target_s, self.window_s = ceiling, floor, target_s, window_s
        self.clock = clock
        self.limit = float(ceiling)
        self._started: dict[int, float] = {}  # in-flight requests by ticket, oldest first: when each was taken
        self._tickets = itertools.count()
        self._latencies: list[float] = []
        self._reached = False  # the limit refused or was met in this window
        self._window_start = self.clock()

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def oldest_s(self, now: float | None = None) -> float:
        """How long the oldest request in flight has been in the server (0 when none is)."""
        if not self._started:
            return 0.0
        return (self.clock() if now is None else now) - next(iter(self._started.values()))

    def admit(self) -> int | None:
        """Take a request (a ticket to hand to :meth:`done` when it is finished) or refuse it (None): past the
        limit, or while the oldest request taken has been in the server longer than the target (the queue is
        already late: the first sign of an overload, before any answer comes back slow)."""
        now = self.clock()
        if self.in_flight >= int(self.limit) or self.oldest_s(now) > self.target_s:
            self._reached = True
            return None
        ticket = next(self._tickets)
        self._started[ticket] = now
        self._reached |= self.in_flight >= int(self.limit)
        return ticket

    def done(self, ticket: int, answered: bool = True) -> None:
        """Request ``ticket`` is finished; ``answered``: it got its result (the latencies of refusals and
        errors say nothing about the load)."""
        now = self.clock()
        seconds = now - self._started.pop(ticket)
        if answered:
            self._latencies.append(seconds)
        if now - self._window_start >= self.window_s:
            self._adjust(now - self._window_start)
            self._window_start = now

    def _adjust(self, elapsed_s: float) -> None:
        if self._latencies:
            ordered = sorted(self._latencies)
            p90 = ordered[int(0.9 * (len(ordered) - 1))]
            if p90 > self.target_s:
                # Little's law: what the server answers per second, times the target, is what it can hold
                holds = len(self._latencies) / max(elapsed_s, 1e-9) * self.target_s
                self.limit = max(self.floor, min(self.limit * 0.9, holds))
            elif self._reached:
                self.limit = min(self.ceiling, self.limit * 1.1 + 1)
        self._latencies.clear()
        self._reached = False
