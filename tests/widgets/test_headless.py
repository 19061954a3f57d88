"""Without a widget front end (papermill, nbconvert) the same calls leave static outputs:
the results table and plotly figures with plotly.js inlined, nothing from a CDN. Also the
``%slimkit`` magic."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slimkit.errors import InvalidParameterError

ROOT = Path(__file__).resolve().parents[2]
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def _no_remote_scripts(html: str) -> None:
    assert not re.search(r"<script[^>]+src=", html), "a figure loads a script from elsewhere"
    assert "cdn.plot.ly/plotly" not in html


def test_headless_run_displays_table_and_static_figures(shell, make_panel):
    from IPython.utils.capture import capture_output

    panel = make_panel(live=False)
    assert type(panel.plots.pareto).__name__ == "Figure"  # no widget state in the notebook
    panel.set("distill", epochs=1, fraction=0.1)
    with capture_output() as cap:
        run = panel.run()  # headless: waits by default, then shows what it did
    assert run is panel.results[-1] and run.method == "distill"

    bundles = [o.data for o in cap.outputs]
    assert "slimkit-results" in bundles[0]["text/html"] and len(panel.rows()) == 2
    figures = [b for b in bundles if PLOTLY in b]
    titles = [b[PLOTLY]["layout"]["title"]["text"] for b in figures]
    assert [t.split(":")[0] for t in titles] == ["Training curves", "Weights of features.0 (after", "Pareto"]
    pareto = figures[2][PLOTLY]["data"][0]
    assert pareto["y"] == [r.accuracy for r in panel.results]
    assert "application/vnd.jupyter.widget-view+json" not in set().union(*bundles)
    for b in figures:  # plotly JSON for JupyterLab, an SVG for every other viewer: no plotly.js at all
        assert "text/html" not in b and b["image/svg+xml"].lstrip().startswith(("<?xml", "<svg"))
        assert len(b["image/svg+xml"]) < 200_000


def test_static_panel_display_shows_settings_and_problems(shell, make_panel):
    from IPython.utils.capture import capture_output

    panel = make_panel(live=False)
    panel.set("quantize", granularity="per_group", group_size=5)
    from IPython.display import display

    with capture_output() as cap:
        display(panel)
    html = cap.outputs[0].data["text/html"]
    assert "static: no widget front end" in html and "group_size=5" in html


def test_magic_opens_a_panel(shell, cnn, digits):
    from slimkit.widgets import Panel

    shell.run_line_magic("load_ext", "slimkit.widgets")
    shell.user_ns.update(net=cnn, digits_data=digits)
    panel = shell.run_line_magic("slimkit", "net digits_data")
    assert isinstance(panel, Panel) and panel.base is cnn and panel.test is digits.test
    assert shell.user_ns["_slimkit_panel"] is panel
    with pytest.raises(InvalidParameterError, match="no_such_model"):
        shell.run_line_magic("slimkit", "no_such_model digits_data")
    with pytest.raises(InvalidParameterError, match="%slimkit"):
        shell.run_line_magic("slimkit", "just_one")


def test_live_detection(monkeypatch):
    from slimkit.widgets import frontend_is_live

    monkeypatch.setenv("SLIMKIT_PANEL", "live")
    assert frontend_is_live()
    monkeypatch.setenv("SLIMKIT_PANEL", "static")
    assert not frontend_is_live()
    monkeypatch.delenv("SLIMKIT_PANEL")
    assert not frontend_is_live()  # no kernel here: nothing could render a widget


@pytest.mark.slow
def test_tutorial_notebook_headless(tmp_path):
    """The tutorial through papermill, as a batch run: static figures and the table end up in
    the output notebook, metrics.json next to it."""
    papermill = pytest.importorskip("papermill")
    import nbformat

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "control_panel.ipynb"), str(out), cwd=str(tmp_path),
                               parameters={"bits": 3, "sweep_bits": "8, 2", "epochs": 0},
                               kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    data = [o.get("data", {}) for o in outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    titles = [d[PLOTLY]["layout"]["title"]["text"] for d in data if PLOTLY in d]
    # epochs=0: no fine-tuning, so no training curves (test_headless_run... covers those)
    for expected in ("Accuracy vs setting", "Per-layer sensitivity", "Weights of", "Pareto"):
        assert any(t.startswith(expected) for t in titles), (expected, titles)
    tables = [d["text/html"] for d in data if "slimkit-results" in d.get("text/html", "")]
    assert tables and tables[-1].count("<tr>") == 1 + 5  # header + original, quantize, prune, 2-bit, 8-bit
    assert not any("plotly.js v" in d.get("text/html", "")[:5000] for d in data)  # SVG + JSON, no plotly.js
    assert all("image/svg+xml" in d for d in data if PLOTLY in d)
    assert out.stat().st_size < 2_000_000
    assert not any("widget-view" in k for d in data for k in d)
    for d in data:
        _no_remote_scripts(d.get("text/html", ""))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["runs"] == 4 and set(metrics["sweep"]) == {"8", "2"}
    assert metrics["first_size_bytes"] < metrics["original_size_bytes"] / 4
