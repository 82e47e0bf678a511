# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before the project so that pip takes this exact build (a CPU wheel where one is
# available) instead of resolving the newest torch, which may be a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
OUT ?= out/quickstart
PYTEST_ARGS ?= -n 2

.PHONY: venv demo test lint vectors bench clean

$(BIN)/vdm: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"  # dev = every extra (torch, ort) + the test tools
	touch $(BIN)/vdm

venv: $(BIN)/vdm

demo: venv
	$(BIN)/vdm quickstart --out $(OUT)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

vectors: venv
	$(BIN)/python spec/generate_vectors.py

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out build *.egg-info
