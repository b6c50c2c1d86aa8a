# Two entry points (README): `make repro` runs the default pipeline, `make test` the tests.
# Both create the virtual environment first (torch 2.14.1 comes from the local wheel cache); the
# pipeline needs the project's dependencies only, the tests add the `test` extra (linter, test
# references, the web page and its browser test): 11 s that `make repro` does not spend.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
WEB_STAMP := $(VENV)/.installed-web

.PHONY: repro test bench serve world-generator clean-venv

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(TEST_STAMP)

$(WEB_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[web]'
	touch $(WEB_STAMP)

# stage commands call `python`: the venv goes first on PATH
repro: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

test: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# the web page (`clcae serve`, docs/cli.md) needs the `web` extra (gradio), which `make repro` leaves out
serve: $(WEB_STAMP)
	$(VENV)/bin/clcae serve

bench: $(TEST_STAMP)
	$(PY) benchmarks/pipeline_time.py   # the pipelines' time, from the stages' own records
	$(PY) benchmarks/generator.py
	$(PY) benchmarks/generator_training.py
	$(PY) benchmarks/synthesize.py
	$(PY) benchmarks/procfaces.py
	$(PY) benchmarks/world_cnn.py
	$(PY) benchmarks/encoder.py
	$(PY) benchmarks/editing.py
	$(PY) benchmarks/shards.py

# Retrain the procfaces world's generator from scratch (seeded): trains the two teacher world
# CNNs (seeds 1 and 2, ~3 CPU minutes each), then GEN_MINUTES of regression with the teacher
# losses, then GAN_MINUTES of adversarial training (0: none). Needs data/world/world_cnn.pt
# (`dvc repro world`) for the quality figures. The defaults are the committed generator's recipe
# on the 2-core CPU (under 2 hours with the teachers); on a GPU try GEN_BATCH=256 (README).
# SHARP_TEACHERS=2: the perceptual term through two world CNNs trained without blur (README).
# GEN_AMP=bf16: bfloat16 autocast forward passes; GEN_COMPILE=1: torch.compile the renderer and
# the step's forward.
GEN_MINUTES ?= 110
SHARP_TEACHERS ?= 0
GAN_MINUTES ?= 0
GEN_BATCH ?= 32
GEN_AMP ?= bf16
GEN_COMPILE ?= 1
GAN_STEPS = $(if $(filter 0,$(GAN_MINUTES)),0,1000000)
world-generator: $(STAMP)
	$(PY) -m clcae.worlds.procfaces.train_generator --out assets/procfaces/generator.pt --steps 1000000 \
		--max-minutes $(GEN_MINUTES) --gan-steps $(GAN_STEPS) --gan-minutes $(GAN_MINUTES) \
		--batch-size $(GEN_BATCH) --sharp-teachers $(SHARP_TEACHERS) --amp $(GEN_AMP) --compile $(GEN_COMPILE) \
		--world-cnn data/world/world_cnn.pt

clean-venv:
	rm -rf $(VENV)
