"""ESOLNet and its parts: output stride, frozen BatchNorm, pretrained weights, samplers."""

import math
import urllib.error

import pytest
import torch
import torchvision

from esol.models import backbone as bb
from esol.models.deform import DeformableSampler, feature_clip, offset_magnitude
from esol.models.esol_net import Arch, ESOLNet
from esol.utils import ConfigError


def tiny_net(**kw) -> ESOLNet:
    torch.manual_seed(0)
    arch = dict(num_classes=3, depth=18, kernel_size=3, frozen_bn=False, frozen_stages=0)
    arch.update(kw)
    return ESOLNet(Arch(**arch))


@pytest.mark.parametrize("depth,channels", [(18, 512), (50, 2048)])
def test_output_stride_16_and_cam_shapes(depth, channels):
    net = tiny_net(depth=depth).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert net.backbone(x).shape == (2, channels, 6, 8)
        assert net.class_maps(x).shape == (2, 3, 6, 8)
        assert net(x).shape == (2, 3)
        # GAP commutes with the bias-free 1x1 classifier: logits = mean of class maps.
        torch.testing.assert_close(net(x), net.class_maps(x).mean((2, 3)))
        assert (net.cam(x) >= 0).all()


def test_levels_have_irn_strides():
    net = tiny_net()
    levels = net.backbone.forward_levels(torch.randn(1, 3, 64, 64))
    assert [lv.shape[-1] for lv in levels] == [16, 16, 8, 4, 4]


def test_frozen_bn_and_frozen_stages(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    arch = Arch(num_classes=3, depth=18, frozen_bn=True, frozen_stages=2)
    net = ESOLNet(arch, pretrained=str(path))
    bns = [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 20 and all(isinstance(m, bb.FixedBatchNorm) for m in bns)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    # IRN (net/resnet50_cam.py): stage2(x).detach() -> conv1, layer1, layer2 fixed.
    assert not any(n.startswith(("backbone.stem", "backbone.layer1", "backbone.layer2"))
                   for n in trainable)
    assert "backbone.layer3.0.conv1.weight" in trainable and "classifier.weight" in trainable
    # FixedBatchNorm: the affine parameters of trained stages still learn.
    assert {"backbone.layer3.0.bn1.weight", "backbone.layer4.1.bn2.bias"} <= trainable
    # The file's weights were loaded (conv1 and the BN statistics).
    torch.testing.assert_close(net.backbone.stem[0].weight, state["conv1.weight"])
    torch.testing.assert_close(net.backbone.stem[1].running_var, state["bn1.running_var"])


def _named_grads(net, x):
    net.zero_grad(set_to_none=True)
    torch.nn.functional.multilabel_soft_margin_loss(net(x), torch.tensor([[1.0, 0.0, 1.0]])).backward()
    return {n: p.grad for n, p in net.named_parameters()}


def test_irn_frozen_depth_gradient_reaches_layer3_on_not_layer2():
    # IRN's classifier: no gradient for conv1, layer1, layer2; layer3 and layer4 learn,
    # BatchNorm affine parameters included; running statistics fixed in train mode.
    torch.manual_seed(0)
    net = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=True, frozen_stages=2)).train()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    grads = _named_grads(net, torch.randn(1, 3, 64, 64))
    for name, g in grads.items():
        frozen = name.startswith(("backbone.stem", "backbone.layer1", "backbone.layer2"))
        assert (g is None) == frozen, name
    assert grads["backbone.layer3.0.bn1.weight"].abs().sum() > 0
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    # Each depth freezes the stem and exactly that many stages.
    for k in range(5):
        net = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=True, frozen_stages=k))
        frozen = {n.split(".")[1] for n, p in net.named_parameters()
                  if n.startswith("backbone.") and not p.requires_grad}
        assert frozen == ({"stem"} | {f"layer{i}" for i in range(1, k + 1)} if k else set())


@pytest.mark.parametrize("name", ["voc12", "coco14"])
def test_paper_configs_follow_irn_and_eq6(name):
    from conftest import REPO, load_config

    cfg = load_config(REPO / "config" / f"{name}.yaml")
    assert cfg["model"]["backbone"]["frozen_stages"] == 2  # IRN: conv1 + layer1 + layer2
    assert cfg["model"]["backbone"]["frozen_bn"] is True
    assert cfg["shrinkage"]["area_classes"] == "all"  # Eq. 6: 1/C over all classes


def test_frozen_bn_without_weights_is_refused_for_training_only(config):
    from esol.stages import build_classifier

    config["model"]["backbone"].update(frozen_bn=True, pretrained="none")
    with pytest.raises(ConfigError, match="frozen_bn is true but model.backbone.pretrained is 'none'"):
        build_classifier(config, num_classes=3)
    # A checkpoint of a frozen-BN network loads without weights files.
    net = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=True))
    assert ESOLNet.from_checkpoint(net.checkpoint()).arch.frozen_bn


def test_imagenet_weights_come_from_torchvision_cache(tmp_path, monkeypatch):
    # A file in torchvision's cache is used as is: no download, here or in CI.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cache.parent.mkdir(parents=True)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, cache)
    backbone = bb.ResNetBackbone(18, pretrained="imagenet", frozen_bn=True)
    torch.testing.assert_close(backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_imagenet_offline_error_says_how_to_get_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as err:
        bb.ResNetBackbone(18, pretrained="imagenet", frozen_bn=True)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "model.backbone.pretrained" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg


def test_bad_weights_file_names_itself(tmp_path):
    with pytest.raises(ConfigError, match="weights file not found"):
        bb.ResNetBackbone(18, pretrained=str(tmp_path / "nope.pth"), frozen_bn=True)
    path = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="lacks .* ResNet-18 tensors"):
        bb.ResNetBackbone(18, pretrained=str(path), frozen_bn=True)


@pytest.mark.parametrize("k", [1, 3])
def test_zero_offset_sampler_reproduces_its_conv(k):
    # Eq. 4 with zero offsets is Eq. 3. Tolerance: float32 summation order, 1e-5 relative.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, k, padding=k // 2)
    sampler = DeformableSampler(conv)
    x = torch.randn(2, 16, 9, 11)
    torch.testing.assert_close(sampler(x), conv(x), rtol=1e-5, atol=1e-5)
    assert sampler.offset.out_channels == 2 * k * k
    assert not sampler.weight.requires_grad and sampler.offset.weight.requires_grad
    # In float64 the two agree to rounding.
    conv64, x64 = conv.double(), x.double()
    torch.testing.assert_close(DeformableSampler(conv64)(x64), conv64(x64), rtol=1e-10, atol=1e-10)


def test_sampler_with_a_unit_offset_shifts_its_input():
    # A 1x1 identity conv with offset dx = +1 everywhere reads the right neighbour.
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(conv.weight)
    sampler = DeformableSampler(conv)
    torch.nn.init.constant_(sampler.offset.bias, 0.0)
    with torch.no_grad():
        sampler.offset.bias[1] = 1.0  # (dy, dx) = (0, 1)
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    out = sampler(x)
    torch.testing.assert_close(out[0, 0, :, :3], x[0, 0, :, 1:])
    assert (out[0, 0, :, 3] == 0).all()  # beyond the border reads zero padding
    assert offset_magnitude(sampler.last_offset).max().item() == pytest.approx(1.0)


def test_offset_magnitude_by_hand():
    off = torch.tensor([3.0, 4.0, 0.0, -2.0]).reshape(1, 4, 1, 1)  # two points: (3,4), (0,-2)
    torch.testing.assert_close(offset_magnitude(off).flatten(), torch.tensor([5.0, 2.0]))


def test_feature_clip_by_hand():
    # Eq. 7, beta = 0.5: channel 0 max 8 -> cap 4; channel 1 max 2 -> cap 1; per image.
    x = torch.tensor([[[[1.0, 8.0], [3.0, 5.0]], [[0.5, 2.0], [1.5, 0.0]]],
                      [[[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 4.0]]]])
    expected = torch.tensor([[[[1.0, 4.0], [3.0, 4.0]], [[0.5, 1.0], [1.0, 0.0]]],
                             [[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    torch.testing.assert_close(feature_clip(x, 0.5), expected)


def test_stage_conversion_keeps_outputs_and_checkpoints_round_trip():
    net = tiny_net().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        net.to_expansion(deformable=True, clip_beta=None)
        torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-5)
        net.to_shrinkage(deformable=True)
        torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-5)
        again = ESOLNet.from_checkpoint(net.checkpoint()).eval()
        assert again.arch == net.arch and again.arch.stage == "shrinkage"
        torch.testing.assert_close(again(x), net(x))


def test_lr_groups_split_backbone_and_new_layers():
    net = tiny_net()
    backbone, new = net.classifier_param_groups()
    assert {id(p) for p in new} == {id(p) for m in (net.conv_e, net.conv_s, net.classifier)
                                    for p in m.parameters()}
    assert len(backbone) == sum(1 for p in net.backbone.parameters() if p.requires_grad)
    assert math.isclose(len(backbone) + len(new), sum(1 for p in net.parameters() if p.requires_grad))


def test_amp_setting_maps_to_autocast_dtypes():
    from esol.utils import amp_dtype

    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None  # mixed precision on CUDA only by default
    assert amp_dtype("fp32", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="config key 'amp'"):
        amp_dtype("half", cpu)


def test_sampler_stays_float32_under_bf16_autocast():
    # deform_conv2d has no bfloat16 CPU kernel, and offsets are learned in full precision.
    net = tiny_net().eval()
    net.to_expansion(deformable=True, clip_beta=0.15)
    net.to_shrinkage(deformable=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = net.class_maps(x)
    assert net.conv_e.last_offset.dtype == torch.float32
    assert net.conv_s.last_offset.dtype == torch.float32
    with torch.no_grad():
        ref = net.class_maps(x)
    # bfloat16 keeps about 3 significant digits: the maps agree to a few percent.
    assert torch.allclose(maps.float(), ref, rtol=0.05, atol=0.05 * ref.abs().max().item())
