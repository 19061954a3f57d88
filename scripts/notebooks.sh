#!/usr/bin/env bash
# Remake notebooks/NAME.ipynb from notebooks/NAME.py and store its outputs (every notebook, or
# those named: `bash scripts/notebooks.sh prune quantize`). See notebooks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh test
export PYTHONUNBUFFERED=1
exec .venv/bin/python scripts/notebooks.py "$@"
