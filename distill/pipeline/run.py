"""`distill run`: the run's configuration and its stages in order (see :mod:`distill.pipeline.stages`)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from distill.devices import distributed_state
from distill.errors import DistillError, choice
from distill.hierarchy.config import HierarchyConfig, TokenizerMode
from distill.io import save_json
from distill.pipeline.corpus import DEFAULT_CORPUS, Corpus
from distill.pipeline.folder import RunFolder
from distill.pipeline.init import TokenWeighting
from distill.pipeline.prepare import corpus_stamp
from distill.pipeline.stages import STAGE_NAMES, STAGES, stage
from distill.pipeline.train import TrainConfig
from distill.students.grow import GROWABLE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    out: str  # the run folder
    teacher: str = "minilm"
    corpus: str | None = DEFAULT_CORPUS  # the shipped WikiText-2 sentences; None: distil the vocabulary alone
    text_column: str = "text"
    limit: int | None = None  # use only the first N texts of the corpus
    student: str = "static"
    dims: tuple[int, ...] = (32, 64, 128, 256)  # cut to the teacher's width when it is smaller
    holdout: int | None = None  # texts kept out of training for evaluation (default: 10%, at most 1000)
    sts: str | None = None  # an STS pairs file to score at the end
    retrieval: str | None = None  # a BEIR-layout task folder to score at the end (NDCG@10, recall@100, MRR@10)
    retrieval_split: str = "test"  # which qrels/<split>.tsv of it
    targets_dir: str = "runs/targets"
    pooling: str | None = None
    layer: int = -1
    max_length: int | None = None
    prompt: str | None = None  # a sentence-transformers teacher's prompt name; "none": none; default: its default
    teacher_batch_size: int = 64
    teacher_dtype: str | None = None  # float32 | bfloat16 | float16; default bf16 on CUDA, fp32 elsewhere
    pca_center: bool = False
    whiten: bool = False
    width: int = 256  # transformer students
    n_layers: int = 2
    n_heads: int = 4
    depth: int | None = None  # layers students: keep this many teacher layers, evenly spaced (default: all)
    layers: tuple[int, ...] | None = None  # layers students: the teacher layers to keep, by index
    merge: int = 4  # conv students: token states merged into one position after the first kept layers
    merge_after: int = 1  # conv students: kept layers that run at full length, before the merge
    token_weights: str = "sif"  # the static rows' initial pooling weights: sif | bm25 | none
    token_targets: bool = True  # transformer students: also learn the teacher's contextual token states
    device: str | None = None
    tokenizer: str = "teacher"  # teacher | char (single characters of the corpus, for demonstrations)
    vocab_from_corpus: int | None = None  # static students: add the N most frequent corpus words the tokenizer splits
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)  # imposed or emergent token groups
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        from distill.students import STUDENTS

        if self.student not in STUDENTS:  # before any file is written or any text labeled
            raise DistillError(f"unknown student {self.student!r} (choose from {', '.join(STUDENTS)})")
        weights = self.train.dim_weights
        if weights is not None and len(weights) != len(self.dims):
            raise DistillError(f"{len(weights)} dim weights for {len(self.dims)} prefix sizes "
                               f"({','.join(map(str, self.dims))}): give one weight per size")
        TokenWeighting.parse(self.token_weights)
        self._check_vocab_from_corpus()
        if self.train.grow_at and self.student not in GROWABLE:
            raise DistillError(f"--grow-at doubles the layers of a {' or '.join(GROWABLE)} student; a {self.student} "
                               "student has no layers to grow")
        if self.student == "transformer" and self.width % self.n_heads:
            raise DistillError(f"{self.n_heads} attention heads do not divide the width {self.width} "
                               "(--n-heads, --width)")
        if self.merge < 1 or self.merge_after < 0:
            raise DistillError(f"--merge must be at least 1 and --merge-after at least 0, got {self.merge} and "
                               f"{self.merge_after}")

    def _check_vocab_from_corpus(self) -> None:
        n = self.vocab_from_corpus
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DistillError(f"--vocab-from-corpus takes a positive number of words, got {n!r} (leave it out to "
                               "keep the teacher's vocabulary)")
        if self.student != "static":
            raise DistillError(f"--vocab-from-corpus adds rows to a static student's token table; a {self.student} "
                               "student cannot take new words (pass --student static, or leave --vocab-from-corpus "
                               "out)")
        if not self.corpus:
            raise DistillError("--vocab-from-corpus counts the words of the training texts: pass a --corpus "
                               "(not none)")
        if self.tokenizer != "teacher":
            raise DistillError(f"--vocab-from-corpus adds whole words to the teacher's tokenizer, not to "
                               f"--tokenizer {self.tokenizer}")

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DistillError(f"unknown run options: {', '.join(sorted(unknown))}")
        data = dict(data)
        train = dict(data.pop("train", {}) or {})
        if "cpu" in train:  # TrainConfig.cpu, replaced by ``device``: config.json files of older runs still hold it
            forced = bool(train.pop("cpu")) and data.get("device") is None
            if forced:
                data["device"] = "cpu"
            logger.warning("the training option cpu (of an older run) is no longer used, the run option device "
                           "replaced it: %s", "read as device: cpu" if forced else "ignored")
        bad = set(train) - {f.name for f in fields(TrainConfig)}
        if bad:
            raise DistillError(f"unknown training options: {', '.join(sorted(bad))}")
        if "dims" in data:
            data["dims"] = tuple(int(d) for d in data["dims"])
        if data.get("layers") is not None:
            data["layers"] = tuple(int(i) for i in data["layers"])
        choice(TokenizerMode, data.get("tokenizer", "teacher"), "tokenizer")
        hierarchy = HierarchyConfig.from_dict(data.pop("hierarchy", None))
        return cls(**data, train=TrainConfig(**train), hierarchy=hierarchy)


def _prepare_folder(cfg: RunConfig, resume: bool) -> Path:
    folder = RunFolder(cfg.out)
    options = json.loads(json.dumps(asdict(cfg)))
    previous = folder.read_config() if folder.is_run() else None
    # a folder whose run stopped before training (bad teacher, interrupted labeling) holds nothing to keep
    if previous is not None and folder.started():
        if not resume:
            raise DistillError(f"run folder {folder.root} already holds a run; pass --resume to continue it, or "
                               "another --out")
        # read back through RunConfig: an option added since the folder was written takes its default
        if json.loads(json.dumps(asdict(RunConfig.from_dict(previous)))) != options:
            raise DistillError(f"--resume: the options differ from those saved in {folder.config}; rerun with the "
                               "same ones")
    elif previous is not None and previous != options:  # prepared data of other options would be stale
        import shutil

        shutil.rmtree(folder.data, ignore_errors=True)
        folder.pca.unlink(missing_ok=True)
    folder.root.mkdir(parents=True, exist_ok=True)
    save_json(folder.config, asdict(cfg))
    return folder.root


def load_config(run_dir: str | Path) -> RunConfig:
    """The options a run folder was made with (its ``config.json``)."""
    return RunConfig.from_dict(RunFolder(run_dir).read_config())


def write_report_safely(out: Path) -> None:
    """``report.html`` of a finished run; a broken report only warns, it must not lose the run."""
    try:
        from distill.report import write_report

        write_report(out)
    except Exception as e:
        logger.warning("could not write the report (rerun `distill plot %s`): %s", out, e)


def run(cfg: RunConfig, resume: bool = False, until: str = "export") -> dict:
    """The main job: the stages of :data:`~distill.pipeline.stages.STAGES` in order, each skipped when its
    output in the run folder is complete. Returns the summary written to ``<out>/summary.json`` (empty when
    ``until`` stops before eval).

    Under ``accelerate launch`` every rank labels its share of the targets and trains its share of
    each batch; the main process alone writes the run folder and evaluates.
    """
    last = STAGE_NAMES.index(stage(until).name)
    state = command_state(cfg)  # passed to every stage
    out = Path(cfg.out)
    if cfg.corpus:  # a corpus that does not exist or has an unknown format fails before the folder is made;
        Corpus(cfg.corpus, text_column=cfg.text_column, limit=cfg.limit)  # its texts are read (once) by prepare
    if cfg.retrieval:  # a bad task folder fails now, not after training
        from distill.pipeline.retrieval import read_task

        read_task(cfg.retrieval, cfg.retrieval_split)
    created = not out.exists()
    if state.is_main_process:
        _prepare_folder(cfg, resume)
    state.wait_for_everyone()
    try:
        return _run_stages(cfg, state, resume, STAGES[:last + 1])
    except BaseException:
        if created and state.is_main_process:
            _remove_if_untouched(out)
        raise


def _remove_if_untouched(out: Path) -> None:
    """Remove a run folder this call created when the run failed before any stage wrote into it (a bad
    teacher, an interrupted first labeling: the labels live in the target cache, not here)."""
    import shutil

    config = RunFolder(out).config
    if all(p == config for p in out.rglob("*") if p.is_file()):
        shutil.rmtree(out, ignore_errors=True)
        logger.info("the run stopped before its first stage wrote anything: removed %s", out)


def _run_stages(cfg: RunConfig, state, resume: bool, todo) -> dict:
    folder = RunFolder(cfg.out)
    if folder.stale(corpus_stamp(cfg)):  # prepared from another corpus, nothing trained on it yet
        logger.info("the corpus changed since %s was prepared: preparing it again", folder.root)
        if state.is_main_process:
            folder.meta.unlink()
        state.wait_for_everyone()
    summary: dict = {}
    for s in todo:
        if s.complete is not None and s.complete(folder):
            continue
        if s.main_only and not state.is_main_process:
            break
        result = run_stage(cfg, s.name, state, resume=resume)
        if s.name == "eval":
            summary = result
    return summary


def command_state(cfg: RunConfig):
    """The distributed state of a command on the run of ``cfg``: resolved once, at the start (Accelerate's
    state is a singleton the first call decides), and passed down to the stages."""
    return distributed_state(cfg.device)


def run_stage(cfg: RunConfig, name: str, state=None, resume: bool = False):
    """One stage of the run in ``cfg.out`` (``distill train RUN``, ``distill eval RUN`` and :func:`run` come
    here); ``state``: the distributed state, resolved here when the caller has none. Returns the stage's result
    (train: the training log; eval: the summary)."""
    s = stage(name)
    state = state if state is not None else command_state(cfg)
    if s.name == "train":
        return s.run(cfg, state, resume=resume)
    result = s.run(cfg, state)
    if s.name == "eval":
        write_report_safely(Path(cfg.out))
    return result
