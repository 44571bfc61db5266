"""Config validation: unknown keys and wrong types fail before any job runs, naming the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import REPO, SCHEMA, load_config


def test_default_config_is_valid():
    cfg = load_config()
    assert cfg["dataset"]["source"] == "synthetic" and "esol" in cfg["methods"]


@pytest.mark.parametrize("mutate,key", [
    (lambda c: c["classifier"].update(learning_rate=0.1), "learning_rate"),
    (lambda c: c["classifier"].update(epochs="five"), "epochs"),
    (lambda c: c["expansion"].update(alpah=0.01), "alpah"),
    (lambda c: c["shrinkage"].update(area_classes="some"), "area_classes"),
    (lambda c: c["methods"]["esol"].update(clip=True), "clip"),
    (lambda c: c["model"]["backbone"].update(depth=19), "depth"),
    (lambda c: c.update(devcie="cpu"), "devcie"),
])
def test_bad_config_names_the_key(mutate, key):
    cfg = copy.deepcopy(load_config())
    mutate(cfg)
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(SCHEMA))
    assert key in str(err.value)


@pytest.mark.slow
def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    cfg = load_config()
    cfg["classifier"]["epochs"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile"),
                          "-d", str(tmp_path), "--configfile", str(path), "--cores", "1"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "epochs" in run.stdout + run.stderr and "-1 is less than the minimum" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()
