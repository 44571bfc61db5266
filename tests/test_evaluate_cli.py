"""python -m esol.evaluate: any folder of label PNGs against a dataset's masks."""

import json

import numpy as np
import pytest

from esol.data import voc
from esol.evaluate import main


def test_cli_scores_a_label_folder_by_hand(tiny_voc, tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    a = voc.read_label(tiny_voc / voc.MASK_DIR / "a.png")
    b = voc.read_label(tiny_voc / voc.MASK_DIR / "b.png")
    voc.write_label(preds / "a.png", np.where(a == 255, 0, a))  # perfect (255 is ignored)
    voc.write_label(preds / "b.png", np.zeros_like(b))          # all background
    out = tmp_path / "r.json"
    main([str(preds), "--voc-root", str(tiny_voc), "--split", "train",
          "--classes", "one", "two", "three", "--out", str(out)])
    r = json.loads(out.read_text())
    # Image b: classes 2 (5x4 px) and 3 (5x5 px) predicted as background. Background IoU over
    # both images: TP = bg pixels, FP = 45 (b's objects), so IoU_bg = TP / (TP + 45).
    conf = np.array(r["confusion"])
    tp_bg = conf[0, 0]
    assert r["per_class_iou"]["one"] == 1.0
    assert r["per_class_iou"]["two"] == 0.0 and r["per_class_iou"]["three"] == 0.0
    assert r["per_class_iou"]["background"] == pytest.approx(tp_bg / (tp_bg + 45))
    assert r["miou"] == pytest.approx((1 + tp_bg / (tp_bg + 45)) / 4)
    assert "ignored" in r["ground_truth"]["ground_truth_255"]
    assert f"mIoU {100 * r['miou']:.2f}" in capsys.readouterr().out


def test_cli_names_the_first_missing_prediction(tiny_voc, tmp_path):
    (tmp_path / "preds").mkdir()
    with pytest.raises(SystemExit, match=r"2 of 2 predictions missing, first .*a\.png"):
        main([str(tmp_path / "preds"), "--voc-root", str(tiny_voc), "--split", "train",
              "--classes", "one", "two", "three"])
