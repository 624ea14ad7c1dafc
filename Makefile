# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Which torch build: with an NVIDIA GPU (nvidia-smi found), PyPI's default (CUDA) build. Without
# one, the CPU build from PyTorch's CPU wheel index when that index answers (else a stock Linux
# machine would download the multi-GB CUDA build from PyPI); when it does not answer, pip's
# configured indexes (where this project is developed, they hold the CPU wheel on local disk).
# Evaluated only when installing. Override with TORCH_INDEX=URL, or TORCH_INDEX= for pip's default.
CPU_TORCH_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(shell if command -v nvidia-smi >/dev/null 2>&1; then :; \
	elif $(PYTHON) -c "import urllib.request as u; u.urlopen('$(CPU_TORCH_INDEX)/', timeout=5)" \
	>/dev/null 2>&1; then echo $(CPU_TORCH_INDEX); fi)
PYTEST_ARGS ?=
# PYTEST_WORKERS=2 spreads files over two pytest-xdist workers (19 min instead of 28 on a 2-core
# machine), but there the Ray driver's Ctrl-C test sees the CLI exit 0 (an open problem, issue
# 19's note), so the default is one process. Files with the most slow tests go first (conftest).
PYTEST_WORKERS ?= 0
STAMP := $(VENV)/.installed
INTEGRATIONS := integrations/langchain-conan integrations/llama-index-embeddings-conan \
	integrations/llama-index-postprocessor-conan-rerank integrations/llama-index-retrievers-conan
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# The search page's browser test drives Debian's chromium through chromium-driver (Selenium).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser demo test lint typecheck bench clean

$(STAMP): pyproject.toml $(wildcard integrations/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "torch $(TORCH_VERSION) from: $(or $(TORCH_INDEX),pip's configured indexes)"
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev,demo]" $(foreach p,$(wildcard $(INTEGRATIONS)),-e $(p))
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	echo "Installing Debian's chromium and chromium-driver for the search page's browser test"; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	--no-install-recommends chromium chromium-driver; }

demo: $(STAMP)
	$(VENV)/bin/conan-rag demo

lint: $(STAMP)
	$(VENV)/bin/ruff check conan_rag tests benchmarks integrations
	$(VENV)/bin/ruff format --check conan_rag tests benchmarks integrations

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck browser
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
