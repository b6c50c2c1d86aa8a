# Two entry points (README): `make repro` runs the default pipeline, `make test` the tests.
# Both create the virtual environment first (torch 2.14.1 comes from the local wheel cache).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: repro test bench world-generator clean-venv

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

# stage commands call `python`: the venv goes first on PATH
repro: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/generator.py

clean-venv:
	rm -rf $(VENV)
