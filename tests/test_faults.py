"""Faults and bad inputs (issue 13): every case gives one clear line or a correct rerun,
never a silently wrong result. Each test names, in its docstring, the message a user sees.

Library cases run in-process on tiny fixtures; workflow cases are Snakemake dry runs
(a few seconds each). Interruptions are real ``SIGKILL``s of a child process.
"""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from conftest import REPO, write_voc_fixture
from esol.cam import CamRecord, CamStore, make_cams, write_cams
from esol.data import voc
from esol.data.prepare import prepare_from_config
from esol.data.voc import prepare_dataset, read_label, write_label
from esol.engine import fit, save_checkpoint
from esol.labeldir import LabelDir
from esol.models.backbone import ResNetBackbone
from esol.segmentation.predict import predict_split
from esol.crf import DEEPLAB_CRF
from esol.utils import ConfigError, DatasetError, TrainingError, atomic_path, rule_logging

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SNAKEFILE = str(REPO / "workflow" / "Snakefile")
CLASSES = ["one", "two", "three"]
# Peak RSS of make_cams on one 3000x2250 image, ResNet-18, scales (1, 0.5, 1.5) + flip, 20
# classes, CPU: `python benchmarks/cam_memory.py` (docs/reliability.md); the rule asked
# 1.5-2 GB before.
MEASURED_PEAK_MB_3000x2250_R18 = 6296


def snakemake(work: Path | None, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on the workflow in ``work``; ``None``: from the repository root, as a user
    would run it (a dry run without a lock writes nothing there but .snakemake/)."""
    where = ["-d", str(work)] if work is not None else ["--nolock"]
    return subprocess.run([SNAKEMAKE, "-s", SNAKEFILE, *where, *args], capture_output=True,
                          text=True, timeout=300, cwd=None if work is not None else REPO)


def planned_rules(run: subprocess.CompletedProcess) -> list[str]:
    """Rule names of the jobs a dry run plans, in order, one entry per job."""
    return [line.split()[1].rstrip(":") for line in run.stdout.splitlines()
            if line.startswith(("rule ", "localrule ")) and line.endswith(":")]


# -- bad dataset files (these worked before issue 13 and must keep working) ------------


def _prepare(root: Path, splits=("train_aug",)):
    return prepare_dataset(root, CLASSES, list(splits))


def test_truncated_jpeg_names_the_file(tiny_voc):
    """"unreadable image <root>/JPEGImages/a.jpg: image file is truncated ..." """
    path = tiny_voc / voc.IMAGE_DIR / "a.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"unreadable image .*a\.jpg"):
        _prepare(tiny_voc)


def test_missing_mask_names_the_id(tiny_voc):
    """"train_aug: id 'b' is listed but has no mask (... nor ...)" """
    for d in (voc.MASK_DIR, voc.AUG_MASK_DIR):
        (tiny_voc / d / "b.png").unlink()
    with pytest.raises(DatasetError, match="id 'b' is listed but has no mask"):
        _prepare(tiny_voc)


def test_id_without_image_names_the_id(tiny_voc):
    """"train_aug: id 'ghost' is listed but its image <root>/JPEGImages/ghost.jpg is missing" """
    voc.write_split(tiny_voc, "train_aug", ["a", "ghost"])
    with pytest.raises(DatasetError, match="id 'ghost' is listed but its image"):
        _prepare(tiny_voc)


def test_mask_value_out_of_range_names_the_file(tiny_voc):
    """"mask <path>/a.png holds value 9, outside the class range 0..3 (255 = ignore)" """
    bad = read_label(tiny_voc / voc.AUG_MASK_DIR / "a.png").copy()
    bad[0, 0] = 9
    write_label(tiny_voc / voc.AUG_MASK_DIR / "a.png", bad)
    with pytest.raises(DatasetError, match=r"a\.png holds value 9, outside the class range 0\.\.3"):
        _prepare(tiny_voc)


def test_rgb_mask_names_the_file(tiny_voc):
    """"label map <path>/a.png has mode RGB; expected a palette (P) or grey (L) PNG" """
    Image.new("RGB", (16, 12)).save(tiny_voc / voc.AUG_MASK_DIR / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png has mode RGB"):
        _prepare(tiny_voc)


def test_all_background_masks_say_there_is_no_object(tmp_path, config):
    """"dataset.train_split 'train_aug': none of its 2 masks holds a labelled object (every
    pixel is background 0 or ignore 255), so there is nothing to learn; ..."
    (before: the classifier failed with "lower the stage's batch_size")."""
    empty = np.zeros((12, 16), np.uint8)
    root = write_voc_fixture(tmp_path / "voc", {"a": empty, "b": empty},
                             {"train_aug": ["a", "b"], "train": ["a"]})
    cfg = _voc_config(config, root)
    with pytest.raises(DatasetError, match="none of its 2 masks holds a labelled object"):
        prepare_from_config(cfg)


def test_empty_training_set_is_not_blamed_on_batch_size(tmp_path):
    """"toy: no training images: no image of the training split holds a labelled object" """
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigError, match="no training images") as err:
        fit(params_owner=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), dataset=[],
            step_fn=None, batch_size=8, epochs=1, seed=0, resume_path=tmp_path / "r.pt",
            checkpoint_every=10, config={}, desc="toy")
    assert "batch_size" not in str(err.value)


# -- config ---------------------------------------------------------------------------


def _voc_config(config: dict, root: Path) -> dict:
    cfg = copy.deepcopy(config)
    cfg["device"], cfg["amp"] = "cpu", "fp32"
    cfg["dataset"].update(name="vocfix", source="voc", root=str(root), classes=CLASSES,
                          splits=["train_aug", "train"], test_splits=[], train_split="train_aug",
                          seed_split="train", tuning_split=None)
    cfg["dataset"].pop("expected_counts", None)
    cfg["refine"]["threshold"] = 0.15
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("mutate,message", [
    (lambda c: c.update(sed=c.pop("seed")), "config: unknown top-level key 'sed'; did you mean 'seed'?"),
    (lambda c: c["expansion"].update(alpah=0.1), "config: unknown key expansion.alpah; did you mean 'alpha'?"),
    (lambda c: c["classifier"].update(epochs="five"), "config key classifier.epochs: 'five' is not of type 'integer'"),
    (lambda c: c.pop("cam"), "config: required key 'cam' is missing"),
], ids=["unknown-key", "unknown-nested-key", "wrong-type", "missing-key"])
def test_bad_config_is_one_line_naming_the_key(tmp_path, config, mutate, message):
    """The messages in the parameters; before: the key, then 1,358 lines of schema and config."""
    mutate(config)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "c.yaml"))
    out = run.stdout + run.stderr
    assert run.returncode != 0 and message in out, out[-2000:]
    assert len(out.splitlines()) < 15, out[-3000:]  # no schema dump
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_configfile_replaces_the_default(tmp_path):
    """A dry run with config/coco14.yaml (its COCO root faked) plans the CAMs of exactly the
    methods that file lists (cam, esol), none of the demo's (expansion, expansion_noclip)."""
    cfg = yaml.safe_load((REPO / "config" / "coco14.yaml").read_text())
    coco = tmp_path / "coco"
    for split in cfg["dataset"]["coco"]["splits"].values():
        (coco / split["annotations"]).parent.mkdir(parents=True, exist_ok=True)
        (coco / split["annotations"]).write_text("{}")
    cfg["dataset"]["coco"]["root"] = str(coco)
    (tmp_path / "coco14.yaml").write_text(yaml.safe_dump(cfg))
    # From the repository root, where config/config.yaml (the demo's) is found: before the
    # fix its methods were merged in.
    run = snakemake(None, "-n", "--configfile", str(tmp_path / "coco14.yaml"))
    assert run.returncode == 0, run.stderr[-3000:]
    methods = {line.split("method=")[1].split(",")[0].strip()
               for line in run.stdout.splitlines() if "wildcards:" in line and "method=" in line}
    assert methods == set(cfg["methods"]) == {"cam", "esol"}
    assert "train_expansion" in planned_rules(run)  # esol's, with clipping only
    etags = {line.split("etag=")[1].strip() for line in run.stdout.splitlines() if "etag=" in line}
    assert etags == {"clip"}


# -- pretrained weights ---------------------------------------------------------------


def test_weights_of_another_architecture_are_named(tmp_path):
    """"model.backbone.pretrained: <path>/r50.pth is not a ResNet-18 (model.backbone.depth):
    N tensors have other shapes, e.g. layer1.0.conv1.weight is [64, 64, 1, 1] where ResNet-18
    has [64, 64, 3, 3]" (before: a raw size-mismatch traceback)."""
    import torchvision

    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match=r"r50\.pth is not a ResNet-18 .*layer1\.0\.conv1"):
        ResNetBackbone(18, pretrained=str(path), frozen_bn=False, frozen_stages=0)


def test_truncated_file_in_torch_cache_is_named(tmp_path, monkeypatch):
    """"model.backbone.pretrained is 'imagenet' but the cached weights file
    <TORCH_HOME>/hub/checkpoints/resnet18-f37072fd.pth does not load (...); it is truncated or
    corrupt. Delete it and fetch <url> again." (before: "could not fetch", which it did not try)."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    cache.parent.mkdir(parents=True)
    buf = tmp_path / "full.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buf)
    cache.write_bytes(buf.read_bytes()[:100_000])
    with pytest.raises(ConfigError, match=f"cached weights file {cache} does not load.*truncated"):
        ResNetBackbone(18, pretrained="imagenet", frozen_bn=False, frozen_stages=0)


def test_offline_imagenet_says_what_to_download(tmp_path, monkeypatch):
    """"model.backbone.pretrained is 'imagenet' but torchvision could not fetch <url>
    (URLError: ...). On a machine with internet, download that file and either copy it to
    <cache> or set model.backbone.pretrained to its path." """
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="could not fetch .*resnet18.*copy it to"):
        ResNetBackbone(18, pretrained="imagenet", frozen_bn=False, frozen_stages=0)


# -- divergence: NaN/inf stop at the stage at fault -----------------------------------


def test_diverged_weights_stop_training_naming_the_stage(tmp_path):
    """"classifier: training diverged: 1 weight tensors hold NaN or inf (e.g. weight); its last
    epoch's mean loss was 1. No checkpoint written; lower classifier.lr (or
    classifier.new_layer_lr_mult)" (before: exit 0 and a checkpoint of NaN weights)."""
    model = torch.nn.Linear(2, 1)

    def step(batch):
        with torch.no_grad():
            model.weight.fill_(float("inf"))  # what lr 1e6 does to finite losses, in one step
        return (model.bias * 0 + 1).sum(), {}

    with pytest.raises(TrainingError, match=r"classifier: training diverged.*lower classifier\.lr"):
        fit(params_owner=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
            dataset=[{"x": torch.zeros(2)}] * 4, step_fn=step, batch_size=2, epochs=1, seed=0,
            resume_path=tmp_path / "r.pt", checkpoint_every=100, config={}, desc="classifier")


class InfNet(torch.nn.Module):
    """A 1x1-conv CAM network whose weights are inf: every CAM is NaN after normalisation."""

    arch = SimpleNamespace(stage="classifier")

    def __init__(self, classes: int = 3, value: float = float("inf")) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 1, bias=False)
        torch.nn.init.constant_(self.conv.weight, value)

    def cam(self, x):
        return F.relu(self.conv(x))

    def forward(self, x):  # DeepLab's interface: logits at the input's size
        return self.conv(x)


def test_nan_cams_blame_the_stage_that_trained_the_network(tiny_voc, tmp_path):
    """"CAM (cam) of image 'a' holds NaN or inf: the classifier stage diverged
    (models/classifier.pt). Nothing of this output is kept; retrain the classifier stage with
    a lower classifier.lr ..." (before: NaN CAMs written, later stages blamed themselves)."""
    info = _prepare(tiny_voc)
    out = tmp_path / "cams.h5"
    with pytest.raises(TrainingError, match=r"of image 'a' holds NaN or inf: the classifier stage "
                                            r"diverged \(models/classifier\.pt\)"):
        make_cams(InfNet(), info, "train_aug", out, [1.0], False, torch.device("cpu"),
                  attrs={"checkpoint": "models/classifier.pt"})
    assert not out.exists()


def test_nan_predictions_blame_deeplab(tiny_voc, tmp_path):
    """"prediction of image 'a' holds NaN or inf: the deeplab stage diverged (the DeepLab
    checkpoint). ... lower segmentation.train.lr" """
    info = _prepare(tiny_voc)
    with pytest.raises(TrainingError, match=r"prediction of image 'a' .*segmentation\.train\.lr"):
        predict_split(InfNet(4, float("nan")), info, "train_aug", tmp_path / "raw", tmp_path / "crf",
                      [1.0], False, DEEPLAB_CRF, torch.device("cpu"))
    assert not (tmp_path / "raw").exists() and not (tmp_path / "crf").exists()


def test_nan_boundary_map_blames_irn():
    """"IRN boundary map holds NaN or inf: the irn stage diverged (the IRN checkpoint). ...
    lower irn.train.lr (or irn.train.displacement_lr_mult)" """
    from esol.irn.stage import pseudo_label

    class NanIRN(torch.nn.Module):
        def boundary_map(self, x, pad_to=None):
            return torch.full((x.shape[2] // 4, x.shape[3] // 4), float("nan"))

    with pytest.raises(TrainingError, match=r"IRN boundary map .*irn\.train\.lr"):
        pseudo_label(NanIRN(), np.zeros((16, 16, 3), np.uint8), np.zeros((1, 4, 4), np.float32),
                     np.array([1]), {"radius": 5, "beta": 10, "exp_times": 8, "bg_threshold": 0.25})


def test_shrinkage_divergence_names_shrinkage_parameters():
    """"shrinkage: offsets reached inf feature pixels (bound 4); the sampler has diverged.
    Lower shrinkage.lr, shrinkage.gamma or shrinkage.mu, or raise shrinkage.max_offset."
    (before: "Lower the stage's lr (or alpha)", alpha being an Expansion parameter)."""
    from esol.stages import _offset_monitor

    sampler = SimpleNamespace(last_offset=torch.full((1, 2, 2, 2), float("inf")))
    with pytest.raises(TrainingError) as err:
        _offset_monitor(sampler, 4, "shrinkage")()
    assert "shrinkage.gamma or shrinkage.mu" in str(err.value) and "alpha" not in str(err.value)


# -- interrupted runs with an upstream change in between ------------------------------

KILL_TRAINING = textwrap.dedent("""
    import os, signal, sys, torch
    from esol.engine import fit
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    data = [{"x": torch.randn(4, generator=torch.Generator().manual_seed(i)), "y": torch.tensor(1.0)}
            for i in range(8)]
    steps = []
    def step(batch):
        steps.append(1)
        if len(steps) == 6:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after a resume checkpoint at step 4
        return ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean(), {}
    fit(params_owner=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), dataset=data,
        step_fn=step, batch_size=2, epochs=3, seed=1, resume_path=sys.argv[1], checkpoint_every=2,
        config={"lr": 0.1}, desc="toy")
""")


def _toy_fit(resume: Path, config: dict) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    data = [{"x": torch.randn(4, generator=torch.Generator().manual_seed(i)), "y": torch.tensor(1.0)}
            for i in range(8)]
    fit(params_owner=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), dataset=data,
        step_fn=lambda b: (((model(b["x"]).squeeze(1) - b["y"]) ** 2).mean(), {}), batch_size=2,
        epochs=3, seed=1, resume_path=resume, checkpoint_every=2, config=config, desc="toy")
    return model.weight.detach().clone()


def test_kill_9_mid_training_then_config_change_starts_over(tmp_path, caplog):
    """Log: "toy: discarding <path>/r.pt, made from other inputs or params than this run"
    (worked before issue 13, with "ignoring ..., made with a different config"); the
    weights equal an uninterrupted run with the new config."""
    resume = tmp_path / "r.pt"
    run = subprocess.run([sys.executable, "-c", KILL_TRAINING, str(resume)], cwd=REPO)
    assert run.returncode == -signal.SIGKILL and resume.is_file()
    got = _toy_fit(resume, {"lr": 0.2})
    assert str(resume) in caplog.text  # the discarded partial is named
    torch.testing.assert_close(got, _toy_fit(tmp_path / "fresh.pt", {"lr": 0.2}), rtol=0, atol=0)


KILL_CAM = textwrap.dedent("""
    import os, signal, sys, torch
    import esol.cam as cam
    from esol.data.voc import prepare_dataset
    sys.path.insert(0, sys.argv[3])
    from test_faults import InfNet
    info = prepare_dataset(sys.argv[1], ["one", "two", "three"], ["train_aug"])
    calls, real = [], cam.multiscale_cam
    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after images a and b are stored
        return real(*args, **kwargs)
    cam.multiscale_cam = killing
    cam.make_cams(InfNet(3, 1.0), info, "train_aug", sys.argv[2], [1.0], False, torch.device("cpu"))
""")


def test_kill_9_mid_cam_extraction_then_new_checkpoint_recomputes_every_cam(tiny_voc, tmp_path,
                                                                            caplog):
    """Log: "CAM extraction: discarding <path>/cams.h5.partial, made from other inputs or params
    than this run" (before: "resuming CAM extraction: 2 of 3 images already done", and those
    2 CAMs came from the old network while the file named the new one)."""
    out = tmp_path / "cams.h5"
    run = subprocess.run([sys.executable, "-c", KILL_CAM, str(tiny_voc), str(out),
                          str(Path(__file__).parent)], cwd=REPO)
    assert run.returncode == -signal.SIGKILL
    with h5py.File(tmp_path / "cams.h5.partial", "r") as f:  # two images survived the kill
        assert sorted(k for k in f if f[k].attrs.get("done")) == ["a", "b"]
    info = _prepare(tiny_voc)
    new = InfNet(3, 1.0)
    with torch.no_grad():
        new.conv.weight[1:] = -1.0  # "retrained": class 1 responds, classes 2 and 3 do not
    make_cams(new, info, "train_aug", out, [1.0], False, torch.device("cpu"))
    assert "made from other inputs or params than this run" in caplog.text
    make_cams(new, info, "train_aug", tmp_path / "fresh.h5", [1.0], False, torch.device("cpu"))
    with CamStore(out) as got, CamStore(tmp_path / "fresh.h5") as fresh:
        for image_id in ("a", "b", "c"):
            np.testing.assert_array_equal(got[image_id].high_res, fresh[image_id].high_res)


def test_label_folder_from_other_inputs_is_discarded(tmp_path, caplog):
    """ir_labels after irn.labels.conf_fg changed: log "<path>/ir: discarding <path>/ir.partial,
    made from other inputs or params than this run", every image redone."""
    old = LabelDir(tmp_path / "ir", {"params": {"conf_fg": 0.30}})
    write_label(old.partial / "a.png", np.ones((2, 2), np.uint8))
    new = LabelDir(tmp_path / "ir", {"params": {"conf_fg": 0.40}})
    assert new.todo(["a", "b"]) == ["a", "b"]
    assert "made from other inputs or params than this run" in caplog.text
    same = LabelDir(tmp_path / "ir", {"params": {"conf_fg": 0.40}})
    write_label(same.partial / "a.png", np.ones((2, 2), np.uint8))
    assert LabelDir(tmp_path / "ir", {"params": {"conf_fg": 0.40}}).todo(["a", "b"]) == ["b"]


def test_prediction_partials_from_another_network_are_discarded(tiny_voc, tmp_path):
    """Log: "<path>/raw: discarding <path>/raw.partial, made from other inputs ..." """
    info = _prepare(tiny_voc)
    (tmp_path / "raw.partial").mkdir()
    (tmp_path / "crf.partial").mkdir()
    stale = np.full((12, 16), 3, np.uint8)
    for kind in ("raw", "crf"):
        write_label(tmp_path / f"{kind}.partial" / "a.png", stale)
    net = InfNet(4, 1.0)
    predict_split(net, info, "train_aug", tmp_path / "raw", tmp_path / "crf", [1.0], False,
                  DEEPLAB_CRF, torch.device("cpu"))
    predict_split(net, info, "train_aug", tmp_path / "raw2", tmp_path / "crf2", [1.0], False,
                  DEEPLAB_CRF, torch.device("cpu"))
    np.testing.assert_array_equal(read_label(tmp_path / "raw" / "a.png"),
                                  read_label(tmp_path / "raw2" / "a.png"))


# -- disk full ------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MB tmpfs (root with CAP_SYS_ADMIN only; skipped elsewhere, with the reason)."""
    mount = tmp_path / "full"
    mount.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {run.stderr.strip() or run.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: never left mounted


def test_disk_full_while_writing_cams(small_tmpfs, capfd):
    """"ERROR: no space left on device: <mount>/cams.h5.partial", exit status 1; no final file
    (before: a raw h5py traceback)."""
    rng = np.random.default_rng(0)

    def records():
        for i in range(100):  # ~0.5 MB of incompressible float16 each
            yield f"im{i}", CamRecord(keys=np.array([1]), cam=rng.random((1, 8, 8)),
                                      high_res=rng.random((1, 512, 512)))

    with pytest.raises(SystemExit) as exit_, rule_logging(None):
        write_cams(small_tmpfs / "cams.h5", records(), total=100, attrs={})
    assert exit_.value.code == 1
    assert f"no space left on device: {small_tmpfs / 'cams.h5.partial'}" in capfd.readouterr().err
    assert not (small_tmpfs / "cams.h5").exists()


def test_disk_full_while_writing_labels(small_tmpfs, capfd):
    """"ERROR: no space left on device: <mount>/labels/im<k>.png", exit 1; the PNGs left
    are whole (each was renamed into place complete)."""
    rng = np.random.default_rng(0)
    with pytest.raises(SystemExit), rule_logging(None):
        for i in range(100):
            write_label(small_tmpfs / "labels" / f"im{i}.png",
                        rng.integers(0, 20, (256, 256)).astype(np.uint8))
    assert "no space left on device: " + str(small_tmpfs / "labels" / "im") in capfd.readouterr().err
    for png in (small_tmpfs / "labels").glob("*"):
        assert not png.name.startswith(".") and read_label(png).shape == (256, 256)


def test_disk_full_while_writing_a_checkpoint(small_tmpfs, capfd):
    """"ERROR: no space left on device: <mount>/models/classifier.pt" (torch gives no name)."""
    with pytest.raises(SystemExit), rule_logging(None):
        save_checkpoint(small_tmpfs / "models" / "classifier.pt", {"w": torch.rand(1 << 19)})
    assert (f"no space left on device: {small_tmpfs / 'models' / 'classifier.pt'}"
            in capfd.readouterr().err)
    assert not list((small_tmpfs / "models").iterdir())


# -- files: permissions and reproducible bytes -----------------------------------------


def test_outputs_respect_the_umask(tmp_path):
    """Files written through atomic_path get 0666 & ~umask (0644 under umask 022), not 0600."""
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "m.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_identical_checkpoints_have_identical_bytes(tmp_path):
    """sha256sum of two saves of the same weights agree (torch.save wrote the random
    temporary file name into the archive)."""
    payload = {"model": torch.nn.Linear(3, 2).state_dict(), "config": {"seed": 0}}
    save_checkpoint(tmp_path / "a.pt", payload)
    save_checkpoint(tmp_path / "b.pt", payload)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.pt", "b.pt")]
    assert digest[0] == digest[1]


# -- the workflow reruns what a change affects ----------------------------------------


def _touched_workdir(work: Path, cfg: dict) -> Path:
    """A workdir whose every output exists and is recorded as made by this config, without
    running a job: outputs created empty, then `snakemake --touch --forceall`."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = snakemake(work, "--configfile", str(path), "--summary")
    assert summary.returncode == 0, summary.stderr[-2000:]
    for line in summary.stdout.splitlines()[1:]:
        out = work / line.split("\t")[0]
        if out.suffix:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()
        else:  # directory() outputs have no suffix here
            out.mkdir(parents=True, exist_ok=True)
    touch = snakemake(work, "--configfile", str(path), "--touch", "--forceall", "--cores", "1")
    assert touch.returncode == 0, touch.stderr[-2000:]
    return path


SEED_RULES = {"generate_synthetic", "train_classifier", "train_expansion", "train_shrinkage",
              "train_irn", "train_psa", "train_segmentation"}
AMP_RULES = {"train_classifier", "train_expansion", "train_shrinkage", "make_cam", "train_irn",
             "train_psa", "psa_masks",
             "pseudo_masks", "train_segmentation", "predict_segmentation"}


@pytest.mark.slow
def test_global_keys_rerun_what_they_affect(tmp_path):
    """`--config seed=7` (or amp=bf16, device=cuda) plans the rules whose results depend on it,
    with reason "Params have changed since last execution" (before: "Nothing to be done")."""
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    path = _touched_workdir(tmp_path, cfg)
    assert "Nothing to be done" in snakemake(tmp_path, "--configfile", str(path), "-n").stdout
    for change, rules in (("seed=7", SEED_RULES), ("amp=bf16", AMP_RULES),
                          ("device=cuda", AMP_RULES)):
        run = snakemake(tmp_path, "--configfile", str(path), "-n", "--rerun-triggers", "params",
                        "--config", change)
        assert run.returncode == 0, run.stderr[-2000:]
        assert rules <= set(planned_rules(run)), (change, planned_rules(run))


@pytest.mark.slow
def test_dataset_edited_after_preparation_reruns_prepare_data(tmp_path, tiny_voc, config):
    """A replaced mask (manifest param) or an edited split list (input) plans prepare_data again
    (before: "Nothing to be done")."""
    cfg = _voc_config(config, tiny_voc)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    target = "results/vocfix/data/dataset.json"
    run = snakemake(tmp_path, "--configfile", str(path), "--cores", "1", target)
    assert run.returncode == 0, run.stderr[-3000:]

    def plan() -> list[str]:
        dry = snakemake(tmp_path, "--configfile", str(path), "-n", target)
        assert dry.returncode == 0, dry.stderr[-2000:]
        return planned_rules(dry)

    assert plan() == []
    mask = tiny_voc / voc.AUG_MASK_DIR / "a.png"
    label = read_label(mask).copy()
    label[0, 0] = 2
    write_label(mask, label)
    assert plan() == ["prepare_data"]
    snakemake(tmp_path, "--configfile", str(path), "--cores", "1", target)
    assert plan() == []
    voc.write_split(tiny_voc, "train", ["b"])
    assert plan() == ["prepare_data"]


@pytest.mark.slow
def test_make_cam_memory_holds_the_largest_image(tmp_path, config):
    """make_cam's mem_mb comes from the largest image of the prepared split (dataset.json):
    a 3000x2250 image asks for more than its measured peak RSS (docs/reliability.md)."""
    big = np.zeros((2250, 3000), np.uint8)
    big[:100, :100] = 1
    root = write_voc_fixture(tmp_path / "voc", {"big": big, "small": big[:40, :50]},
                             {"train_aug": ["big", "small"], "train": ["small"]}, aug=False)
    cfg = _voc_config(config, root)
    cfg["model"]["backbone"]["depth"] = 18
    cfg["cam"] = {"scales": [1.0, 0.5, 1.5], "flip": True}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    assert snakemake(work, "--configfile", str(path), "--cores", "1",
                     "results/vocfix/data/dataset.json").returncode == 0
    dry = snakemake(work, "--configfile", str(path), "-n", "results/vocfix/cams/cam/train_aug.h5")
    line = next(l for l in dry.stdout.split("rule make_cam:")[1].splitlines() if "resources:" in l)
    mem = int(line.split("mem_mb=")[1].split(",")[0])
    assert mem >= MEASURED_PEAK_MB_3000x2250_R18
