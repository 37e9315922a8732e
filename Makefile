# Two commands do all the set-up on a fresh machine (Python >= 3.10, a C compiler with OpenMP, cmake):
#   make run    create .venv, install edgetune, probe this machine, tune the built-in GEMM
#   make test   create .venv, install edgetune with its test tools, run the tests
#   make deb    build dist/edgetune_<version>_<arch>.deb (packaging/build-deb.sh; Debian 12's python3)
# llama-cpp-python compiles llama.cpp from source on install: 5-7 minutes on two cores the
# first time; pip's wheel cache makes later installs quick.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The multimodal (llava) part of llama.cpp is not needed and doubles the build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: run test bench train eval lint clean deb

run: $(VENV)/.installed
	$(BIN)/edgetune probe
	$(BIN)/edgetune tune gemm --shape M=256,N=256,K=256

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/gemm_space.py

train: $(VENV)/.installed-dev
	$(BIN)/edgetune train

eval: $(VENV)/.installed-dev
	$(BIN)/edgetune eval --jobs 2

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check agent tests benchmarks harness

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

deb:
	packaging/build-deb.sh

clean:
	rm -rf $(VENV) build *.egg-info
