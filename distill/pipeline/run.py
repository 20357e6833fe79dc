"""`distill run`: the stages of a run in order (:mod:`distill.pipeline.stages`), on the run folder of its
configuration (:mod:`distill.pipeline.config`, re-exported here)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from distill.devices import distributed_state
from distill.errors import DistillError
from distill.io import save_json
from distill.pipeline.config import RunConfig, StudentKind, TrainConfig
from distill.pipeline.corpus import Corpus
from distill.pipeline.folder import RunFolder
from distill.pipeline.prepare import corpus_stamp
from distill.pipeline.stages import STAGE_NAMES, STAGES, stage

logger = logging.getLogger(__name__)
__all__ = ["RunConfig", "StudentKind", "TrainConfig", "load_config", "run", "run_stage"]


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
