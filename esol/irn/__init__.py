"""IRN refinement (Ahn, Cho & Kwak, CVPR 2019): from CAM seeds to semantic pseudo masks.

``paths``: pixel pairs within a radius, the pixels on the line between two pixels,
inter-pixel relation labels and boundary-to-affinity; ``net``: the inter-pixel relation
network (class boundary + displacement field branches on multi-level backbone
features); ``losses``: IRN's affinity and displacement losses; ``random_walk``: the
transition matrix and the walk that turns CAMs into pseudo labels; ``stage``: the
``train_irn`` and ``pseudo_masks`` rules.
"""
