"""Training pairs for DeepLab: images of the training split with a label source's masks.

A *label source* is either ``gt`` (the dataset's own masks: ``SegmentationClassAug``
when it has the image, else ``SegmentationClass``, as IRN's and deeplab-pytorch's VOC
train_aug) or a folder of palette PNGs ``<id>.png`` (a method's pseudo masks). Every
mask is checked against its image on first use, with an error naming the file.

Augmentation is deeplab-pytorch's: random rescale (a factor drawn uniformly in
``scale``; the reference draws from {0.5, 0.75, 1, 1.25, 1.5}), padding with the mean
colour and 255 to at least the crop, a random crop and a horizontal flip. Each
sample's draw is fixed by ``(seed, epoch, index)``, so a resumed run sees the same data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from esol.data import transforms as T
from esol.data.datasets import EpochSeededDataset
from esol.data.voc import DatasetInfo, read_image, read_label
from esol.utils import DatasetError

GT = "gt"


class LabelSource:
    """Where the training masks of a DeepLab run come from: ``gt`` or a pseudo-mask folder."""

    def __init__(self, info: DatasetInfo, label_dir: str | os.PathLike | None) -> None:
        self.info = info
        self.label_dir = None if label_dir in (None, "", GT) else Path(label_dir)
        if self.label_dir is not None and not self.label_dir.is_dir():
            raise DatasetError(f"pseudo-mask folder not found: {self.label_dir}")

    @property
    def name(self) -> str:
        return GT if self.label_dir is None else str(self.label_dir)

    def path(self, image_id: str) -> Path:
        if self.label_dir is not None:
            return self.label_dir / f"{image_id}.png"
        path = self.info.layout.label_source(image_id)
        if path is None:
            raise DatasetError(f"no ground-truth mask for {image_id!r} under {self.info.root}")
        return path

    def read(self, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        """The mask of ``image_id``, checked against its image's ``shape`` and the classes."""
        path = self.path(image_id)
        label = read_label(path)
        if label.shape != tuple(shape):
            raise DatasetError(f"mask {path} is {label.shape[1]}x{label.shape[0]} but its image is "
                               f"{shape[1]}x{shape[0]}")
        bad = label[(label > self.info.num_classes) & (label != 255)]
        if bad.size:
            raise DatasetError(f"mask {path} holds value {int(bad[0])}, outside 0..{self.info.num_classes}"
                               " (255 = ignore)")
        return label


class SegmentationDataset(EpochSeededDataset):
    """(image, mask) crops of ``split`` for DeepLab training (see the module doc)."""

    def __init__(self, info: DatasetInfo, split: str, source: LabelSource, scale: Sequence[float],
                 crop: int, seed: int = 0, hflip: bool = True) -> None:
        self.info, self.split, self.source = info, split, source
        self.ids = list(info.ids(split))
        if source.label_dir is not None:
            missing = [i for i in self.ids if not source.path(i).is_file()]
            if missing:
                raise DatasetError(f"pseudo-mask folder {source.label_dir} lacks {len(missing)} of the "
                                   f"{len(self.ids)} {split} images, e.g. {source.path(missing[0])}")
        self.scale, self.crop, self.seed, self.hflip = tuple(scale), int(crop), seed, hflip

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        rng = self.rng(index)
        img = read_image(self.info.layout.image(image_id))
        label = self.source.read(image_id, img.shape[:2])
        img, label = T.random_scale(img, *self.scale, rng, label=label)
        if self.hflip:
            img, label = T.random_hflip(img, rng, label=label)
        img, label = T.random_crop(T.normalize(img), self.crop, rng, label=label)
        return {"img": torch.from_numpy(T.to_chw(img)),
                "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
                "id": image_id}
