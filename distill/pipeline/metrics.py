"""A training run's ``metrics.jsonl``: one line per log step (step, epoch, learning rate, texts/s and the mean of
each loss term since the last line), plus one line per growth event.

The loss terms are summed on the device between log steps and read once per log step, so the training loop
never waits for the device in between. Every rank keeps the sums (each needs the mean loss for the NaN check);
only the main process writes the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from distill.io import save_text


class MetricsLog:
    """The metrics file of one ``fit``, opened for appending (``path`` None: a rank that does not write)."""

    def __init__(self, path: Path | None, step: int = 0):
        self.path = path
        self.logged_step = step  # the step of the last line (the start step before the first)
        self.first_loss: float | None = None  # JSON null, not NaN, when no step ran
        self.last_loss: float | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._n_steps = 0
        self._texts = 0
        self._since = time.perf_counter()
        self._file = open(path, "a") if path is not None else None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, terms: dict[str, torch.Tensor], n_texts: int) -> None:
        """One optimizer step's loss terms (0-d tensors, left on the device) and the texts it saw."""
        for name, value in terms.items():
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        self._n_steps += 1
        self._texts += n_texts

    def means(self) -> dict[str, float]:
        """The mean of each term over the steps since the last line: the one read from the device."""
        names = list(self._sums)
        if not names:
            return {}
        values = (torch.stack([self._sums[n] for n in names]) / self._n_steps).tolist()
        return dict(zip(names, values))

    def write(self, step: int, epoch: int, lr: float, means: dict[str, float]) -> None:
        """The line of ``step`` with ``means`` (from :meth:`means`); the sums start again."""
        self.last_loss = means["loss"]
        self.first_loss = self.last_loss if self.first_loss is None else self.first_loss
        now = time.perf_counter()
        self._line({"step": step, "epoch": epoch, "lr": lr, "texts_per_s": self._texts / max(now - self._since, 1e-9),
                    **means})
        self._sums, self._n_steps, self._texts, self._since = {}, 0, 0, now
        self.logged_step = step

    def event(self, record: dict) -> None:
        """A line of its own for an event (a growth), with its ``step``."""
        self._line(record)

    def _line(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    @staticmethod
    def trim(path: Path, step: int) -> list[dict]:
        """Drop the lines of ``path`` past ``step``, where training restarts (all of them on a fresh start, or
        from a line torn by a kill on); returns the growth records kept (the doublings the restored model holds)."""
        if not path.is_file():
            return []
        kept, growth = [], []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                if record["step"] <= step:
                    kept.append(line)
                    if record.get("event") == "grow":
                        growth.append(record)
            except (ValueError, KeyError, TypeError, AttributeError):  # a line torn by a kill
                break
        save_text(path, "".join(ln + "\n" for ln in kept))
        return growth
