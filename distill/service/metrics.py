"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ENDPOINTS = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics")
_WINDOW_S = 10.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("distill_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("distill_request_seconds", "Request latency in seconds", ["endpoint"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch_size = Histogram("distill_batch_size", "Sequences per forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
                                    registry=self.registry)
        self.forward_seconds = Histogram("distill_forward_seconds", "Seconds per forward pass",
                                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                  2.5), registry=self.registry)
        self.texts = Counter("distill_texts", "Inputs embedded (texts, token-id lists, queries)",
                             registry=self.registry)
        self.tokens = Counter("distill_tokens", "Tokens embedded", registry=self.registry)
        self.truncated_texts = Counter("distill_truncated_texts", "Texts cut to the student's max input tokens",
                                       registry=self.registry)
        self.truncated_tokens = Counter("distill_truncated_tokens", "Tokens dropped by those cuts",
                                        registry=self.registry)
        self.chunked_texts = Counter("distill_chunked_texts", "Texts past the limit embedded in windows "
                                     "(long=chunk)", registry=self.registry)
        self.texts_per_second = Gauge("distill_texts_per_second", f"Inputs embedded per second over the last "
                                      f"{_WINDOW_S:.0f} s", registry=self.registry)
        self.texts_per_second.set_function(self._rate)
        self.in_flight = Gauge("distill_requests_in_flight", "Requests to /v1/embeddings and /v1/search being "
                               "handled", registry=self.registry)
        self.admission_limit = Gauge("distill_admission_limit", "Requests to /v1/embeddings and /v1/search "
                                     "taken at once now (past it: 503)", registry=self.registry)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.forward_seconds.observe(seconds)
        self.texts.inc(n)
        with self._lock:
            self._recent.append((time.monotonic(), n))

    def observe_long(self, truncated_texts: int, truncated_tokens: int, chunked_texts: int) -> None:
        self.truncated_texts.inc(truncated_texts)
        self.truncated_tokens.inc(truncated_tokens)
        self.chunked_texts.inc(chunked_texts)

    def _rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - _WINDOW_S:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / _WINDOW_S
