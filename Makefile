# Two commands do all the set-up: `make serve` and `make test` (which runs `make check` first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve check test bench schema clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/rollcall demo
	$(BIN)/rollcall serve

# The gates: lint, formatting, types and the import-layering contract (pyproject.toml configures each).
check: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || apt-get install -y wrk || sudo apt-get install -y wrk
	$(BIN)/python -m bench.run $(if $(FULL),--full)

schema: $(VENV)/.installed
	$(BIN)/python -m gql.schema > schema.graphql

clean:
	rm -rf $(VENV)
