"""CLI commands of the index package: `distill index build|add`, `distill query`, `distill compare`.

They only parse options and call one function of the package; `distill/cli.py` registers them.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from distill.cli_utils import handle_errors, parse_dims
from distill.errors import DistillError
from distill.index.build import IndexType
from distill.index.precision import Metric, Precision


class Backend(str, Enum):
    FAISS = "faiss"
    QDRANT = "qdrant"


# rich_markup_mode=None: plain help that never cuts an option name at 80 columns (as distill/cli.py says)
index_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Build, extend and describe indexes of a corpus (FAISS or Qdrant), "
                        "one per prefix size.")


def _read_texts(path: Path, text_column: str, limit: int | None = None) -> list[str]:
    from distill.pipeline.corpus import read_corpus

    return read_corpus(path, text_column=text_column, limit=limit).texts


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Student folder, or teacher alias / HF id / folder.")]
CorpusOpt = Annotated[Path, typer.Option(help="Corpus: .txt (one text per line), .jsonl, .csv, .parquet.")]
TextColumnOpt = Annotated[str, typer.Option(help="Column holding the text (jsonl/csv/parquet).")]
BatchOpt = Annotated[int, typer.Option(help="Texts per encode batch.")]
SpaceOpt = Annotated[Path | None, typer.Option(help="A run folder: embed with the teacher (--model) in that run's "
                                               "student space, for queries by its students.")]


def _check_backend(manifest) -> None:
    """A Qdrant index without qdrant-client: the one-line error before a model loads."""
    if manifest.backend == Backend.QDRANT.value:
        from distill.index.qdrant import qdrant

        qdrant()


@index_app.command("build")
@handle_errors
def build(
    model: ModelOpt,
    corpus: CorpusOpt,
    out: Annotated[Path, typer.Option(help="Index folder to write.")],
    dims: Annotated[str | None, typer.Option(help="Prefix sizes to index, e.g. 64,256 (default: the model's).")] = None,
    index_type: Annotated[IndexType, typer.Option(help="auto: flat below 1M vectors, hnsw, ivfpq past 5M.")] = (
        IndexType.AUTO),
    text_column: TextColumnOpt = "text",
    limit: Annotated[int | None, typer.Option(help="Index only the first N texts.")] = None,
    batch_size: BatchOpt = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index folder.")] = False,
    metric: Annotated[Metric, typer.Option(help="cos: normalized prefixes (cosine); dot: raw prefixes, for "
                                                "models whose vector norms carry meaning.")] = Metric.COS,
    precision: Annotated[Precision, typer.Option(help="Stored codes: float32; int8 (per-dim min/max scalar "
                                                      "quantization, 4x smaller); binary (sign bits, Hamming "
                                                      "search, 32x smaller); with qdrant, its scalar or "
                                                      "binary quantization, rescored.")] = Precision.FLOAT32,
    space: SpaceOpt = None,
    backend: Annotated[Backend, typer.Option(help="faiss: files in --out; qdrant: a Qdrant collection, one named "
                                                  "vector per prefix size (local mode inside --out, or --url).")] = (
        Backend.FAISS),
    url: Annotated[str | None, typer.Option(help="qdrant: a Qdrant server, e.g. http://localhost:6333 (API key from "
                                           "QDRANT_API_KEY); --out then holds only the manifest.")] = None,
    collection: Annotated[str | None, typer.Option(help="qdrant: the collection (default: the --out folder's "
                                                  "name).")] = None,
    upsert_batch: Annotated[int, typer.Option(help="qdrant: points per upsert request.")] = 512,
) -> None:
    """Embed a corpus and build one FAISS index per prefix size (or one Qdrant collection with a named vector per
    prefix size), with a manifest.

    With --space RUN and the run's teacher as --model, the documents are the teacher's vectors in the run's
    student space: the run's students then query the index (asymmetric search). A Qdrant build killed at any
    moment finishes when the same command runs again.
    """
    from distill.index.build import build_index
    from distill.models import load_model

    if backend is Backend.FAISS and (url or collection):
        raise DistillError("--url and --collection are for --backend qdrant")
    if backend is Backend.QDRANT and index_type is not IndexType.AUTO:
        raise DistillError("--index-type chooses a FAISS index; Qdrant builds its own (HNSW on a server)")
    if upsert_batch < 1:
        raise DistillError("--upsert-batch must be at least 1")
    if backend is Backend.QDRANT:
        texts = _read_texts(corpus, text_column, limit)
        from distill.index.qdrant import build_qdrant, qdrant, where

        qdrant()  # a missing qdrant-client is an error before the model loads
        m = build_qdrant(load_model(model, space=space), texts, out, dims=parse_dims(dims), url=url,
                         collection=collection, spec=model, batch_size=batch_size, upsert_batch=upsert_batch,
                         progress=True, overwrite=overwrite, metric=metric, precision=precision, space_spec=space)
        typer.echo(f"{out}: {m.count} texts in Qdrant collection {m.collection} ({where(out, m.location)}), named "
                   f"vectors {','.join(f'd{d}' for d in m.dims)} ({m.metric}, {m.precision}"
                   + (f", space {m.space}" if m.space else "") + ")")
        return
    from distill.pipeline.corpus import Corpus

    texts = Corpus(str(corpus), text_column=text_column, limit=limit)  # streamed: a corpus of any size
    m = build_index(load_model(model, space=space), texts, out, dims=parse_dims(dims), index_type=index_type,
                    spec=model, batch_size=batch_size, progress=True, overwrite=overwrite, metric=metric,
                    precision=precision, space_spec=space)
    typer.echo(f"{out}: {m.count} texts, {m.index_type} index at dims {','.join(map(str, m.dims))} "
               f"({m.metric}, {m.precision}" + (f", space {m.space}" if m.space else "") + ")")
    for d, r in m.recall_at_10.items():
        typer.echo(f"  dim {d}: recall@10 {r:.3f} against exact search")


@index_app.command("add")
@handle_errors
def add(
    corpus: CorpusOpt,
    index: Annotated[Path, typer.Option(help="Index folder to extend.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (default: the one in the manifest).")] = (
        None),
    text_column: TextColumnOpt = "text",
    batch_size: BatchOpt = 64,
    upsert_batch: Annotated[int, typer.Option(help="qdrant: points per upsert request.")] = 512,
) -> None:
    """Append the texts of a corpus to an index without rebuilding it; existing ids do not change.

    All or nothing: an add that is interrupted leaves the index as it was, and running it again
    completes it. Running again an add that did complete (the same texts as the last add) adds nothing.
    """
    from distill.index.add import add_to_index
    from distill.index.store import Manifest
    from distill.models import load_model

    before = Manifest.load(index)
    _check_backend(before)
    texts = _read_texts(corpus, text_column)
    first, count = add_to_index(index, load_model(model or before.model_spec, space=before.space_spec), texts,
                                batch_size=batch_size, progress=True, upsert_batch=upsert_batch)
    if count == before.count:
        typer.echo(f"{index}: these texts are already its last add (ids {first}..{count - 1}); nothing added, "
                   f"{count} texts in all")
    else:
        typer.echo(f"{index}: added ids {first}..{count - 1}, {count} texts in all")


@index_app.command("info")
@handle_errors
def info(
    index: Annotated[Path, typer.Argument(help="Index folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """What an index holds, for either backend: backend, location, count, prefix sizes, metric, precision, model,
    space and generation."""
    from distill.index.query import describe_index

    d = describe_index(index)
    if json_out:
        typer.echo(json.dumps(d, ensure_ascii=False, indent=2))
        return
    for key in ("backend", "location", "collection", "count", "points", "dims", "metric", "precision", "index_type",
                "index_params", "recall_at_10", "model", "model_spec", "space", "space_spec", "generation", "last_add"):
        if key in d and (d[key] is not None or key == "space") and d[key] != {}:
            value = ",".join(map(str, d[key])) if key == "dims" else d[key]
            value = json.dumps(value) if isinstance(value, dict) else value
            typer.echo(f"{key + ':':<12} {'none' if value is None else value}")
    if d.get("points") is not None and d["points"] != d["count"]:
        typer.echo(f"note: the collection holds {d['points'] - d['count']} points past the manifest's count (an add "
                   "under way or killed: run it again); queries do not see them")


@handle_errors
def query(
    index: Annotated[Path, typer.Option(help="Index folder (from `distill index build`).")],
    text: Annotated[list[str] | None, typer.Argument(help="Query text(s).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours per query.")] = 10,
    dim: Annotated[int | None, typer.Option(help="Prefix size to search (default: the widest).")] = None,
    funnel: Annotated[str | None, typer.Option(help="SMALL:LARGE, e.g. 64:256: shortlist with the small prefix, "
                                                    "re-rank at the large one.")] = None,
    shortlist: Annotated[int | None, typer.Option(help="Funnel candidates (default: max(10k, 100)).")] = None,
    queries: Annotated[Path | None, typer.Option(help="File of queries (one per line, or a corpus file).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Query model (default: the one in the manifest; "
                                              "for an index of a run's space, that run's student).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    text_column: TextColumnOpt = "text",
) -> None:
    """Search an index: a ranked table (rank, score, id, text) per query."""
    from distill.errors import DistillError
    from distill.index.query import Funnel, query_index
    from distill.index.store import Manifest
    from distill.models import load_model

    texts = list(text or []) + (_read_texts(queries, text_column) if queries else [])
    if not texts:
        raise DistillError("give a query text or --queries FILE")
    if dim is not None and funnel:
        raise DistillError("pass either --dim or --funnel, not both")
    manifest = Manifest.load(index)
    _check_backend(manifest)
    spec = model or manifest.space_spec or manifest.model_spec  # an asymmetric index: queries by the run's student
    results = query_index(index, texts, load_model(spec), k=k, dim=dim,
                          funnel=Funnel.parse(funnel, shortlist) if funnel else None)
    if json_out:
        typer.echo(json.dumps(results, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for res in results:
        table = Table("rank", "score", "id", "text", title=escape(res["query"]), title_justify="left")
        for hit in res["hits"]:
            table.add_row(str(hit["rank"]), f"{hit['score']:.4f}", str(hit["id"]), escape(hit["text"]))
        console.print(table)


@handle_errors
def compare(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="Teacher alias, HF id or folder (the reference).")],
    student: Annotated[str, typer.Option("--student", "-s", help="Student folder (or any model spec).")],
    corpus: CorpusOpt,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours for overlap and mutual-kNN.")] = 10,
    dims: Annotated[str | None, typer.Option(help="Prefix sizes, e.g. 32,64,128 (default: the student's).")] = None,
    limit: Annotated[int, typer.Option(help="Compare on the first N texts (exact kNN is N^2).")] = 5000,
    pairs: Annotated[int, typer.Option(help="Random pairs for the Spearman correlation.")] = 20_000,
    examples: Annotated[int, typer.Option(help="Queries whose lost/gained neighbours are shown.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write the metrics table to this CSV (for plots).")] = None,
    text_column: TextColumnOpt = "text",
    batch_size: BatchOpt = 64,
    pca: Annotated[Path | None, typer.Option(help="The run's pca.npz: adds the rotated teacher's prefixes, the "
                                             "baseline the student is trained against (default: the pca.npz of "
                                             "the student's run folder, when there is one).")] = None,
    precision: Annotated[str | None, typer.Option(help="Also the student's overlap@k stored at these precisions, "
                                                       "e.g. float32,int8,binary, with bytes per vector.")] = None,
) -> None:
    """Compare the student's meaning space with the teacher's, prefix size by prefix size.

    Metrics against the teacher's full width: neighbour overlap@k, Spearman of pairwise similarities,
    linear CKA, mutual-kNN. Baselines: `teacher-rotated`, the teacher's PCA-rotated prefixes (what the
    student is trained to reproduce: the one to hold a student against) and `teacher-prefix`, its raw
    dimensions cut (a weaker line, shown for reference).
    """
    from distill.index.compare import compare_models
    from distill.models import load_model
    from distill.pipeline.pca import PCARotation

    if pca is None:
        from distill.pipeline.folder import RunFolder

        found = [RunFolder(p).pca for p in (Path(student), Path(student).parent) if RunFolder(p).pca.is_file()]
        pca = found[0] if found else None
    elif not pca.is_file():
        raise DistillError(f"--pca {pca} does not exist")
    rotate = PCARotation.load(pca).transform if pca is not None else None
    precisions = parse_precisions(precision)
    texts = _read_texts(corpus, text_column, limit)
    report = compare_models(load_model(teacher), load_model(student), texts, dims=parse_dims(dims), k=k, n_pairs=pairs,
                            n_examples=examples, batch_size=batch_size, progress=not json_out, rotate=rotate,
                            precisions=precisions)
    if csv is not None:
        import pandas as pd

        pd.DataFrame(report["rows"]).to_csv(csv, index=False)
    if json_out:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    _print_comparison(report)


def parse_precisions(value: str | None) -> list[Precision] | None:
    """``"float32,int8"`` -> [Precision.FLOAT32, Precision.INT8]. :raises DistillError: an unknown one."""
    if not value:
        return None
    try:
        return [Precision(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise DistillError(f"--precision takes a comma list of {', '.join(p.value for p in Precision)}, "
                           f"got {value!r}") from None


def _print_comparison(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    ref = report["reference"]
    table = Table("model", "dim", f"overlap@{report['k']}", "spearman", "cka", "mutual-kNN",
                  title=f"against {ref['model'].get('name')} at {ref['dim']} dims, {ref['n_texts']} texts",
                  title_justify="left")
    for r in report["rows"]:
        table.add_row(r["model"], str(r["dim"]), f"{r['overlap']:.3f}", f"{r['spearman']:.3f}", f"{r['cka']:.3f}",
                      f"{r['mutual_knn']:.3f}")
    console.print(table)
    if report.get("precisions"):
        table = Table("dim", "precision", "bytes/vector", f"overlap@{report['k']}",
                      title="the student's prefixes stored at each precision", title_justify="left")
        for r in report["precisions"]:
            table.add_row(str(r["dim"]), r["precision"], str(r["bytes_per_vector"]), f"{r['overlap']:.3f}")
        console.print(table)
    if report["examples"]:
        widest = report["examples"][-1]
        console.print(f"\nneighbours lost and gained by the student at {widest['dim']} dims:")
        for q in widest["queries"]:
            console.print(f"[bold]{escape(q['text'])}[/bold]")
            for t in q["lost"]:
                console.print(f"  [red]- {escape(t)}[/red]")
            for t in q["gained"]:
                console.print(f"  [green]+ {escape(t)}[/green]")
