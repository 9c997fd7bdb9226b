# Two commands on a fresh machine: `make run` (the main job, offline) and `make test`.
# Both create the virtual environment first, once; it is rebuilt when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
Q ?= How does photosynthesis turn light into chemical energy?

.PHONY: setup run test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/fusiongraph ask "$(Q)"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(VENV)/bin/pytest -q -rs

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache
