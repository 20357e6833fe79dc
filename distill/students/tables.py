"""Token tables stored smaller: int8 with one scale per row, or float16; read back as float32.

Used by ``distill export --dtype`` (writing) and by every student load (reading), so it sits below both.
"""

from __future__ import annotations

import numpy as np
import torch

SCALE_SUFFIX = ".int8_scale"  # beside an int8 table ``name``: its (V,) per-row scales, ``name + SCALE_SUFFIX``


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: ``x[i] ~ q[i] * scale[i]`` with ``scale[i] = max|x[i]| / 127``.

    A row keeps its own range, so a rare token's small row loses no more than a frequent token's
    large one (one scale for the whole table, as Model2Vec's int8 does, rounds small rows to zero).
    """
    scale = np.abs(x).max(axis=1) / 127.0  # (V,)
    q = np.rint(x / np.where(scale > 0, scale, 1.0)[:, None]).clip(-127, 127).astype(np.int8)  # (V, D)
    return q, scale.astype(np.float32)


def dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as saved with ``--dtype int8|float16`` -> float32 tensors (a float32 one is returned as is)."""
    out = {}
    for name, t in state.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if (name + SCALE_SUFFIX) in state:
            t = t.float() * state[name + SCALE_SUFFIX].float()[:, None]
        out[name] = t.float() if t.is_floating_point() else t
    return out
