"""Check datasets in the VOC layout, built to differ in kind from :mod:`esol.data.synthetic`.

The embedded dataset was designed around the method (a class-coloured head on a shared
body). A recipe tuned on it may fail on data nobody designed, so two independent check
sets test whether the default road transfers:

* ``shapes``: the class is told by **shape only** (star, ring, cross, triangle,
  crescent, arrow): every object is filled with a random texture (stripes, checks,
  dots or smooth noise in random colours, the same textures for every class) and pasted
  on a random crop of a **real photograph** (scikit-image's sample photographs). Colour
  and texture carry no class information; the photographs give the CAM real clutter.
* ``textures``: the class is told by **texture only**: ten classes, each a fixed
  pattern (stripe angle and period, checks, dots, rings, ...) in random colours, on
  random blob silhouettes (the shape carries no class information), 1-3 objects of
  25-50 % of the image side, on smooth-noise and gradient backgrounds mixed with
  photographs.

Both write ``JPEGImages/``, ``SegmentationClass/`` (255 bands at object borders, as
VOC), ``SegmentationClassAug/``, ``ImageSets/Segmentation/{train_aug,train,val}.txt``
and ``classes.txt``; deterministic for a seed. scikit-image is an optional dependency
(``pip install esol-wsss[checks]``); only the photographs come from it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from esol.data import voc
from esol.data.synthetic import add_borders
from esol.utils import ConfigError

log = logging.getLogger(__name__)

SHAPES = ("star", "ring", "cross", "triangle", "crescent", "arrow")
TEXTURES = ("stripes0", "stripes45", "stripes90", "stripes135", "fine_stripes", "checks",
            "dots", "rings", "zigzag", "grid")

# Photographs shipped inside scikit-image's wheel (no download). Grey ones become RGB.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "brick", "grass", "gravel", "camera", "moon", "coins", "clock")


def load_photographs(names: Sequence[str] = PHOTOS) -> list[np.ndarray]:
    """scikit-image's sample photographs as uint8 RGB arrays."""
    try:
        import skimage.data
    except ImportError:
        raise ConfigError("the check datasets need scikit-image for their background photographs: "
                          "pip install 'esol-wsss[checks]' (or scikit-image)") from None
    out = []
    for name in names:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return out


# ----------------------------------------------------------------------- masks


def _polygon(size: int, points: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _star(size: int, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 7))
    angles = np.arange(2 * n) * math.pi / n + rng.uniform(0, math.pi)
    radii = np.where(np.arange(2 * n) % 2 == 0, 0.48, 0.2) * size
    c = size / 2
    return _polygon(size, np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1))


def _ring(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[:size, :size] + 0.5
    r = np.hypot(y - size / 2, x - size / 2) / size
    return (r < 0.47) & (r > rng.uniform(0.25, 0.32))


def _cross(size: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.uniform(0.12, 0.17) * size
    c = size / 2
    mask = np.zeros((size, size), bool)
    mask[int(c - w):int(c + w), int(0.04 * size):int(0.96 * size)] = True
    mask[int(0.04 * size):int(0.96 * size), int(c - w):int(c + w)] = True
    return _rotate(mask, rng.uniform(0, 90))


def _triangle(size: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi) + np.arange(3) * 2 * math.pi / 3
    c = size / 2
    return _polygon(size, np.stack([c + 0.48 * size * np.cos(a), c + 0.48 * size * np.sin(a)], 1))


def _crescent(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[:size, :size] + 0.5
    outer = np.hypot(y - size / 2, x - size / 2) < 0.47 * size
    shift = rng.uniform(0.2, 0.28) * size
    a = rng.uniform(0, 2 * math.pi)
    inner = np.hypot(y - size / 2 - shift * math.sin(a), x - size / 2 - shift * math.cos(a)) < 0.4 * size
    return outer & ~inner


def _arrow(size: int, rng: np.random.Generator) -> np.ndarray:
    s = size
    pts = np.array([[0.05, 0.38], [0.55, 0.38], [0.55, 0.12], [0.95, 0.5], [0.55, 0.88],
                    [0.55, 0.62], [0.05, 0.62]]) * s
    return _rotate(_polygon(s, pts), rng.uniform(0, 360))


def _blob(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random smooth silhouette: a polar curve with a few random harmonics."""
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    r = np.full_like(t, 0.36)
    for k in (2, 3, 4):
        r += rng.uniform(-0.06, 0.06) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    c = size / 2
    return _polygon(size, np.stack([c + r * size * np.cos(t), c + r * size * np.sin(t)], 1))


def _rotate(mask: np.ndarray, degrees: float) -> np.ndarray:
    s = mask.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), degrees, 1.0)
    return cv2.warpAffine(mask.astype(np.uint8), m, (s, s), flags=cv2.INTER_NEAREST) > 0


SHAPE_MASKS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "star": _star, "ring": _ring, "cross": _cross, "triangle": _triangle,
    "crescent": _crescent, "arrow": _arrow}


# -------------------------------------------------------------------- textures


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.uniform(0, 255, 3)
    b = rng.uniform(0, 255, 3)
    while np.abs(a - b).sum() < 180:  # enough contrast for the pattern to show
        b = rng.uniform(0, 255, 3)
    return a, b


def _pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) float map in [0, 1] of texture ``name`` at a random phase."""
    y, x = np.mgrid[:size, :size].astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    if name.startswith("stripes"):
        a = math.radians(float(name[7:]))
        return (np.sin((x * math.cos(a) + y * math.sin(a)) * 2 * math.pi / 9 + phase) > 0).astype(np.float32)
    if name == "fine_stripes":
        return (np.sin((x + y) * 2 * math.pi / 4 + phase) > 0).astype(np.float32)
    if name == "checks":
        p = 8
        return (((x + phase) // p + (y + phase) // p) % 2).astype(np.float32)
    if name == "dots":
        p = 8
        return (np.hypot((x + phase) % p - p / 2, (y + phase) % p - p / 2) < 2.2).astype(np.float32)
    if name == "rings":
        return (np.sin(np.hypot(x - size / 2, y - size / 2) * 2 * math.pi / 7 + phase) > 0).astype(np.float32)
    if name == "zigzag":
        return (np.sin((y + 3 * np.abs(((x + phase) % 8) - 4)) * 2 * math.pi / 8) > 0).astype(np.float32)
    if name == "grid":
        return ((((x + phase) % 9) < 2) | (((y + phase) % 9) < 2)).astype(np.float32)
    if name == "noise":
        small = rng.uniform(0, 1, (max(2, size // 8),) * 2).astype(np.float32)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    raise ValueError(f"unknown texture {name!r}")


def _texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    a, b = _two_colours(rng)
    p = _pattern(name, size, rng)[..., None]
    return p * a + (1 - p) * b


# ------------------------------------------------------------------ backgrounds


def _photo_crop(photos: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.35, 0.9) * min(h, w))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _noise_background(size: int, rng: np.random.Generator) -> np.ndarray:
    small = rng.uniform(0, 255, (max(2, size // 16), max(2, size // 16), 3)).astype(np.float32)
    smooth = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    y, x = np.mgrid[:size, :size] / size
    grad = (np.cos(rng.uniform(0, 2 * math.pi)) * x + np.sin(rng.uniform(0, 2 * math.pi)) * y)[..., None]
    return np.clip(0.7 * smooth + 60 * grad + rng.normal(0, 6, (size, size, 3)), 0, 255)


# ----------------------------------------------------------------------- render


def render(kind: str, rng: np.random.Generator, photos: Sequence[np.ndarray], size: int,
           objects: tuple[int, int], scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8 and its label (0 background, 1..K classes)."""
    classes = SHAPES if kind == "shapes" else TEXTURES
    if kind == "shapes" or rng.random() < 0.5:
        img = _photo_crop(photos, size, rng).astype(np.float32)
    else:
        img = _noise_background(size, rng)
    label = np.zeros((size, size), np.uint8)
    n = int(rng.integers(objects[0], objects[1] + 1))
    for _ in range(n):
        c = int(rng.integers(len(classes)))
        side = int(rng.uniform(*scale) * size)
        if kind == "shapes":
            mask = SHAPE_MASKS[classes[c]](side, rng)
            tex = _texture(str(rng.choice(["stripes0", "stripes45", "checks", "dots", "noise", "grid"])),
                           side, rng)
        else:
            mask = _rotate(_blob(side, rng), rng.uniform(0, 360))
            tex = _texture(classes[c], side, rng)
        y0 = int(rng.integers(-side // 5, size - side + side // 5 + 1))
        x0 = int(rng.integers(-side // 5, size - side + side // 5 + 1))
        ys, xs = slice(max(0, y0), min(size, y0 + side)), slice(max(0, x0), min(size, x0 + side))
        m = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        t = tex[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        shade = rng.uniform(0.75, 1.1)
        img[ys, xs][m] = np.clip(t[m] * shade, 0, 255)
        label[ys, xs][m] = c + 1
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8), label


def generate(root: str | os.PathLike, kind: str, counts: dict[str, int], size: tuple[int, int] = (128, 160),
             objects: tuple[int, int] = (1, 3), scale: tuple[float, float] | None = None,
             seed: int = 0, border: int = 1, min_pixels: int = 64) -> list[str]:
    """Write check set ``kind`` (``shapes`` | ``textures``) under ``root``; returns class names.

    ``counts``: images per split (``train_aug``, ``val``; ``train`` is the first
    ``counts['train']`` of train_aug). Side lengths are drawn in ``size``; object sides
    in ``scale`` (fractions of the image side; default 0.3-0.55 for shapes, 0.25-0.5
    for textures). A class whose visible area ends below ``min_pixels`` (occluded) is
    erased from the label (set to 255, ignored), so image labels name visible classes.
    """
    if kind not in ("shapes", "textures"):
        raise ConfigError(f"check set kind must be 'shapes' or 'textures', got {kind!r}")
    scale = scale or ((0.3, 0.55) if kind == "shapes" else (0.25, 0.5))
    photos = load_photographs()
    root = Path(root)
    for d in (voc.IMAGE_DIR, voc.MASK_DIR, voc.AUG_MASK_DIR, voc.SPLIT_DIR):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    for code, (split, prefix) in enumerate((("train_aug", "c"), ("val", "v")), start=1):
        ids[split] = [f"{prefix}{i:05d}" for i in range(int(counts.get(split, 0)))]
        for i, image_id in enumerate(ids[split]):
            rng = np.random.default_rng([seed, code, i, 7])
            side = int(rng.integers(size[0], size[1] + 1))
            img, label = render(kind, rng, photos, side, objects, scale)
            for c in np.unique(label):
                if c and (label == c).sum() < min_pixels:
                    label[label == c] = voc.IGNORE
            Image.fromarray(img).save(root / voc.IMAGE_DIR / f"{image_id}.jpg", quality=92)
            voc.label_image(label).save(root / voc.AUG_MASK_DIR / f"{image_id}.png")
            voc.label_image(add_borders(label, border)).save(root / voc.MASK_DIR / f"{image_id}.png")
    voc.write_split(root, "train_aug", ids["train_aug"])
    voc.write_split(root, "train", ids["train_aug"][: int(counts.get("train", len(ids["train_aug"])))])
    voc.write_split(root, "val", ids["val"])
    names = list(SHAPES if kind == "shapes" else TEXTURES)
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    log.info("wrote check set %s: %d images of %d classes to %s", kind,
             sum(len(v) for v in ids.values()), len(names), root)
    return names
