"""The visual report of a run: ``report.html`` (self-contained) and one PNG per figure beside it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distill.pipeline.folder import RunFolder

logger = logging.getLogger(__name__)

REPORT_NAME = RunFolder(".").report.name  # report.html
BYTES_NAME = "report-bytes.json"  # the bytes-per-vector rows of the report, for tables


def write_report(run_dir: str | Path, groups: dict[str, list[str]] | None = None,
                 out: str | Path | None = None) -> Path:
    """Write ``report.html``, ``report-<figure>.png`` files and ``report-bytes.json`` (overlap@10 per prefix size
    and precision, when the run has held-out texts) for a finished run; return the page's path.

    :param groups: token groups for the heatmaps, and for the token map of a run without groups.json
        (default: letters, digits, punctuation, words).
    :param out: folder for the page and PNGs (default: the run folder).
    :raises DistillError: when the folder holds no finished run.
    """
    from distill.report.data import load_run
    from distill.report.figures import all_figures
    from distill.report.html import render

    data = load_run(run_dir, groups)
    figures = all_figures(data)
    folder = Path(out) if out is not None else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        (folder / f"report-{name}.png").write_bytes(png)
    if data.bytes_rows:
        (folder / BYTES_NAME).write_text(json.dumps(data.bytes_rows, indent=1), encoding="utf-8")
    page = folder / REPORT_NAME
    page.write_text(render(data, figures), encoding="utf-8")
    logger.info("report: %s (%d figures)", page, len(figures))
    return page


__all__ = ["BYTES_NAME", "REPORT_NAME", "write_report"]
