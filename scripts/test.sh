#!/usr/bin/env bash
# Set up everything the tests need (venv, Chromium for the browser test) and run all tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not browser" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_chromium.sh
bash scripts/setup.sh test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -ra --durations=15 "$@"
