# Two entry points for a fresh machine (README): `make demo` and `make test`. Each
# creates the virtual environment in .venv when it is missing, then runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: setup demo demo-extras sweep test lint bench report clean

setup: $(STAMP)

# Reinstalled when pyproject.toml changes. torch/torchvision are pinned there: a loose
# spec would pull a multi-GB CUDA stack of a newer release.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is needed (found $$($(PYTHON) --version)); set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# opencv-contrib-python-headless replaced opencv-python-headless (cv2.saliency); both
	@# install cv2/, so an older venv drops the plain one first.
	$(BIN)/python -m pip uninstall --quiet -y opencv-python-headless 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

# What the demo leaves out (config/sweep_demo.yaml), after or instead of `make demo`:
# Table 6's eight rows, AdvCAM and Table 5, Figure 6's sweeps over alpha and mu, and
# Table 4's saliency row, with the report (docs/ablations.md).
demo-extras: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/sweep_demo.yaml

# Only the ablations' seeds: Table 6's eight rows and the Figure 6 panels.
sweep: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/synthetic/seeds/table6.md \
		results/synthetic/sweeps/alpha.png results/synthetic/sweeps/mu.png \
		--configfile config/config.yaml config/sweep_demo.yaml

# The workflow's format (snakefmt) and Snakemake's linter, then the suite.
lint: $(STAMP)
	$(BIN)/snakefmt --check workflow/
	$(BIN)/snakemake --lint text

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --out benchmarks/out/throughput.json

report: $(STAMP)
	$(BIN)/snakemake --report report.html

clean:
	rm -rf results .snakemake report.html

# Full-scale data steps measured on this machine, and GPU hours estimated from counted
# FLOPs for the paper's configs (README, "Full-scale datasets"). A few minutes on a CPU.
.PHONY: bench-fullscale
bench-fullscale: $(STAMP)
	$(BIN)/python benchmarks/conversion.py --images 1000 --out benchmarks/out/conversion.json
	$(BIN)/python benchmarks/gpu_estimate.py --config config/voc12.yaml --size 375 500 --classes 20 \
		--out benchmarks/out/gpu_estimate_voc12.json
	$(BIN)/python benchmarks/gpu_estimate.py --config config/coco14.yaml --size 480 640 --classes 80 \
		--out benchmarks/out/gpu_estimate_coco14.json

# Stage timings on a GPU (README, "How long each stage takes"); needs CUDA.
.PHONY: bench-gpu
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu_measure.py --config config/voc12.yaml --size 375 500 --classes 20 \
		--classes-per-image 2 --reps 5 --images 5 --out benchmarks/out/gpu_measure_voc12.json
	$(BIN)/python benchmarks/gpu_measure.py --config config/coco14.yaml --size 480 640 --classes 80 \
		--classes-per-image 3 --reps 5 --images 5 --out benchmarks/out/gpu_measure_coco14.json

# Projected wall time on 1, 4 and 16 GPUs from the recorded H100 rates (docs/cluster.md,
# "Scaling out"; after `make bench-gpu`, the fresh measurements), and DDP vs one process
# on this machine's CPU. About a minute.
.PHONY: bench-scaleout
bench-scaleout: $(STAMP)
	$(BIN)/python benchmarks/scaleout.py $(if $(wildcard benchmarks/out/gpu_measure_coco14.json),--measured \
		voc12=benchmarks/out/gpu_measure_voc12.json coco14=benchmarks/out/gpu_measure_coco14.json) \
		--out benchmarks/out/scaleout.json
	$(BIN)/python benchmarks/ddp_step.py --out benchmarks/out/ddp_step.json
