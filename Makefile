# Two commands do everything: `make demo` and `make test`. Both install first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-output
PYTEST_ARGS ?=

.PHONY: install test test-fast demo lint clean

install:
	@bash tools/install.sh

test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	OMP_NUM_THREADS=1 $(PY) examples/demo.py --out $(DEMO_DIR)

lint:
	$(PY) -m ruff check ase_ldm tests examples benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
