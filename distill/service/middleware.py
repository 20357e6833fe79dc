"""One ASGI middleware in front of every route: API key, concurrency limit, body-size limit and request metrics.

It runs before FastAPI parses anything, so a missing key is a 401 even for a malformed body, and a
body past the limit is refused without being parsed (or, when it has a Content-Length, even read).

The concurrency limit is the service's front door under overload. The batcher's limits
(``max_pending``, ``request_timeout_s``) alone never refused at 3x capacity (bench/soak.py): every
request was read, parsed and tokenized on the one event loop first, the batcher's queue stayed short,
and the backlog grew in the sockets instead (p99 70 s, not one 503). Past the admission limit
(:mod:`distill.service.admission`: at most ``max_concurrent``, less when answers take longer than the
target latency), an embeddings or search request is refused here, before its body is read. The HTTP
work of a refusal remains, so a single process can still fall behind when refusing is most of its work:
then serve with ``--workers``; see BENCHMARKS.md, "Service overload".
"""

from __future__ import annotations

import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distill.service.admission import Admission
from distill.service.errors import error_response
from distill.service.metrics import Metrics

LIMITED = ("/v1/embeddings", "/v1/search")  # the work; /health, /metrics and /v1/models stay open under load


class GuardMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, admission: Admission,
                 api_key: str | None = None):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key
        self.admission = admission  # requests to LIMITED paths inside the app (one event loop: no lock needed)
        metrics.admission_limit.set_function(lambda: int(admission.limit))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        limited = scope["path"] in LIMITED
        ticket = None
        try:
            refusal = self._check_key(scope)
            if refusal is None and limited:
                ticket = self.admission.admit()
                if ticket is None:
                    refusal = self._overloaded()
                else:
                    self.metrics.in_flight.inc()
            if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body, refusal = await self._read_body(scope, receive)
                if refusal is None:
                    receive = _replay(body, receive)
            if refusal is not None:
                await refusal(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            if ticket is not None:
                self.admission.done(ticket, answered=status == 200)
                self.metrics.in_flight.dec()
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)

    def _overloaded(self):
        a = self.admission
        return error_response(503, f"the server is handling {a.in_flight} requests already, the oldest for "
                                   f"{a.oldest_s():.1f} s (it takes {int(a.limit)} at once now, to answer within "
                                   f"{a.target_s:g} s); retry shortly",
                              code="overloaded", headers={"Retry-After": "1"})

    def _check_key(self, scope: Scope):
        if self.api_key is None or not scope["path"].startswith(("/v1/", "/docs", "/redoc", "/openapi.json")):
            return None  # /health and /metrics stay open for probes and scrapers
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
            return None
        message = "missing API key: pass it as `Authorization: Bearer KEY`" if not auth else "invalid API key"
        return error_response(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _read_body(self, scope: Scope, receive: Receive):
        too_big = error_response(413, f"the request body is larger than {self.max_body_bytes} bytes",
                                 code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return b"", too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:  # chunked bodies have no Content-Length to check up front
                return b"", too_big
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # waits for http.disconnect

    return replay
