"""Image transforms of IRN's training recipe: random long-side rescale, flip, crop.

Pure functions of a NumPy RNG, so every sample's augmentation is fixed by
``(seed, epoch, index)`` whatever the worker count or a resume point.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


def normalize(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) to ImageNet-normalised float32 (H, W, 3)."""
    return (img.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD


def to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def rescale(img: np.ndarray, scale: float, nearest: bool = False) -> np.ndarray:
    """Resize a uint8 image (H, W, 3) or label map (H, W) by ``scale``, as IRN's
    ``pil_rescale`` (``misc/imutils.py``): sides ``round(side * scale)``, PIL bicubic
    for images, PIL nearest for labels.

    Both are centre-aligned (output pixel ``i`` looks at input coordinate
    ``(i + 0.5) / scale``), so image and label stay registered; a nearest label samples
    input pixels ``2, 6, 10, ...`` at scale 0.25. Pillow's bicubic widens its kernel by
    ``1 / scale`` when shrinking, which antialiases the 0.5 scale as IRN's images are
    (OpenCV's ``INTER_CUBIC`` does not; its ``INTER_NEAREST`` is top-left aligned and
    shifts a label by up to a pixel against its image).
    """
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return img
    if img.dtype != np.uint8:
        raise TypeError(f"rescale takes uint8 images and label maps, got {img.dtype}")
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return np.array(Image.fromarray(np.ascontiguousarray(img)).resize(size, resample))


def random_resize_long(img: np.ndarray, lo: int, hi: int, rng: np.random.Generator,
                       label: np.ndarray | None = None):
    """Resize so the long side is a uniform integer in ``[lo, hi]`` (IRN ``resize_long``)."""
    target = int(rng.integers(lo, hi + 1))
    scale = target / max(img.shape[:2])
    img = rescale(img, scale)
    if label is None:
        return img
    return img, rescale(label, scale, nearest=True)


def random_scale(img: np.ndarray, lo: float, hi: float, rng: np.random.Generator,
                 label: np.ndarray | None = None):
    """Resize by a factor uniform in ``[lo, hi]`` (DeepLab's random scaling)."""
    scale = float(rng.uniform(lo, hi))
    img = rescale(img, scale)
    if label is None:
        return img
    return img, rescale(label, scale, nearest=True)


def random_hflip(img: np.ndarray, rng: np.random.Generator, label: np.ndarray | None = None):
    flip = bool(rng.integers(2))
    if flip:
        img = img[:, ::-1]
        label = label[:, ::-1] if label is not None else None
    return img if label is None else (img, label)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                label: np.ndarray | None = None, fill: float = 0.0, label_fill: int = 255):
    """A ``size`` x ``size`` crop; smaller images are padded (``fill``, ``label_fill``).

    As IRN's ``random_crop``, the image is placed at a random position inside the crop
    window when it is smaller than the window, and cropped at a random position when
    larger. ``img`` is normalised already, so ``fill = 0`` pads with the mean colour.
    """
    h, w = img.shape[:2]
    out = np.full((size, size, img.shape[2]), fill, dtype=img.dtype)
    out_label = (np.full((size, size), label_fill, dtype=label.dtype)
                 if label is not None else None)
    ch, cw = min(size, h), min(size, w)
    sy = int(rng.integers(0, h - ch + 1))  # source offset
    sx = int(rng.integers(0, w - cw + 1))
    dy = int(rng.integers(0, size - ch + 1))  # destination offset
    dx = int(rng.integers(0, size - cw + 1))
    out[dy:dy + ch, dx:dx + cw] = img[sy:sy + ch, sx:sx + cw]
    if label is None:
        return out
    out_label[dy:dy + ch, dx:dx + cw] = label[sy:sy + ch, sx:sx + cw]
    return out, out_label
