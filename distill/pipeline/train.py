"""The training loop: nested losses over prefix sizes, Accelerate for devices and processes.

Determinism: batch order of epoch ``e`` is a permutation seeded with ``seed + e``, and a checkpoint
holds the model, optimizer, scheduler, step and torch's random state (the dropout of a layers student's
encoder), so a run killed and resumed from a checkpoint ends with the same weights as one that was never
interrupted (on CPU).
Under ``accelerate launch`` each global batch is split across ranks and DDP averages gradients.

Growth (``grow_at``): after the optimizer step of a growth point the student's depth doubles
(:func:`distill.students.grow.grow`), the optimizer is rebuilt around the new parameters (each copy takes
its original's AdamW moments, the learning-rate schedule goes on where it was) and model and optimizer
are prepared by Accelerate again. A checkpoint records how many times the model grew, so a resume first
grows a fresh model as often, then loads the weights.
"""

from __future__ import annotations

import logging
import math
import re
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distill.devices import autocast
from distill.errors import DistillError, TrainingError
from distill.faults import maybe_crash
from distill.io import atomic_path, remove_stale_tmp
from distill.memory import trim_heap
from distill.pipeline.config import TrainConfig
from distill.pipeline.data import TrainSet, epoch_order, length_passes
from distill.pipeline.folder import RunFolder
from distill.pipeline.metrics import MetricsLog
from distill.pipeline.pca import PCARotation
from distill.students import StaticStudent, Student
from distill.students.losses import NestedLoss, TokenCosineLoss

logger = logging.getLogger(__name__)
_CHECKPOINT = re.compile(r"^step-(\d+)\.pt$")
# padded token positions per forward pass of a contextual student: a micro-batch with more runs in passes of
# texts of similar length, each padded only to its own longest text (see Trainer._contextual_forward)
TOKENS_PER_PASS = 8192


def growth_steps(grow_at: tuple[float, ...] | None, total_steps: int) -> list[int]:
    """The optimizer steps after which the student doubles its depth: a share ``g`` in (0, 1) falls at
    ``round(g * total_steps)`` (at least step 1), a whole number is a step.

    :raises DistillError: when two values fall at the same step or one at or past the last step (the grown
        layers would never train).
    """
    if not grow_at or total_steps == 0:
        return []
    steps = sorted(max(1, round(g * total_steps)) if g < 1 else int(g) for g in grow_at)
    if len(set(steps)) < len(steps) or steps[-1] >= total_steps:
        raise DistillError(f"--grow-at {','.join(f'{g:g}' for g in grow_at)} falls at steps {steps} of a "
                           f"{total_steps}-step training: each growth needs a step of its own, before the last")
    return steps


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def _save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, terms: dict, keep: int = 2,
                     grown: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "grown": grown, "rng": torch.get_rng_state(),
                    "terms": {name: term.state_dict() for name, term in terms.items()}}, tmp)
    for _, old in _checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


class Trainer:
    """Trains one student on one :class:`~distill.pipeline.data.TrainSet`, writing checkpoints and metrics
    into ``run_dir``.

    Targets arrive raw from the store and are rotated on the device (one matmul a batch). Between two
    logging steps the loop never waits for the device: loss terms are summed there and read once
    per ``log_every`` steps, when the finite-loss check runs too (and before every checkpoint, so a
    checkpoint never holds weights a NaN touched).

    Under several processes the text terms (MSE, cosine, relational) are computed on the global
    batch: each rank gathers the others' pooled vectors (without gradient) and its own (with), so the
    relational term compares every pair of the batch as one process would, and ``world * loss``
    makes DDP's gradient average equal the one-process gradient.
    """

    def __init__(self, student: Student, data: TrainSet, config: TrainConfig, run_dir: str | Path,
                 pca: PCARotation, device: str | None = None, extra_terms: dict | None = None, state=None):
        from accelerate import Accelerator

        from distill.devices import run_device

        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        # ``state``: the command's distributed state (None: one process); it decides CPU vs CUDA here.
        # autocast is ours (bf16 on CUDA); accumulation is by hand so a short last step stays exact
        self.accelerator = Accelerator(cpu=run_device(state, device).type == "cpu", mixed_precision="no")
        self.loss_fn = NestedLoss(student.dims, config.dim_weights, mse=config.mse, cosine=config.cosine,
                                  relational=config.relational, extra_terms=extra_terms)
        self.token_loss = TokenCosineLoss()
        self.student = student
        self.static = isinstance(student, StaticStudent)
        torch.manual_seed(config.seed)
        optimizer = self._new_optimizer()
        self.steps_per_epoch = math.ceil(len(data) / (config.batch_size * config.grad_accum))
        self.total_steps = self.steps_per_epoch * config.epochs
        self.grow_steps = growth_steps(config.grow_at, self.total_steps)
        if self.grow_steps:
            from distill.students.grow import layer_stack

            layer_stack(student)  # refuses a student without layers before any step
        self.grown = 0  # doublings done so far
        self.growth: list[dict] = []  # their metrics.jsonl records
        warmup = max(1, int(config.warmup_ratio * self.total_steps))
        self._lr_factor = lambda s: _schedule(s, self.total_steps, warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        # the scheduler is stepped by hand once per optimizer step, so it is not prepared
        self.model, self.optimizer = self.accelerator.prepare(student, optimizer)
        dev = self.accelerator.device
        self.rotation = torch.from_numpy(pca.components).to(dev)  # (D_t, D_t)
        self.mean = torch.from_numpy(pca.mean).to(dev)  # (D_t,)
        self.factors = torch.from_numpy(pca.factors()).to(dev)  # (D_t,) whitening, or 1 / the RMS norm
        folder = RunFolder(self.run_dir)
        self.checkpoint_dir, self.metrics_path = folder.checkpoints, folder.metrics
        self.step = 0
        self._sizes: list[int] | None = None

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.student.param_groups(self.config.lr), lr=self.config.lr,
                                 weight_decay=self.config.weight_decay)

    # ---- growth -------------------------------------------------------------------------------
    def _regrow(self, shrink: bool = False) -> None:
        """Double the student's depth (or undo a doubling), then rebuild the optimizer and scheduler around
        its parameters and prepare both again: nothing keeps a reference to the parameters it had."""
        from distill.students.grow import grow
        from distill.students.grow import shrink as shrink_student

        acc = self.accelerator
        old = self.optimizer.optimizer  # the torch optimizer inside Accelerate's wrapper
        moments = {name: old.state[p] for name, p in self.student.named_parameters() if p in old.state}
        if shrink:
            shrink_student(self.student)
            sources = {name: name for name, _ in self.student.named_parameters()}
        else:
            sources = grow(self.student)
        optimizer = self._new_optimizer()
        for name, p in self.student.named_parameters():
            if sources[name] in moments:  # a copy goes on from its original's AdamW moments, not from zero
                optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v
                                      for k, v in moments[sources[name]].items()}
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        scheduler.load_state_dict(self.scheduler.state_dict())  # the step count and base rates
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr  # the rate of the step just taken, as the old groups held it
        acc.free_memory()  # drops Accelerate's references to the old model wrapper and optimizer
        self.model, self.optimizer = acc.prepare(self.student, optimizer)
        self.scheduler = scheduler
        self.grown += -1 if shrink else 1

    @torch.no_grad()
    def _probe(self, batch: dict) -> float:
        """The loss of ``batch`` without dropout and without a gradient: the same before and after growth
        but for the model's function."""
        inner = [m for m in self.student.modules() if m is not self.student]
        states = [m.training for m in inner]
        for m in inner:  # the student itself stays in training mode: its forward still returns token states
            m.training = False
        try:
            return float(self._loss(batch)[1]["loss"])
        finally:
            for m, state in zip(inner, states):
                m.training = state

    def _grow(self, batch: dict, epoch: int) -> dict:
        """Grow at this step; returns the record of it, with the loss of ``batch`` before and after."""
        from distill.students.grow import depth

        before, loss_before = depth(self.student), self._probe(batch)
        self._regrow()
        record = {"step": self.step, "epoch": epoch, "event": "grow", "layers": [before, depth(self.student)],
                  "loss_before": loss_before, "loss_after": self._probe(batch)}
        logger.info("step %d: grew from %d to %d layers; loss %.4f -> %.4f on the last batch", self.step,
                    *record["layers"], record["loss_before"], record["loss_after"])
        self.growth.append(record)
        return record

    # ---- one micro-batch ----------------------------------------------------------------------
    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D_t) raw teacher vectors -> rotated and scaled as ``PCARotation.transform`` does, on the device."""
        return ((x.float() - self.mean) @ self.rotation) * self.factors

    def _global(self, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Every rank's rows of the micro-batch, this rank's keeping their gradient (``sizes``: rows per rank)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return local
        import torch.distributed as dist

        padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))
        padded[:len(local)] = local.detach()
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        parts = [p[:n] for p, n in zip(parts, sizes)]
        parts[acc.process_index] = local
        return torch.cat(parts)

    def _contextual_forward(self, batch: dict, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled (B, D), token states (B, T, D) or None) of a padded micro-batch of a contextual student.

        Activations held for the backward pass grow with the padded positions B x T, and T is the batch's
        longest text: one long text in a batch of 256 made the trainer hold 5x the memory of the tokens it
        learns from (30k texts: 2.2 GB peak at batch 256, 3.7 GB at 512). A micro-batch of more than
        ``TOKENS_PER_PASS`` positions therefore runs in passes of texts of similar length
        (:func:`length_passes`), each cut to its own longest text; the outputs are put back in batch order
        and padded to T with zeros (padded positions weigh nothing in any term). A text's outputs do not
        depend on the other texts of its pass nor on padding after it (attention sees real keys only), so
        the loss and gradients are those of the single pass. Under several processes DDP needs one forward
        call per backward: there the single pass stays.
        """
        ids, mask = batch["ids"], batch["mask"]
        if ids.numel() <= TOKENS_PER_PASS or self.accelerator.num_processes > 1:
            return self.model(ids, mask)
        passes = length_passes(lengths, TOKENS_PER_PASS)
        T = ids.shape[1]
        pooled, states = [], []
        for rows in passes:
            t = max(1, int(lengths[rows].max()))
            index = torch.from_numpy(rows).to(ids.device)
            p, s = self.model(ids[index, :t], mask[index, :t])  # (b, D), (b, t, D)
            pooled.append(p)
            states.append(None if s is None else F.pad(s, (0, 0, 0, T - t)))  # (b, T, D)
        back = torch.from_numpy(np.argsort(np.concatenate(passes))).to(ids.device)  # batch row -> position
        return torch.cat(pooled)[back], None if states[0] is None else torch.cat(states)[back]

    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch (this rank's share; ``self._sizes``: every rank's share size)."""
        device = self.accelerator.device
        lengths = None if self.static else batch["mask"].sum(1).numpy()  # on the host: no device sync
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device):
            if self.static:
                pooled = self.model(batch["ids"], batch["offsets"])
                token_term = None
            else:
                pooled, states = self._contextual_forward(batch, lengths)
                token_term = self._token_term(batch, states)
        target = self._rotate(batch["target"])  # (B, D_t)
        world = self.accelerator.num_processes
        sizes = self._sizes or [len(target)] * world
        loss, logs = self.loss_fn(self._global(pooled.float(), sizes), self._global(target, sizes),
                                  model=self.student)
        logged = loss.detach()
        loss = loss * world  # DDP averages gradients over ranks: undo it for the global-batch terms
        if token_term is not None:
            loss = loss + self.config.token * token_term  # a per-rank mean, averaged by DDP
            logs["token"] = token_term.detach()
            logged = logged + self.config.token * logs["token"]
        logs["loss"] = logged  # what one process would log for the same batch
        return loss, logs

    def _token_term(self, batch: dict, states: torch.Tensor) -> torch.Tensor | None:
        if "token_target" not in batch or self.config.token == 0:
            return None
        target = self._rotate(batch["token_target"])  # (B, T, D_t)
        return self.token_loss(states.float(), target, batch["mask"])

    # ---- the plan of an epoch -----------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> list[list[np.ndarray]]:
        """Per optimizer step of ``epoch``: its micro-batches (global positions), in order."""
        cfg = self.config
        micro, world = cfg.batch_size, self.accelerator.num_processes
        lengths = None if self.static else self.data.lengths()
        perm = epoch_order(len(self.data), cfg.seed + epoch, micro * cfg.grad_accum, lengths)
        plan = []
        for b in range(self.steps_per_epoch):
            chunk = perm[b * micro * cfg.grad_accum:(b + 1) * micro * cfg.grad_accum]
            mbs = [chunk[m:m + micro] for m in range(0, len(chunk), micro)]
            plan.append([mb for mb in mbs if len(mb) >= world])  # every rank gets texts
        return plan

    def _loader(self, micro_batches: list[np.ndarray]):
        """This rank's share of each micro-batch, built by a DataLoader (pinned memory on CUDA)."""
        from torch.utils.data import DataLoader

        from distill.pipeline.data import collate_batch

        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        cuda = self.accelerator.device.type == "cuda"
        return DataLoader(self.data, batch_sampler=[mb[rank::world].tolist() for mb in micro_batches],
                          collate_fn=collate_batch, pin_memory=cuda, num_workers=2 if cuda else 0,
                          persistent_workers=False,
                          generator=torch.Generator())  # its seed draw would shift the dropout of a resumed run

    # ---- the loop -----------------------------------------------------------------------------
    def resume(self) -> int:
        """Load the newest checkpoint that loads, if any; returns its step.

        A checkpoint that fails to load (torn by a full disk, damaged) is set aside with a warning and
        the one before it is used; temporary files of a killed save are removed.
        """
        remove_stale_tmp(self.checkpoint_dir)
        for _, path in reversed(_checkpoints(self.checkpoint_dir)):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)  # a foreign file runs no code
                while self.grown != state.get("grown", 0):  # the model had grown when this was saved
                    self._regrow(shrink=self.grown > state.get("grown", 0))
                self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                if "rng" in state:  # dropout draws on: the steps after the checkpoint draw what they drew before
                    torch.set_rng_state(state["rng"])
                for name, term_state in state.get("terms", {}).items():  # e.g. the hierarchy's groups
                    if name in self.loss_fn.extra_terms:
                        self.loss_fn.extra_terms[name].load_state_dict(term_state)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to the one before
                logger.warning("checkpoint %s does not load (%s: %s); trying the one before it", path.name,
                               type(e).__name__, str(e)[:200])
                if self.accelerator.is_main_process:
                    path.rename(path.with_name(path.name + ".bad"))
                continue
            self.step = state["step"]
            logger.info("resumed from %s (step %d of %d)", path.name, self.step, self.total_steps)
            return self.step
        return 0

    def fit(self, resume: bool = False) -> dict:
        """Train to ``total_steps`` (from the newest checkpoint with ``resume``); returns the training log."""
        acc = self.accelerator
        if acc.is_main_process:
            remove_stale_tmp(self.metrics_path.parent)  # of a run killed while writing
        if resume:
            self.resume()
        self.growth += MetricsLog.trim(self.metrics_path, self.step) if acc.is_main_process else []
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="train",
                   disable=not acc.is_main_process)
        t0 = time.perf_counter()
        with MetricsLog(self.metrics_path if acc.is_main_process else None, self.step) as log:
            try:
                while self.step < self.total_steps:
                    epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
                    plan = self._epoch_plan(epoch)[in_epoch:]
                    batches = iter(self._loader([mb for step in plan for mb in step]))
                    for micro_batches in plan:
                        last_batch = self._step(micro_batches, batches, log)
                        bar.update(1)
                        self._after_step(last_batch, epoch, log, bar)
            finally:
                bar.close()
        self.model.eval()
        out = {"steps": self.step, "first_loss": log.first_loss, "final_loss": log.last_loss,
               "seconds": time.perf_counter() - t0, "config": asdict(self.config)}
        if self.growth:
            out["growth"] = self.growth
        return out

    def _step(self, micro_batches: list[np.ndarray], batches, log: MetricsLog) -> dict:
        """One optimizer step over ``micro_batches`` (read from ``batches``); its loss terms go to ``log``.
        Returns the last micro-batch (growth measures the loss on it)."""
        acc, world = self.accelerator, self.accelerator.num_processes
        logs: dict[str, torch.Tensor] = {}
        n_texts = 0
        for k, mb in enumerate(micro_batches):
            self._sizes = [len(mb[r::world]) for r in range(world)]
            batch = next(batches)
            with nullcontext() if k == len(micro_batches) - 1 else acc.no_sync(self.model):  # sync once a step
                loss, logs = self._loss(batch)
                acc.backward(loss / len(micro_batches))
            n_texts += len(mb)
        if self.config.clip:
            acc.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        maybe_crash("train:step")
        for term in self.loss_fn.extra_terms.values():  # e.g. emergent groups refreshed from the student
            if hasattr(term, "on_step"):
                term.on_step(self.step, self.student)
        log.add({**logs, "_backward": loss.detach()}, n_texts)  # the loss the gradients came from: NaN check
        if acc.device.type == "cpu":  # CPU training: activations live in the host heap (see distill.memory)
            trim_heap()
        return batch

    def _after_step(self, batch: dict, epoch: int, log: MetricsLog, bar) -> None:
        """The log line, growth and checkpoint due after this step, in that order."""
        cfg = self.config
        checkpoint = self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps
        if self.step % cfg.log_every == 0 or checkpoint:
            since = log.logged_step
            means = log.means()  # the one device sync between log steps
            self._check_finite(means.pop("_backward"), since)
            log.write(self.step, epoch, self.scheduler.get_last_lr()[0], means)
            bar.set_postfix(loss=f"{means['loss']:.4f}")
        if self.step in self.grow_steps:  # after the step's log line, before its checkpoint
            log.event(self._grow(batch, epoch))
            maybe_crash("train:grow")
        if checkpoint:
            self.save_checkpoint()

    def _check_finite(self, loss: float, since: int) -> None:
        """:raises TrainingError: when the mean loss of the steps after ``since`` is not finite."""
        if not math.isfinite(loss):
            where = f"step {self.step - 1}" if self.step - since == 1 else f"steps {since}-{self.step - 1}"
            raise TrainingError(
                f"loss became {loss} at {where}; the last good checkpoint "
                f"is kept in {self.checkpoint_dir}. Try a lower --lr.")

    def save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            _save_checkpoint(self.checkpoint_dir, self.step, self.accelerator.unwrap_model(self.model),
                             self.optimizer, self.scheduler, self.loss_fn.extra_terms, grown=self.grown)
        self.accelerator.wait_for_everyone()
