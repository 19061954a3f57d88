#!/usr/bin/env bash
# Create .venv with slimkit and everything its tests need (or the extras named by $1), and
# register the project's Jupyter kernel `slimkit` inside the venv. Safe to re-run.
# torch is pinned to the CPU wheel 2.13.0; pip's find-links folder (if configured) is handed
# to uv so it finds that wheel instead of pulling CUDA builds from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-test}"
PY="${PYTHON:-python3}"
if ! command -v uv >/dev/null 2>&1; then
    "$PY" -m pip install -q uv || true
fi
links=$("$PY" -m pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'$/\1/p" | head -1)
if [ -n "$links" ] && [ -z "${UV_FIND_LINKS:-}" ]; then export UV_FIND_LINKS="$links"; fi
if command -v uv >/dev/null 2>&1; then
    [ -x .venv/bin/python ] || uv venv -q .venv --python "$PY"
    VIRTUAL_ENV="$PWD/.venv" uv pip install -q -e ".[$EXTRAS]" "torch==2.13.0"
else
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/python -m pip install -q -e ".[$EXTRAS]" "torch==2.13.0"
fi
# the kernel notebooks and papermill runs use: this venv's Python, installed with --sys-prefix so
# a user-level kernelspec of the same name cannot shadow it
if .venv/bin/python -c "import ipykernel" 2>/dev/null; then
    .venv/bin/python -m slimkit.runs.cli kernel >/dev/null
fi
