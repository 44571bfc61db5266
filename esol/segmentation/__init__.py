"""Segmentation on the pseudo masks (the paper's section 4.1.2, Table 3): DeepLab-v2
trained on a label source (ground truth or a method's pseudo masks), multi-scale + flip
inference with dense CRF, and evaluation on val. Settings follow kazuto1011/deeplab-pytorch.
"""
