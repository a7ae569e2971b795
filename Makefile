# RSP segmentation for QGIS. `make setup` once, then `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Headless Qt for pytest-qgis; a quiet runtime dir for Qt.
export QT_QPA_PLATFORM ?= offscreen
export XDG_RUNTIME_DIR ?= /tmp/runtime-$(shell id -u)
export HF_HUB_OFFLINE := 1
PYTEST := $(PY) -m pytest

.PHONY: setup test test-gui lint format demo demo-model start-model bench package reliability clean help

help:
	@echo "make setup      install Debian packages, .venv and pinned Python packages (idempotent)"
	@echo "make test       headless test suite (pytest + pytest-qgis, offscreen)"
	@echo "make test-gui   tests that drive the real qgis application under Xvfb"
	@echo "make reliability long reliability tests (50 plugin runs in one QGIS session)"
	@echo "make lint       ruff + mypy"
	@echo "make demo       segment the bundled sample raster with the demo model"
	@echo "make bench      CPU performance figures, versus the seed code first (hours)"
	@echo "make package    build the installable QGIS plugin zip into dist/"
	@echo "make start-model train the general start model of training finetune (needs ../shared/data, ~10 min)"

setup:
	@bash scripts/setup.sh

test:
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	$(PYTEST) -m "not gui and not slow and not gpu" tests

test-gui:
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	env -u QT_QPA_PLATFORM xvfb-run -a -s "-screen 0 1600x1000x24" $(PYTEST) -m "gui" tests

# Long reliability checks (50 consecutive plugin runs in one QGIS session, memory asserted); CI runs them.
reliability:
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	$(PYTEST) -m "slow and not gpu" tests

lint:
	$(VENV)/bin/ruff check engine training qgis_plugin tests bench
	$(VENV)/bin/ruff format --check engine training qgis_plugin tests bench
	$(VENV)/bin/mypy engine training

format:
	$(VENV)/bin/ruff format engine training qgis_plugin tests bench
	$(VENV)/bin/ruff check --fix engine training qgis_plugin tests bench

package:
	$(PY) scripts/package_plugin.py --out dist

clean:
	rm -rf dist build .pytest_cache .mypy_cache .ruff_cache .qgis-settings

# First the engine against the seed's own slide_inference (../shared/seed_bench; one skip line without it).
bench:
	$(PY) -m bench.seed_compare --out bench_output
	$(PY) -m bench --out bench_output
	$(PY) -m bench.finetune --out bench_output

# The bundled demo model: prepare the split, train from scratch (seeded), evaluate on the held-out quarter, export.
DEMO_RUN := build/demo_run
DEMO_DESCRIPTION := DEMONSTRATION model, not an RSP model: a small UperNet (lite_resnet, 1.9 M parameters) trained from scratch by this project (make demo-model, 400 iterations on CPU) on the left 3/4 of one 512x512 RGB crop of ISPRS Potsdam tile 2_10 (5 cm). Metrics are measured on the held-out right 1/4 of that crop (512x128 px). It shows the tool working; use the RSP models for real mapping.
demo-model:
	$(PY) scripts/prepare_demo_data.py --out build/demo_data/potsdam
	$(PY) -m training train demo_lite_potsdam --work-dir $(DEMO_RUN)
	$(PY) -m training test demo_lite_potsdam $(DEMO_RUN)/latest.pth --eval mIoU mFscore --split val --out-dir $(DEMO_RUN)/eval
	$(PY) -m training export $(DEMO_RUN)/latest.pth --config demo_lite_potsdam --metrics $(DEMO_RUN)/eval/metrics.json \
		--description "$(DEMO_DESCRIPTION)" --output resources/models/demo_lite_potsdam.rspmodel

demo:
	$(PY) scripts/demo.py --out demo_output

# The general start model of `training finetune` (no --init/--backbone/--arch): the demo network fine-tuned on every
# labelled real scene of ../shared/data that may ship (bench/start_model.py says which and why), seeded, 2 threads.
start-model:
	$(PY) -m bench.start_model --output resources/models/general_lite.rspmodel --threads 2
