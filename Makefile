# The two commands: `make study` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
DATASET ?= mnist
# The PyTorch build to install first; the default is the CPU build where a
# local wheel provides it. Set TORCH_SPEC="torch" for the newest release.
TORCH_SPEC ?= torch==2.13.0
STUDY_ARGS ?=

BIN := $(VENV)/bin

.PHONY: study quick test lint install clean

$(BIN)/cnnlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/cnnlab

study: $(BIN)/cnnlab
	$(BIN)/cnnlab study $(DATASET) $(STUDY_ARGS)

quick: $(BIN)/cnnlab
	$(BIN)/cnnlab study $(DATASET) --quick $(STUDY_ARGS)

test: $(BIN)/cnnlab
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

lint: $(BIN)/cnnlab
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
