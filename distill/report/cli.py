"""CLI commands of the report package: `distill eval` and `distill plot`. Registered in distill/cli.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from distill.cli_utils import parse_dims

_METRICS = {"sts": ("spearman", "pearson"), "word_pairs": ("spearman", "pearson", "n"),
            "analogies": ("accuracy", "correct", "n")}


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for check, keys in _METRICS.items():
        if check not in result:
            continue
        by_model = result[check]
        table = Table("dims", *[f"{name} {k}" for name in by_model for k in keys], title=check)
        for d in sorted({int(d) for rows in by_model.values() for d in rows}):
            table.add_row(str(d), *[_cell(rows[str(d)][k]) if str(d) in rows else "–"
                                    for rows in by_model.values() for k in keys])
        console.print(table)


def eval_command(
    model: Annotated[str, typer.Argument(help="Student or run folder, or a teacher alias / HF id / folder.")],
    sts: Annotated[Path | None, typer.Option(help="Sentence pairs: STS-B .csv/.tsv, or .jsonl/.csv with "
                                                  "sentence1, sentence2, score.")] = None,
    word_pairs: Annotated[Path | None, typer.Option(help="Word-pair similarity file: "
                                                         "`word1 word2 score` lines.")] = None,
    analogies: Annotated[Path | None, typer.Option(help="Analogy file: `: section` headers, `a b c d` lines "
                                                        "(3CosAdd over the vocabulary).")] = None,
    dims: Annotated[str | None, typer.Option(help="Prefix sizes, e.g. 32,64,128 (default: the model's).")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="Baseline: a teacher alias, HF id or "
                                                                       "folder, cut to the same sizes.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores to this JSON file.")] = None,
) -> None:
    """Score a model per prefix size: STS Spearman/Pearson, word-pair similarity, analogy accuracy.

    Given a run folder and no file to score, runs the run's evaluation stage instead: held-out agreement
    with the teacher (and the run's --sts) into summary.json, and the report.
    """
    from distill.models import load_model
    from distill.report.evaluation import evaluate_model

    run_dir = Path(model)
    if (run_dir / "config.json").is_file() and (run_dir / "data" / "meta.json").is_file() and not any(
            (sts, word_pairs, analogies)):
        from distill.pipeline import stages
        from distill.pipeline.run import load_config, write_report_safely

        summary = stages.evaluate(load_config(run_dir))
        write_report_safely(run_dir)
        for section in ("holdout", "sts"):
            if section in summary:
                typer.echo(f"{section}: {json.dumps(summary[section]['student'])}")
        typer.echo(f"wrote {run_dir / 'summary.json'}")
        return

    run_student = Path(model) / "student"
    spec = run_student if (run_student / "distill_student.json").is_file() else model
    baseline = load_model(teacher) if teacher else None
    result = evaluate_model(load_model(spec), parse_dims(dims), sts=sts, word_pairs=word_pairs, analogies=analogies,
                            teacher=baseline)
    _print_tables(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        typer.echo(f"wrote {json_out}")


def plot(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (holds summary.json and student/).")],
    groups: Annotated[Path | None, typer.Option(help="Token groups for heatmaps (and the token map when the "
                                                     "run has no groups.json): JSON "
                                                     "{group: [tokens]} or `group: tok tok` lines.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for report.html and the PNGs (default: the run).")] = None,
) -> None:
    """Write the run's report.html (self-contained) and one PNG per figure."""
    from distill.report import write_report
    from distill.report.data import read_groups

    page = write_report(run_dir, groups=read_groups(groups) if groups else None, out=out)
    typer.echo(f"wrote {page}")
