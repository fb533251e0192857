# gatefusion: `make test` and `make demo` each set up everything they need on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
DEMO_WORLD ?= $(DATA)/synth-demo
TINY_WORLD ?= $(DATA)/tiny
DEMO_RUN ?= runs/demo
STAMP := $(VENV)/.setup-done

.PHONY: setup test test-slow demo world tiny-world clean

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

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

world: setup
	@if [ -f $(DEMO_WORLD)/v1.0-synth/sample.json ]; then echo "demo world exists: $(DEMO_WORLD)"; \
	else $(BIN)/python -m datasets.synthetic --out $(DEMO_WORLD) --preset demo --workers 2; fi

# The world configs/tiny.yaml names (make tiny-world && .venv/bin/python train.py fit --config configs/tiny.yaml)
tiny-world: setup
	@if [ -f $(TINY_WORLD)/v1.0-synth/sample.json ]; then echo "tiny world exists: $(TINY_WORLD)"; \
	else $(BIN)/python -m datasets.synthetic --out $(TINY_WORLD) --preset tiny --workers 2; fi

# Train (or resume an interrupted run; a finished run is kept: rm -r $(DEMO_RUN) to retrain), evaluate, draw.
demo: world
	$(BIN)/python train.py fit --config configs/demo.yaml --data.dataroot $(DEMO_WORLD) --ckpt_path last
	$(BIN)/python eval.py --ckpt $(DEMO_RUN)/checkpoints/last.ckpt --dataroot $(DEMO_WORLD) \
	  --version v1.0-synth --split synth_val --out $(DEMO_RUN)/eval
	$(BIN)/python bench/render_geometry.py --dataroot $(DEMO_WORLD) --out $(DEMO_RUN)/pictures

clean:
	rm -rf $(VENV) $(DATA) runs
