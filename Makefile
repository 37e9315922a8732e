# Two commands do all the set-up on a fresh machine (Python >= 3.10, a C compiler with OpenMP):
#   make run    create .venv, install edgetune, probe this machine, tune the built-in GEMM
#   make test   create .venv, install edgetune with its test tools, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint clean

run: $(VENV)/.installed
	$(BIN)/edgetune probe
	$(BIN)/edgetune tune gemm --shape M=256,N=256,K=256

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/gemm_space.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check agent tests benchmarks

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info
