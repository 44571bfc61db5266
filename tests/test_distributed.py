"""Data-parallel training (esol/distributed.py + engine.fit) on 2 CPU processes (gloo)."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from esol import distributed
from esol.engine import EpochSampler, fit
from esol.utils import TrainingError


class Toy(Dataset):
    """32 samples fixed by their index: what fit()'s reproducibility relies on."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(6, generator=g)
        return {"x": x, "y": (x[:2].sum() > 0).float()[None]}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    # No BatchNorm: with it each worker normalises its own slice (the stated caveat).
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def train(out: str, epochs: int = 3, fail_at: int | None = None) -> dict:
    """One fit() run (in each worker under launch()); returns weights and history."""
    distributed.init_from_env("cpu")
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    calls = {"n": 0}

    def step(batch):
        calls["n"] += 1
        if fail_at is not None and calls["n"] > fail_at:
            raise TrainingError("killed")  # a kill after the checkpoint at fail_at steps
        logits = net(batch["x"])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["y"]), {}

    history = fit(params_owner=net, optimizer=opt, dataset=Toy(), step_fn=step, batch_size=8,
                  epochs=epochs, seed=3, resume_path=Path(out) / "resume.pt", checkpoint_every=2,
                  config={"toy": 1})
    return {"state": {k: v.clone() for k, v in net.state_dict().items()}, "history": history}


def test_rank_slices_partition_every_global_batch():
    base = EpochSampler(20, seed=1, epoch=0)
    parts = [list(distributed.RankSlice(base, 8, r, 2)) for r in range(2)]
    order = list(base)
    for b in range(2):  # 20 samples: two full batches of 8, the rest dropped as drop_last
        assert parts[0][4 * b:4 * b + 4] + parts[1][4 * b:4 * b + 4] == order[8 * b:8 * b + 8]
    assert len(parts[0]) == len(parts[1]) == 8
    with pytest.raises(ValueError, match="does not split over 3"):
        distributed.RankSlice(base, 8, 0, 3)


@pytest.mark.slow
def test_two_gloo_processes_follow_the_one_process_curve(tmp_path):
    one = train(str(tmp_path / "one"))
    (tmp_path / "two").mkdir()
    two = distributed.launch(train, 2, str(tmp_path / "two"))
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for k in one["state"]:
        torch.testing.assert_close(one["state"][k], two["state"][k], rtol=1e-5, atol=1e-6)
    assert one["history"][-1]["loss"] < one["history"][0]["loss"]


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(tmp_path):
    for d in ("full", "killed"):
        (tmp_path / d).mkdir()
    full = distributed.launch(train, 2, str(tmp_path / "full"))
    with pytest.raises(Exception):
        distributed.launch(train, 2, str(tmp_path / "killed"), fail_at=6)
    assert (tmp_path / "killed" / "resume.pt").is_file()
    resumed = distributed.launch(train, 2, str(tmp_path / "killed"))
    for k in full["state"]:
        torch.testing.assert_close(full["state"][k], resumed["state"][k], rtol=1e-6, atol=1e-7)
