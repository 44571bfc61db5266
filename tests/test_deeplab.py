"""DeepLab-v2: output stride 8, ASPP, MSC, learning-rate groups, loss, initialisation."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from esol.models.deeplab import ASPP, DeepLabArch, DeepLabV2, dilate_stage
from esol.segmentation.train import (build_deeplab, optimizer_groups, resize_labels,
                                     segmentation_loss)
from esol.utils import ConfigError


def tiny(depth=18, **kw) -> DeepLabV2:
    torch.manual_seed(0)
    return DeepLabV2(DeepLabArch(num_classes=4, depth=depth, frozen_bn=False, **kw))


@pytest.mark.parametrize("depth,channels", [(18, 512), (50, 2048)])
@pytest.mark.parametrize("size", [(64, 96), (65, 71)])
def test_output_stride_8_and_logits_at_input_size(depth, channels, size):
    net = tiny(depth).eval()
    x = torch.randn(1, 3, *size)
    stride8 = tuple(math.ceil(s / 8) for s in size)
    with torch.no_grad():
        assert net.features(x).shape == (1, channels, *stride8)
        assert net.base_logits(x).shape == (1, 4, *stride8)
        assert net(x).shape == (1, 4, *size)


@pytest.mark.parametrize("depth", [18, 50])
def test_last_two_stages_are_dilated_not_strided(depth):
    net = tiny(depth)
    for stage, d in ((net.layer3, 2), (net.layer4, 4)):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
        three = [c for c in convs if c.kernel_size == (3, 3)]
        assert three and all(c.dilation == (d, d) and c.padding == (d, d) for c in three)
    # The earlier stages are untouched: layer2 still halves the resolution.
    assert net.layer2[0].conv1.stride == (2, 2) or net.layer2[0].conv2.stride == (2, 2)


def test_basic_block_dilation_matches_a_dilated_conv():
    """The dilation set by hand on a BasicBlock computes a real dilated convolution."""
    torch.manual_seed(0)
    stage = torchvision.models.resnet18().layer4
    conv = stage[1].conv1
    x = torch.randn(1, 512, 9, 9)
    dilate_stage(stage, 4)
    expected = torch.nn.functional.conv2d(x, conv.weight, padding=4, dilation=4)
    torch.testing.assert_close(conv(x), expected)


def test_aspp_sums_four_dilated_branches():
    torch.manual_seed(0)
    aspp = ASPP(8, 3)
    assert [c.dilation[0] for c in aspp.branches] == [6, 12, 18, 24]
    assert [c.padding[0] for c in aspp.branches] == [6, 12, 18, 24]
    assert all(c.bias.abs().sum() == 0 for c in aspp.branches)
    x = torch.randn(2, 8, 30, 30)
    by_hand = sum(torch.nn.functional.conv2d(x, c.weight, c.bias, padding=r, dilation=r)
                  for c, r in zip(aspp.branches, (6, 12, 18, 24)))
    torch.testing.assert_close(aspp(x), by_hand)
    # A single centre pixel reaches exactly the pixels at the four rates' kernel taps.
    for c in aspp.branches:
        c.weight.data.fill_(1.0)
    impulse = torch.zeros(1, 8, 61, 61)
    impulse[0, :, 30, 30] = 1
    hit = aspp(impulse)[0, 0] != 0
    taps = {(30 + dy * r, 30 + dx * r) for r in (6, 12, 18, 24) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert {tuple(p) for p in hit.nonzero().tolist()} == taps


def test_msc_outputs_and_pixelwise_max():
    net = tiny(msc_scales=(0.5, 0.75)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full, half, three_q, best = net.msc_logits(x)
        assert full.shape[2:] == (8, 8) and half.shape[2:] == (4, 4) and three_q.shape[2:] == (6, 6)
        up = [torch.nn.functional.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False)
              for t in (half, three_q)]
        torch.testing.assert_close(best, torch.maximum(full, torch.maximum(*up)))
        assert net(x).shape == (1, 4, 64, 64)
    assert len(tiny().msc_logits(x)) == 1


def test_lr_groups_hold_exactly_the_right_parameters(config):
    torch.manual_seed(0)
    net = tiny()
    t = dict(config["segmentation"]["train"], lr=0.01, weight_decay=5e-4)
    groups = {g["name"]: g for g in optimizer_groups(net, t)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    aspp_w = {id(c.weight) for c in net.aspp.branches}
    aspp_b = {id(c.bias) for c in net.aspp.branches}
    backbone = {id(p) for n, p in net.named_parameters() if not n.startswith("aspp.")}
    assert ids == {"backbone": backbone, "aspp_weight": aspp_w, "aspp_bias": aspp_b}
    # Every trainable parameter in exactly one group.
    assert sum(len(v) for v in ids.values()) == len(list(net.parameters()))
    assert groups["backbone"]["lr"] == 0.01 and groups["backbone"]["weight_decay"] == 5e-4
    assert groups["aspp_weight"]["lr"] == pytest.approx(0.1) and groups["aspp_weight"]["weight_decay"] == 5e-4
    assert groups["aspp_bias"]["lr"] == pytest.approx(0.2) and groups["aspp_bias"]["weight_decay"] == 0.0


def test_frozen_bn_backbone_has_no_batchnorm_parameters(tmp_path, config):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    config["segmentation"]["model"].update(depth=18, pretrained=str(path), frozen_bn=True)
    net = build_deeplab(config, num_classes=3)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    # Only convolution weights train in the backbone (BatchNorm is buffers).
    assert all(p.dim() == 4 for p in net.param_groups()["backbone"])
    assert net.aspp.branches[0].out_channels == 4


def test_frozen_bn_without_weights_is_refused(config):
    config["segmentation"]["model"].update(pretrained="none", frozen_bn=True)
    with pytest.raises(ConfigError, match="segmentation.model.frozen_bn"):
        build_deeplab(config, num_classes=3)


def test_loss_ignores_255_half_ignored_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 6)
    target = torch.randint(0, 3, (2, 4, 6))
    half = target.clone()
    half[:, :, 3:] = 255
    # By hand: mean of -log softmax at the valid pixels only.
    logp = logits.log_softmax(1)
    picked = logp.gather(1, target[:, None])[:, 0][:, :, :3]
    torch.testing.assert_close(segmentation_loss([logits], half), -picked.mean())
    # Changing the logits where the target is ignored changes nothing.
    other = logits.clone()
    other[:, :, :, 3:] = 100.0
    torch.testing.assert_close(segmentation_loss([other], half), segmentation_loss([logits], half))


def test_loss_sums_outputs_with_labels_resized_by_pixel_centres():
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]])[None]
    assert resize_labels(labels, (2, 2)).tolist() == [[[0, 1], [2, 255]]]
    small = torch.zeros(1, 3, 2, 2)
    small[0, :, 0, 0] = torch.tensor([5.0, 0.0, 0.0])
    big = torch.zeros(1, 3, 4, 4)
    expected = (torch.nn.functional.cross_entropy(small, torch.tensor([[[0, 1], [2, 255]]]), ignore_index=255)
                + torch.nn.functional.cross_entropy(big, labels, ignore_index=255))
    torch.testing.assert_close(segmentation_loss([big, small], labels), expected)


def test_classifier_backbone_initialises_deeplab(tmp_path, config):
    from esol.models.esol_net import Arch, ESOLNet

    torch.manual_seed(1)
    clf = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0))
    path = tmp_path / "classifier.pt"
    torch.save(clf.checkpoint(stage="classifier"), path)
    config["segmentation"]["model"].update(depth=18, pretrained="classifier", frozen_bn=True)
    net = build_deeplab(config, num_classes=3, classifier_ckpt=path)
    torch.testing.assert_close(net.layer4[1].conv2.weight, clf.backbone.layer4[1].conv2.weight)
    torch.testing.assert_close(net.stem[1].running_var, clf.backbone.stem[1].running_var)
    config["segmentation"]["model"]["depth"] = 34
    with pytest.raises(ConfigError, match="ResNet-18"):
        build_deeplab(config, num_classes=3, classifier_ckpt=path)
