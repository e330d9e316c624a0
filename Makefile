# Kaiketsu: the two commands of the README, plus the pieces they are built from.
#   make run    prepare and start the whole demo (portal, worker, Redis, winsim fleet)
#   make test   ruff, the migrations check and the whole test suite
# Both create .venv in the checkout and install pyproject.toml's dependency lists into it, again
# only when pyproject.toml changes (the stamp file), so a fresh clone needs nothing by hand.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.kaiketsu-installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint format clean

help:
	@echo "make run      start the demo on http://127.0.0.1:8000/ (PORT=... to change); Ctrl-C stops it"
	@echo "make test     ruff, makemigrations --check and the whole suite (PYTEST_ARGS=... for pytest)"
	@echo "make install  create .venv and install the dependencies"
	@echo "make lint     ruff check and ruff format --check"
	@echo "make format   ruff format and ruff check --fix"
	@echo "make clean    remove .venv and var/ (the SQLite database and private Redis data)"

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Kaiketsu needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	@# A failed venv (no ensurepip: Debian's python3-venv) must not stay behind as "done".
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "python3 -m venv failed: on Debian/Ubuntu install python3-venv" >&2; exit 1; }

$(STAMP): pyproject.toml scripts/deps.py | $(VPY)
	@echo "Installing pyproject.toml's dependencies into $(VENV) (about a minute on a fresh clone)"
	$(VPY) scripts/deps.py --extra winsim --extra dev > $(VENV)/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements.txt
	@touch $@

install: $(STAMP)

run: install
	bash scripts/ensure-prereqs.sh gettext
	$(VPY) scripts/run.py

lint: install
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

test: install
	bash scripts/ensure-prereqs.sh gettext chromium node
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VPY) scripts/test.py $(PYTEST_ARGS)

format: install
	$(VPY) -m ruff format .
	$(VPY) -m ruff check --fix .

clean:
	rm -rf $(VENV) var
