# Two commands do all set-up on a fresh machine with Python >= 3.10:
#   make demo   create .venv, install, run the main end-to-end job
#   make test   create .venv, install with dev, engines and trl extras, run the whole test suite (TRL tests required)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --constraint constraints.txt
SPIDER ?= $(or $(FINESTEP_SPIDER_DIR),../shared/data/spider)

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) --quiet -e .
	touch $@

# dev tools, the engines (DuckDB, PostgreSQL: tests/test_engines.py) and TRL (finestep.integrations.trl,
# tests/trl): their tests run in the main suite.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) --quiet -e '.[dev,engines,trl]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The demo: SQLWorld end to end on a CPU (world, tiny model, SFT, FineStep RL, before/after report and viewer),
# then the Spider checks that need the shared data: the sandbox scoring gold queries (EX 100.0 over 972).
demo: install
	$(BIN)/finestep demo --out runs/demo
	$(BIN)/finestep eval --benchmark spider --data $(SPIDER) --predictions $(SPIDER)/dev_gold.sql --out runs/demo/spider-eval.json

# FINESTEP_REQUIRE_TRL=1: a missing or broken TRL fails tests/trl instead of skipping it.
test: install-dev
	FINESTEP_REQUIRE_TRL=1 $(BIN)/python -m pytest -q
	$(MAKE) test-verl

bench: install
	$(BIN)/python benchmarks/eval_speed.py --spider-dir $(SPIDER)
	$(BIN)/python benchmarks/sandbox_limits.py --spider-dir $(SPIDER)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/credit_speed.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/credit_quality.py --tasks 256

clean:
	rm -rf $(VENV) .venv-verl runs .pytest_cache .hypothesis

# verl integration (finestep/integrations, tests/verl) in its own environment: verl 0.9.1 pins a transformers
# older than the main environment's. FINESTEP_REQUIRE_VERL=1 turns a missing verl into a failure, not a skip.
VENV_VERL := .venv-verl
.PHONY: test-verl

$(VENV_VERL)/.installed: pyproject.toml constraints-verl.txt
	$(PYTHON) -m venv $(VENV_VERL)
	$(VENV_VERL)/bin/pip install --quiet --upgrade pip
	$(VENV_VERL)/bin/pip install --quiet --constraint constraints-verl.txt -e '.[dev,verl]'
	touch $@

test-verl: $(VENV_VERL)/.installed
	FINESTEP_REQUIRE_VERL=1 $(VENV_VERL)/bin/python -m pytest -q tests/verl
