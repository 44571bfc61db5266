"""Figures: threshold sweeps, recall curves, map grids, training curves, time per rule.

matplotlib with the Agg backend (no display needed). Every function saves its PNG and
returns the :class:`~matplotlib.figure.Figure` (closed, but its artists, legends and
texts can still be inspected, which the tests do).

Label maps are drawn in the PASCAL VOC palette, whose colours have nothing to do with a
class's name (the embedded synthetic classes "red", "lime", "cyan", "violet" are drawn
maroon, green, olive and navy), so every figure with a label map carries a legend of
class name to palette colour.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from esol.metrics import SweepRow  # noqa: E402
from esol.utils import atomic_path  # noqa: E402

IGNORE = 255
HEAT_CMAP = "jet"
# Curves that overlap (methods with equal sweeps) stay apart by style and marker.
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _save(fig: plt.Figure, path: str | os.PathLike) -> plt.Figure:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return fig


def _styles() -> Iterable[dict]:
    """Line style, marker and colour per curve: 4 styles x 8 markers before a repeat."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in itertools.count():
        yield {"ls": LINE_STYLES[i % len(LINE_STYLES)], "marker": MARKERS[i % len(MARKERS)],
               "color": colours[i % len(colours)]}


def plot_sweep(path: str | os.PathLike, rows: Sequence[SweepRow], title: str) -> plt.Figure:
    """mIoU, foreground precision and recall against the background threshold.

    The legend sits outside the axes, right of them, so it never covers a curve.
    """
    t = np.array([r.threshold for r in rows])
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for key, style in (("miou", "-"), ("precision", "--"), ("recall", ":")):
        ax.plot(t, [getattr(r, key) for r in rows], style, label=key if key != "miou" else "mIoU")
    best = int(np.argmax([r.miou for r in rows]))
    ax.axvline(t[best], color="grey", lw=0.8, label=f"best t = {t[best]:.2f}\n(mIoU {rows[best].miou:.3f})")
    ax.set(xlabel="background threshold", ylabel="score", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, path)


def plot_curves(path: str | os.PathLike, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                xlabel: str, ylabel: str, title: str, marker_x: float | None = None,
                marker_label: str = "baseline's best threshold") -> plt.Figure:
    """Several named (x, y) curves on one axis (e.g. recall vs threshold per method).

    Each curve has its own line style and marker, so equal curves stay distinguishable.
    """
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for (name, (x, y)), style in zip(curves.items(), _styles()):
        ax.plot(x, y, label=name, markevery=max(1, len(x) // 10), ms=4, **style)
    if marker_x is not None:
        ax.axvline(marker_x, color="grey", lw=0.8, ls="--", label=marker_label)
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, path)


def threshold_figure(path: str | os.PathLike, sweeps: Mapping[str, Mapping[str, np.ndarray]],
                     best: Mapping[str, float], split: str) -> plt.Figure:
    """Seed mIoU, foreground precision and recall against the background threshold, per
    method (one panel each); a dot marks each method's best threshold on the mIoU panel."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for (name, sw), style in zip(sweeps.items(), _styles()):
        every = max(1, len(sw["threshold"]) // 8)
        for ax, key in zip(axes, ("miou", "precision", "recall"), strict=True):
            ax.plot(sw["threshold"], sw[key], label=name, markevery=every, ms=4, lw=1.2, **style)
            if key == "miou" and name in best:
                ax.plot([best[name]], [float(np.interp(best[name], sw["threshold"], sw[key]))], "o",
                        color=style["color"], ms=7, mfc="none", mew=1.5)
    for ax, title in zip(axes, ("seed mIoU", "foreground precision", "foreground recall"), strict=True):
        ax.set(xlabel="background threshold", ylabel=title, title=f"{title} on {split}", ylim=(0, 1))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(labels), 6), fontsize=8, title="method (circle: best threshold)")
    return _save(fig, path)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map over an RGB image with the jet colour map, uint8 (H, W, 3)."""
    colours = (plt.get_cmap(HEAT_CMAP)(np.clip(heat, 0, 1))[..., :3] * 255).astype(np.float32)
    return ((1 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)


def _palette() -> np.ndarray:
    from esol.data.voc import voc_palette

    palette = voc_palette()
    palette[IGNORE] = (255, 255, 255)
    return palette


def colorize(label: np.ndarray) -> np.ndarray:
    """A label map in VOC colours (255 drawn white, as VOC's borders look)."""
    return _palette()[label]


def is_label_map(panel: np.ndarray) -> bool:
    """2-D integer arrays are label maps; RGB images are (H, W, 3)."""
    return panel.ndim == 2 and np.issubdtype(panel.dtype, np.integer)


def class_legend(present: Iterable[int], classes: Sequence[str]) -> list[Patch]:
    """One patch per label value in ``present``: its palette colour and class name
    (0 background, ``c`` is ``classes[c - 1]``, 255 ignore)."""
    palette = _palette()
    handles = []
    for v in sorted(set(int(v) for v in present)):
        if v == 0:
            name = "background"
        elif v == IGNORE:
            name = "ignore (255)"
        else:
            name = classes[v - 1] if v - 1 < len(classes) else f"class {v}"
        handles.append(Patch(facecolor=palette[v] / 255.0, edgecolor="black", lw=0.5, label=name))
    return handles


def image_miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean IoU of one image over the classes in its ground truth or its prediction
    (pixels where ``gt`` is 255 are ignored): a panel's score, not the dataset's mIoU
    (which sums intersections and unions over all images first)."""
    valid = gt != IGNORE
    p, g = pred[valid], gt[valid]
    ious = [np.logical_and(p == c, g == c).sum() / np.logical_or(p == c, g == c).sum()
            for c in np.union1d(np.unique(p), np.unique(g))]
    return float(np.mean(ious)) if ious else float("nan")


def image_grid(path: str | os.PathLike, rows: Sequence[Sequence[np.ndarray]],
               column_titles: Sequence[str], row_titles: Sequence[str] | None = None,
               panel: float = 1.6, classes: Sequence[str] | None = None,
               notes: Sequence[Sequence[str | None]] | None = None,
               colorbar: str | None = None) -> plt.Figure:
    """Panels in a grid with column titles, as the paper's Fig. 4/5.

    A panel is an RGB uint8 array, or a label map (2-D integer array) drawn in VOC
    colours; with ``classes`` (names of labels 1..K) a legend below the grid names every
    label value that appears. ``notes`` (same shape as ``rows``, ``None`` for none) is
    text under a panel (an image's mIoU, the class a heat map shows). ``colorbar`` adds
    a colour bar of the heat-map colours from 0 to 1 with that label.
    """
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel * n_cols, panel * n_rows * (1.15 if notes else 1)),
                             squeeze=False)
    present: set[int] = set()
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            if is_label_map(img):
                present.update(np.unique(img).tolist())
                img = colorize(img)
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=7)
            note = notes[r][c] if notes is not None and c < len(notes[r]) else None
            if note:
                ax.set_xlabel(note, fontsize=7, labelpad=2)
    fig.subplots_adjust(wspace=0.03, hspace=0.25 if notes else 0.03)
    if classes is not None and present:
        handles = class_legend(present, classes)
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(handles), max(2, n_cols)), fontsize=7, title="label colours",
                   title_fontsize=7, frameon=False)
    if colorbar:
        cb = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=HEAT_CMAP), ax=axes.ravel().tolist(),
                          fraction=0.025, pad=0.01)
        cb.set_label(colorbar, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    return _save(fig, path)


# -- training curves ---------------------------------------------------------------

def read_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A training history CSV (:func:`esol.engine.history_csv`) as columns."""
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=float)
    if data.dtype.names is None:
        raise ValueError(f"{path}: no header row; expected a training history CSV")
    return {n: np.atleast_1d(data[n]) for n in data.dtype.names}


def history_panels(columns: Iterable[str]) -> dict[str, list[str]]:
    """Which columns share a panel: losses, accuracies, learning rate, the rest.

    ``epoch`` and ``step`` are the x axis; empty panels are left out.
    """
    panels: dict[str, list[str]] = {"loss": [], "accuracy": [], "learning rate": [], "other": []}
    for c in columns:
        if c in ("epoch", "step"):
            continue
        key = ("loss" if "loss" in c else "accuracy" if "acc" in c
               else "learning rate" if c == "lr" else "other")
        panels[key].append(c)
    return {k: v for k, v in panels.items() if v}


def plot_history(path: str | os.PathLike, history: Mapping[str, np.ndarray], stage: str) -> plt.Figure:
    """One training stage's per-epoch curves: loss (and its terms), label accuracy, lr."""
    panels = history_panels(history)
    if not panels or "epoch" not in history:
        raise ValueError(f"training history of {stage} has no epoch column or no values")
    epoch = history["epoch"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (panel, cols) in zip(axes[0], panels.items(), strict=True):
        for col, style in zip(cols, _styles()):
            ax.plot(epoch, history[col], label=col, ms=4, **style)
        ax.set(xlabel="epoch", ylabel=panel, title=f"{stage}: {panel}")
        if panel == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if len(epoch) <= 12:  # whole epochs only (a 1-epoch stage would get 0.96 ... 1.04)
            ax.set_xticks(epoch)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path)


# -- time per rule ---------------------------------------------------------------

def pipeline_order(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """``names`` in the order of ``order`` (the workflow's rules, upstream first); names
    not in ``order`` follow, alphabetically."""
    rank = {n: i for i, n in enumerate(order)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def times_figure(path: str | os.PathLike, per_rule: Mapping[str, float],
                 order: Sequence[str] = ()) -> plt.Figure:
    """Horizontal bars: total wall time (seconds in, minutes drawn) per rule, the first
    rule of the pipeline at the top."""
    names = pipeline_order(per_rule, order)
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(3, len(names)) + 0.8))
    ax.barh(names[::-1], [per_rule[n] / 60 for n in names[::-1]], color="tab:blue")
    ax.set(xlabel="wall time (minutes, all jobs of the rule)", ylabel="rule (pipeline order, top first)",
           title="Time per rule")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
