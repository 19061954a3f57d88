"""``Panel(model, data)``: compress a model from a notebook with controls and live plots.

Each run starts from the panel's original model (so rows of the results table compare like
with like); the *pipeline* tab chains steps, each step starting from the previous one's
result. Work runs in a background thread (:mod:`.jobs`); the kernel stays free. Stop sets
the core's stop flag: the operation in flight raises ``Interrupted`` and its partial work is
discarded, so ``panel.model`` is what it was before the run or, in a pipeline or sweep, the
result of the last step that finished. The original model is never modified.

In a live notebook the panel is a widget; headless (papermill/nbconvert, or ``live=False``)
it has no widgets to render, so :meth:`run`, :meth:`sweep` and :meth:`sensitivity` wait
and then display static figures and the results table as ordinary cell outputs.

This module lays the panel out and starts jobs; the controls come from the verbs' configs
(:mod:`.controls`), the work is in :mod:`.jobs` and :mod:`.methods`.
"""
from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as W
import torch.nn as nn

from slimkit.data import first_inputs
from slimkit.errors import InvalidParameterError, SlimkitError, check_module
from slimkit.events import Status
from slimkit.nn import WEIGHTED, named_targets, param_count

from . import methods as M
from .checks import TABS, TOOLTIPS, Settings, html_list
from .controls import AUTO_METHODS, INVALID_CSS, SUMMARY, SWEEP_PARAM, Controls, style
from .frontend import frontend_is_live, in_ipython
from .jobs import Jobs, Throttle, Worker
from .plots import Plots, show_static
from .results import RED, Run, table_html
from .selected import BOX, Selected

BAR_STYLE = {Status.OK: "success", Status.INTERRUPTED: "warning", Status.FAILED: "danger"}
CSS = (f"<style>{INVALID_CSS} .slimkit-panel table {{border-collapse: collapse}} "
       ".slimkit-panel th.slimkit-sorted {text-decoration: underline}</style>")
WRAP = dict(flex_flow="row wrap", width="100%")  # boxes wrap instead of scrolling sideways


class PanelBusyError(SlimkitError, RuntimeError):
    """A job was started while another one runs in the same panel."""


class Panel(Jobs, Settings):
    """Controls, Run/Stop, progress, live plots and a results table for one model.

    ``Panel(model, data)``: ``data`` as in :func:`.methods.splits` (test split for accuracy and
    latency, train split for calibration, Fisher scores, fine-tuning and distillation).
    ``live``: None detects the front end (see :func:`frontend_is_live`). ``interval``:
    seconds between plot refreshes while work runs.

    From code, as from the buttons: ``panel.set("prune", sparsity=0.8).run()``; then
    ``panel.wait()``, ``panel.results`` (one :class:`Run` per row), ``panel.model`` (the
    latest finished result).
    """

    def __init__(self, model: nn.Module, data, *, live: bool | None = None, interval: float = 0.25,
                 latency_batch: int = 64):
        check_module("model", model)
        self._layers = [n for n, _ in named_targets(model, WEIGHTED, method="the panel")]  # fails early
        self.base = model
        self.model = model  # the latest finished result (or the original)
        self.train, self.test = M.splits(data)
        self.live = frontend_is_live() if live is None else bool(live)
        self.results: list[Run] = []
        self.error: BaseException | None = None
        self.sensitivity_rows: list[dict] = []
        self._next_id = 0  # run ids stay unique when rows are deleted
        self.job_runs: list[Run] = []  # the runs the current (or last) job recorded
        self.worker = Worker()
        self.plots = Plots(self.live, on_pick=self.show_run)
        self.throttle = Throttle(self._refresh, interval)
        self._latency_x = first_inputs(self.test, latency_batch)
        self._progress: float | None = None
        self._progress_text = ""
        self._progress_high, self._span, self._stage, self._sub = 0.0, (0.0, 1.0), None, (0.0, 1.0)
        self._last_status = "ready"  # how the last job ended (the status when not busy)
        self._epoch = 0
        self._lock = threading.RLock()
        self._build()
        self._changed()

    # -- widgets ------------------------------------------------------------------------

    def _page(self, tab: str) -> W.VBox:
        """A tab: its method's main settings, the others folded under "more settings", the sweep."""
        if tab == "pipeline":
            note = W.HTML("Runs the steps in the order listed, each with the settings of its tab (add a step, "
                          "pick one and move it up or down). slimkit says which orders it takes: a refused step "
                          "shows why and which order works, and the finished steps are kept; so does Stop.")
            return W.VBox([note, self.controls["pipeline"]])
        if tab == "auto":
            note = W.HTML("Searches compositions and per-layer settings of the chosen methods (slimkit.autotune) "
                          "for the smallest or fastest model within the accuracy budget; trials appear in the "
                          "autotune plot as they finish; Stop keeps the best so far.")
            names = self.controls.pages[tab]
            methods = [n for n in names if n.removeprefix("auto_") in AUTO_METHODS]
            rest = [self.controls[n] for n in names if n not in methods]
            boxes = W.HBox([W.HTML("methods:"), *(self.controls[n] for n in methods)], layout=W.Layout(**WRAP))
            return W.VBox([note, *rest[:2], boxes, *rest[2:]])
        names = self.controls.pages[tab]
        main = [self.controls[n] for n in names if n in SUMMARY[tab]]
        more = [self.controls[n] for n in names if n not in SUMMARY[tab] and n != f"{tab}_sweep"]
        folded = W.Accordion(children=[W.VBox(more)], titles=("more settings",), selected_index=None)
        return W.VBox([*main, folded, self.controls[f"{tab}_sweep"]])

    def _build(self) -> None:
        self.controls = Controls(M.devices(), M.backends())
        for w in self.controls.widgets.values():
            w.observe(self._changed, names="value")
        self.tabs = W.Tab(children=[self._page(t) for t in TABS], titles=TABS)
        self.tabs.observe(self._changed, names="selected_index")

        self.buttons = {a: W.Button(description=a.capitalize(), icon=icon, tooltip=TOOLTIPS[a])
                        for a, icon in (("run", "play"), ("sweep", "line-chart"), ("sensitivity", "bar-chart"))}
        self.buttons["run"].button_style = "primary"
        for action, b in self.buttons.items():
            b.on_click(lambda _, a=action: self._click(a))
        self.run_button, self.sweep_button, self.sensitivity_button = self.buttons.values()
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="200px"))
        self.status = W.HTML("ready")
        self.messages = W.HTML("")  # what is wrong with the settings (validation)
        self.errors = W.HTML("")    # how the last job failed
        self.table = W.HTML(self.table_html(), layout=W.Layout(width="100%", overflow="auto"))
        self.clear_button = W.Button(description="Clear table", icon="eraser",
                                     tooltip="remove every run but the original")
        self.clear_button.on_click(lambda _: self.clear())
        self.picked = Selected(self)
        self.detail = self.picked.detail
        self.layer = W.Dropdown(options=self._layers, description="histogram of", **style())
        self.layer.observe(lambda _: self._update_histogram(), names="value")

        for name in ("messages", "errors", "table", "status", "detail"):  # handles for the browser test
            getattr(self, name).add_class(f"slimkit-{name}")
        actions = W.HBox([*self.buttons.values(), self.stop_button, self.progress, self.status],
                         layout=W.Layout(**WRAP))
        settings = W.VBox([self.tabs, W.HBox([self.controls["device"], self.controls["backend"], self.layer],
                                             layout=W.Layout(**WRAP))], layout=W.Layout(width="100%"))
        p = self.plots
        if self.live:
            plots = W.HBox([p.curves, p.sweep, p.sensitivity, p.histogram, p.pareto, p.auto], layout=W.Layout(**WRAP))
        else:
            plots = W.HTML("(plots are shown as cell outputs in this mode)")
        title = W.HTML(f"{CSS}<b>slimkit panel</b>: {html.escape(type(self.base).__name__)}, "
                       f"{param_count(self.base):,} parameters")
        self.widget = W.VBox([title, settings, actions, self.messages, self.errors, self.table, self.clear_button,
                              plots, self.picked.widget], layout=W.Layout(width="100%", max_width="100%"))
        self.widget.add_class("slimkit-panel")

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if self.live:
            display(self.widget)
            return
        display(HTML(self._static_summary()))
        self.show()

    def _static_summary(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.settings().items() if not k.endswith("_sweep"))
        return (f"<p><b>slimkit panel</b> (static: no widget front end) - "
                f"{html.escape(type(self.base).__name__)}, method <code>{html.escape(self.method)}</code></p>"
                f"<details><summary>settings</summary><table>{rows}</table></details>" + html_list(self.problems()))

    # -- running ---------------------------------------------------------------------------

    def run(self, wait: bool | None = None) -> Run | None:
        """Run the selected tab's method (or pipeline) with the current settings.

        ``wait`` (default: True headless, False live) blocks until done and returns the new
        :class:`Run` (None if stopped); a failure then raises. Invalid settings raise
        :class:`~slimkit.errors.InvalidParameterError` before anything runs.
        """
        return self._launch("run", wait)

    def sweep(self, wait: bool | None = None) -> list[Run] | None:
        """Run the tab's method once per value in its sweep box (e.g. bits 8, 6, 4, 3, 2)."""
        return self._launch("sweep", wait)

    def sensitivity(self, wait: bool | None = None) -> list[dict] | None:
        """Compress one layer at a time with the tab's settings; bars = accuracy drop."""
        return self._launch("sensitivity", wait)

    def stop(self) -> None:
        """Ask the running job to stop at its next step (its partial work is discarded)."""
        if self.worker.busy:
            self.worker.stop()
            self.status.value = "stopping..."

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running job ends; False if ``timeout`` seconds passed first."""
        return self.worker.wait(timeout)

    @property
    def busy(self) -> bool:
        return self.worker.busy

    def _click(self, action: str) -> None:
        try:
            self._launch(action, wait=False)
        except SlimkitError:  # a button never raises into the kernel; _launch said why in the panel
            pass

    def _job(self, action: str, method: str):
        """The job ``action`` starts, with everything it needs read from the controls now."""
        where = {"device": self.controls["device"].value, "backend": self.controls["backend"].value}
        if action == "sweep":
            plan, title = self.controls.sweep(method, self.train, self.test)[0], \
                f"{method}: {SWEEP_PARAM[method].split('_')[-1]}"
            return lambda stop: self._job_sweep(plan, where, stop, title)
        steps = tuple(self.controls.plan(m, self.train, self.test) for m in self._steps(method))
        if action == "sensitivity":
            return lambda stop: self._job_sensitivity(steps[0], where, stop)
        return lambda stop: self._job_run(steps, where, stop)

    def _launch(self, action: str, wait: bool | None):
        if self.worker.busy:
            self.status.value = f"<span style='color:{RED}'>busy: stop the running job or wait for it</span>"
            raise PanelBusyError("the panel is busy: stop the running job or wait for it (panel.wait())")
        method = self.method
        msgs = self.problems(method, action)
        if msgs:
            self._validate()
            self.messages.value = html_list(msgs)
            self.status.value = f"<span style='color:{RED}'>{action} not started: fix the settings listed below</span>"
            raise InvalidParameterError(action, method, "valid settings: " + "; ".join(msgs))
        job = self._job(action, method)
        self.error, self.errors.value, self.job_runs = None, "", []
        self.progress.value, self.progress.bar_style = 0.0, ""
        self._progress_high = 0.0
        self._set_span(0.0, 1.0)
        self.status.value = f"{action} {method}..."
        started = time.time()

        def done(outcome: Status, value) -> None:
            took = time.time() - started
            failed = [r for r in self.job_runs if r.failed]
            self.stop_button.disabled = True
            self.progress.bar_style = BAR_STYLE[Status.FAILED if failed else outcome]
            if outcome == Status.FAILED:
                self.error = value
                self._show_error(value, self.worker.traceback)
                if self.job_runs:  # a pipeline step refused or failed: its finished steps are a row
                    kept = self.job_runs[-1]
                    self._last_status += f"; kept #{kept.id} ({html.escape(kept.label)})"
            elif failed:  # the models stand, but a step of theirs failed: not a success
                self._last_status = (f"<span style='color:{RED}'>{action} failed: {len(failed)} of "
                                     f"{len(self.job_runs)} runs have errors (below)</span>")
                self._show_error(None, "\n".join(f"#{r.id} {r.label}: {r.note}" for r in failed))
            elif outcome == Status.OK:
                self._last_status = f"{action} finished in {took:.1f} s"
            else:
                kept = f"; kept #{self.job_runs[-1].id} ({html.escape(self.job_runs[-1].status)})" \
                    if self.job_runs else ""
                self._last_status = f"{action} stopped after {took:.1f} s{kept}"
            if outcome == Status.OK:
                self.progress.value = 1.0
            self._validate()
            self.throttle.poke(force=True)

        for b in self.buttons.values():  # before the start: a job that fails at once re-enables them in done()
            b.disabled = True
        self.stop_button.disabled = False
        self.worker.start(job, done)
        if wait is None:
            wait = not self.live
        if not wait:
            return None
        self.worker.wait()
        if self.worker.outcome == Status.FAILED:
            raise self.worker.value
        if not self.live and in_ipython():
            self._show_outputs(action)
        return self.worker.value if self.worker.outcome == Status.OK else None

    def _show_error(self, err: BaseException | None, text: str = "") -> None:
        """The failure in a readable box (wrapped lines, bounded height, scrolls); ``err`` None:
        ``text`` lists failed steps, else it is ``err``'s traceback."""
        box = f"<div class='slimkit-error-box' style='{BOX};color:{RED};border-color:{RED}'>"
        if err is None:
            self.errors.value = f"{box}{html.escape(text)}</div>"
            return
        self._last_status = f"<span style='color:{RED}'>failed: {html.escape(type(err).__name__)}</span>"
        detail = (f"<details><summary>traceback</summary><pre style='{BOX}'>{html.escape(text)}</pre></details>"
                  if text else "")
        self.errors.value = f"{box}<b>{type(err).__name__}</b>: {html.escape(str(err))}</div>{detail}"

    # -- results and plots ---------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """The results table as dicts (one per run, the original first)."""
        with self._lock:
            runs = list(self.results)
        return [r.row(runs[0]) for r in runs]

    def table_html(self) -> str:
        return table_html(self.rows())

    def _show_results(self) -> None:
        """The table, the picker and the Pareto plot after the runs changed."""
        with self._lock:
            runs = list(self.results)
        self.table.value = self.table_html()
        self.picked.update(runs)
        self.plots.set_runs([{"id": r.id, "label": r.label, "accuracy": r.accuracy, "size_kib": r.size_bytes / 1024,
                              "latency_ms": r.latency_ms} for r in runs])
        self.throttle.poke(force=True)

    @property
    def selected(self) -> Run | None:
        """The run chosen in the "selected run" box (the latest, until another is picked)."""
        return self.picked.run

    @property
    def example_inputs(self):
        """One batch of test inputs (what latency is timed on, and what an export traces)."""
        return self._latency_x

    def show_run(self, rid: int) -> Run:
        """Select one run: its settings, per-layer report, Save/Export/code (what a click on the
        Pareto plot does)."""
        run = next((r for r in self.results if r.id == rid), None)
        if run is None:
            raise InvalidParameterError("rid", rid, "the id of a row: " + ", ".join(str(r.id) for r in self.results))
        self.picked.show(run)
        return run

    def delete(self, rid: int) -> None:
        """Remove run ``rid`` from the table (not the original, row 0; not while a job runs)."""
        if self.worker.busy:
            raise PanelBusyError("the panel is busy: delete rows when the job has ended")
        if self.results and rid == self.results[0].id:
            raise InvalidParameterError("rid", rid, "a run other than the original (row 0 is the reference)")
        self.show_run(rid)  # raises for an unknown id
        with self._lock:
            self.results = [r for r in self.results if r.id != rid]
            if self.model is not self.base and all(r.model is not self.model for r in self.results):
                self.model = self.results[-1].model if len(self.results) > 1 else self.base
        self._show_results()

    def clear(self) -> None:
        """Remove every run but the original (not while a job runs)."""
        if self.worker.busy:
            raise PanelBusyError("the panel is busy: clear the table when the job has ended")
        with self._lock:
            self.results, self.model = self.results[:1], self.base
        self._show_results()

    def _update_histogram(self) -> None:
        name = self.layer.value
        last = self.results[-1] if len(self.results) > 1 else None
        before = M.weights(self.base.get_submodule(name))
        after = None
        if last is not None and last.model is not None:
            try:
                after = M.weights(last.model.get_submodule(name))
            except AttributeError:  # the layer was replaced or removed by that run
                after = None
        if before is not None:
            self.plots.set_histogram(f"{name} (after: run #{last.id if last else 0})", before.numpy(),
                                     None if after is None else after.numpy())
            self.throttle.poke(force=True)

    def show(self, which: tuple[str, ...] | None = None) -> None:
        """Display the results table and the figures that have data as plain (static) outputs."""
        from IPython.display import HTML, display

        self.plots.flush()
        display(HTML(self.table_html()))
        for name, fig in self.plots.figures().items():
            if (which is None or name in which) and self.plots.has_data(name):
                show_static(fig)

    def _show_outputs(self, action: str) -> None:
        self.show({"run": ("curves", "histogram", "pareto", "auto"), "sweep": ("sweep", "pareto"),
                   "sensitivity": ("sensitivity",)}[action])
