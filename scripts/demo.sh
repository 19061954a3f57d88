#!/usr/bin/env bash
# The README's main command: set up .venv, then run the flagship notebook headless (papermill,
# through `slimkit run`). It leaves, in runs/flagship/: the executed notebook, an HTML report
# (plots included, offline), params.yaml, metrics.json, status.json and record.json, plus a row
# in the run records (runs/records.sqlite). Extra arguments go to `slimkit run`, e.g.
#   bash scripts/demo.sh -p distill_epochs 30 -p finetune_epochs 3
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh notebook
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT="${SLIMKIT_DEMO_OUT:-runs}"
start=$(date +%s)
status=0
.venv/bin/slimkit run notebooks/flagship.ipynb --out "$OUT" --name flagship "$@" || status=$?
run="$OUT/flagship"
echo
echo "flagship run: $(( $(date +%s) - start )) s (setup excluded)"
size() { [ -f "$1" ] && du -h "$1" | cut -f1 || echo "missing"; }
echo "  output notebook  $run/flagship.ipynb   ($(size "$run/flagship.ipynb"))"
echo "  HTML report      $run/flagship.html   ($(size "$run/flagship.html"); open in a browser; works offline)"
echo "  metrics          $run/metrics.json"
echo "  run record       $run/record.json, and a row in $OUT/records.sqlite:  .venv/bin/slimkit runs --out $OUT"
if [ "$status" -eq 0 ]; then
    .venv/bin/python - "$run/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
keys = [k[: -len("_accuracy")] for k in m if k.endswith("_accuracy") and k != "teacher_accuracy"]
print(f"\n  {'result':12s} {'accuracy':>9s} {'size':>9s} {'smaller':>8s} {'latency':>10s}")
for k in keys:
    print(f"  {k:12s} {m[k + '_accuracy']:9.1%} {m[k + '_size_bytes'] / 1024:7.1f}KiB {m[k + '_size_ratio']:7.1f}x "
          f"{m[k + '_latency_ms']:8.3f}ms")
PY
fi
exit "$status"
