"""Row-vector helpers every layer shares (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` scaled to unit L2 length, in ``x``'s dtype; a zero row stays zero."""
    x = np.asarray(x)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
