"""The `distill` command line. Commands only parse options, build a config and call one function."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from distill.cli_utils import handle_errors
from distill.errors import DistillError, choice
from distill.index_cli import compare, index_app, query

# rich_markup_mode=None: click's plain help, which wraps the help text but never cuts an option's name (rich's
# table cut `--vocab-from-corpus` to `--vocab-from-cor…` in an 80-column terminal)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Distil big embedding models into small, fast, hierarchical students.")


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


TeacherOpt = Annotated[str, typer.Option("--teacher", "-t", help="Alias (see `distill teachers`), "
                                                                 "Hugging Face id or local folder.")]


@app.command()
@handle_errors
def teachers() -> None:
    """List teacher aliases and whether each loads offline now."""
    from rich.console import Console
    from rich.table import Table

    from distill.teachers import list_teachers

    table = Table("alias", "model", "offline")
    for row in list_teachers():
        table.add_row(str(row["alias"]), str(row["model"]), "yes" if row["offline"] else "no")
    Console().print(table)


@app.command()
@handle_errors
def targets(
    corpus: Annotated[str | None, typer.Option(help="Corpus: .txt, .jsonl, .csv, .parquet, a saved dataset "
                                               "folder or hf:DATASET_ID[:CONFIG][@SPLIT].")] = None,
    out: Annotated[Path, typer.Option(help="Cache folder for target stores.")] = Path("runs/targets"),
    teacher: TeacherOpt = "minilm",
    kinds: Annotated[str, typer.Option(help="Comma list of vocab, text, token.")] = "text",
    text_column: Annotated[str, typer.Option(help="Column holding the text (jsonl/csv/parquet).")] = "text",
    pooling: Annotated[str | None, typer.Option(help="mean|cls|last|max (default: the teacher's).")] = None,
    layer: Annotated[int, typer.Option(help="Hidden layer to use (-1: last).")] = -1,
    max_length: Annotated[int | None, typer.Option(help="Truncate texts to this many tokens.")] = None,
    prompt: Annotated[str | None, typer.Option(help="A sentence-transformers teacher's prompt name; none: no "
                                               "prompt (default: its default_prompt_name).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per teacher forward pass.", min=1)] = 64,
    shard_size: Annotated[int | None, typer.Option(help="Texts per shard, the unit of resumption (default: "
                                                   "4096; 1024 for token targets).", min=1)] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N texts.", min=1)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: best available).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Teacher dtype: float32, bfloat16, float16 "
                                              "(default: bfloat16 on CUDA, float32 elsewhere).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash every shard first; bad ones are "
                                         "labeled again.")] = False,
) -> None:
    """Label a corpus (and/or the vocabulary) with the teacher into the per-text target cache.

    Texts already in the cache (for this teacher and settings) are not labeled again.
    """
    from distill.devices import distributed_state, run_device
    from distill.pipeline.corpus import Corpus
    from distill.pipeline.targets import TargetKind, TargetStore, label, store_identity
    from distill.teachers import load_teacher

    wanted = [choice(TargetKind, k, "target kind") for k in _csv(kinds)]
    if not wanted:
        raise DistillError("--kinds is empty (use a comma list of vocab, text, token)")
    texts = None
    if any(k is not TargetKind.VOCAB for k in wanted):
        if corpus is None:
            raise DistillError("text and token targets need --corpus")
        texts = Corpus(corpus, text_column=text_column, limit=limit)
        sum(1 for _ in texts)  # a bad corpus fails here, before the teacher loads
        if texts.n_empty:
            logging.getLogger("distill").info("skipped %d empty texts in %s", texts.n_empty, corpus)
    state = distributed_state(device)
    t = load_teacher(teacher, device=run_device(state, device), dtype=dtype, pooling=pooling, layer=layer,
                     max_length=max_length, prompt=prompt)
    for kind in wanted:
        if verify and state.is_main_process:
            store = TargetStore(out, store_identity(t, kind), kind, t.dim)
            if store.folder.is_dir():
                n = len(list(store.folder.glob("shard-*.json")))
                bad = store.verify()
                typer.echo(f"{kind.value}: {n - len(bad)} shards verified, {len(bad)} bad (labeled again)")
        state.wait_for_everyone()
        view = label(t, kind, out, texts, shard_size=shard_size, batch_size=batch_size, state=state)
        if state.is_main_process:
            typer.echo(f"{kind.value}: {len(view)} targets in {view.store.folder}")


app.add_typer(index_app, name="index")
app.command()(query)
app.command()(compare)


def _register() -> None:
    from distill.hierarchy.cli import groups_command
    from distill.pipeline.cli import embed, export, run_command, train_command
    from distill.report.cli import eval_command, plot
    from distill.service.cli import serve

    app.command("run")(handle_errors(run_command))
    app.command("train")(handle_errors(train_command))
    app.command()(handle_errors(export))
    app.command()(handle_errors(embed))
    app.command("eval")(handle_errors(eval_command))
    app.command()(handle_errors(plot))
    app.command()(handle_errors(serve))
    app.command("groups")(handle_errors(groups_command))


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
