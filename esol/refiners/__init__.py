"""Refiners: from CAM seeds to semantic pseudo masks by a random walk on pair affinities.

``core``: pixel pairs within a radius, their relation labels, the sparse transition
matrix and the walk, shared by every refiner; ``psa``: AffinityNet (Ahn & Kwak, CVPR
2018), which predicts the affinities. IRN (Ahn et al. CVPR 2019), which derives them
from a class-boundary map, lives in :mod:`esol.irn` and walks with the same core.
docs/refiners.md says where a third refiner goes.
"""
