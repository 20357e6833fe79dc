"""The soak's load generator: bare asyncio keep-alive HTTP/1.1 connections, the answer checks, and closed and
open loops of requests. Imported by bench/soak.py (run as a script, so this folder is on sys.path).

httpx costs more CPU per request than the server does (bench/service.py), so the connections are written
by hand: what is measured is the server, not the client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field


class Connection:
    """A bare keep-alive HTTP/1.1 connection that sends any bytes and reads status, headers and body."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last = 0.0

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        if self.writer is not None and (self.reader.at_eof() or time.monotonic() - self.last > 4.0):
            self.close()  # closed by the server, or about to be (uvicorn's keep-alive timeout is 5 s)
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        first, *rest = head.decode("latin-1").split("\r\n")
        status = int(first.split(" ", 2)[1])
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in rest if line)}
        data = await self.reader.readexactly(int(hdrs.get("content-length", 0)))
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        self.last = time.monotonic()
        return status, hdrs, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Req:
    kind: str  # embed, search, health, models, metrics, schema (schemathesis), bad (hand-written)
    method: str
    path: str
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    expect: dict = field(default_factory=dict)  # what a valid request's answer must hold
    light: bool = False  # check a 200 by counting its vectors, not by decoding them (the load phases)


@dataclass
class Result:
    kind: str
    status: int  # 0: no answer (connection error or client timeout)
    seconds: float
    problem: str = ""
    refusal: str = ""  # a 503's message
    due: float = 0.0  # perf_counter() when the request was due (sent, or meant to be in an open loop)


def check(req: Req, status: int, headers: dict, body: bytes) -> str:
    """'' when the answer is right for the request, else what is wrong."""
    if status == 503:
        return "" if headers.get("retry-after") else "503 without Retry-After"
    if status >= 500:
        return f"{status} {body[:200]!r}"
    if req.kind in ("schema", "bad"):
        if req.kind == "bad" and status < 400:
            return f"malformed request answered {status}"
        if status >= 400 and set(json.loads(body).get("error", {})) != {"message", "type", "param", "code"}:
            return f"{status} not in the OpenAI error shape: {body[:200]!r}"
        return ""
    if status != 200:
        return f"valid {req.kind} answered {status}: {body[:200]!r}"
    return check_answer(req, body)


def check_answer(req: Req, body: bytes) -> str:
    """'' when a valid request's 200 holds what it asked for, else what is wrong."""
    if req.kind == "embed" and req.light:  # decoding 64 x 256 floats costs the client more than the server
        n = body.count(b'"object":"embedding"')
        return "" if n == req.expect["n"] else f"{n} embeddings, wanted {req.expect['n']}"
    if req.kind == "embed":
        data = json.loads(body)["data"]
        dim, n, b64 = req.expect["dim"], req.expect["n"], req.expect["base64"]
        widths = [len(base64.b64decode(d["embedding"])) // 4 if b64 else len(d["embedding"]) for d in data]
        if widths != [dim] * n:
            return f"embeddings of widths {widths}, wanted {n} x {dim}"
    elif req.kind == "search":
        data = json.loads(body)["data"]
        if [len(q["hits"]) for q in data] != [req.expect["k"]] * req.expect["n"]:
            return "wrong number of hits"
    elif req.kind == "health" and json.loads(body)["status"] != "ok":
        return "health not ok"
    return ""


async def send(conn: Connection, req: Req, timeout: float, start: float | None = None) -> Result:
    """One request; its latency runs from ``start`` (default: now)."""
    start = time.perf_counter() if start is None else start
    try:
        status, headers, body = await asyncio.wait_for(conn.request(req.method, req.path, req.body, req.headers),
                                                       timeout)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        conn.close()
        return Result(req.kind, 0, time.perf_counter() - start, f"no answer: {type(e).__name__}", due=start)
    seconds = time.perf_counter() - start
    try:
        problem = check(req, status, headers, body)
    except (ValueError, KeyError, TypeError) as e:
        problem = f"unreadable answer ({e!r}): {body[:200]!r}"
    return Result(req.kind, status, seconds, problem, body[:120].decode(errors="replace") if status == 503 else "",
                  due=start)


async def closed_loop(port: int, reqs, clients: int, timeout: float,
                      seconds: float | None = None) -> tuple[list[Result], float]:
    """``clients`` keep-alive connections, each sending its next request when its last one is answered, until
    ``reqs`` (an iterable) runs out or ``seconds`` have passed."""
    results: list[Result] = []
    it = iter(reqs)
    stop = time.perf_counter() + seconds if seconds is not None else float("inf")

    async def client() -> None:
        conn = Connection("127.0.0.1", port)
        try:
            for req in it:
                results.append(await send(conn, req, timeout))
                if time.perf_counter() > stop:
                    break
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - start


async def open_loop(port: int, make, rate: float, seconds: float, timeout: float,
                    max_conns: int) -> tuple[list[Result], float, int]:
    """Requests at ``rate`` per second whether or not earlier ones were answered (offered load, not a closed
    loop that slows down with the server), over at most ``max_conns`` keep-alive connections, as several
    clients' connection pools would. A request's latency runs from when it was due, so time spent waiting
    for a free connection, because the server is slow to answer, counts."""
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    free = asyncio.Semaphore(max_conns)
    results: list[Result] = []
    n_conns = 0

    async def one(req: Req, due: float) -> None:
        nonlocal n_conns
        async with free:
            if idle:
                conn = idle.pop()
            else:
                conn, n_conns = Connection("127.0.0.1", port), n_conns + 1
            results.append(await send(conn, req, timeout, start=due))
            idle.append(conn)

    tasks = []
    start = loop.time()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(make(i), time.perf_counter() + min(delay, 0.0))))
    sent_s = loop.time() - start
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return results, len(tasks) / sent_s, n_conns
