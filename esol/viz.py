"""Figures: threshold sweeps, recall curves, map grids (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from esol.metrics import SweepRow  # noqa: E402
from esol.utils import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_sweep(path: str | os.PathLike, rows: Sequence[SweepRow], title: str) -> None:
    """mIoU, foreground precision and recall against the background threshold."""
    t = np.array([r.threshold for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, style in (("miou", "-"), ("precision", "--"), ("recall", ":")):
        ax.plot(t, [getattr(r, key) for r in rows], style, label=key if key != "miou" else "mIoU")
    best = int(np.argmax([r.miou for r in rows]))
    ax.axvline(t[best], color="grey", lw=0.8)
    ax.annotate(f"best t={t[best]:.2f}\nmIoU={rows[best].miou:.3f}", (t[best], rows[best].miou),
                textcoords="offset points", xytext=(6, -28), fontsize=8)
    ax.set(xlabel="background threshold", ylabel="score", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, path)


def plot_curves(path: str | os.PathLike, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                xlabel: str, ylabel: str, title: str, marker_x: float | None = None) -> None:
    """Several named (x, y) curves on one axis (e.g. recall vs threshold per method)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name)
    if marker_x is not None:
        ax.axvline(marker_x, color="grey", lw=0.8, ls="--")
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map over an RGB image with the jet colour map, uint8 (H, W, 3)."""
    colours = (plt.get_cmap("jet")(np.clip(heat, 0, 1))[..., :3] * 255).astype(np.float32)
    return ((1 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)


def colorize(label: np.ndarray) -> np.ndarray:
    """A label map in VOC colours (255 drawn white, as VOC's borders look)."""
    from esol.data.voc import voc_palette

    palette = voc_palette()
    palette[255] = (255, 255, 255)
    return palette[label]


def image_grid(path: str | os.PathLike, rows: Sequence[Sequence[np.ndarray]],
               column_titles: Sequence[str], row_titles: Sequence[str] | None = None,
               panel: float = 1.6) -> None:
    """Panels (RGB uint8 arrays) in a grid with column titles, as the paper's Fig. 4/5."""
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel * n_cols, panel * n_rows),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=7)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    _save(fig, path)
