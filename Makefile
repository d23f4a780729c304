# kinetix: the two set-up commands are `make demo` and `make test` (see README.md).
# Each creates the virtual environment .venv it needs (pinned by requirements.lock).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= results/condensation

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

## Run the main job: the KO condensation experiment (paper Fig. 2).
demo: $(STAMP)
	$(BIN)/python -m train.condensation --out $(OUT)

## Run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

lint: $(STAMP)
	$(BIN)/ruff check kinetix train tests benchmarks
	$(BIN)/ruff format --check kinetix train tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ko_update
	$(BIN)/python -m benchmarks.kinetic_block
	$(BIN)/python -m benchmarks.train_step

clean:
	rm -rf $(VENV)
