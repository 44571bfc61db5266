"""The shared training loop: poly lr, exact resume after an interruption, clear failures."""

import pytest
import torch
from torch.utils.data import Dataset

from esol.engine import fit, poly_lr
from esol.utils import ConfigError, TrainingError


class Toy(Dataset):
    def __init__(self, n=20):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + 0.01 * self.epoch, "y": self.y[i]}


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(batch):
        loss = ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        return loss, {"half": 0.5 * loss.item()}

    return model, opt, step


def _run(tmp_path, step_fn=None, config=None):
    model, opt, step = _setup()
    hist = fit(params_owner=model, optimizer=opt, dataset=Toy(), step_fn=step_fn or step,
               batch_size=4, epochs=3, seed=1, resume_path=tmp_path / "r.pt", checkpoint_every=2,
               config=config or {"a": 1}, desc="toy")
    return model, hist


def test_poly_lr_by_hand():
    assert poly_lr(0.1, 0, 10) == 0.1
    assert poly_lr(0.1, 5, 10, power=1.0) == pytest.approx(0.05)
    assert poly_lr(0.1, 5, 10) == pytest.approx(0.1 * 0.5 ** 0.9)


def test_history_has_one_record_per_epoch(tmp_path):
    _, hist = _run(tmp_path)
    assert [h["epoch"] for h in hist] == [1, 2, 3] and [h["step"] for h in hist] == [5, 10, 15]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[0]["half"] == pytest.approx(0.5 * hist[0]["loss"])


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    full, full_hist = _run(tmp_path / "a")
    model, opt, step = _setup()
    calls = {"n": 0}

    def dies_at_step_8(batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return step(batch)

    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        fit(params_owner=model, optimizer=opt, dataset=Toy(), step_fn=dies_at_step_8, batch_size=4,
            epochs=3, seed=1, resume_path=tmp_path / "b" / "r.pt", checkpoint_every=2,
            config={"a": 1}, desc="toy")
    assert (tmp_path / "b" / "r.pt").is_file()  # saved at step 6
    resumed, hist = _run(tmp_path / "b")
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # bit for bit on the CPU
    assert hist == full_hist


def test_resume_from_other_config_is_ignored(tmp_path, caplog):
    _run(tmp_path)  # leaves no resume file at the end? it does: saved mid-run
    model, hist = _run(tmp_path, config={"a": 2})
    assert "made from other inputs or params than this run" in caplog.text
    assert len(hist) == 3


def test_non_finite_loss_stops_with_the_step(tmp_path):
    def nan_step(batch):
        return torch.tensor(float("nan"), requires_grad=True), {}

    with pytest.raises(TrainingError, match="toy: loss became nan at step 0"):
        _run(tmp_path, step_fn=nan_step)


def test_batch_larger_than_dataset(tmp_path):
    model, opt, step = _setup()
    with pytest.raises(ConfigError, match="batch_size 64 exceeds the 20 training images"):
        fit(params_owner=model, optimizer=opt, dataset=Toy(), step_fn=step, batch_size=64,
            epochs=1, seed=0, resume_path=tmp_path / "r.pt", checkpoint_every=1, config={})


def test_file_digest_follows_content_not_name(tmp_path):
    from esol.engine import file_digest

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights v1")
    b.write_bytes(b"weights v1")
    first = file_digest(a)
    assert first == file_digest(b)
    a.write_bytes(b"weights v2")  # retrained in place: a stale resume must not match
    assert file_digest(a) != first


def test_resumable_compares_the_stored_fingerprint(tmp_path, caplog):
    from esol.engine import fingerprint, resumable

    section = {"lr": 0.1, "dataset": "abc"}
    assert resumable(fingerprint({"dataset": "abc", "lr": 0.1}), section, "toy", tmp_path)  # key order
    assert not resumable(fingerprint({"lr": 0.2, "dataset": "abc"}), section, "toy", tmp_path)
    assert "made from other inputs or params" in caplog.text
    assert not resumable(None, section, "toy", tmp_path)
    assert "records no inputs" in caplog.text
