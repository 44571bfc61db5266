"""Which images of a split a shard job handles (config ``shards``; docs/cluster.md).

A per-image rule (``make_cam``, ``crf_seed``, ``predict_segmentation``) run as N shard
jobs gives job k the ids :func:`shard_ids` ``(ids, k, N)``; a gather step joins the N
parts into exactly what one unsharded job writes (:func:`esol.cam.gather_cams` for CAM
files, :func:`esol.labeldir.gather_label_dirs` for label folders).
"""

from __future__ import annotations

from collections.abc import Sequence

Shard = tuple[int, int]  # (k, n): part k of n; (0, 1) is the whole split
WHOLE: Shard = (0, 1)


def shard_ids(ids: Sequence[str], shard: int, shards: int) -> list[str]:
    """Shard ``shard`` of ``shards`` of a split: every ``shards``-th id from ``shard`` on.

    Strided rather than contiguous, so shards of a split ordered by name (VOC's years,
    COCO's ids) get a similar mix of image sizes and take similar times.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards} does not exist")
    return list(ids)[shard::shards]
