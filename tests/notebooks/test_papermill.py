"""Every notebook runs clean headless through slimkit's runner (papermill underneath), writes
its metrics beside the output notebook, and those metrics say what the notebook claims.

nbval blanks measured decimals (they vary in the last digit across CPUs), so their values are
checked here, against thresholds with room for that variation."""
from __future__ import annotations

import base64
import json
import re

import pytest
from notebook_factory import repo_notebooks

from slimkit.runs.records import RunStore
from slimkit.runs.runner import run


def _flagship(m):
    teacher = m["teacher_accuracy"]
    assert m["int8_accuracy"] >= teacher - 0.01 and m["int8_size_ratio"] >= 3.9
    assert m["int4_accuracy"] >= teacher - 0.03 and m["int4_size_ratio"] >= 7
    assert m["structured_size_ratio"] >= 3.5 and m["structured_accuracy"] >= teacher - 0.03
    assert m["distilled_size_ratio"] >= 3.5 and m["distilled_accuracy"] > 0.8
    assert m["pruned_accuracy"] >= teacher - 0.01  # 90% zeros, global ranking, fine-tuned
    assert m["sparse_accuracy"] == m["pruned_accuracy"]  # sparse storage loses nothing
    assert m["sparse_size_bytes"] < m["pruned_size_bytes"] / 5  # 90% zeros, index bytes counted
    assert all(m[f"{k}_latency_ms"] > 0 for k in ("fp32", "int8", "int4", "pruned", "structured", "distilled"))


def _quantize(m):
    assert m["accuracy"] >= m["teacher_accuracy"] - 0.01 and m["simulated"] is False
    assert m["teacher_size_bytes"] / m["size_bytes"] >= 3.9
    assert m["per_channel_int2_accuracy"] > m["per_tensor_int2_accuracy"]  # per-channel scales matter most at few bits


def _prune(m):
    assert m["accuracy"] > 0.8
    assert m["magnitude_0.9_accuracy"] > m["random_0.9_accuracy"] + 0.2  # the random baseline is far worse
    assert {f"{s}_{sp}_accuracy" for s in ("magnitude", "fisher", "obd", "random") for sp in (0.5, 0.9)} <= set(m)


def _distill(m):
    assert m["params_ratio"] <= 0.26 and m["accuracy"] > 0.5 and "labels_only_accuracy" in m
    assert m["teacher_size_bytes"] / m["size_bytes"] >= 3.5


def _sparsify(m):
    assert m["roundtrip_identical"] is True and abs(m["sparsity"] - 0.5) < 0.01
    assert m["csr_0_size_bytes"] > m["teacher_size_bytes"]  # CSR at 0% sparsity: index bytes make it larger
    assert m["bitmask_0.99_size_bytes"] < m["bitmask_0.5_size_bytes"] < m["teacher_size_bytes"]
    # auto picks per layer by tensor bytes; the artifact's per-tensor header entries are not counted
    # in that choice, so it may exceed the best single format by a few bytes
    assert m["auto_0.9_size_bytes"] <= 1.001 * min(m["csr_0.9_size_bytes"], m["bitmask_0.9_size_bytes"])


def _minilm(m):
    assert m["mean_cosine"] >= 0.995 and m["top1_agreement"] >= 0.9 and m["size_ratio"] >= 3.9


def _which_method(m):
    assert m["pick"] and m["fits"] >= 1
    assert m["pick_accuracy"] >= m["teacher_accuracy"] - 0.01 - 1e-9  # the default budget: 1 point
    fitting = [t for t in m["tried"] if t["accuracy"] >= m["teacher_accuracy"] - 0.01 - 1e-9]
    assert m["pick_size_bytes"] == min(t["size_bytes"] for t in fitting)  # the default objective: size
    # autotune under the same budget: it ran trials, its pick keeps the budget when it says it met it
    assert m["autotune_trials"] >= 1, "the autotune cell's time budget ended before any trial"
    if m["autotune_budget_met"]:
        assert m["autotune_accuracy"] >= m["teacher_accuracy"] - 0.01 - 1e-9
    assert m["autotune_vs_grid_size"] == pytest.approx(m["grid_pick_size_bytes_entropy"] / m["autotune_size_bytes"])


MAX_OUTPUT_BYTES = 2 * 2**20  # output notebook and HTML report of a default run

CLAIMS = {"flagship": _flagship, "quantize": _quantize, "prune": _prune, "distill": _distill,
          "sparsify": _sparsify, "minilm": _minilm, "which_method": _which_method}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", repo_notebooks())
def test_notebook_runs_headless_and_its_metrics_hold(notebook, kernel, tmp_path):
    html = True  # as `slimkit run` does by default: output notebook + HTML report
    with RunStore(tmp_path / "records.sqlite") as store:
        record = run(notebook, out=tmp_path, name="run", store=store, kernel_name=kernel, html=html)
        assert record.status == "ok", record.error
        assert store.get(record.id).status == "ok"
    run_dir = tmp_path / "run"
    assert (run_dir / notebook.name).exists() and (run_dir / "params.yaml").exists()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics.pop("_run_id") == record.id  # save_metrics names the run it belongs to
    assert metrics == record.metrics and metrics, "the notebook wrote no metrics"
    if "seed" in metrics:
        assert metrics["seed"] == record.params["seed"] == record.seed
    CLAIMS.get(notebook.stem, lambda m: None)(metrics)
    # a default run's outputs stay small: figures as SVG, no plotly.js, no raw weights (issue 11)
    sizes = {p.name: p.stat().st_size for p in (run_dir / notebook.name, run_dir / f"{notebook.stem}.html")}
    assert all(size < MAX_OUTPUT_BYTES for size in sizes.values()), sizes
    page = (run_dir / f"{notebook.stem}.html").read_text()
    assert not re.findall(r'<script[^>]*src="https?://', page)  # nothing from a CDN (require.js, MathJax...)
    assert "slimkit run report" in page and "Plotly.newPlot" not in page  # the summary header; static plots
    if notebook.stem == "flagship":  # the Pareto plot, as an SVG image
        svgs = [base64.b64decode(m).decode() for m in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", page)]
        assert any("accuracy vs saved size" in s for s in svgs)
