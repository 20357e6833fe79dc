"""CLI commands of the training pipeline: run, export, embed. Registered in distill/cli.py."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from distill.cli_utils import parse_dims
from distill.errors import DistillError, choice

logger = logging.getLogger("distill")


def run_command(
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="Alias, Hugging Face id or folder "
                                                "(default: minilm, bundled).")] = None,
    corpus: Annotated[str | None, typer.Option(help="Training texts: .txt, .jsonl, .csv, .parquet (.gz too), a "
                                               "saved dataset folder, hf:DATASET_ID[:CONFIG][@SPLIT], or "
                                               "wikitext-2 (the default: 4,772 English sentences shipped with "
                                               "distill); none: distil the vocabulary alone.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: runs/<teacher>-<student>-<time>).")] = None,
    student: Annotated[str | None, typer.Option(help="static | transformer | layers (the teacher's own "
                                                "architecture with fewer layers: --depth or --layers) | conv "
                                                "(layers whose later ones run on tokens merged --merge at a "
                                                "time; BERT-like teachers).")] = None,
    depth: Annotated[int | None, typer.Option(help="--student layers or conv: keep this many teacher layers, evenly "
                                              "spaced, the last included (default: all).", min=1)] = None,
    layers: Annotated[str | None, typer.Option(help="--student layers or conv: the teacher layers to keep, e.g. "
                                               "0,2,4.")] = None,
    merge: Annotated[int | None, typer.Option(help="--student conv: token states merged into one position by a "
                                              "strided convolution (default 4).", min=1)] = None,
    merge_after: Annotated[int | None, typer.Option(help="--student conv: kept layers that run on every token "
                                                    "before the merge (default 1).", min=0)] = None,
    dims: Annotated[str | None, typer.Option(help="Nested prefix sizes, e.g. 32,64,128,256.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.", min=0)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Texts per training step.", min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.", min=0.0)] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N texts.", min=1)] = None,
    holdout: Annotated[int | None, typer.Option(help="Texts kept out for evaluation.", min=0)] = None,
    sts: Annotated[Path | None, typer.Option(help="STS pairs file to score at the end.")] = None,
    retrieval: Annotated[Path | None, typer.Option(help="A BEIR-layout task folder (corpus.jsonl, queries.jsonl, "
                                                   "qrels/) to score at the end: NDCG@10, recall@100, MRR@10 "
                                                   "per prefix size, beside the teacher.")] = None,
    retrieval_split: Annotated[str | None, typer.Option(help="Which qrels/<split>.tsv of --retrieval (default "
                                                        "test).")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of jsonl/csv/parquet corpora.")] = None,
    targets_dir: Annotated[Path | None, typer.Option(help="Teacher target cache (shared by runs).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.", min=1)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... for labeling, training and "
                                               "evaluation (default: best available).")] = None,
    pooling: Annotated[str | None, typer.Option(help="Teacher pooling: mean | cls | last | max (default: the "
                                                "teacher's own).")] = None,
    layer: Annotated[int | None, typer.Option(help="Teacher hidden layer to distil (-1: the last).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Cut texts to this many teacher tokens.", min=2)] = None,
    prompt: Annotated[str | None, typer.Option(help="Name of a sentence-transformers teacher's prompt to put "
                                               "before every text; none: no prompt (default: the teacher's "
                                               "default_prompt_name, as its encode does).")] = None,
    teacher_batch_size: Annotated[int | None, typer.Option(help="Texts per teacher forward pass (default 64; "
                                                          "256-1024 on a GPU).", min=1)] = None,
    teacher_dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16 (default: bfloat16 "
                                                      "on CUDA, float32 elsewhere).")] = None,
    groups: Annotated[Path | None, typer.Option(help="YAML file of imposed token groups, each level tied to a "
                                                "prefix size (see distill/hierarchy/groups.py).")] = None,
    emergent: Annotated[bool, typer.Option("--emergent", help="Cluster the teacher's token vectors into a "
                                           "coarse-to-fine tree tied to the smallest prefix sizes.")] = False,
    hierarchy_weight: Annotated[float | None, typer.Option(help="Weight of the hierarchy term (default 1).")] = None,
    branching: Annotated[str | None, typer.Option(help="--emergent: groups per parent at each level, "
                                                  "coarse to fine, e.g. 4,4.")] = None,
    refresh_every: Annotated[int | None, typer.Option(help="--emergent: re-cluster the student's own token rows "
                                                      "every N steps.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="teacher (word pieces) | char (single characters of the "
                                                  "corpus, for demonstrations).")] = None,
    width: Annotated[int | None, typer.Option(help="--student transformer: width of its encoder (default 256).",
                                              min=1)] = None,
    n_layers: Annotated[int | None, typer.Option(help="--student transformer: layers of its encoder (default 2).",
                                                 min=1)] = None,
    n_heads: Annotated[int | None, typer.Option(help="--student transformer: attention heads, a divisor of --width "
                                                "(default 4).", min=1)] = None,
    token_targets: Annotated[bool | None, typer.Option("--token-targets/--no-token-targets", help="Contextual "
                                                       "students: also learn the teacher's contextual token "
                                                       "states (default on; off: text vectors only, a smaller "
                                                       "target cache).")] = None,
    token_weights: Annotated[str | None, typer.Option(help="Static rows' initial pooling weights: sif (the "
                                                      "default) | bm25 (BM25 IDF) | none (a plain mean).")] = None,
    vocab_from_corpus: Annotated[int | None, typer.Option(help="--student static: add the N most frequent words "
                                                          "of the training texts that the teacher's tokenizer cuts "
                                                          "into pieces as tokens of their own, each starting from "
                                                          "the teacher's vector of the word.")] = None,
    pca_center: Annotated[bool | None, typer.Option("--pca-center/--no-pca-center", help="Subtract the teacher "
                                                    "vectors' mean before the PCA rotation (default off: the "
                                                    "rotation then keeps every cosine).")] = None,
    whiten: Annotated[bool | None, typer.Option("--whiten/--no-whiten", help="Scale each PCA component of the "
                                                "targets to unit variance (default off).")] = None,
    dim_weights: Annotated[str | None, typer.Option(help="Weight of each prefix size in the loss, one per --dims "
                                                    "size, e.g. 1,1,1,2 (default: all 1).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches of --batch-size per optimizer step "
                                                   "(default 1).", min=1)] = None,
    warmup_ratio: Annotated[float | None, typer.Option(help="Share of the steps over which the learning rate "
                                                       "rises to --lr, before its cosine decay (default 0.05).",
                                                       min=0.0, max=1.0)] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay (default 0).", min=0.0)] = None,
    clip: Annotated[float | None, typer.Option(help="Clip the gradient norm to this; 0: no clipping (default 1).",
                                               min=0.0)] = None,
    log_every: Annotated[int | None, typer.Option(help="Write a metrics.jsonl line every N optimizer steps "
                                                  "(default 10).", min=1)] = None,
    grow_at: Annotated[str | None, typer.Option(help="--student transformer or layers: double the depth (each "
                                                "layer duplicated in place) at these points of training: 0.5 = "
                                                "halfway, 300 = after step 300; a list doubles once per value, "
                                                "e.g. 0.25,0.5.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file with the same options; "
                                                "flags given on the command line win.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run in --out from its last checkpoint.")] = False,
    until: Annotated[str, typer.Option(help="Stop after this stage: targets | train | eval | export.")] = "export",
) -> None:
    """The main job: teacher -> targets -> PCA -> student -> train -> evaluate -> export.

    Each stage writes into the run folder and is skipped when its output there is complete; the stages
    also run alone: `distill train RUN`, `distill eval RUN`, `distill export RUN`.
    """
    from distill.pipeline.run import RunConfig, run

    options = _config_options(config)
    train = dict(options.pop("train", {}) or {})
    flags = {"teacher": teacher, "corpus": corpus, "student": student, "depth": depth, "merge": merge,
             "merge_after": merge_after,
             "layers": tuple(parse_dims(layers, "--layers", least=0)) if layers else None,
             "dims": tuple(parse_dims(dims)) if dims else None, "limit": limit, "holdout": holdout,
             "sts": str(sts) if sts else None, "retrieval": str(retrieval) if retrieval else None,
             "retrieval_split": retrieval_split, "text_column": text_column,
             "targets_dir": str(targets_dir) if targets_dir else None, "device": device, "pooling": pooling,
             "layer": layer, "max_length": max_length, "prompt": prompt, "teacher_batch_size": teacher_batch_size,
             "teacher_dtype": teacher_dtype, "width": width, "n_layers": n_layers, "n_heads": n_heads,
             "token_targets": token_targets, "token_weights": token_weights,
             "vocab_from_corpus": vocab_from_corpus, "pca_center": pca_center, "whiten": whiten}
    options.update({k: v for k, v in flags.items() if v is not None})
    if options.get("corpus") in ("none", ""):  # no texts: the student is the rotated vocabulary
        options["corpus"] = None
    if tokenizer is not None:
        options["tokenizer"] = tokenizer
    hierarchy = {"groups": str(groups) if groups else None, "emergent": emergent or None, "weight": hierarchy_weight,
                 "branching": tuple(parse_dims(branching, "--branching")) if branching else None,
                 "refresh_every": refresh_every}
    options["hierarchy"] = {**(options.get("hierarchy") or {}), **{k: v for k, v in hierarchy.items() if v is not None}}
    weights = _numbers(dim_weights, "--dim-weights takes comma-separated numbers such as 1,1,2")
    growth = _numbers(grow_at, "--grow-at takes comma-separated shares of training or step numbers such as 0.5 "
                               "or 300,600")
    train.update({k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                                    "checkpoint_every": checkpoint_every, "dim_weights": weights,
                                    "grad_accum": grad_accum, "warmup_ratio": warmup_ratio,
                                    "weight_decay": weight_decay, "clip": clip, "log_every": log_every,
                                    "grow_at": growth}.items()
                  if v is not None})
    if out is None:
        if resume:
            raise DistillError("--resume needs the --out folder of the run to continue")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(options.get("teacher", "minilm")).strip("/").split("/")[-1])
        out = Path("runs") / f"{name}-{options.get('student', 'static')}-{time.strftime('%Y%m%d-%H%M%S')}"
    options["out"] = str(out)
    if "corpus" in options and not options["corpus"]:
        options.setdefault("holdout", 0)
    cfg = RunConfig.from_dict({**options, "train": train})
    summary = run(cfg, resume=resume, until=until)
    print_summary(summary, out)


def _config_options(config: Path | None) -> dict:
    """The options of a --config YAML/JSON file (none: no options)."""
    import yaml

    if config is None:
        return {}
    if not config.is_file():
        raise DistillError(f"config file {config} does not exist")
    options = yaml.safe_load(config.read_text()) or {}
    if not isinstance(options, dict):
        raise DistillError(f"{config} must hold a mapping of options")
    return options


def _numbers(value: str | None, usage: str) -> tuple[float, ...] | None:
    """A comma-separated list of numbers from a flag (None when the flag is not given)."""
    if not value:
        return None
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise DistillError(f"{usage}, got {value!r}") from None


def print_summary(summary: dict, out: Path) -> None:
    """The run's last lines: per prefix, the student's agreement with the teacher beside its
    initialisation's and the rotated teacher's own prefix; its size and speed; where the report is."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    held = summary.get("holdout")
    if held:
        table = Table(title=f"agreement with the teacher on {summary['holdout_texts']} held-out texts",
                      title_justify="left")
        who = [w for w in ("student", "init", "teacher_rotated") if w in held]
        names = {"student": "student", "init": "initialisation", "teacher_rotated": "teacher's PCA prefix"}
        table.add_column("dims", justify="right")
        for metric in ("overlap@10", "similarity Spearman"):
            table.add_column(f"{metric}:\n" + " | ".join(names[w] for w in who), justify="center")
        for d in summary["dims"]:
            table.add_row(str(d), *(" | ".join(f"{held[w][str(d)][key]:.3f}" for w in who)
                                    for key in ("overlap@10", "sim_spearman")))
        console.print(table)
        if "init" in held:
            top = str(summary["dims"][-1])
            a, b = held["init"][top]["overlap@10"], held["student"][top]["overlap@10"]
            console.print(f"training moved overlap@10 at {top} dims from {a:.3f} (initialisation) to {b:.3f} "
                          f"({b - a:+.3f}, {100 * (b - a) / max(a, 1e-9):+.0f}%)")
    speed, size = summary.get("speed"), summary.get("size")
    if speed and size:
        console.print(f"student: {size['student_parameters'] / 1e6:.1f}M parameters (teacher "
                      f"{size['teacher_parameters'] / 1e6:.1f}M); {speed['sentences_per_s']:,.0f} sentences/s on "
                      f"{speed['student_device']} against the teacher's {speed['teacher_sentences_per_s']:,.0f} on "
                      f"{speed['device']}: {speedup_text(speed['speedup'])}")
    if "sts" in summary:
        top = str(summary["dims"][-1])
        sts = summary["sts"]
        console.print(f"STS Spearman x100 at {top} dims: student {sts['student'][top]['spearman']:.1f}, "
                      f"teacher {sts['teacher'][top]['spearman']:.1f}")
    if "retrieval" in summary:
        print_retrieval(console, summary["retrieval"])
    words = summary.get("corpus_words")
    if words:
        console.print(f"vocabulary: {words['added']:,} whole words of the corpus added as tokens of their own "
                      f"(--vocab-from-corpus {words['requested']:,})")
    if "note" in summary:
        console.print(f"note: {summary['note']}")
    report = out / "report.html"
    console.print(f"run folder: {out}" + (f"; report: {report}" if report.is_file() else ""))


def speedup_text(ratio: float) -> str:
    """``160x``, ``3.4x``, ``0.33x``: two significant figures below 10, so a slower student does not read as 0x."""
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def print_retrieval(console, section: dict) -> None:
    """NDCG@10 per prefix size: the student, its initialisation, its queries against the teacher's documents,
    the teacher's rotated prefix; and the teacher at full width, the 100% the student is held to."""
    from rich.table import Table

    teacher_dim, teacher = next(iter(section["teacher"].items()))
    table = Table(title=f"retrieval on {section['task']} ({section['split']}, {section['queries']} queries): NDCG@10; "
                        f"the teacher at {teacher_dim} dims: {teacher['ndcg@10']:.3f}", title_justify="left")
    names = {"student": "student", "init": "initialisation", "asymmetric": "student queries,\nteacher documents",
             "teacher_rotated": "teacher's PCA prefix"}
    who = [w for w in names if w in section]
    table.add_column("dims", justify="right")
    for w in who:
        table.add_column(names[w], justify="right")
    full = max(teacher["ndcg@10"], 1e-9)
    for d in section["student"]:
        scores = [section[w][d]["ndcg@10"] for w in who]
        table.add_row(d, *(f"{x:.3f} ({100 * x / full:.0f}%)" for x in scores))
    console.print(table)


def train_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder prepared by `distill run --until targets`.")],
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
) -> None:
    """Train the student of a prepared run folder (stage 2 of `distill run`) and write its student/."""
    from distill.pipeline.folder import RunFolder
    from distill.pipeline.run import load_config, run_stage

    cfg, folder = load_config(run_dir), RunFolder(run_dir)
    if folder.trained() and not resume:
        raise DistillError(f"{run_dir} already holds a trained student/; delete it to train again")
    if not resume and folder.has_checkpoints():
        raise DistillError(f"{run_dir} holds checkpoints of an earlier training; pass --resume to continue it")
    result = run_stage(cfg, "train", resume=resume)
    typer.echo(f"trained {result.get('steps', 0)} steps; student in {folder.student}")


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder or a student folder.")],
    out: Annotated[Path, typer.Option(help="Where to write the exported model.")],
    format: Annotated[str, typer.Option("--format", help="native | sentence-transformers | model2vec (static "
                                        "students) | onnx.")] = "sentence-transformers",
    dtype: Annotated[str, typer.Option(help="Storage of the per-token tables: float32 | float16 | int8 (one scale "
                                       "per row); float16 and int8 for native and model2vec.")] = "float32",
) -> None:
    """Export a student with its model card: a native folder (distill.load), a sentence-transformers or
    Model2Vec folder (static students), or ONNX (model.onnx + tokenizer.json)."""
    from distill.pipeline.folder import summary_of
    from distill.students import load_student
    from distill.students.export import export_student

    student = load_student(run_dir)
    export_student(student, out, format, dtype, summary=summary_of(run_dir, student.config.teacher))
    typer.echo(f"wrote {out}")


def embed(
    model: Annotated[str, typer.Option(help="Student (or run) folder; with --space, the run's teacher (alias, "
                                       "Hugging Face id or folder).")],
    corpus: Annotated[str, typer.Option(help="Texts to embed (any corpus form `distill run` takes).")],
    out: Annotated[Path, typer.Option(help="vecs.npy or vecs.parquet (text + embedding columns).")],
    dim: Annotated[int | None, typer.Option(help="Prefix size (default: full width).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of jsonl/csv/parquet corpora.")] = "text",
    batch_size: Annotated[int, typer.Option(help="Texts per batch.", min=1)] = 1024,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... for contextual students (default: best "
                                               "available; static students run on the CPU).")] = None,
    truncate: Annotated[bool, typer.Option(help="Cut records past a contextual student's max length (their number "
                                           "is logged); --no-truncate: such a record is an error.")] = True,
    long: Annotated[str, typer.Option(help="truncate: cut long records; chunk: embed them as overlapping windows "
                                      "of the max length, averaged by tokens. Static students have no limit.")
                    ] = "truncate",
    space: Annotated[Path | None, typer.Option(help="A run folder: embed with its teacher (--model) in the run's "
                                               "student space (its PCA rotation and scale, prefix sizes, "
                                               "normalisation), so its students' query vectors search them.")] = None,
) -> None:
    """Embed a corpus with a student into .npy or .parquet, row i for record i.

    With --space RUN the texts are embedded by the run's teacher, rotated into the run's student space: a
    corpus embedded once by the big model, searched by the small model's queries.

    An empty record (a blank line, an empty text field) gets a zero vector, so the rows line up with
    the input; their number is reported. The corpus is read and written in chunks: memory stays at a
    chunk, whatever its size. A record longer than a contextual student's max length is cut (the cuts
    are counted in the log), refused (--no-truncate) or embedded in windows (--long chunk).
    """
    from distill.devices import resolve_device
    from distill.pipeline.corpus import Corpus
    from distill.students import load_student
    from distill.students.long import LongMode

    if out.suffix not in (".npy", ".parquet"):
        raise DistillError(f"--out must end in .npy or .parquet, got {out.name}")
    choice(LongMode, long, "--long mode")
    if space is not None:
        from distill.models import load_model

        student = load_model(model, space=space, device=resolve_device(device))
    else:
        student = load_student(model, device=resolve_device(device))
    dim = student.check_dim(dim)
    records = Corpus(corpus, text_column=text_column, keep_empty=True)
    n = sum(1 for _ in records)  # a bad corpus fails here, before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"empty": 0, "texts": 0, "tokens": 0, "chunked": 0}  # empty records, and what was cut or chunked
    blocks = _embedded_blocks(student, records, n, dim, max(batch_size, 16_384), batch_size, long, truncate,
                              space is not None, corpus, counts)
    _write_vectors(out, n, dim, blocks)
    if counts["texts"]:
        logger.warning("%d of %d records were longer than the student's max length of %d and were cut (%d tokens "
                       "dropped); --long chunk embeds them whole, --no-truncate refuses them", counts["texts"], n,
                       student.config.max_length, counts["tokens"])
    if counts["chunked"]:
        logger.info("%d of %d records were longer than the student's max length of %d and were embedded in windows",
                    counts["chunked"], n, student.config.max_length)
    if counts["empty"]:
        logger.warning("%d of %d records were empty and got zero vectors (rows still line up with the input)",
                       counts["empty"], n)
    typer.echo(f"wrote {n} x {dim} vectors to {out}")


def _embedded_blocks(student, records, n: int, dim: int, chunk: int, batch_size: int, long: str, truncate: bool,
                     in_space: bool, corpus: str, counts: dict):
    """(texts, (len(texts), dim) vectors) per chunk of ``records``, an empty record a zero row; ``counts``
    gathers the empty records and what was cut or chunked."""
    import numpy as np
    from tqdm.auto import tqdm

    from distill.students.long import LongTextError, encode

    done = 0
    with tqdm(total=n, unit="text", desc="embed") as bar:
        for texts in records.chunks(chunk):
            block = np.zeros((len(texts), dim), dtype=np.float32)
            full = [i for i, t in enumerate(texts) if t]
            counts["empty"] += len(texts) - len(full)
            if full and in_space:  # the teacher cuts what passes its max length (it logs how many)
                block[full] = student.encode([texts[i] for i in full], dim=dim, batch_size=batch_size)
            elif full:
                try:
                    block[full], plan = encode(student, [texts[i] for i in full], dim=dim, batch_size=batch_size,
                                               long=long, truncate=truncate)
                except LongTextError as e:
                    raise DistillError(f"record {done + full[e.index] + 1} of {corpus} has {e.n_tokens} tokens, "
                                       f"past the student's max length of {e.limit}; leave out --no-truncate "
                                       "to cut it, or pass --long chunk") from None
                counts["texts"] += plan.truncated_texts
                counts["tokens"] += plan.truncated_tokens
                counts["chunked"] += plan.chunked_texts
            done += len(texts)
            bar.update(len(texts))
            yield texts, block


def _write_vectors(out: Path, n: int, dim: int, blocks) -> None:
    """Write ``n`` rows of vectors, arriving in blocks, to ``out`` (.npy, or .parquet with the texts), atomically:
    a killed embed leaves no half-written file under the final name."""
    import numpy as np

    from distill.io import atomic_path

    with atomic_path(out) as tmp:
        if out.suffix == ".npy":
            x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))  # rows stream to disk
            row = 0
            for _, block in blocks:
                x[row:row + len(block)] = block
                row += len(block)
            x.flush()
            del x
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("text", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
        with pq.ParquetWriter(tmp, schema) as writer:
            for texts, block in blocks:
                embedding = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)
                writer.write_table(pa.table({"text": texts, "embedding": embedding}, schema=schema))
