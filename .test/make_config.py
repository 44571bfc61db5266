"""Write .test/config/config.yaml: config/config.yaml at a size that runs in minutes.

The test config is generated, never edited by hand, so it cannot drift from the
default config's keys (tests/test_deploy.py checks that it is up to date):

    python .test/make_config.py
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# The workflow's test config (Snakemake catalog convention): the embedded synthetic
# data at a size that runs end to end in a few minutes on a CPU:
#   snakemake --cores 2 --directory .test
# Generated from config/config.yaml by .test/make_config.py; do not edit by hand.
"""


def test_config() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["device"], cfg["amp"] = "cpu", "fp32"
    cfg["dataset"]["name"] = "tiny"
    synth = cfg["dataset"]["synthetic"]
    counts = {"train_aug": 48, "train": 16, "val": 8, "test": 0}
    counts.update({k: 8 for k in synth["counts"] if k not in counts})  # e.g. a tuning split
    synth.update(num_classes=2, image_size=[96, 104], counts=counts, body_signal=0.5,
                 clutter=[1, 3])
    cfg["classifier"].update(epochs=4, batch_size=8, resize_long=[88, 112], crop=96)
    for stage in ("expansion", "shrinkage"):
        cfg[stage].update(epochs=1, batch_size=8, lr=0.001)
    cfg["cam"]["scales"] = [1.0, 2.0]
    cfg["figures"]["fig5_images"] = 3
    cfg["refine"]["grid_images"] = 2
    # The whole DAG, both refiners (the demo leaves PSA to make demo-extras for time).
    cfg["refine"]["refiners"] = ["irn", "psa"]
    cfg["irn"]["train"].update(crop=64, batch_size=8, epochs=1)
    cfg["psa"]["train"].update(crop=64, batch_size=8, epochs=1)
    cfg["segmentation"]["train"].update(epochs=2, batch_size=8, crop=64)
    cfg["segmentation"]["predict"]["scales"] = [0.75, 1.0]
    cfg["report"]["fig4_images"] = 3
    return cfg


def render() -> str:
    return HEADER + yaml.safe_dump(test_config(), sort_keys=False, default_flow_style=None,
                                   width=100)


if __name__ == "__main__":
    (ROOT / ".test" / "config" / "config.yaml").write_text(render())
