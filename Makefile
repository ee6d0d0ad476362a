# openwit — `make demo` and `make test` both work as the first command on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.openwit-installed

.PHONY: install wordnet test demo compare bench up down status lint clean

install: $(STAMP) wordnet

# Reinstalls only when the project metadata or the pins change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "openwit: installing pinned dependencies into $(VENV) (first run takes a few minutes)"
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,hf]'
	@# Chinese-CLIP's package: its BERT-Chinese vocabulary (our zh tokenizer) and model code (the interop
	@# tests). Its requirements (torchvision, timm, lmdb==1.3.0 from source) are not needed for that: --no-deps.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt cn_clip
	@# clip_benchmark: the tests merge our evaluation JSON with its own `build` step; the rest of it
	@# (datasets, captioning metrics) is not needed for that: --no-deps.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt clip-benchmark
	@# img2dataset requires the py3.6 `dataclasses` backport, whose dataclasses.py shadows the
	@# stdlib module when Prefect's server puts site-packages first on sys.path: remove it.
	$(PY) -m pip uninstall -y -q dataclasses 2>/dev/null || true
	@touch $(STAMP)

wordnet:
	@if [ ! -d /usr/share/wordnet ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "openwit: installing Debian's wordnet-base (WordNet 3.0)"; \
	    (apt-get install -y -qq wordnet-base >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wordnet-base)) ; \
	  else \
	    echo "openwit: WordNet 3.0 is missing. Install it with: sudo apt-get install wordnet-base"; \
	    echo "         (or point vocabulary.wordnet.path in your spec at an NLTK wordnet folder)"; \
	  fi; \
	fi

# Two pytest-xdist workers, one test file each at a time (a file's module fixtures build once): on two
# cores they took the suite from ~15 to ~11 minutes; three were no faster (by then it is CPU-bound).
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -x -n $(TEST_WORKERS) --dist loadfile tests

demo: install
	$(PY) -m flows.demo

SEEDS ?= 1
STEPS ?=
compare: install
	$(PY) -m flows.demo --compare --seeds $(SEEDS) $(if $(STEPS),--steps $(STEPS))

bench: install
	$(PY) bench/report.py

up: install
	$(VENV)/bin/openwit up
down:
	@test -x $(VENV)/bin/openwit && $(VENV)/bin/openwit down || true
status:
	$(VENV)/bin/openwit status

lint: install
	$(VENV)/bin/ruff check flows tasks training tests bench

clean:
	rm -rf .openwit
