"""ESOL: Expansion and Shrinkage of Localization for weakly-supervised semantic segmentation.

A library a notebook can import: ``esol.data`` (datasets in the VOC layout, the embedded
synthetic generator), ``esol.models`` (ESOLNet and its parts), ``esol.cam`` (localization
maps), ``esol.metrics`` (seed evaluation) and the training stages in ``esol.stages``.
"""

__version__ = "0.1.0"
