# The two commands a new user needs (each installs what it needs into .venv first):
#   make run    all five models briefly on the shipped ml-100k, each in its protocol; one table, plots, Comet
#   make test   run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run run-mvae test test-slow test-all test-recbole bench report install

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build first, so the resolver keeps it (plain `torch` pulls GBs of CUDA packages)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python benchmarks/harness.py run benchmarks/studies/quickstart.yaml --out runs/quickstart $(ARGS)

run-mvae: $(STAMP)
	$(BIN)/python -m recbole_ext --model=MVAE --dataset=ml-100k \
		--config_files="configs/protocols/ml100k_default.yaml configs/protocols/ml100k_mvae.yaml" --comet=True $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

# RecBole 1.2.1's own test suite with `import recbole_ext` (tests/recbole_suite/run.py; ARGS="--parts data ...")
RECBOLE_TESTS ?= ../shared/recbole-1.2.1-tests
$(VENV)/.recbole-tests: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,recbole-tests]"
	touch $@

test-recbole: $(VENV)/.recbole-tests
	$(BIN)/python tests/recbole_suite/run.py --suite $(RECBOLE_TESTS) $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/harness.py run benchmarks/studies/ml100k_spine.yaml $(ARGS)

report: $(STAMP)
	$(BIN)/python benchmarks/harness.py report
