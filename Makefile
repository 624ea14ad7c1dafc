# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Where no NVIDIA GPU is present, install the CPU build of torch (found on local disk here).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed
INTEGRATIONS := integrations/langchain-conan integrations/llama-index-embeddings-conan
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint typecheck bench clean

$(STAMP): pyproject.toml $(wildcard integrations/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,demo]" $(foreach p,$(wildcard $(INTEGRATIONS)),-e $(p))
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m conan_rag.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check conan_rag tests benchmarks integrations
	$(VENV)/bin/ruff format --check conan_rag tests benchmarks integrations

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
