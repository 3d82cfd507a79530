# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench bench-quick clean lock

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/syncd demo

test: $(BIN)/.installed
	PYTHON=$(BIN)/python ./scripts/setup-standins.sh
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check syncd warehouses standins tests scripts
	$(BIN)/ruff format --check syncd warehouses standins tests scripts
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench.py

bench-quick: $(BIN)/.installed
	$(BIN)/python scripts/bench.py --quick --out bench-results/bench-quick.json

# The Docker image's dependencies, pinned with hashes, from pyproject.toml's runtime extras.
lock: $(BIN)/.installed
	CUSTOM_COMPILE_COMMAND="make lock" PIP_CONFIG_FILE=/dev/null $(BIN)/pip-compile --quiet \
		--generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		--extra aws --extra gcp --extra postgres -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
