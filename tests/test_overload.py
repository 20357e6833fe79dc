"""A real `distill serve` past its capacity, open loop (bench/soak.py): what it accepts is answered within the
request timeout, the rest is refused at once with 503 + Retry-After, nothing else fails."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_three_times_capacity_is_answered_within_the_timeout_or_refused(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--student", "transformer", "--texts", "8",
           "--request-timeout-s", "2", "--overload-s", "10", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["failures"] == [], run.stdout[-3000:]
    over = result["overload"]
    assert over["p99"] <= 2000  # ms: the answered requests, timed from when each was due
    assert over["5xx"] == 0 and over["no_answer"] == 0
    assert over["503"] >= over["requests"] / 3  # 3x capacity: most of the excess is refused
    assert over["requests"] - over["503"] >= 0.5 * result["capacity"] * 10  # and the server still serves
    assert run.returncode == 0
