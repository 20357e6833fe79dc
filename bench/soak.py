"""Service soak: a real `distill serve` under 50 concurrent clients and fuzzed requests, then overloaded.

    python bench/soak.py                          # 10,000 requests from 50 clients, then 30 s at 3x capacity
    python bench/soak.py --quick                  # 1,000 requests, then 8 s
    python bench/soak.py --student transformer    # a student whose forward pass costs more than HTTP

1. A tiny static student (word-level tokenizer, random weights, dims 16/32/64, built as
   tests/test_service.py builds one) and an index of 500 synthetic texts are written to a temporary
   folder; `distill serve` runs in a subprocess on a free 127.0.0.1 port with its default settings,
   but for ``request_timeout_s`` (5 s, so that "under the timeout" means something in a short run)
   and ``max_body_bytes`` (256 KiB, so that an oversized body is cheap to send).
2. Normal phase: ``--clients`` keep-alive clients send ``--requests`` requests in all: valid
   /v1/embeddings (texts or token ids, every `dimensions`, float and base64), /v1/search, /health,
   /v1/models, /metrics, and malformed ones: bodies schemathesis generates from the server's own
   /openapi.json (schema-breaking, and schema-valid but wrong) and hand-written ones (bad JSON, lone
   surrogates, deep nesting, too many inputs, an oversized body, wrong methods and paths).
3. Capacity: the same clients send /v1/embeddings of ``--texts`` texts (default one) for a few seconds:
   answered requests/s.
4. Overload phase: open loop, the same requests at ``--overload`` times that rate for
   ``--overload-s`` seconds, over at most ``--overload-connections`` keep-alive connections; a
   request's latency runs from when it was due.

Every answer is checked (in the capacity and overload phases a 200 by counting its vectors, not decoding
them, so that the client costs less than the server): any 5xx but a 503 with Retry-After, a valid request
answered with anything but its vectors (or a 503), a malformed one answered 200, no answer at all, a p99
latency of answered requests past the request timeout, or an overload without a single 503 is a failure.
The server's RSS is sampled every 0.25 s; at the end the process must be alive, /health ok, embeddings
served again and the server's log free of tracebacks. Prints one markdown table and exits 1 when a check failed.
Clients are bare asyncio connections in this process (httpx costs more CPU per request than the
server; see bench/service.py).
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
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from loadgen import Req, Result, closed_loop, open_loop
from serving import free_port, start_server, stop_server

WORDS = ("the cat a dog my neighbour old man young girl teacher our team river small bird engineer her brother "
         "city council sees likes paints follows builds remembers describes crosses finds answers visits sells red "
         "house long bridge an apple quiet garden three letters market strange noise new machine empty room winter "
         "sky blue boat map today in morning before storm with great care near station for first time again and "
         "without word after dinner slowly happily").split()
DIMS = [16, 32, 64]  # the served student's nested sizes; main() sets them from --model
NAME = "tiny"  # the name the server serves it as


def build_student(folder: Path, kind: str = "static") -> Path:
    """The tests' tiny static student: a word-level tokenizer over WORDS, random weights, dims 16/32/64. Or,
    with ``kind="transformer"``, a small transformer student (2 layers of width 256) on the same tokenizer,
    whose forward pass, not HTTP, is what a request costs."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from distill.students import StaticStudent, StudentConfig, build_student

    vocab = {"[UNK]": 0}
    for w in dict.fromkeys(WORDS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    g = torch.Generator().manual_seed(0)
    if kind == "transformer":
        cfg = StudentConfig(kind="transformer", vocab_size=tok.get_vocab_size(), dim=64, dims=DIMS, width=256,
                            n_layers=2, n_heads=4, max_length=64)
        s = build_student(cfg, tok)
        with torch.no_grad():
            for p in s.parameters():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        return s.save(folder)
    s = StaticStudent(StudentConfig(kind="static", vocab_size=tok.get_vocab_size(), dim=64, dims=DIMS), tok)
    with torch.no_grad():
        s.embedding.copy_(torch.randn(s.embedding.shape, generator=g))
        s.log_weight.copy_(0.3 * torch.randn(s.log_weight.shape, generator=g))
    return s.save(folder)


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 20))) for _ in range(n)]


# ---- the server ----------------------------------------------------------------------------------------


def server_settings(args) -> dict[str, str]:
    """DISTILL_* settings of the server: its defaults, but for what the flags set."""
    out = {"DISTILL_REQUEST_TIMEOUT_S": str(args.request_timeout_s), "DISTILL_MAX_BODY_BYTES": str(args.max_body_bytes)}
    if args.max_concurrent is not None:
        out["DISTILL_MAX_CONCURRENT"] = str(args.max_concurrent)
    if args.max_pending is not None:
        out["DISTILL_MAX_PENDING"] = str(args.max_pending)
        out["DISTILL_MAX_INPUTS"] = str(min(args.max_pending, 2048))
    return out


def serve_student(model: Path, index: Path, port: int, log: Path, args) -> subprocess.Popen:
    workers = ["--workers", str(args.workers)] if args.workers > 1 else []  # (a server before --workers: one)
    return start_server(["--model", str(model), "--index", str(index), *workers], port,
                        {"OMP_NUM_THREADS": "1", **server_settings(args)}, log)


class RSSSampler(threading.Thread):
    """The server's resident memory every ``every_s`` seconds, tagged with the phase it was taken in."""

    def __init__(self, pid: int, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.phase = "startup"
        self.samples: list[tuple[str, float]] = []  # (phase, MB)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            mb = rss_mb(self.pid)
            if mb is None:
                return
            self.samples.append((self.phase, mb))
            self.done.wait(self.every_s)

    def of(self, phase: str) -> list[float]:
        return [mb for p, mb in self.samples if p == phase]


def server_processes(pid: int) -> list:
    """The server and, with --workers, its worker processes (psutil comes with accelerate)."""
    import psutil

    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def rss_mb(pid: int) -> float | None:
    """Resident memory of the server's processes, summed (pages the workers share count once per worker)."""
    import psutil

    try:
        return sum(p.memory_info().rss for p in server_processes(pid)) / 2**20
    except psutil.Error:
        return None


# ---- requests ------------------------------------------------------------------------------------------


def embed_req(rng: random.Random, texts: list[str], vocab_size: int, n: int | None = None,
              light: bool = False) -> Req:
    n = n or rng.choice([1, 1, 1, 2, 4, 8])
    dim = rng.choice([*DIMS, None])
    b64 = rng.random() < 0.3
    if rng.random() < 0.15:
        inp: object = [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    else:
        inp = rng.sample(texts, n)
    body = {"input": inp, "model": rng.choice([NAME, None])}
    if dim is not None:
        body["dimensions"] = dim
    if b64:
        body["encoding_format"] = "base64"
    return Req("embed", "POST", "/v1/embeddings", json.dumps(body).encode(),
               {"Content-Type": "application/json"}, {"dim": dim or DIMS[-1], "n": n, "base64": b64}, light)


def search_req(rng: random.Random, texts: list[str], n_index: int) -> Req:
    n, k = rng.choice([1, 1, 2, 3]), rng.randint(1, 10)
    body = {"query": rng.choice(texts)} if n == 1 and rng.random() < 0.5 else {"queries": rng.sample(texts, n)}
    body.update(k=k, dimensions=rng.choice(DIMS))
    return Req("search", "POST", "/v1/search", json.dumps(body).encode(), {"Content-Type": "application/json"},
               {"n": n, "k": min(k, n_index)})


def hand_written_bad(max_inputs: int, max_body_bytes: int) -> list[Req]:
    """Malformed requests a schema-driven generator rarely makes."""
    j = {"Content-Type": "application/json"}

    def bad(path: str, body: bytes, headers: dict | None = None, method: str = "POST") -> Req:
        return Req("bad", method, path, body, j if headers is None else headers)

    deep = b'{"input": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    return [
        bad("/v1/embeddings", b"{"), bad("/v1/embeddings", b"not json"), bad("/v1/embeddings", b"\xff\xfe"),
        bad("/v1/embeddings", b'{"input": "a cat",}'), bad("/v1/embeddings", b""), bad("/v1/search", b"[1, 2]"),
        bad("/v1/embeddings", b'{"input": "a cat \\ud800"}'), bad("/v1/search", b'{"query": "\\udfff"}'),
        bad("/v1/embeddings", b'{"input": "a cat", "dimensions": NaN}'), bad("/v1/embeddings", deep),
        bad("/v1/embeddings", b'{"input": "a cat", "dimensions": 123456789012345678901234567890}'),
        bad("/v1/embeddings", b'{"input": [[1, 2, 123456789012345678901234567890]]}'),
        bad("/v1/embeddings", json.dumps({"input": ["a"] * (max_inputs + 1)}).encode()),
        bad("/v1/embeddings", json.dumps({"input": "a " * 8193}).encode()),
        bad("/v1/embeddings", json.dumps({"input": "a", "user": "u" * max_body_bytes}).encode()),
        bad("/v1/embeddings", b'{"input": "a cat"}', {"Content-Type": "text/plain"}),
        bad("/v1/embeddings", b"", method="GET"), bad("/v1/nope", b'{"input": "a cat"}'),
        bad("/v1/search", b'{"query": "a cat", "k": 0}'), bad("/v1/search", b'{"query": "a", "queries": ["b"]}'),
    ]


def schema_cases(port: int, n: int, seed: int = 0) -> list[Req]:
    """``n`` requests schemathesis generates from the server's /openapi.json, half of them schema-breaking."""
    import httpx
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    schema = schemathesis.openapi.from_dict(httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).json())
    out: list[Req] = []
    for mode in (schemathesis.GenerationMode.NEGATIVE, schemathesis.GenerationMode.POSITIVE):
        @hypothesis_seed(seed)
        @settings(max_examples=n // 2, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(schema.as_strategy(mode))
        def collect(case) -> None:
            kw = case.as_transport_kwargs(base_url="")
            body = json.dumps(kw["json"]).encode() if "json" in kw else kw.get("data") or b""
            headers = {k: v for k, v in kw["headers"].items() if k.lower() == "content-type"}
            out.append(Req("schema", kw["method"], kw["url"], body.encode() if isinstance(body, str) else body,
                           headers))

        collect()
    return out


def normal_mix(n: int, rng: random.Random, texts: list[str], vocab_size: int, n_index: int, malformed: list[Req]):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            out.append(embed_req(rng, texts, vocab_size))
        elif r < 0.57:
            out.append(search_req(rng, texts, n_index))
        elif r < 0.60:
            out.append(Req("health", "GET", "/health"))
        elif r < 0.62:
            out.append(Req("models", "GET", "/v1/models"))
        elif r < 0.63:
            out.append(Req("metrics", "GET", "/metrics"))
        else:
            out.append(rng.choice(malformed))
    return out


# ---- the run -------------------------------------------------------------------------------------------


def summarize(name: str, results: list[Result], rss: list[float], clients: str, **extra) -> dict:
    ok = np.array([r.seconds for r in results if r.status == 200]) * 1000
    refused = np.array([r.seconds for r in results if r.status == 503]) * 1000

    def pct(x: np.ndarray, q: float) -> float:
        return float(np.percentile(x, q)) if len(x) else float("nan")

    return {"phase": name, "requests": len(results), "clients": clients,
            "5xx": sum(r.status >= 500 and r.status != 503 for r in results),
            "503": sum(r.status == 503 for r in results), "no_answer": sum(r.status == 0 for r in results),
            "problems": [r for r in results if r.problem], "statuses": Counter(r.status for r in results),
            "refusals": Counter(_reason(r.refusal) for r in results if r.status == 503),
            "p50": pct(ok, 50), "p99": pct(ok, 99), "p50_503": pct(refused, 50), "p99_503": pct(refused, 99),
            "rss": (rss[0], rss[-1], max(rss)) if rss else (float("nan"),) * 3, "results": results, **extra}


def _reason(message: str) -> str:
    for key, reason in (("handling", "max_concurrent"), ("holds", "max_pending"), ("waited", "request_timeout_s")):
        if key in message:
            return reason
    return message[:60]


def server_latency(before: str, after: str, endpoint: str = "/v1/embeddings") -> tuple[float, float]:
    """p50 and p99 (the upper bounds of their histogram buckets, in ms) of the server's own request latency
    between two /metrics scrapes: from the middleware's first look at a request to its answer."""
    def buckets(text: str) -> dict[float, float]:
        prefix = f'distill_request_seconds_bucket{{endpoint="{endpoint}",le="'
        return {float(line[len(prefix):].split('"')[0]): float(line.split()[-1])
                for line in text.splitlines() if line.startswith(prefix)}

    b0, b1 = buckets(before), buckets(after)
    counts = sorted((le, b1[le] - b0.get(le, 0.0)) for le in b1)  # cumulative, +Inf last
    total = counts[-1][1]

    def q(p: float) -> float:
        return next((le * 1000 for le, n in counts if n >= p * total), float("nan")) if total else float("nan")

    return q(0.5), q(0.99)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server's processes so far."""
    import psutil

    total = 0.0
    for p in server_processes(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="A short run: 1,000 requests, 8 s of overload.")
    ap.add_argument("--requests", type=int, help="Requests in the normal phase (default 10,000; quick 1,000).")
    ap.add_argument("--clients", type=int, default=50, help="Concurrent clients in the normal phase.")
    ap.add_argument("--overload", type=float, default=3.0, help="Offered load as a multiple of the capacity.")
    ap.add_argument("--overload-s", type=float, help="Seconds of overload (default 30; quick 8).")
    ap.add_argument("--overload-connections", type=int, default=512,
                    help="Connections the overload may open (the server's max_concurrent default is 256).")
    ap.add_argument("--request-timeout-s", type=float, default=5.0, help="Server DISTILL_REQUEST_TIMEOUT_S.")
    ap.add_argument("--max-body-bytes", type=int, default=256 * 1024, help="Server DISTILL_MAX_BODY_BYTES.")
    ap.add_argument("--max-concurrent", type=int, help="Server DISTILL_MAX_CONCURRENT (default: its default).")
    ap.add_argument("--max-pending", type=int, help="Server DISTILL_MAX_PENDING (default: its default).")
    ap.add_argument("--student", choices=["static", "transformer"], default="static",
                    help="The tests' tiny static student, or a small transformer (2 x 256) on the same tokenizer.")
    ap.add_argument("--model", type=Path, help="Serve this student (a student or run folder) instead of building "
                    "the tiny one: e.g. the no-argument run's, whose tokenizer and 256 dims are what users serve.")
    ap.add_argument("--texts", type=int, default=1, help="Texts per request in the capacity and overload phases.")
    ap.add_argument("--workers", type=int, default=1, help="Server worker processes (distill serve --workers).")
    ap.add_argument("--json", type=Path, help="Also write the phases' figures here (tests/test_overload.py reads it).")
    ap.add_argument("--schema-cases", type=int, help="schemathesis requests to draw from (default 400; quick 100).")
    args = ap.parse_args()
    n_normal = args.requests or (1000 if args.quick else 10_000)
    overload_s = args.overload_s or (8.0 if args.quick else 30.0)
    capacity_s = 3.0 if args.quick else 6.0
    timeout = 2 * args.request_timeout_s + 30  # past it a request counts as unanswered: a hang

    import httpx

    import distill
    from distill.index import build_index

    rng = random.Random(0)
    texts = sentences(2000)
    with tempfile.TemporaryDirectory() as tmp:
        global DIMS, NAME
        model = args.model or build_student(Path(tmp) / "tiny", args.student)
        student = distill.load(model)
        if args.model is not None:
            from distill.models import student_folder

            folder = student_folder(model).resolve()
            DIMS, NAME = list(student.dims), folder.parent.name if folder.name == "student" else folder.name
        index_texts = sentences(500, seed=1)
        build_index(student, index_texts, Path(tmp) / "index", spec=model)
        port, log = free_port(), Path(tmp) / "server.log"
        proc = serve_student(model, Path(tmp) / "index", port, log, args)
        sampler = RSSSampler(proc.pid)
        sampler.start()
        cpu: dict[str, tuple[float, float]] = {}  # phase: (server, client) CPU seconds per wall second
        try:
            malformed = schema_cases(port, args.schema_cases or (100 if args.quick else 400))
            malformed += hand_written_bad(min(args.max_pending or 2048, 2048), args.max_body_bytes)
            vocab = student.config.vocab_size
            reqs = normal_mix(n_normal, rng, texts, vocab, len(index_texts), malformed)
            asyncio.run(closed_loop(port, [embed_req(rng, texts, vocab) for _ in range(200)], 10, timeout))  # warm up

            def phase(name: str, run):
                sampler.phase = name
                s0, c0, t0 = cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
                out = asyncio.run(run)
                wall = time.perf_counter() - t0
                cpu[name] = ((cpu_seconds(proc.pid) - s0) / wall, (time.process_time() - c0) / wall)
                return out

            normal, wall = phase("normal", closed_loop(port, reqs, args.clients, timeout))
            one = (embed_req(rng, texts, vocab, n=args.texts, light=True) for _ in iter(int, 1))  # endless
            cap_results, cap_wall = phase("capacity", closed_loop(port, one, args.clients, timeout,
                                                                  seconds=capacity_s))
            capacity = sum(r.status == 200 for r in cap_results) / cap_wall
            scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            over, offered, n_conns = phase("overload", open_loop(
                port, lambda i: embed_req(rng, texts, vocab, n=args.texts, light=True), args.overload * capacity,
                overload_s, timeout, args.overload_connections))
            inside = server_latency(scrape, httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)
            sampler.phase = "after"
            time.sleep(1.0)
            alive = proc.poll() is None
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] if alive else "dead"
            after = asyncio.run(closed_loop(port, [embed_req(rng, texts, vocab) for _ in range(50)], 5, timeout))[0]
        finally:
            sampler.done.set()
            stop_server(proc)
        server_log = log.read_text(errors="replace")

    rows = [summarize("normal", normal, sampler.of("normal"), str(args.clients), wall=wall),
            summarize("overload", over, sampler.of("overload"),
                      f"open loop at {offered:.0f} req/s ({offered / capacity:.1f}x capacity), {n_conns} connections")]
    report(rows, args, capacity, overload_s, cpu, inside, alive, health, after, server_log, sampler)


def find_failures(rows, args, alive, health, after, server_log) -> list[str]:
    over = rows[1]
    failures = []
    for r in rows:
        for problem, n in Counter(x.problem for x in r["problems"]).most_common(5):
            failures.append(f"{r['phase']}: {n} x {problem}")
        if r["p99"] > args.request_timeout_s * 1000:
            failures.append(f"{r['phase']}: p99 of answered requests {r['p99']:.0f} ms is past the request timeout")
    if over["503"] == 0:
        failures.append("overload: no request was refused with a 503")
    if not alive or health != "ok":
        failures.append(f"server alive: {alive}, /health: {health}")
    if any(x.status != 200 or x.problem for x in after):
        failures.append(f"after the overload: statuses {Counter(x.status for x in after)}")
    tracebacks = server_log.count("Traceback")
    if tracebacks:
        failures.append(f"the server logged {tracebacks} tracebacks; the first:\n"
                        + server_log[server_log.index("Traceback"):][:3000])
    return failures


def print_by_second(results: list[Result]) -> None:
    print("\noverload by second of when requests were due: sent, answered 200, 503, p99 ms of the 200s")
    start = min(x.due for x in results)
    for sec in range(int(max(x.due for x in results) - start) + 1):
        part = [x for x in results if sec <= x.due - start < sec + 1]
        ok = [x.seconds * 1000 for x in part if x.status == 200]
        print(f"  {sec:3d} s: {len(part):5d} {len(ok):5d} {sum(x.status == 503 for x in part):5d} "
              f"{np.percentile(ok, 99) if ok else float('nan'):7.0f}")


def report(rows, args, capacity, overload_s, cpu, inside, alive, health, after, server_log, sampler) -> None:
    normal, over = rows
    settings = ", ".join(f"{k.removeprefix('DISTILL_').lower()}={v}" for k, v in server_settings(args).items())
    print(f"\n{args.student} student; server: defaults but {settings}; server and clients on {os.cpu_count()} CPUs")
    print(f"normal: {normal['requests']} requests from {args.clients} clients in {normal['wall']:.1f} s "
          f"({normal['requests'] / normal['wall']:.0f} req/s), statuses {dict(sorted(normal['statuses'].items()))}")
    print(f"capacity ({args.texts}-text /v1/embeddings, {args.clients} clients, {args.workers} workers): "
          f"{capacity:.0f} req/s answered")
    print(f"overload: {overload_s:g} s, statuses {dict(sorted(over['statuses'].items()))}, 503s by limit "
          f"{dict(over['refusals'])}; inside the server (its /metrics histogram, all answers) p50 <= "
          f"{inside[0]:g} ms, p99 <= {inside[1]:g} ms")
    print("CPU cores used (server / this client process): "
          + ", ".join(f"{k} {s:.2f} / {c:.2f}" for k, (s, c) in cpu.items()) + "\n")
    print("| phase | requests | clients | 5xx (not 503) | 503 (share) | no answer | p50 / p99 ms (200s) "
          "| p50 / p99 ms (503s) | RSS first / last / max MB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    def ms(x: float) -> str:
        return "-" if x != x else f"{x:.0f}"  # NaN: no such answers

    for r in rows:
        first, last, peak = r["rss"]
        print(f"| {r['phase']} | {r['requests']} | {r['clients']} | {r['5xx']} | {r['503']} "
              f"({r['503'] / max(r['requests'], 1):.0%}) | {r['no_answer']} | {ms(r['p50'])} / {ms(r['p99'])} "
              f"| {ms(r['p50_503'])} / {ms(r['p99_503'])} | {first:.0f} / {last:.0f} / {peak:.0f} |")

    failures = find_failures(rows, args, alive, health, after, server_log)
    print_by_second(over["results"])
    whole = [mb for _, mb in sampler.samples]
    for name in ("normal", "overload"):
        rss = sampler.of(name)
        points = [rss[round(i * (len(rss) - 1) / 9)] for i in range(10)] if rss else []
        print(f"RSS through the {name} phase, 10 points (MB): " + " ".join(f"{mb:.0f}" for mb in points))
    print(f"\nRSS over the whole run: {whole[0]:.1f} MB at startup, {max(whole):.1f} MB at most, "
          f"{whole[-1]:.1f} MB at the end ({len(whole)} samples)")
    print(f"after the overload: process alive {alive}, /health {health!r}, "
          f"{sum(x.status == 200 for x in after)}/{len(after)} embeddings requests answered 200")
    if args.json is not None:
        keep = ("phase", "requests", "5xx", "503", "no_answer", "p50", "p99", "p50_503", "p99_503")
        args.json.write_text(json.dumps({"capacity": capacity, "request_timeout_s": args.request_timeout_s,
                                         "failures": failures, **{r["phase"]: {k: r[k] for k in keep} for r in rows}},
                                        indent=1))
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
