"""The panel's plots in a real browser (JupyterLab + Debian's Chromium through Playwright).

A small notebook opens a panel and fills every plot (training curves, two sweeps of different
settings, sensitivity, histogram, Pareto). Then, in a 1280-px window: the plots are drawn (SVG
points and bars counted), fill the output area without sideways scrolling, survive a page
reload with the same data, redraw on a new run, and follow JupyterLab's dark theme.
Screenshots land in test-artifacts/plots-*.png (``SLIMKIT_SHOT_SUFFIX`` tags them, e.g.
``-before`` when run on older code).

The JupyterLab server fixture is test_browser.py's (temporary settings, nothing downloaded).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("slimkit_test_browser", Path(__file__).with_name("test_browser.py"))
_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_browser)
lab = _browser.lab  # the fixture, registered here by name
ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, KERNEL_IDLE = (_browser.ARTIFACTS, _browser.CHROMIUM, _browser.CHROMIUM_ARGS,
                                                   _browser.KERNEL_IDLE)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1800)]

SUFFIX = os.environ.get("SLIMKIT_SHOT_SUFFIX", "")
WIDTH = 1280

SETUP = """\
from slimkit.data import load_digits
from slimkit.widgets import Panel
from slimkit.zoo import pretrained_digits

panel = Panel(pretrained_digits("cnn", seed=0), load_digits(seed=0))
panel"""

RUNS = """\
panel.set("distill", epochs=2, fraction=0.1).run(wait=True)
panel.set("quantize", quantize_sweep="8, 4").sweep(wait=True)
panel.set("prune", prune_sweep="0.5, 0.9", finetune_epochs=0).sweep(wait=True)
panel.set("quantize", bits=4).sensitivity(wait=True)
panel.set("quantize", bits=3)
open("done.txt", "w").write(str(len(panel.results)))"""

# every plotly plot of the panel: title, traces' data, SVG marks drawn, size and colours
PLOTS = """() => [...document.querySelectorAll('.slimkit-panel .js-plotly-plot')].map(el => {
  const fl = el._fullLayout || {}, box = el.getBoundingClientRect();
  return {title: (el.querySelector('.gtitle') || {}).textContent || '',
          traces: (el.data || []).map(t => ({name: t.name || '', x: Array.from(t.x || []), y: Array.from(t.y || []),
                                              xaxis: t.xaxis || 'x'})),
          points: el.querySelectorAll('.scatterlayer .point').length,
          bars: el.querySelectorAll('.barlayer .point').length,
          width: box.width, font: (fl.font || {}).color, paper: fl.paper_bgcolor};
})"""

# widths that overflow: the notebook's scroller, and any output area wider than its box
OVERFLOW = """() => {
  const out = [];
  for (const el of document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook, .jp-OutputArea-output')) {
    if (el.scrollWidth > el.clientWidth + 1) out.push(el.className + ' ' + el.scrollWidth + '>' + el.clientWidth);
  }
  return out;
}"""


def _notebook(path: Path) -> None:
    meta = json.loads(_browser.NOTEBOOK.read_text())["metadata"]
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate((SETUP, RUNS))]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": meta["kernelspec"]},
                                "nbformat": 4, "nbformat_minor": 5}))


def _by_title(plots: list[dict], prefix: str) -> dict:
    found = [p for p in plots if p["title"].startswith(prefix)]
    assert found, f"no plot titled {prefix!r} (titles: {[p['title'] for p in plots]})"
    return found[0]


def _data(plots: list[dict]) -> dict:
    """What a person reads off the plots: each one's traces (names and numbers)."""
    return {p["title"].split(":")[0]: [(t["name"], t["x"], t["y"]) for t in p["traces"]] for p in plots}


def _wait_plots(page, count: int, timeout: int = 60_000) -> list[dict]:
    page.wait_for_function(f"""() => {{ const p = ({PLOTS})();
        return p.length >= {count} && p.every(f => f.points + f.bars > 0 || !f.traces.some(t => t.x.length)); }}""",
                           timeout=timeout)
    page.wait_for_timeout(500)  # a last throttled refresh
    return page.evaluate(PLOTS)


def _shot(page, name: str) -> None:
    page.locator(".slimkit-panel").first.screenshot(path=str(ARTIFACTS / f"plots-{name}{SUFFIX}.png"))


def _run_all(page, lab, done: Path) -> None:
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # no await
    deadline = time.monotonic() + 1200  # generous: the cores may be shared
    while not done.exists() and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    if not done.exists():
        page.screenshot(path=str(ARTIFACTS / f"plots-unfinished{SUFFIX}.png"), full_page=True)
    assert done.exists(), "the notebook did not finish:\n" + lab["log"].read_text()[-3000:]
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)


def test_plots_draw_survive_a_reload_and_follow_the_theme(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    nb = lab["root"] / "plots.ipynb"
    _notebook(nb)
    done = lab["root"] / "done.txt"
    url = f"{lab['url']}/lab/tree/{nb.name}?reset&token={lab['token']}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 2600})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            _run_all(page, lab, done)
            runs = int(done.read_text())
            plots = _wait_plots(page, 5)
            _shot(page, "light")

            # drawn: every plot has marks, one Pareto point per run in each panel, and the
            # sweeps of bits and of sparsity keep their own axes
            pareto = _by_title(plots, "Pareto")
            assert len(pareto["traces"][0]["x"]) == runs and pareto["points"] >= 2 * runs
            sweep = _by_title(plots, "Accuracy vs")
            axes = {t["name"]: t["xaxis"] for t in sweep["traces"] if t["x"]}
            assert len(axes) == 2 and len(set(axes.values())) == 2, axes
            assert _by_title(plots, "Per-layer")["bars"] > 0 and _by_title(plots, "Weights")["bars"] > 0
            assert len(_by_title(plots, "Training")["traces"][0]["x"]) == 2
            # responsive: every plot fits the output area and the page does not scroll sideways
            assert page.evaluate(OVERFLOW) == []
            assert all(p["width"] <= WIDTH for p in plots)

            # a reload (the notebook saved, as a person's tab would be): the same data is drawn
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1500)
            page.reload()
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            again = _wait_plots(page, 5)
            _shot(page, "reloaded")
            assert _data(again) == _data(plots)
            assert sum(p["points"] + p["bars"] for p in again) == sum(p["points"] + p["bars"] for p in plots)

            # a new run after the reload redraws (Pareto gains a point, histogram's "after" moves)
            panel = page.locator(".slimkit-panel")
            panel.locator("button", has_text="Run").first.click()
            page.wait_for_function(f"""() => {{ const p = ({PLOTS})().find(f => f.title.startsWith('Pareto'));
                return p && p.traces[0].x.length === {runs + 1}; }}""", timeout=120_000)
            redrawn = _wait_plots(page, 5)
            assert _by_title(redrawn, "Weights")["title"] != _by_title(again, "Weights")["title"]

            # JupyterLab's dark theme: the plots' text takes the theme's colour
            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                          "{theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
            page.wait_for_function(f"""() => {{
                const fg = getComputedStyle(document.body).getPropertyValue('--jp-ui-font-color1').trim();
                const p = ({PLOTS})(); return p.length && p.every(f => f.font === fg); }}""", timeout=30_000)
            _shot(page, "dark")
            assert not [e for e in errors if "slimkit" in e.lower() or "plotly" in e.lower()], errors
        finally:
            browser.close()
