"""The report's token map: 2-D projections of token vectors (PCA and t-SNE), teacher beside student,
coloured by group. Numpy in, PNG bytes out (through :func:`distill.report.render.to_png`)."""

from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex

from distill.index.search import normalize_prefix
from distill.report.data import TokenSet
from distill.report.render import to_png

MAX_COLORS = 12  # groups past the 12 largest are drawn grey
OTHER = "#b4b4b4"
# tab10 less its grey (kept for "other"), then three dark tab20b shades: 12 colours told apart at a glance
PALETTE = [to_hex(c) for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7] + ["#393b79", "#8c6d31",
                                                                                      "#7b4173"]
N_LABELS = 40  # tokens written beside their point when the map has more than MAX_LABELLED
MAX_LABELLED = 150
TSNE_MAX_ITER = 500  # sklearn's floor is 250; 500 settles 2,000 points


def legend_entries(groups: list[str]) -> list[tuple[str, str, int]]:
    """(label, colour, tokens) for the map's legend: a colour per group in order of first appearance, or,
    past ``MAX_COLORS`` groups, for the largest ``MAX_COLORS`` of them and one grey "other" entry last."""
    counts = Counter(groups)  # keeps the order of first appearance
    coloured = set(sorted(counts, key=lambda g: -counts[g])[:MAX_COLORS])  # stable: ties go to the earlier
    entries = [(g, PALETTE[n], counts[g]) for n, g in enumerate(g for g in counts if g in coloured)]
    rest = [g for g in counts if g not in coloured]
    if rest:
        entries.append((f"other ({len(rest)} group{'s' if len(rest) > 1 else ''})", OTHER,
                        sum(counts[g] for g in rest)))
    return entries


def group_colors(groups: list[str]) -> list[str]:
    """The colour of each token, by its group (grey for the groups past ``MAX_COLORS``)."""
    by_group = {g: c for g, c, _ in legend_entries(groups)}
    return [by_group.get(g, OTHER) for g in groups]


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the unit-normalized rows of ``x`` (N, d): (N, 2)."""
    x = normalize_prefix(x)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T  # (N, 2)


def tsne_perplexity(n: int) -> float:
    """30 (sklearn's default) for 91 points or more; below that a third of the other points, as t-SNE needs
    a perplexity under N and a neighbourhood of ~3 perplexities: 50 tokens get 16.3."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of the unit-normalized rows of ``x`` (N, d) (so distances follow cosines): (N, 2) float32,
    the same array for the same input and seed.

    Time, 500 iterations on one core of a 2-core CPU shared with other work (load average about 6): 2,000
    MiniLM tokens 8 to 11 s a panel (384 or 32 dims alike), 50 tokens 0.3 s. Run on one thread: there
    OpenMP's waiting threads made two threads 3-4 times slower than one, and one thread also rules out any
    change of summation order between runs.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(n_components=2, perplexity=tsne_perplexity(len(x)), init="pca", learning_rate="auto",
                max_iter=TSNE_MAX_ITER, angle=0.8, random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(normalize_prefix(x)).astype(np.float32)  # (N, 2)


def _views(tokens: TokenSet, dims: list[int]) -> list[tuple[str, np.ndarray]]:
    """Teacher and student at full width, and the student at its smallest prefix."""
    views = [("teacher (full width)", tokens.teacher), (f"student @ {dims[-1]} dims", tokens.student)]
    if dims[0] < dims[-1]:
        views.append((f"student @ {dims[0]} dims", tokens.student[:, :dims[0]]))
    return views


def _draw(ax, xy: np.ndarray, tokens: TokenSet, colors: list[str], title: str) -> None:
    n = len(xy)
    grey = np.array([c == OTHER for c in colors])
    order = np.concatenate([np.flatnonzero(grey), np.flatnonzero(~grey)])  # grey beneath the coloured
    ax.scatter(xy[order, 0], xy[order, 1], s=14 if n <= MAX_LABELLED else 5, c=[colors[i] for i in order],
               alpha=0.8, linewidths=0)
    labelled = range(n) if n <= MAX_LABELLED else np.random.default_rng(0).choice(n, N_LABELS, replace=False)
    for i in labelled:
        ax.annotate(tokens.strings[i], xy[i], fontsize=7 if n <= MAX_LABELLED else 6, color=colors[i],
                    xytext=(2, 2), textcoords="offset points")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _map(tokens: TokenSet, views: list[tuple[str, np.ndarray]], embed, method: str):
    """One panel per view, the legend of groups to the right of the last: the matplotlib figure."""
    from matplotlib.lines import Line2D

    colors = group_colors(tokens.groups)
    fig, axes = plt.subplots(1, len(views), figsize=(5.2 * len(views), 5), squeeze=False)
    for ax, (title, x) in zip(axes[0], views):
        _draw(ax, embed(x), tokens, colors, f"{method}: {title}")
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=f"{g} ({n})")
               for g, c, n in legend_entries(tokens.groups)]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       title="group (tokens)", title_fontsize=7)
    fig.tight_layout()
    return fig


def projection(tokens: TokenSet, dims: list[int]) -> bytes:
    """2-D PCA of the token vectors: teacher, student at full width, student at its smallest prefix."""
    return to_png(_map(tokens, _views(tokens, dims), pca_2d, "PCA"))


def tsne(tokens: TokenSet, dims: list[int], seed: int = 0) -> bytes | None:
    """2-D t-SNE of the same views as :func:`projection` (None under 5 tokens: nothing to lay out)."""
    if len(tokens.strings) < 5:
        return None
    return to_png(_map(tokens, _views(tokens, dims), lambda x: tsne_2d(x, seed), "t-SNE"))
