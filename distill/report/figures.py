"""The report's figures: matplotlib (Agg, no display) in, PNG bytes out. One function per figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from distill.index.search import normalize_prefix
from distill.report.data import RunData, TokenSet, term_series
from distill.report.render import to_png

STUDENT, TEACHER, ASYMMETRIC = "#d62728", "#1f77b4", "#2ca02c"


def _dim_axis(ax, dims: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims)
    ax.set_xticklabels([str(d) for d in dims])
    ax.set_xlabel("prefix size (dims)")
    ax.grid(alpha=0.3)


def _per_dim(block: dict, key: str) -> tuple[list[int], list[float]]:
    pairs = sorted((int(d), v[key]) for d, v in block.items() if key in v)
    return [d for d, _ in pairs], [v for _, v in pairs]


def quality(data: RunData) -> bytes | None:
    """Quality against dimension: STS, holdout overlap@10, token overlap@10 and retrieval NDCG@10, student vs the
    teacher's own PCA-rotated prefixes (what it is trained to reproduce), with the raw teacher dims cut as a dotted
    line, and for retrieval the student's queries against the teacher's documents (asymmetric search)."""
    panels = []
    s = data.summary

    def baselines(section: dict) -> tuple[dict, dict | None]:
        """(rotated teacher prefixes, raw teacher dims cut): the first is the one the student is held against."""
        if "teacher_rotated" in section:
            return section["teacher_rotated"], section.get("teacher_truncated", section.get("teacher"))
        return section.get("teacher_truncated", section.get("teacher")), None  # a summary written before

    if "sts" in s:
        panels.append(("STS Spearman (x100)", s["sts"]["student"], *baselines(s["sts"]), "spearman"))
    if "holdout" in s:
        panels.append(("held-out texts: overlap@10 with the teacher", s["holdout"]["student"],
                       *baselines(s["holdout"]), "overlap@10"))
        panels.append(("held-out texts: similarity Spearman", s["holdout"]["student"],
                       *baselines(s["holdout"]), "sim_spearman"))
    if data.token_space:
        rows = data.token_space["rows"]
        panels.append((f"word tokens ({data.token_space['n_tokens']}): overlap@10",
                       {str(r["dim"]): {"overlap": r["overlap"]} for r in rows if r["model"] == "student"},
                       {str(r["dim"]): {"overlap": r["overlap"]} for r in rows if r["model"] == "teacher-prefix"},
                       None, "overlap"))
    extra: dict[str, list] = {}
    if "retrieval" in s:  # NDCG@10 of the student, of its queries against the teacher's documents, of the teacher
        r = s["retrieval"]
        title = f"retrieval, {r['task']} ({r['split']}): NDCG@10"
        panels.append((title, r["student"], r["teacher_rotated"], None, "ndcg@10"))
        extra[title] = [(r["asymmetric"], "student queries, teacher documents", ASYMMETRIC, "^", "--")]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, student, teacher, raw, key) in zip(axes[0], panels):
        lines = [(teacher, "teacher, PCA-rotated prefix" if raw is not None or "word tokens" in title
                  or "retrieval" in title else "teacher, truncated", TEACHER, "s", "-"),
                 (raw or {}, "teacher, raw dims cut", TEACHER, "x", ":"),
                 (student, "student", STUDENT, "o", "-"), *extra.get(title, [])]
        for block, label, color, marker, style in lines:
            dims, values = _per_dim(block, key)
            if dims:
                ax.plot(dims, values, marker=marker, color=color, label=label, linestyle=style)
        _dim_axis(ax, sorted({int(d) for d in student} | {int(d) for d in teacher}))
        ax.set_title(title, fontsize=10)
        if title in extra:
            ax.legend(fontsize=7)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def training(data: RunData) -> bytes | None:
    """Training curves: total loss and learning rate, then one panel per loss term with a line per prefix size."""
    logged = [m for m in data.metrics if "loss" in m]  # growth records (``"event": "grow"``) hold no loss line
    grown = [m for m in data.metrics if m.get("event") == "grow"]
    if not logged:
        return None
    terms = term_series(logged)
    fig, axes = plt.subplots(1, 1 + len(terms), figsize=(4.2 * (1 + len(terms)), 3.4), squeeze=False)
    steps = [m["step"] for m in logged]
    ax = axes[0][0]
    ax.plot(steps, [m["loss"] for m in logged], color="black", label="total loss")
    ax.set_title("total loss (and learning rate)", fontsize=10)
    ax.set_xlabel("step")
    if "lr" in logged[0]:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [m["lr"] for m in logged], color="grey", linestyle=":", label="lr")
        lr_ax.tick_params(labelsize=7, colors="grey")
    ax.grid(alpha=0.3)
    for ax in axes[0]:  # growth points (--grow-at): the depth doubled after this step
        for m in grown:
            ax.axvline(m["step"], color="tab:orange", linestyle="--", linewidth=0.9,
                       label=f"grew {m['layers'][0]}→{m['layers'][1]} layers" if ax is axes[0][0] else None)
    if grown:
        axes[0][0].legend(fontsize=7)
    cmap = plt.get_cmap("viridis")
    for ax, (name, by_dim) in zip(axes[0][1:], sorted(terms.items())):
        dims = sorted(by_dim)
        for n, d in enumerate(dims):
            x, y = by_dim[d]
            ax.plot(x, y, color=cmap(n / max(len(dims) - 1, 1)), label=f"@{d}")
        if all(v > 0 for _, ys in by_dim.values() for v in ys):
            ax.set_yscale("log")
        ax.set_title(f"{name} loss per prefix size", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def _cosine(x: np.ndarray, d: int) -> np.ndarray:
    x = normalize_prefix(x, d)
    return x @ x.T  # (N, N)


def _group_edges(groups: list[str]) -> list[tuple[int, int, str]]:
    spans, start = [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            spans.append((start, i, groups[start]))
            start = i
    return spans


def heatmaps(tokens: TokenSet, dims: list[int]) -> bytes:
    """Cosine similarity of the token set at each prefix size: one row per size, teacher beside student."""
    n = len(tokens.strings)
    size = max(3.5, min(4.6, 0.1 * n))
    # Margins in inches, laid out by hand: tight layout would measure every tick label again.
    width, height = 2 * size + 2.0, (size + 0.9) * len(dims) + 0.2
    fig, axes = plt.subplots(len(dims), 2, figsize=(width, height), squeeze=False,
                             gridspec_kw={"left": 0.75 / width, "right": 1 - 1.3 / width, "bottom": 0.7 / height,
                                          "top": 1 - 0.3 / height, "wspace": 0.6 / size, "hspace": 0.75 / size})
    label_size = max(4.0, min(8.0, 330 / max(n, 1)))
    image = None
    for row, d in enumerate(dims):
        for col, (name, x) in enumerate((("teacher", tokens.teacher), ("student", tokens.student))):
            ax = axes[row][col]
            image = ax.imshow(_cosine(x, min(d, x.shape[1])), vmin=-1, vmax=1, cmap="RdBu_r",
                              interpolation="nearest")
            ax.set_title(f"{name} @ {d} dims", fontsize=10)
            ax.set_xticks(range(n))
            ax.set_yticks(range(n))
            ax.set_xticklabels(tokens.strings, fontsize=label_size, rotation=90)
            ax.set_yticklabels(tokens.strings, fontsize=label_size)
            ax.tick_params(length=0, pad=1)
            for start, _, _ in _group_edges(tokens.groups)[1:]:
                ax.axhline(start - 0.5, color="black", linewidth=0.6)
                ax.axvline(start - 0.5, color="black", linewidth=0.6)
    fig.colorbar(image, cax=fig.add_axes((1 - 1.0 / width, 0.35, 0.15 / width, 0.3)), label="cosine similarity")
    return to_png(fig, tight=False)


_PRECISION_STYLE = {"float32": ("o", "-"), "int8": ("s", "--"), "binary": ("^", ":")}  # marker, line


def bytes_per_vector(result: dict) -> bytes:
    """Overlap@k with the full teacher against the bytes of one stored vector (log scale): a line per precision
    per model (student; teacher, PCA-rotated prefix), a point per prefix size labelled with its dims.

    :param result: ``RunData.bytes_rows``: ``{"k", "n_texts", "rows": [{"model", "dim", "precision",
        "bytes_per_vector", "overlap"}]}``.
    """
    fig, ax = plt.subplots(figsize=(8.2, 4.8))
    rows = result["rows"]
    for model, color, name, dy in (("teacher_rotated", TEACHER, "teacher, PCA-rotated prefix", 4),
                                   ("student", STUDENT, "student", -9)):
        for precision, (marker, style) in _PRECISION_STYLE.items():
            line = sorted((r for r in rows if r["model"] == model and r["precision"] == precision),
                          key=lambda r: r["bytes_per_vector"])
            if not line:
                continue
            x = [r["bytes_per_vector"] for r in line]
            y = [r["overlap"] for r in line]
            ax.plot(x, y, marker=marker, linestyle=style, color=color, label=f"{name}, {precision}", markersize=5)
            for r in line:  # the prefix size beside each point; teacher above, student below
                ax.annotate(str(r["dim"]), (r["bytes_per_vector"], r["overlap"]), fontsize=6.5, color=color,
                            xytext=(3, dy), textcoords="offset points")
    sizes = [r["bytes_per_vector"] for r in rows]
    ticks = [2 ** e for e in range(int(np.floor(np.log2(min(sizes)))), int(np.ceil(np.log2(max(sizes)))) + 1)]
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:,}" for t in ticks])
    ax.set_xlabel("bytes per stored vector (log scale); numbers at points: prefix size (dims)")
    ax.set_ylabel(f"overlap@{result['k']} with the full teacher")
    ax.set_ylim(0, 1.04)
    ax.set_title(f"held-out texts ({result['n_texts']:,}): neighbours kept against storage", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return to_png(fig)


def all_figures(data: RunData) -> dict[str, bytes]:
    """Every figure the run's data allows, by file stem."""
    from distill.report import maps

    out = {}
    for name, make in (("quality", lambda: quality(data)), ("training", lambda: training(data)),
                       ("bytes", lambda: bytes_per_vector(data.bytes_rows) if data.bytes_rows else None)):
        png = make()
        if png is not None:
            out[name] = png
    if data.tokens is not None:
        out["heatmaps"] = heatmaps(data.tokens, data.dims)
    if data.token_map is not None:
        out["projection"] = maps.projection(data.token_map, data.dims)
        png = maps.tsne(data.token_map, data.dims)
        if png is not None:
            out["tsne"] = png
    return out
