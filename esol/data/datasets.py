"""Torch datasets over a prepared VOC-layout dataset (:class:`esol.data.voc.DatasetInfo`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from esol.data import transforms as T
from esol.data.voc import DatasetInfo, read_image

log = logging.getLogger(__name__)


class EpochSeededDataset(Dataset):
    """A dataset over ``self.ids`` whose augmentation draws from an RNG seeded by
    ``(seed, epoch, index)``: any worker, and a run resumed mid-training, draws the same
    crops. Subclasses set ``ids`` and ``seed``; the training loop calls :meth:`set_epoch`.
    """

    ids: list[str]
    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class ClassificationDataset(EpochSeededDataset):
    """Training images with multi-hot labels, augmented as IRN's ``train_cam``.

    Images whose mask holds no object class cannot teach a classifier; they are skipped
    with a warning. Augmentation draws from an RNG seeded by ``(seed, epoch, index)``;
    call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, info: DatasetInfo, split: str, resize_long: Sequence[int], crop: int,
                 seed: int = 0, hflip: bool = True) -> None:
        self.info, self.split = info, split
        self.ids = info.labelled_ids(split)
        skipped = len(info.ids(split)) - len(self.ids)
        if skipped:
            log.warning("%s: skipping %d images without any object class", split, skipped)
        self.resize_long, self.crop, self.seed, self.hflip = tuple(resize_long), crop, seed, hflip

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        rng = self.rng(index)
        img = read_image(self.info.layout.image(image_id))
        img = T.random_resize_long(img, *self.resize_long, rng)
        if self.hflip:
            img = T.random_hflip(img, rng)
        img = T.random_crop(T.normalize(img), self.crop, rng)
        return {"img": torch.from_numpy(T.to_chw(img)),
                "label": torch.from_numpy(self.info.label_vector(self.split, image_id)),
                "id": image_id}
