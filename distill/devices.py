"""One place that decides the device and the autocast context."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass

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


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def teacher_dtype(device: torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """The dtype a teacher runs in: the one asked for, else bf16 on CUDA (fp16 where bf16 is missing), fp32 elsewhere.

    A teacher only runs inference, so half precision costs it nothing measurable (the GPU tests
    check cosine >= 0.999 against fp32) and halves its memory and time on a GPU.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            from distill.errors import DistillError

            raise DistillError(f"unknown dtype {dtype!r} (use one of float32, bfloat16, float16)")
        return _DTYPES[dtype]
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast(device: torch.device, enabled: bool = True) -> ContextManager:
    """bf16 autocast on CUDA, nothing elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def distributed_state(device: str | torch.device | None = None):
    """Accelerate's process state, with CPU ranks recognised.

    ``PartialState()`` on a machine without CUDA treats a ``torchrun`` / ``accelerate launch
    --multi_gpu`` job as one process; asking for CPU there makes it a gloo group (MULTI_CPU), so
    several CPU processes share the labeling and the training. ``device="cpu"`` asks for the CPU on
    a GPU machine too. Accelerate's state is a singleton that the first call decides: a command
    resolves it once, before anything else, and passes it down (``distill run``: :func:`distill.pipeline.run.run`;
    ``distill targets``).
    """
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or (device is not None and torch.device(device).type == "cpu")
    if not cpu and device is not None and torch.device(device).index is not None and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(torch.device(device))  # one process on cuda:N: Accelerate takes the current device
    return PartialState(cpu=cpu)


def run_device(state, device: str | torch.device | None = None) -> torch.device:
    """The device of this process: the rank's own under several (``state``: :func:`distributed_state`'s, or None
    for one process), else ``device`` when given, else the best available."""
    if state is not None and state.num_processes > 1:
        return state.device
    return resolve_device(None) if device is None else torch.device(device)


def release_memory(device: torch.device) -> None:
    """After the caller dropped a model: collect it and return its GPU memory to the device."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class OneProcess:
    """The distributed state of a single process, for callers that run outside a command (tests, notebooks):
    the main process, nobody to wait for."""

    num_processes: int = 1
    process_index: int = 0
    is_main_process: bool = True

    def wait_for_everyone(self) -> None:
        pass


ONE_PROCESS = OneProcess()
