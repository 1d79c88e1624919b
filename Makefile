# Everything a fresh clone needs: `make demo` runs the installation, `make test` runs the tests.
# Both set themselves up first (a virtual environment in .venv with the PyPI packages, and the
# system packages the tests use when run as root).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system demo test lint bench look footage soak flood clean

setup: $(STAMP) system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

system:
	@bash scripts/install-system-deps.sh

demo: setup
	$(PY) installation.py

test: setup lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) installation.py bench

footage: $(STAMP)
	PYTHON=$(PY) bash scripts/fetch-footage.sh footage
	$(PY) scripts/make_look_footage.py footage

look: setup footage
	$(PY) installation.py bench --look --strips out/look

soak: setup
	$(PY) scripts/soak.py

flood: setup
	$(PY) scripts/osc_flood.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
