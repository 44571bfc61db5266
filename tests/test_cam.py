"""CAM normalisation, the multi-scale + flip merge, and the HDF5 store (method.md s.3)."""

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from esol.engine import fingerprint
from esol.cam import (CamRecord, CamStore, cam_inputs, done_ids, make_cams, multiscale_cam, normalize_cam,
                      strided_size, strided_up_size, write_cams)
from esol.data import transforms as T
from esol.data.voc import prepare_dataset


class KnownNet(torch.nn.Module):
    """``cam = ReLU(conv(x))`` at stride 1 with fixed weights: every output is computable."""

    def __init__(self, kernel: tuple[int, int] = (1, 1), classes: int = 2) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, kernel, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(-1, 1, self.conv.weight.numel())
                                   .reshape(self.conv.weight.shape))

    def cam(self, x):
        return F.relu(self.conv(x))


def test_strided_sizes_as_irn():
    assert strided_size((375, 500), 4) == (94, 125)
    assert strided_up_size((375, 500), 16) == (384, 512)


def test_constant_image_sums_scales_and_flips():
    net = KnownNet()
    img = np.full((20, 28, 3), 200, np.uint8)
    strided, high = multiscale_cam(net, img, scales=[1.0, 0.5], flip=True)
    one = net.cam(torch.from_numpy(T.to_chw(T.normalize(img)))[None])[0, :, 0, 0]
    assert strided.shape == (2, 5, 7) and high.shape == (2, 20, 28)
    # Two scales x (image + mirror) of a constant map: 4 times the single value.
    torch.testing.assert_close(high, (4 * one)[:, None, None].expand_as(high))
    torch.testing.assert_close(strided, (4 * one)[:, None, None].expand_as(strided))


def test_flip_merge_is_cam_plus_unflipped_mirror_cam():
    net = KnownNet(kernel=(1, 3))  # asymmetric in x: the mirror pass differs
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)  # a multiple of 16: no resize
    _, high = multiscale_cam(net, img, scales=[1.0], flip=True)
    x = torch.from_numpy(T.to_chw(T.normalize(img)))[None]
    a = net.cam(x)[0]
    b = net.cam(x.flip(-1))[0].flip(-1)
    expected = F.interpolate((a + b)[None], (32, 48), mode="bilinear", align_corners=False)[0]
    # The maps are (32, 46) wide without padding; the merge resizes them to (32, 48).
    torch.testing.assert_close(high, expected)
    assert not torch.allclose(a, b)


class Stride16Net(torch.nn.Module):
    """A fixed map per class at stride 16 (``ceil(side / 16)`` cells), whatever the image."""

    def cam(self, x):
        h, w = (x.shape[2] + 15) // 16, (x.shape[3] + 15) // 16
        g = torch.Generator().manual_seed(0)
        return torch.rand(1, 2, h, w, generator=g).expand(x.shape[0], -1, -1, -1)


def test_high_res_cam_pads_to_stride_16_then_crops_as_irn():
    # IRN make_cam: resize to strided_up_size(size, 16), then keep [:H, :W]. For a 40x24
    # image the 3x2 map goes to 48x32 and is cropped; resizing straight to 40x24 would
    # stretch it (each cell then spans 13.3x12 pixels instead of 16x16).
    net = Stride16Net()
    img = np.zeros((40, 24, 3), np.uint8)
    strided, high = multiscale_cam(net, img, scales=[1.0], flip=False)
    cam = net.cam(torch.zeros(1, 3, 40, 24))
    expected = F.interpolate(cam, (48, 32), mode="bilinear", align_corners=False)[0, :, :40, :24]
    stretched = F.interpolate(cam, (40, 24), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(high, expected)
    assert not torch.allclose(high, stretched, atol=1e-3)
    # The stride-4 map is resized to ceil(size / 4) directly, as IRN's strided_size.
    torch.testing.assert_close(strided, F.interpolate(cam, (10, 6), mode="bilinear",
                                                      align_corners=False)[0])


def test_normalize_cam_selects_keys_and_divides_by_max():
    cam = torch.tensor([[[1.0, 2.0]], [[4.0, 0.0]], [[0.5, 0.25]]])
    out = normalize_cam(cam, np.array([3, 1]))  # keys are mask values, 1-based
    torch.testing.assert_close(out, torch.tensor([[[1.0, 0.5]], [[0.5, 1.0]]]) / (1 + 2e-5), rtol=1e-4, atol=1e-5)
    assert out.max() < 1.0  # the +1e-5 of IRN keeps maps strictly below 1


def test_hdf5_round_trip_and_atomic_rename(tmp_path):
    out = tmp_path / "cams.h5"
    rec = CamRecord(keys=np.array([2, 5]), cam=np.random.rand(2, 3, 4).astype(np.float32),
                    high_res=np.random.rand(2, 10, 13).astype(np.float32))
    empty = CamRecord(keys=np.zeros(0, np.int64), cam=np.zeros((0, 3, 4), np.float32),
                      high_res=np.zeros((0, 10, 13), np.float32))
    write_cams(out, iter([("a", rec), ("b", empty)]), total=2, attrs={"scales": [1.0, 2.0]})
    assert out.is_file() and not (tmp_path / "cams.h5.partial").exists()
    with CamStore(out) as store:
        assert store.ids() == ["a", "b"] and list(store.attrs["scales"]) == [1.0, 2.0]
        got = store["a"]
        assert got.keys.tolist() == [2, 5]
        np.testing.assert_allclose(got.high_res, rec.high_res, atol=1e-3)  # float16
        assert got.cam.dtype == np.float16 and store["b"].high_res.shape == (0, 10, 13)
        with pytest.raises(Exception, match="no entry for image 'zz'"):
            store["zz"]


def test_partial_file_keeps_complete_groups_only(tmp_path):
    partial = tmp_path / "x.h5.partial"
    with h5py.File(partial, "w") as f:
        f.create_group("done").attrs["done"] = True
        f.create_group("half")  # interrupted mid-write
    assert done_ids(partial) == {"done"}
    partial.write_bytes(b"not hdf5")
    assert done_ids(partial) == set() and not partial.exists()


def test_make_cams_shapes_keys_and_resume(tiny_voc, tmp_path):
    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug"])
    net = KnownNet(classes=3)
    out = tmp_path / "train_aug.h5"
    # Pretend an earlier run from the same inputs wrote image "a" with marker values
    # before being killed.
    with h5py.File(tmp_path / "train_aug.h5.partial", "w") as f:
        f.attrs["inputs"] = fingerprint(cam_inputs(net, info, "train_aug", [1.0, 0.5], True, None))
        g = f.create_group("a")
        g.create_dataset("keys", data=np.array([1], np.int16))
        g.create_dataset("cam", data=np.full((1, 3, 4), 7, np.float16))
        g.create_dataset("high_res", data=np.full((1, 12, 16), 7, np.float16))
        g.attrs["done"] = True
    make_cams(net, info, "train_aug", out, scales=[1.0, 0.5], flip=True, device="cpu")
    with CamStore(out) as store:
        assert sorted(store.ids()) == ["a", "b", "c"]
        assert store["a"].cam.max() == 7  # kept, not recomputed
        b = store["b"]
        assert b.keys.tolist() == [2, 3] and b.cam.shape == (2, 3, 4) and b.high_res.shape == (2, 12, 16)
        assert 0.99 <= b.high_res.max() <= 1.0  # 1 - 1e-5 rounds to 1 in float16
        assert store["c"].keys.shape == (0,)
