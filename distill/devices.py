"""One place that decides the device and the autocast context."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext

import torch

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Honour an explicit device; otherwise pick CUDA, then MPS, then CPU, and log the choice."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        chosen = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        chosen = torch.device("mps")
    else:
        chosen = torch.device("cpu")
    logger.info("using device %s", chosen)
    return chosen


def autocast(device: torch.device, enabled: bool = True) -> ContextManager:
    """bf16 autocast on CUDA, nothing elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def distributed_state():
    """Accelerate's process state, with CPU ranks recognised.

    ``PartialState()`` on a machine without CUDA treats a ``torchrun`` / ``accelerate launch
    --multi_gpu`` job as one process; asking for CPU there makes it a gloo group (MULTI_CPU), so
    several CPU processes share the labeling and the training. The state is a singleton: the
    first call decides.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
