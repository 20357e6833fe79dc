"""The training loop: nested losses over prefix sizes, Accelerate for devices and processes.

Determinism: batch order of epoch ``e`` is a permutation seeded with ``seed + e``, there is no
dropout, and a checkpoint holds the model, optimizer, scheduler and step, so a run killed and
resumed from a checkpoint ends with the same weights as one that was never interrupted (on CPU).
Under ``accelerate launch`` each global batch is split across ranks and DDP averages gradients.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.devices import autocast
from distill.errors import TrainingError
from distill.students import StaticStudent, Student
from distill.students.losses import NestedLoss, TokenCosineLoss

logger = logging.getLogger(__name__)
_CHECKPOINT = re.compile(r"^step-(\d+)\.pt$")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 256  # texts per micro-batch (per optimizer step: batch_size * grad_accum)
    lr: float = 3e-3  # static, 5k movie-review texts, 8 epochs: overlap@10 0.23 (1e-3) -> 0.27, same STS
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    grad_accum: int = 1
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200  # optimizer steps
    mse: float = 1.0
    cosine: float = 1.0
    relational: float = 1.0
    token: float = 1.0  # token-level term (transformer students with token targets)
    dim_weights: tuple[float, ...] | None = None
    log_every: int = 10
    cpu: bool = False  # force CPU even where a GPU is present


@dataclass
class TrainData:
    seqs: list[list[int]]  # student token ids per text
    targets: np.ndarray  # (N, D_t) PCA-rotated teacher text targets
    token_targets: np.ndarray | None = None  # (sum of lengths, D_t) rotated contextual states, aligned to seqs
    token_offsets: np.ndarray | None = None  # (N + 1,)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(n: int, seed: int, batch: int, lengths: np.ndarray | None = None, pool: int = 50) -> np.ndarray:
    """The order of the ``n`` training texts in one epoch, fixed by ``seed``.

    With ``lengths`` (contextual students, which pad each batch to its longest text), texts are
    sorted by length within pools of ``pool`` batches and the batches shuffled, so a batch holds
    texts of similar length and pays little padding, while batches still come in random order.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if lengths is None:
        return perm
    batches = []
    for start in range(0, n, batch * pool):
        part = perm[start:start + batch * pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch] for i in range(0, len(part), batch)]
    tail = batches.pop() if len(batches[-1]) < batch else None  # a short last batch stays last
    order = [batches[i] for i in rng.permutation(len(batches))] + ([tail] if tail is not None else [])
    return np.concatenate(order)


def _static_batch(seqs: list[list[int]], device) -> dict[str, torch.Tensor]:
    lengths = [len(s) for s in seqs]
    ids = torch.tensor([i for s in seqs for i in s], dtype=torch.long, device=device)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]), dtype=torch.long, device=device)
    return {"ids": ids, "offsets": offsets}


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def _save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, keep: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, tmp)
    os.replace(tmp, path)
    for _, old in _checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


class Trainer:
    """Trains one student on one :class:`TrainData`, writing checkpoints and metrics into ``run_dir``."""

    def __init__(self, student: Student, data: TrainData, config: TrainConfig, run_dir: str | Path,
                 extra_terms: dict | None = None):
        from accelerate import Accelerator

        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        # autocast is ours (bf16 on CUDA); accumulation is by hand so a short last step stays exact
        self.accelerator = Accelerator(cpu=config.cpu or not torch.cuda.is_available(), mixed_precision="no")
        self.loss_fn = NestedLoss(student.dims, config.dim_weights, mse=config.mse, cosine=config.cosine,
                                  relational=config.relational, extra_terms=extra_terms)
        self.token_loss = TokenCosineLoss()
        self.student = student
        torch.manual_seed(config.seed)
        optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(len(data.seqs) / (config.batch_size * config.grad_accum))
        self.total_steps = self.steps_per_epoch * config.epochs
        warmup = max(1, int(config.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: _schedule(s, self.total_steps, warmup))
        # the scheduler is stepped by hand once per optimizer step, so it is not prepared
        self.model, self.optimizer = self.accelerator.prepare(student, optimizer)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.step = 0

    # ---- one micro-batch ----------------------------------------------------------------------
    def _loss(self, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.accelerator.device
        seqs = [self.data.seqs[i] for i in idx]
        target = torch.from_numpy(np.ascontiguousarray(self.data.targets[idx], dtype=np.float32)).to(device)
        with autocast(device):
            if isinstance(self.student, StaticStudent):
                pooled = self.model(**_static_batch(seqs, device))
                token_term = None
            else:
                ids, mask = self.student.pad(seqs)
                ids, mask = ids.to(device), mask.to(device)
                pooled, states = self.model(ids, mask)
                token_term = self._token_term(idx, states, mask)
        loss, logs = self.loss_fn(pooled.float(), target, model=self.student)
        if token_term is not None:
            loss = loss + self.config.token * token_term
            logs["token"] = float(token_term.detach())
        return loss, logs

    def _token_term(self, idx: np.ndarray, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        if self.data.token_targets is None or self.config.token == 0:
            return None
        B, T, D = states.shape
        target = np.zeros((B, T, self.data.token_targets.shape[1]), dtype=np.float32)
        for row, i in enumerate(idx):
            lo, hi = self.data.token_offsets[i], self.data.token_offsets[i + 1]
            n = min(hi - lo, T)
            target[row, :n] = self.data.token_targets[lo:lo + n]
        return self.token_loss(states.float(), torch.from_numpy(target).to(states.device), mask)

    # ---- the loop -----------------------------------------------------------------------------
    def resume(self) -> int:
        """Load the newest checkpoint, if any; returns its step."""
        found = _checkpoints(self.checkpoint_dir)
        if not found:
            return 0
        step, path = found[-1]
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        if self.accelerator.is_main_process and self.metrics_path.is_file():  # drop lines past the checkpoint
            lines = [ln for ln in self.metrics_path.read_text().splitlines() if json.loads(ln)["step"] <= self.step]
            self.metrics_path.write_text("".join(ln + "\n" for ln in lines))
        logger.info("resumed from %s (step %d of %d)", path.name, self.step, self.total_steps)
        return self.step

    def fit(self, resume: bool = False) -> dict:
        cfg, acc = self.config, self.accelerator
        if resume:
            self.resume()
        n = len(self.data.seqs)
        lengths = None if isinstance(self.student, StaticStudent) else np.array([len(q) for q in self.data.seqs])
        micro = cfg.batch_size
        rank, world = acc.process_index, acc.num_processes
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="train",
                   disable=not acc.is_main_process)
        seen, t_log, t0, last_loss, first_loss = 0, time.perf_counter(), time.perf_counter(), float("nan"), None
        metrics = open(self.metrics_path, "a") if acc.is_main_process else None
        try:
            while self.step < self.total_steps:
                epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
                perm = epoch_order(n, cfg.seed + epoch, micro * cfg.grad_accum, lengths)
                for b in range(in_epoch, self.steps_per_epoch):
                    chunk = perm[b * micro * cfg.grad_accum:(b + 1) * micro * cfg.grad_accum]
                    logs: dict[str, float] = {}
                    micro_batches = [chunk[m:m + micro] for m in range(0, len(chunk), micro)]
                    micro_batches = [mb for mb in micro_batches if len(mb) >= world]  # every rank gets texts
                    for k, mb in enumerate(micro_batches):
                        local = mb[rank::world]  # this rank's share of the micro-batch
                        last = k == len(micro_batches) - 1
                        with nullcontext() if last else acc.no_sync(self.model):  # sync once per step
                            loss, logs = self._loss(local)
                            if not torch.isfinite(loss):
                                raise TrainingError(
                                    f"loss became {float(loss.detach())} at step {self.step}; the last good checkpoint "
                                    f"is kept in {self.checkpoint_dir}. Try a lower --lr.")
                            acc.backward(loss / len(micro_batches))
                        seen += len(mb)
                    if cfg.clip:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                    self.scheduler.step()
                    self.step += 1
                    for term in self.loss_fn.extra_terms.values():  # e.g. emergent groups refreshed from the student
                        if hasattr(term, "on_step"):
                            term.on_step(self.step, self.student)
                    last_loss = float(loss.detach())
                    first_loss = last_loss if first_loss is None else first_loss
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                    if metrics and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                        now = time.perf_counter()
                        metrics.write(json.dumps({"step": self.step, "epoch": epoch, "loss": last_loss,
                                                  "lr": self.scheduler.get_last_lr()[0],
                                                  "texts_per_s": seen / max(now - t_log, 1e-9), **logs}) + "\n")
                        metrics.flush()
                        seen, t_log = 0, now
                    if self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps:
                        self.save_checkpoint()
        finally:
            bar.close()
            if metrics:
                metrics.close()
        self.model.eval()
        return {"steps": self.step, "first_loss": first_loss, "final_loss": last_loss,
                "seconds": time.perf_counter() - t0, "config": asdict(cfg)}

    def save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            _save_checkpoint(self.checkpoint_dir, self.step, self.accelerator.unwrap_model(self.model),
                             self.optimizer, self.scheduler)
        self.accelerator.wait_for_everyone()
