"""CAM store <-> IRN's per-image .npy format (esol/cam_io.py), checked against IRN's layout."""

import json

import numpy as np
import pytest
import torch

from esol.cam import CamStore, make_cams
from esol.cam_io import export_irn_npy, import_irn_npy, main, read_irn_npy
from esol.data.voc import prepare_dataset
from esol.evaluate import evaluate_seeds
from esol.utils import DatasetError
from test_cam import KnownNet


@pytest.fixture
def store(tiny_voc, tmp_path):
    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug"])
    path = tmp_path / "train_aug.h5"
    make_cams(KnownNet(classes=3), info, "train_aug", path, scales=[1.0], flip=False, device="cpu")
    return info, path


def test_export_writes_irns_dict(store, tmp_path):
    info, path = store
    assert export_irn_npy(path, tmp_path / "npy") == 3
    d = np.load(tmp_path / "npy" / "b.npy", allow_pickle=True).item()
    # IRN: keys = torch.nonzero(label)[:, 0] (0-based, no background), cam a torch tensor
    # at stride 4, high_res a numpy array at image size.
    assert isinstance(d["keys"], torch.Tensor) and d["keys"].tolist() == [1, 2]
    assert isinstance(d["cam"], torch.Tensor) and tuple(d["cam"].shape) == (2, 3, 4)
    assert isinstance(d["high_res"], np.ndarray) and d["high_res"].shape == (2, 12, 16)
    # What IRN's eval_cam.py does with it: pad a background row, keys + 1 index the mask.
    keys = np.pad(d["keys"].numpy() + 1, (1, 0), mode="constant")
    assert keys.tolist() == [0, 2, 3]


def test_round_trip_gives_the_same_maps_and_seed_miou(store, tmp_path):
    info, path = store
    export_irn_npy(path, tmp_path / "npy")
    back = tmp_path / "imported.h5"
    import_irn_npy(tmp_path / "npy", back, info.ids("train_aug"), num_classes=3,
                   labels=info.labels["train_aug"])
    with CamStore(path) as a, CamStore(back) as b:
        for i in a.ids():
            np.testing.assert_array_equal(a[i].keys, b[i].keys)
            np.testing.assert_array_equal(a[i].cam, b[i].cam)
            np.testing.assert_array_equal(a[i].high_res, b[i].high_res)
    t = np.arange(0.05, 0.95, 0.05)
    assert evaluate_seeds(path, info, "train_aug", t)[0]["miou"] == \
        evaluate_seeds(back, info, "train_aug", t)[0]["miou"]


def test_import_names_the_first_missing_file_and_wrong_keys(store, tmp_path):
    info, path = store
    export_irn_npy(path, tmp_path / "npy")
    (tmp_path / "npy" / "c.npy").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 images .*c\.npy"):
        import_irn_npy(tmp_path / "npy", tmp_path / "x.h5", ["a", "b", "c"], num_classes=3)
    wrong = {"a": [1], "b": [2]}  # b's file holds classes 2 and 3
    with pytest.raises(DatasetError, match=r"b\.npy: keys \[1, 2\] differ"):
        import_irn_npy(tmp_path / "npy", tmp_path / "x.h5", ["a", "b"], num_classes=3, labels=wrong)
    assert not (tmp_path / "x.h5").exists()


def test_read_refuses_mismatched_shapes(tmp_path):
    p = tmp_path / "bad.npy"
    np.save(p, {"keys": torch.tensor([0]), "cam": torch.zeros(1, 2, 2),
                "high_res": np.zeros((1, 12, 16), np.float32)}, allow_pickle=True)
    with pytest.raises(DatasetError, match="stride 4"):
        read_irn_npy(p)


def test_command_line_round_trip(store, tmp_path):
    info, path = store
    main(["export", str(path), str(tmp_path / "npy")])
    main(["import", str(tmp_path / "npy"), str(tmp_path / "back.h5"), "--classes", "3"])
    with CamStore(tmp_path / "back.h5") as b:
        assert sorted(b.ids()) == ["a", "b", "c"]
        assert "external" in json.dumps(dict(b.attrs), default=str)
