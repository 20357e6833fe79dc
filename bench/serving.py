"""What the service benchmarks share: a free port, `distill serve` started in a subprocess and waited for, stopped.

Imported by bench/service.py and bench/soak.py (run as scripts, so this folder is on sys.path).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], port: int, env: dict[str, str], log: Path, wait_s: float = 120) -> subprocess.Popen:
    """`distill serve --port PORT --no-access-log ARGS` with ``env`` added, its stderr in ``log``; returns once
    /health answers 200.

    :raises RuntimeError: the server exited, or did not answer within ``wait_s``.
    """
    import httpx

    cmd = [sys.executable, "-m", "distill.cli", "serve", "--port", str(port), "--no-access-log", *args]
    proc = subprocess.Popen(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **env},
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start within {wait_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
