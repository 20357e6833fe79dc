"""Matplotlib without a display (Agg), and a figure as PNG bytes: the one place the report's figures render."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def to_png(fig, dpi: int = 100, tight: bool = True) -> bytes:
    """PNG bytes of ``fig`` (closed after). ``tight=False`` skips a second layout pass: laid-out figures
    with hundreds of tick labels render twice as fast."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
