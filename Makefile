# gatefusion: `make test` and `make demo` each set up everything they need on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
DEMO_WORLD ?= $(DATA)/synth-demo
TINY_WORLD ?= $(DATA)/tiny
DEMO_RUN ?= runs/demo-gated
STAMP := $(VENV)/.setup-done

.PHONY: setup test test-slow demo world tiny-world clean check-hf-datasets

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# open3d imports only with the system library libusb-1.0 present
	@if ! ldconfig -p | grep -q libusb-1.0.so.0; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) || echo "warning: could not install libusb-1.0-0; open3d will not import"; \
	  else echo "warning: libusb-1.0-0 is missing (apt-get install libusb-1.0-0); open3d will not import"; fi; \
	fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first, pinned, so that nothing pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# The slow set includes opening the HTML report in headless Chromium (Debian's chromium, installed here when root).
test-slow: setup
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "warning: chromium is missing (apt-get install chromium): the report's browser test will fail"; fi; fi
	$(BIN)/python -m pytest -q -m slow

world: setup
	@if [ -f $(DEMO_WORLD)/v1.0-synth/sample.json ]; then echo "demo world exists: $(DEMO_WORLD)"; \
	else $(BIN)/python -m datasets.synthetic --out $(DEMO_WORLD) --preset demo --workers 2; fi

# The world configs/tiny.yaml names (make tiny-world && .venv/bin/python train.py fit --config configs/tiny.yaml)
tiny-world: setup
	@if [ -f $(TINY_WORLD)/v1.0-synth/sample.json ]; then echo "tiny world exists: $(TINY_WORLD)"; \
	else $(BIN)/python -m datasets.synthetic --out $(TINY_WORLD) --preset tiny --workers 2; fi

# Train the gated model, configs/demo.yaml with the configs/gate.yaml and configs/short.yaml (3 of the 8 epochs, to fit
# 20 minutes on 2 cores) overlays (or resume an interrupted run; a
# finished run is kept: rm -r $(DEMO_RUN) to retrain), evaluate it with the gate at DEMO_BUDGET and with every sensor
# at its top mode (the full static configuration), print the two side by side, draw.
DEMO_BUDGET ?= 0.5
demo: world
	$(BIN)/python train.py fit --config configs/demo.yaml --config configs/gate.yaml --config configs/short.yaml \
	  --data.dataroot $(DEMO_WORLD) \
	  --trainer.default_root_dir $(DEMO_RUN) --ckpt_path last
	$(BIN)/python eval.py --ckpt $(DEMO_RUN)/checkpoints/last.ckpt --dataroot $(DEMO_WORLD) \
	  --version v1.0-synth --split synth_val --out $(DEMO_RUN)/eval-full --sensors camera=high,lidar=fine,radar=on
	$(BIN)/python eval.py --ckpt $(DEMO_RUN)/checkpoints/last.ckpt --dataroot $(DEMO_WORLD) \
	  --version v1.0-synth --split synth_val --out $(DEMO_RUN)/eval --budget $(DEMO_BUDGET)
	$(BIN)/python eval.py --compare $(DEMO_RUN)/eval-full $(DEMO_RUN)/eval
	$(BIN)/python bench/render_geometry.py --dataroot $(DEMO_WORLD) --out $(DEMO_RUN)/pictures
	$(BIN)/python visualize.py --run $(DEMO_RUN)/eval --out $(DEMO_RUN)/report

# In a virtual environment that already has Hugging Face `datasets`: pip install -e . leaves it importable, and the
# tests and a tiny train + eval still use this repository's datasets/ (README, "Names"). nuscenes-devkit 1.2.0 needs
# numpy<2, and pyarrow>=20 and pandas 3 need numpy 2, so an environment that has both holds those below them.
HF_VENV ?= .venv-hf
check-hf-datasets:
	rm -rf $(HF_VENV) && $(PY) -m venv $(HF_VENV)
	$(HF_VENV)/bin/python -m pip install -q torch==2.13.0 "numpy<2" "pyarrow<20" "pandas<3" datasets
	$(HF_VENV)/bin/python -m pip install -q -e '.[test]'
	cd / && $(CURDIR)/$(HF_VENV)/bin/python -c "import datasets, sys; assert hasattr(datasets, 'load_dataset'), \
	  datasets.__file__; print('outside the repository: Hugging Face datasets', datasets.__version__)"
	$(HF_VENV)/bin/python -m pytest -q -x
	rm -rf /tmp/gatefusion-hf && $(HF_VENV)/bin/python -m datasets.synthetic --out /tmp/gatefusion-hf/world --preset tiny
	$(HF_VENV)/bin/python train.py fit --config configs/tiny.yaml --data.dataroot /tmp/gatefusion-hf/world \
	  --trainer.max_steps 2 --trainer.default_root_dir /tmp/gatefusion-hf/run
	$(HF_VENV)/bin/python eval.py --ckpt /tmp/gatefusion-hf/run/checkpoints/last.ckpt \
	  --dataroot /tmp/gatefusion-hf/world --out /tmp/gatefusion-hf/eval --limit 4
	cd / && $(CURDIR)/$(HF_VENV)/bin/python -c "import datasets; datasets.Dataset.from_dict({'a': [1, 2]}); \
	  print('Hugging Face datasets still imports and works')"

clean:
	rm -rf $(VENV) $(HF_VENV) $(DATA) runs
