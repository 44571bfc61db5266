"""The workflow as the Snakemake catalog uses it: deployed by snakedeploy into a clean
folder and run there as a module, and run on its test config with --directory .test."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_snakedeploy_module_runs_in_a_clean_folder(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "deployed"
    # A clone: what a user deploys is the committed workflow, never a working tree's venv.
    subprocess.run(["git", "clone", "-q", str(REPO), str(src)], check=True)
    dest.mkdir()
    run = subprocess.run([BIN / "snakedeploy", "deploy-workflow", str(src), str(dest),
                          "--branch", "main"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert "module " in text and "use rule * from" in text
    # snakedeploy's Local provider writes the module path relative to the source (for
    # GitHub it writes github(...)); point it at the clone.
    snakefile.write_text(text.replace('"workflow/Snakefile"', f'"{src}/workflow/Snakefile"'))
    cfg = yaml.safe_load((dest / "config" / "config.yaml").read_text())
    assert cfg == yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["dataset"]["synthetic"]["counts"].update(train_aug=6, train=3, val=2, tune=2)
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = subprocess.run([BIN / "snakemake", "--cores", "1", "results/synthetic/data/dataset.json"],
                         cwd=dest, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (dest / "results" / "synthetic" / "data" / "dataset.json").is_file()
    plan = subprocess.run([BIN / "snakemake", "-n", "--quiet", "rules"], cwd=dest,
                          capture_output=True, text=True)
    assert plan.returncode == 0 and "train_shrinkage" in plan.stdout


def test_test_config_plans_the_whole_dag(tmp_path):
    work = tmp_path / ".test"
    shutil.copytree(REPO / ".test", work)
    run = subprocess.run([BIN / "snakemake", "-s", REPO / "workflow" / "Snakefile", "--directory",
                          work, "-n", "--quiet", "rules"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for rule in ("train_classifier", "train_expansion", "train_shrinkage", "train_irn",
                 "train_segmentation", "report"):
        assert rule in run.stdout


def test_test_config_is_generated_from_the_default():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_config", REPO / ".test" / "make_config.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (REPO / ".test" / "config" / "config.yaml").read_text() == mod.render(), \
        "run: python .test/make_config.py"
