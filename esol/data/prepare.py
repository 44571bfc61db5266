"""From the ``dataset`` config section to a validated :class:`DatasetInfo`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esol.data import synthetic
from esol.data.voc import DatasetInfo, prepare_dataset
from esol.utils import ConfigError


def dataset_root(cfg: Mapping[str, Any]) -> Path:
    """Where the dataset lives: generated under results/, or ``dataset.root``."""
    d = cfg["dataset"]
    if d["source"] == "synthetic":
        return Path("results") / d["name"] / "synthetic"
    if not d.get("root"):
        raise ConfigError("dataset.root must name the VOC-layout folder when dataset.source is 'voc'")
    return Path(d["root"]).expanduser()


def dataset_classes(cfg: Mapping[str, Any]) -> list[str]:
    d = cfg["dataset"]
    if d["source"] == "synthetic":
        return synthetic.class_names(d["synthetic"]["num_classes"])
    return list(d["classes"])


def prepare_from_config(cfg: Mapping[str, Any], workers: int = 1,
                        root: str | Path | None = None) -> DatasetInfo:
    """Validate the configured dataset and derive its labels (rule ``prepare_data``)."""
    d = cfg["dataset"]
    for key in ("train_split", "seed_split"):
        if d[key] not in d["splits"]:
            raise ConfigError(f"dataset.{key} is {d[key]!r}, which is not in dataset.splits "
                              f"{d['splits']}")
    return prepare_dataset(root or dataset_root(cfg), dataset_classes(cfg), d["splits"],
                           d.get("test_splits", []), workers=workers)
