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


def _print_retrieval(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    if "retrieval" not in result:
        return
    by_model = {"student": result["retrieval"], **({"teacher": result["retrieval_teacher"]}
                                                   if "retrieval_teacher" in result else {})}
    keys = ("ndcg@10", "recall@100", "mrr@10")
    for task in result["retrieval"]:
        docs = f", documents by {result['documents_by']}" if "documents_by" in result else ""
        short = {"ndcg@10": "NDCG@10", "recall@100": "R@100", "mrr@10": "MRR@10"}
        table = Table("dims", *[f"{name} {short[k]}" for name in by_model for k in keys],
                      title=f"retrieval: {task} ({result['split']}{docs})")
        rows = {name: scores[task] for name, scores in by_model.items()}
        for d in sorted({int(d) for r in rows.values() for d in r}):
            table.add_row(str(d), *[f"{r[str(d)][k]:.3f}" if str(d) in r else "–" for r in rows.values() for k in keys])
        Console().print(table)


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
                                                                       "folder, cut to the same sizes (placed in "
                                                                       "the student's space when its run is "
                                                                       "known: the rotated teacher).")] = None,
    retrieval: Annotated[Path | None, typer.Option(help="A BEIR-layout task folder: corpus.jsonl, queries.jsonl, "
                                                   "qrels/<split>.tsv; NDCG@10, recall@100, MRR@10.")] = None,
    split: Annotated[str, typer.Option(help="--retrieval: which qrels/<split>.tsv.")] = "test",
    documents_by: Annotated[str | None, typer.Option(help="--retrieval: embed the documents with this teacher "
                                                      "placed in the student's space; the student embeds the "
                                                      "queries (asymmetric search).")] = None,
    space: Annotated[Path | None, typer.Option(help="The run folder whose space --teacher and --documents-by are "
                                               "placed in (default: the model's run, when it is one).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores to this JSON file.")] = None,
) -> None:
    """Score a model per prefix size: STS Spearman/Pearson, word-pair similarity, analogy accuracy, retrieval.

    Given a run folder and no file to score, runs the run's evaluation stage instead: held-out agreement
    with the teacher (and the run's --sts and --retrieval) into summary.json, and the report.
    """
    from distill.errors import DistillError
    from distill.models import load_model, run_folder_of
    from distill.pipeline.folder import RunFolder

    folder = RunFolder(model)
    if folder.is_run() and folder.prepared() and not any((sts, word_pairs, analogies, retrieval)):
        from distill.pipeline.run import load_config, run_stage

        summary = run_stage(load_config(folder.root), "eval")  # and the report
        for section in ("holdout", "sts"):
            if section in summary:
                typer.echo(f"{section}: {json.dumps(summary[section]['student'])}")
        typer.echo(f"wrote {folder.summary}")
        return

    from distill.report.evaluation import evaluate_model

    space = space or run_folder_of(model)
    if documents_by and space is None:
        raise DistillError(f"--documents-by places a teacher in the student's space, but {model} is not in a run "
                           "folder; pass --space RUN (the run the student was trained in)")
    baseline = load_model(teacher, space=space) if teacher else None
    docs = (baseline if documents_by == teacher else load_model(documents_by, space=space)) if documents_by else None
    result = evaluate_model(load_model(model), parse_dims(dims), sts=sts, word_pairs=word_pairs, analogies=analogies,
                            teacher=baseline, retrieval=retrieval, split=split, documents_by=docs)
    _print_tables(result)
    _print_retrieval(result)
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
