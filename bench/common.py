"""What the benchmarks share: where the repository and the development data are.

Imported by the bench/ scripts (run as scripts, so this folder is on sys.path); bench/serving.py holds the
service benchmarks' server start and stop.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
DATA = ROOT.parent / "shared" / "data"  # the development data: corpora, STS-B, retrieval tasks (see its README)
CORPUS = DATA / "corpus"
STS_DEV = DATA / "sts" / "sts-dev.csv"
