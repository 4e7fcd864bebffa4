#!/bin/sh
# Installs what tests/test_page.py needs: Debian chromium + chromium-driver (apt) and selenium (pip).
# Called from .ci/run; does nothing when everything is already there. PYTHON picks the interpreter.
set -eu
PYTHON="${PYTHON:-python3}"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver
fi
if ! "$PYTHON" -c "import selenium" >/dev/null 2>&1; then
    "$PYTHON" -m pip install "selenium>=4.15"
fi
chromium --version
chromedriver --version
