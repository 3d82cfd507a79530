# The two commands of the README: `make demo` and `make test` (and `make test-live` for real
# clouds). Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-live lint bench bench-quick clean lock

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

# Against real clouds: the live tests and `syncd check --round-trip`, for each of Redshift + S3
# (SYNCD_TEST_REDSHIFT_{HOST,PORT,DB,USER,PASSWORD,IAM_ROLE,BUCKET,REGION}) and BigQuery + GCS
# (SYNCD_TEST_BIGQUERY_{PROJECT,DATASET,BUCKET}) whose variables are all set; the others are
# skipped, each skip saying what to set.
test-live: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m live -rs

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
		--extra aws --extra gcp --extra postgres --extra snowflake -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
