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
