"""The embedded synthetic dataset: the partial-localisation problem in miniature.

Every object of class ``c`` is a large **body** (an ellipse) with a small **head**
attached to its rim. The head carries a strongly class-specific cue (the class's own
hue and a stripe pattern at the class's own angle); the body is a dark, warm colour
shared by all classes, only *tinted* toward the class hue by ``body_signal``.
Backgrounds are pale and cluttered with noise, lines, rectangles and head-less
body-like distractors tinted toward random classes, so body appearance alone says
little about the class, but where an object ends is visible in colour, as it mostly is
in photographs: the edge a dense CRF and IRN's boundary map need to refine seeds.

A classifier trained on image labels therefore keys on the heads, and its CAM covers
the head and misses most of the body: the gap ESOL's Expansion is meant to close,
while the distractors give Expansion false positives for Shrinkage to remove.

The output is the VOC layout (see :mod:`esol.data.voc`), deterministic for a seed.
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from esol.data import voc
from esol.utils import ConfigError, tqdm_kwargs

log = logging.getLogger(__name__)

# Names of the hues at 30-degree steps, for naming classes after their head colour.
_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue",
              "violet", "magenta", "rose")

# Split code in each image's RNG seed, so one split's images do not depend on the
# sizes of the others. ``tune`` (labelled images that only choose thresholds, never
# pseudo-labelled nor evaluated: docs/method.md, "What ground truth reaches what") came
# later with its own code, so adding it left every other split's images unchanged.
_SPLIT_CODES = {"train_aug": 1, "val": 2, "test": 3, "tune": 4}
_ID_PREFIX = {"train_aug": "s", "val": "v", "test": "t", "tune": "u"}
_UNLABELLED = ("test",)


def class_names(num_classes: int) -> list[str]:
    """Names of the synthetic classes, after the hue of their heads."""
    n = len(_HUE_NAMES)
    if num_classes <= n:  # hues c/K are at least 30 degrees apart: the names are distinct
        return [_HUE_NAMES[round(n * c / num_classes) % n] for c in range(num_classes)]
    return [f"class{c + 1}" for c in range(num_classes)]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def class_colour(c: int, num_classes: int) -> np.ndarray:
    return _hsv(c / num_classes, 0.85, 0.95)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, channels: int) -> np.ndarray:
    """Value noise: a coarse random grid upsampled bicubically, in [-1, 1]."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.uniform(-1, 1, size=(gh, gw, channels)).astype(np.float32)
    up = cv2.resize(grid, (w + cell * 2, h + cell * 2), interpolation=cv2.INTER_CUBIC)
    up = up.reshape(up.shape[0], up.shape[1], channels)
    return up[cell:cell + h, cell:cell + w]


def _stripes(h: int, w: int, angle: float, period: float, phase: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    return np.sin(2 * math.pi * t / period + phase).astype(np.float32)


def _ellipse_mask(h: int, w: int, centre: tuple[float, float], axes: tuple[float, float],
                  angle_deg: float) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    cv2.ellipse(m, (round(centre[0] * 16), round(centre[1] * 16)),
                (round(axes[0] * 16), round(axes[1] * 16)), angle_deg, 0, 360, 1, -1,
                lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


# HSV ranges of bodies (and distractors) and of backgrounds, and the amplitude of the
# background's smooth noise. Bodies are darker and more saturated than the backgrounds
# so that an object's extent shows as a colour edge. The first design drew both from
# overlapping muted ranges under +-45 noise; no edge marked a body, and neither the
# CRF nor IRN could lift the baseline's seeds (docs/method.md, "Refinement on the
# embedded data").
_BODY_HUE = (0.05, 0.12)
_BODY_SATURATION = (0.35, 0.6)
_BODY_VALUE = (0.3, 0.5)
_BACKGROUND_SATURATION = (0.0, 0.2)
_BACKGROUND_VALUE = (0.6, 0.85)
_BACKGROUND_NOISE = 20.0


def _body_colour(rng: np.random.Generator, tint: np.ndarray, signal: float) -> np.ndarray:
    base = _hsv(rng.uniform(*_BODY_HUE), rng.uniform(*_BODY_SATURATION), rng.uniform(*_BODY_VALUE))
    return (1.0 - signal) * base + signal * tint


def _paint_body(img: np.ndarray, mask: np.ndarray, colour: np.ndarray,
                rng: np.random.Generator) -> None:
    h, w = mask.shape
    tex = _smooth_noise(rng, h, w, cell=6, channels=1) * 22.0
    img[mask] = np.clip(colour[None, :] + tex[mask], 0, 255)


def _render(rng: np.random.Generator, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label map (no borders)."""
    k = int(p["num_classes"])
    lo, hi = p["image_size"]
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    side = min(h, w)

    # Background: a pale colour with smooth noise.
    base = _hsv(rng.uniform(), rng.uniform(*_BACKGROUND_SATURATION), rng.uniform(*_BACKGROUND_VALUE))
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    img += _smooth_noise(rng, h, w, cell=max(8, side // 6), channels=3) * _BACKGROUND_NOISE
    label = np.zeros((h, w), dtype=np.uint8)

    # Clutter: lines, rectangles and head-less body-like distractors.
    n_clutter = int(rng.integers(p["clutter"][0], p["clutter"][1] + 1))
    for _ in range(n_clutter):
        kind = rng.uniform()
        if kind < p["distractor_prob"]:
            r = side * rng.uniform(*p["body_radius"]) * rng.uniform(0.6, 1.0)
            centre = (rng.uniform(0, w), rng.uniform(0, h))
            m = _ellipse_mask(h, w, centre, (r, r * rng.uniform(0.5, 1.0)), rng.uniform(0, 180))
            tint = class_colour(int(rng.integers(k)), k)
            _paint_body(img, m, _body_colour(rng, tint, p["body_signal"]), rng)
        elif kind < p["distractor_prob"] + (1 - p["distractor_prob"]) / 2:
            colour = _hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9))
            pt1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            pt2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, pt1, pt2, colour.tolist(), int(rng.integers(1, 4)))
        else:
            colour = _hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9))
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            rw, rh = int(side * rng.uniform(0.05, 0.2)), int(side * rng.uniform(0.05, 0.2))
            cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), colour.tolist(), -1)

    # Objects, placed without overlapping each other (rejection sampling).
    n_obj = int(rng.integers(p["objects"][0], p["objects"][1] + 1))
    placed: list[tuple[float, float, float]] = []
    for _ in range(n_obj):
        c = int(rng.integers(k))
        for _attempt in range(30):
            r = side * rng.uniform(*p["body_radius"])
            aspect = rng.uniform(0.6, 1.0)
            rh = side * rng.uniform(*p["head_radius"])
            extent = r + 2 * rh
            cx, cy = rng.uniform(extent, w - extent), rng.uniform(extent, h - extent)
            if extent * 2 >= min(w, h):
                continue
            # Partial overlap is allowed (occlusion, as in real scenes); later objects
            # are painted over earlier ones and the label map follows.
            if all(math.hypot(cx - x, cy - y) > 0.8 * (extent + e) for x, y, e in placed):
                break
        else:
            continue
        placed.append((cx, cy, extent))
        angle = rng.uniform(0, 180)
        body = _ellipse_mask(h, w, (cx, cy), (r, r * aspect), angle)
        # The head sits on the rim of the body, half outside it.
        phi = rng.uniform(0, 2 * math.pi)
        a, b, t = r, r * aspect, math.radians(angle)
        ex, ey = a * math.cos(phi), b * math.sin(phi)
        rim = (cx + ex * math.cos(t) - ey * math.sin(t), cy + ex * math.sin(t) + ey * math.cos(t))
        head = _ellipse_mask(h, w, rim, (rh, rh), 0.0)
        tint = class_colour(c, k)
        _paint_body(img, body, _body_colour(rng, tint, p["body_signal"]), rng)
        stripes = _stripes(h, w, angle=math.pi * c / k, period=max(3.0, rh * 0.8),
                           phase=rng.uniform(0, 2 * math.pi))
        head_rgb = tint[None, None, :] * (0.65 + 0.35 * stripes[..., None])
        img[head] = head_rgb[head]
        label[body | head] = c + 1

    img += rng.normal(0, 4.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), label


def add_borders(label: np.ndarray, width: int) -> np.ndarray:
    """Mark pixels within ``width`` of a label change as 255, as VOC's SegmentationClass."""
    if width <= 0:
        return label.copy()
    kernel = np.ones((2 * width + 1, 2 * width + 1), dtype=np.uint8)
    edge = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    out = label.copy()
    out[edge] = voc.IGNORE
    return out


def generate(root: str | os.PathLike, params: Mapping[str, Any], seed: int) -> list[str]:
    """Write the synthetic dataset under ``root`` in the VOC layout; returns class names.

    ``params`` is the config section ``dataset.synthetic``. ``train`` is the first
    ``counts.train`` ids of ``train_aug`` (VOC's train is inside train_aug too); a
    ``test`` split gets images only, as VOC's test; ``tune`` (``counts.tune``, default 0)
    is a labelled split of its own ids and RNG stream, disjoint from every other split.
    """
    counts = params["counts"]
    if counts["train"] > counts["train_aug"]:
        raise ConfigError("dataset.synthetic.counts.train must not exceed counts.train_aug "
                          "(train is a subset of train_aug, as in VOC)")
    if params["image_size"][0] > params["image_size"][1]:
        raise ConfigError("dataset.synthetic.image_size is [min, max]; min > max")
    root = Path(root)
    for d in (voc.IMAGE_DIR, voc.MASK_DIR, voc.AUG_MASK_DIR, voc.SPLIT_DIR):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    total = sum(counts.get(s, 0) for s in _SPLIT_CODES)
    with tqdm(total=total, desc="synthetic images", **tqdm_kwargs()) as bar:
        for split, code in _SPLIT_CODES.items():
            n = int(counts.get(split, 0))
            ids[split] = [f"{_ID_PREFIX[split]}{i:05d}" for i in range(n)]
            for i, image_id in enumerate(ids[split]):
                rng = np.random.default_rng([seed, code, i])
                img, label = _render(rng, params)
                Image.fromarray(img).save(root / voc.IMAGE_DIR / f"{image_id}.jpg",
                                          format="JPEG", quality=int(params["jpeg_quality"]))
                if split not in _UNLABELLED:
                    voc.label_image(label).save(root / voc.AUG_MASK_DIR / f"{image_id}.png")
                    voc.label_image(add_borders(label, int(params["border"]))).save(
                        root / voc.MASK_DIR / f"{image_id}.png")
                bar.update()
    voc.write_split(root, "train_aug", ids["train_aug"])
    voc.write_split(root, "train", ids["train_aug"][: int(counts["train"])])
    voc.write_split(root, "val", ids["val"])
    for split in ("test", "tune"):
        if ids[split]:
            voc.write_split(root, split, ids[split])
    names = class_names(int(params["num_classes"]))
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    log.info("wrote %d images of %d classes to %s", total, len(names), root)
    return names
