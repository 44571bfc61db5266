"""The ESOL stages: what each trains, which way its loss moves, and the checkpoint chain."""

import copy

import pytest
import torch

from esol.cam import CamStore
from esol.data import synthetic
from esol.data.voc import DatasetInfo, prepare_dataset
from esol.models.esol_net import Arch, ESOLNet
from esol.stages import (expansion_objective, extract_cams, load_method_net, shrinkage_objective,
                         train_classifier, train_expansion, train_shrinkage)
from esol.utils import TrainingError


def _classifier():
    torch.manual_seed(0)
    net = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0))
    net.train()
    with torch.no_grad():  # populate BatchNorm statistics, then freeze them as later stages do
        net(torch.randn(4, 3, 64, 64))
    return net.eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 64, 64, generator=g), torch.tensor(
        [[1.0, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]])


def _one_step(net, params, objective, lr):
    x, y = _batch()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def loss():
        maps = net.class_maps(x)
        return objective(maps.mean((2, 3)), maps, y)[0]

    start = loss()
    opt = torch.optim.SGD(params, lr=lr)
    opt.zero_grad()
    start.backward()
    opt.step()
    with torch.no_grad():
        end = loss()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    return start.item(), end.item(), changed


def test_expansion_step_changes_only_the_es_offsets_and_raises_l_cls():
    net = _classifier()
    params = net.to_expansion(deformable=True, clip_beta=0.15)
    alpha = 0.01
    start, end, changed = _one_step(net, params, expansion_objective(alpha), lr=50.0)
    assert changed == {"conv_e.offset.weight", "conv_e.offset.bias"}
    # L_exp = -alpha * L_cls went down, so L_cls went up (gradient ascent, Eq. 5).
    assert end < start
    assert -end / alpha > -start / alpha


def test_shrinkage_step_changes_only_the_ss_offsets_and_lowers_its_loss():
    net = _classifier()
    net.to_expansion(deformable=True, clip_beta=0.15)
    with torch.no_grad():  # a trained-looking ES: nonzero offsets that must stay frozen
        net.conv_e.offset.bias.normal_(0, 0.5)
    params = net.to_shrinkage(deformable=True)
    start, end, changed = _one_step(net, params, shrinkage_objective(1.0, 1.0), lr=5.0)
    assert changed == {"conv_s.offset.weight", "conv_s.offset.bias"}
    assert end < start


def test_shrinkage_without_offsets_trains_conv_s_only():
    net = _classifier()
    net.to_expansion(deformable=True, clip_beta=0.15)
    params = net.to_shrinkage(deformable=False)
    _, _, changed = _one_step(net, params, shrinkage_objective(1.0, 1.0), lr=0.1)
    assert changed == {"conv_s.weight", "conv_s.bias"}


def test_backbone_gets_no_gradient_in_the_sampler_stages():
    net = _classifier()
    net.to_expansion(deformable=True, clip_beta=None)
    x, _ = _batch()
    x.requires_grad_(True)
    net.class_maps(x).sum().backward()
    assert x.grad is None  # the backbone ran under no_grad


@pytest.fixture(scope="module")
def chain(tmp_path_factory, request):
    """classifier -> expansion -> shrinkage on a tiny synthetic set, through the library."""
    from conftest import load_config, module_scratch

    scratch = module_scratch(request, tmp_path_factory, "chain")
    tmp = next(scratch)
    cfg = copy.deepcopy(load_config())
    cfg["dataset"]["synthetic"].update(num_classes=2, image_size=[64, 72],
                                       counts={"train_aug": 8, "train": 4, "val": 2, "test": 0})
    cfg["classifier"].update(epochs=1, batch_size=4, resize_long=[56, 72], crop=64)
    for stage in ("expansion", "shrinkage"):
        cfg[stage].update(epochs=1, batch_size=4)
    cfg["device"] = "cpu"
    # Two steps on 8 images learn nothing: the learning checks (tests/test_learning.py)
    # would stop the chain that these tests inspect for its plumbing.
    cfg["checks"]["enabled"] = False
    root = tmp / "data"
    names = synthetic.generate(root, cfg["dataset"]["synthetic"], seed=0)
    prepare_dataset(root, names, ["train_aug", "train"]).to_json(tmp / "d.json")
    esol = cfg["methods"]["esol"]
    train_classifier(cfg, tmp / "d.json", tmp / "clf.pt", tmp / "clf.csv")
    train_expansion(cfg, esol, tmp / "clf.pt", tmp / "d.json", tmp / "exp.pt")
    train_shrinkage(cfg, esol, tmp / "exp.pt", tmp / "d.json", tmp / "shr.pt", tmp / "shr.csv")
    yield cfg, tmp
    next(scratch, None)


def test_checkpoint_chain_loads_and_makes_cams(chain):
    cfg, tmp = chain
    for name, stage in (("clf", "classifier"), ("exp", "expansion"), ("shr", "shrinkage")):
        net = load_method_net({"clipping": True}, tmp / f"{name}.pt", 0.15)
        assert net.arch.stage == stage
    net = load_method_net(cfg["methods"]["esol"], tmp / "shr.pt")
    assert net.arch.deformable_e and net.arch.deformable_s and net.arch.clip_beta == 0.15
    # The Expansion offsets made it through Shrinkage unchanged.
    exp = load_method_net({}, tmp / "exp.pt")
    torch.testing.assert_close(net.conv_e.offset.weight, exp.conv_e.offset.weight)
    n = extract_cams(cfg, cfg["methods"]["esol"], tmp / "shr.pt", tmp / "d.json", "train", tmp / "c.h5")
    info = DatasetInfo.from_json(tmp / "d.json")
    with CamStore(tmp / "c.h5") as store:
        for image_id in info.ids("train"):
            rec = store[image_id]
            from esol.data.voc import read_image

            h, w = read_image(info.layout.image(image_id)).shape[:2]
            assert rec.high_res.shape == (len(rec.keys), h, w)
            assert rec.cam.shape == (len(rec.keys), (h + 3) // 4, (w + 3) // 4)
    assert n == 4 and (tmp / "shr.csv").read_text().startswith("epoch,step,lr,loss,cls_loss")


def test_diverging_offsets_stop_the_stage(chain):
    cfg, tmp = chain
    cfg = copy.deepcopy(cfg)
    cfg["expansion"].update(lr=1e5, max_offset=2.0)
    with pytest.raises(TrainingError, match=r"expansion: offsets reached .* feature pixels \(bound 2.0\)"):
        train_expansion(cfg, cfg["methods"]["expansion"], tmp / "clf.pt", tmp / "d.json",
                        tmp / "bad.pt")
    assert not (tmp / "bad.pt").exists()


def test_fl_only_variant_is_the_classifier_with_clipping(chain):
    _, tmp = chain
    plain = load_method_net({"clipping": False}, tmp / "clf.pt")
    clipped = load_method_net({"clipping": True}, tmp / "clf.pt", 0.15)
    assert plain.arch.clip_beta is None and clipped.arch.clip_beta == 0.15
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(plain.cam(x), clipped.cam(x))
    with pytest.raises(ValueError, match="clip_beta"):
        load_method_net({"clipping": True}, tmp / "clf.pt")


# -- the stage functions as the workflow calls them ------------------------------------

def _bn_buffers(path):
    from esol.engine import load_checkpoint

    model = load_checkpoint(path)["model"]
    return {k: v for k, v in model.items()
            if k.startswith("backbone.") and k.rsplit(".", 1)[1] in
            ("running_mean", "running_var", "num_batches_tracked")}


def test_esol_stages_leave_batchnorm_statistics_bit_identical(chain):
    # The demo trains BatchNorm in the classifier (frozen_bn: false); Expansion and
    # Shrinkage must run it in eval mode, so no running statistic moves.
    cfg, tmp = chain
    assert cfg["model"]["backbone"]["frozen_bn"] is False
    clf = _bn_buffers(tmp / "clf.pt")
    assert len(clf) == 60  # 20 BatchNorms of ResNet-18, three buffers each
    for stage in ("exp", "shr"):
        later = _bn_buffers(tmp / f"{stage}.pt")
        assert later.keys() == clf.keys()
        assert all(torch.equal(later[k], clf[k]) for k in clf), stage


@pytest.fixture
def captured(chain, monkeypatch):
    """Run a stage function with ``fit`` replaced by a recorder: returns its arguments."""
    import esol.stages as stages

    calls = []

    def fake_fit(**kw):
        calls.append(kw)
        return []

    monkeypatch.setattr(stages, "fit", fake_fit)
    return calls


def _stage_batch():
    g = torch.Generator().manual_seed(3)
    return {"img": torch.randn(2, 3, 64, 64, generator=g),
            "label": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}


def _area_by_hand(maps, labels, present):
    # S_c = mean_{h,w} ReLU(m) / (max ReLU(m) + 1e-5); averaged over present or all classes.
    p = maps.clamp(min=0)
    s = (p / (p.amax(dim=(2, 3), keepdim=True) + 1e-5)).mean(dim=(2, 3))
    if present:
        return ((s * labels).sum(1) / labels.sum(1)).mean()
    return s.mean()


def test_expansion_stage_minimises_minus_alpha_times_l_cls(chain, captured):
    cfg, tmp = chain
    cfg = copy.deepcopy(cfg)
    cfg["expansion"]["alpha"] = 0.25
    train_expansion(cfg, cfg["methods"]["esol"], tmp / "clf.pt", tmp / "d.json", tmp / "e2.pt")
    (call,) = captured
    batch = _stage_batch()
    with torch.no_grad():
        loss, stats = call["step_fn"](batch)
        maps = call["params_owner"].class_maps(batch["img"])
    cls = torch.nn.functional.multilabel_soft_margin_loss(maps.mean((2, 3)), batch["label"])
    assert stats["cls_loss"] == pytest.approx(cls.item(), rel=1e-5)
    assert loss.item() == pytest.approx(-0.25 * cls.item(), rel=1e-5)  # Eq. 5
    assert call["optimizer"].param_groups[0]["weight_decay"] == cfg["expansion"]["weight_decay"]


def test_expansion_stage_trains_the_clipped_network(chain, captured):
    # Eq. 7 belongs to the Expansion forward in training, not only at CAM time.
    from esol.engine import load_checkpoint
    from esol.models.deform import feature_clip

    cfg, tmp = chain
    train_expansion(cfg, cfg["methods"]["esol"], tmp / "clf.pt", tmp / "d.json", tmp / "e3.pt")
    (call,) = captured
    net = call["params_owner"]
    assert net.arch.clip_beta == cfg["expansion"]["clip_beta"] == 0.15
    assert load_checkpoint(tmp / "e3.pt")["arch"]["clip_beta"] == 0.15
    x = _stage_batch()["img"]
    with torch.no_grad():
        e = torch.relu(net.conv_e(net.backbone(x)))
        by_hand = torch.nn.functional.conv2d(torch.relu(net.conv_s(feature_clip(e, 0.15))),
                                             net.classifier.weight)
        unclipped = torch.nn.functional.conv2d(torch.relu(net.conv_s(e)), net.classifier.weight)
        trained_on = net.class_maps(x)
    torch.testing.assert_close(trained_on, by_hand)
    assert not torch.allclose(trained_on, unclipped)


@pytest.mark.parametrize("area_classes", ["present", "all"])
@pytest.mark.parametrize("area_switch", [True, False])
def test_shrinkage_stage_objective_follows_switch_and_area_classes(chain, captured, area_classes,
                                                                   area_switch):
    # Eq. 6: gamma * L_cls + mu * L_area, L_area over the classes area_classes names; a
    # method whose area_loss switch is off gets gamma * L_cls alone, whatever mu says.
    cfg, tmp = chain
    cfg = copy.deepcopy(cfg)
    cfg["shrinkage"].update(gamma=0.5, mu=2.0, area_classes=area_classes)
    spec = dict(cfg["methods"]["esol"], area_loss=area_switch)
    train_shrinkage(cfg, spec, tmp / "exp.pt", tmp / "d.json", tmp / "s2.pt")
    (call,) = captured
    batch = _stage_batch()
    with torch.no_grad():
        loss, _ = call["step_fn"](batch)
        maps = call["params_owner"].class_maps(batch["img"])
    cls = torch.nn.functional.multilabel_soft_margin_loss(maps.mean((2, 3)), batch["label"])
    present = _area_by_hand(maps, batch["label"], True)
    every = _area_by_hand(maps, batch["label"], False)
    assert abs(present - every) > 1e-3  # the case tells the two forms apart
    area = (present if area_classes == "present" else every) if area_switch else 0.0
    assert loss.item() == pytest.approx(0.5 * cls.item() + 2.0 * float(area), rel=1e-5)
    assert call["optimizer"].param_groups[0]["weight_decay"] == cfg["shrinkage"]["weight_decay"]
