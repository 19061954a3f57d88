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
from slimkit.devices import resolve_device
from slimkit.errors import InvalidParameterError, SlimkitError, check_module
from slimkit.events import Status
from slimkit.nn import WEIGHTED, named_targets, param_count

from . import methods as M
from .controls import METHODS, PIPELINE_ORDER, STYLE, SUMMARY, SWEEP_PARAM, Controls
from .frontend import frontend_is_live, in_ipython
from .jobs import Jobs, Throttle, Worker
from .plots import Plots, show_static
from .results import Run, table_html

TABS = (*METHODS, "pipeline")
RED = "#b00020"
BAR_STYLE = {Status.OK: "success", Status.INTERRUPTED: "warning", Status.FAILED: "danger"}


class PanelBusyError(SlimkitError, RuntimeError):
    """A job was started while another one runs in the same panel."""


def _html_list(items: list[str]) -> str:
    return (f"<ul style='color:{RED};margin:2px'>" + "".join(f"<li>{html.escape(m)}</li>" for m in items)
            + "</ul>") if items else ""


class Panel(Jobs):
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
        self.selected: Run | None = None
        self.worker = Worker()
        self.plots = Plots(self.live, on_pick=self.show_run)
        self.throttle = Throttle(self._refresh, interval)
        self._latency_x = first_inputs(self.test, latency_batch)
        self._progress: float | None = None
        self._progress_text = ""
        self._epoch = 0
        self._lock = threading.RLock()
        self._build()
        self._changed()

    # -- widgets ------------------------------------------------------------------------

    def _page(self, tab: str) -> W.VBox:
        """A tab: its method's main settings, the others folded under "more settings", the sweep."""
        if tab == "pipeline":
            note = W.HTML("Runs the chosen steps in this order with the settings of their tabs; "
                          "stopping keeps the last finished step.")
            return W.VBox([note, self.controls["pipeline"]])
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

        self.buttons = {
            "run": W.Button(description="Run", button_style="primary", icon="play", tooltip="run the tab's method"),
            "sweep": W.Button(description="Sweep", icon="line-chart", tooltip="run once per value in the sweep box"),
            "sensitivity": W.Button(description="Sensitivity", icon="bar-chart",
                                    tooltip="compress one layer at a time"),
        }
        for action, b in self.buttons.items():
            b.on_click(lambda _, a=action: self._click(a))
        self.run_button, self.sweep_button, self.sensitivity_button = self.buttons.values()
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="240px"))
        self.status = W.HTML("ready")
        self.messages = W.HTML("")  # what is wrong with the settings (validation)
        self.errors = W.HTML("")    # how the last job failed
        self.table = W.HTML(self.table_html())
        self.detail = W.HTML("<i>click a point in the Pareto plot to see its settings</i>",
                             layout=W.Layout(width="380px", max_height="340px", overflow="auto"))
        self.layer = W.Dropdown(options=self._layers, description="histogram of", **STYLE)
        self.layer.observe(lambda _: self._update_histogram(), names="value")

        for name in ("messages", "errors", "table", "status", "detail"):  # handles for the browser test
            getattr(self, name).add_class(f"slimkit-{name}")
        actions = W.HBox([*self.buttons.values(), self.stop_button, self.progress, self.status])
        settings = W.VBox([self.tabs, W.HBox([self.controls["device"], self.controls["backend"], self.layer])])
        p = self.plots
        if self.live:
            plots = W.VBox([W.HBox([p.curves, p.sweep]), W.HBox([p.sensitivity, p.histogram]),
                            W.HBox([p.pareto, self.detail])])
        else:
            plots = W.HTML("(plots are shown as cell outputs in this mode)")
        title = W.HTML(f"<b>slimkit panel</b>: {html.escape(type(self.base).__name__)}, "
                       f"{param_count(self.base):,} parameters")
        self.widget = W.VBox([title, settings, actions, self.messages, self.errors, self.table, plots])
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
                f"<details><summary>settings</summary><table>{rows}</table></details>" + _html_list(self.problems()))

    # -- settings and validation ----------------------------------------------------------

    @property
    def method(self) -> str:
        return TABS[self.tabs.selected_index or 0]

    def settings(self) -> dict[str, Any]:
        """Every control's value as shown, by control name."""
        return self.controls.raw()

    def set(self, method: str | None = None, **values) -> Panel:
        """Set controls by name, as a user would: ``panel.set("prune", sparsity=0.8)``.

        All or nothing: a bad name or value raises and leaves every control as it was.
        """
        if method is not None and method not in TABS:
            raise InvalidParameterError("method", method, "one of " + ", ".join(TABS))
        self.controls.set(**values)
        if method is not None:
            self.tabs.selected_index = TABS.index(method)
        return self

    def _steps(self, method: str | None = None) -> tuple[str, ...]:
        method = method or self.method
        if method == "pipeline":
            chosen = set(self.controls["pipeline"].value)
            return tuple(m for m in PIPELINE_ORDER if m in chosen)
        return (method,)

    def problems(self, method: str | None = None, action: str = "run") -> list[str]:
        """Everything that keeps ``action`` (run, sweep, sensitivity) from starting now."""
        method = method or self.method
        steps = self._steps(method)
        out = [] if steps else ["pipeline: choose at least one step"]
        if {"quantize", "sparsify"} <= set(steps):
            out.append("pipeline: quantize and sparsify both replace the layers, so neither can follow the other; "
                       "choose one (prune then quantize keeps the pruned zeros)")
        for step in steps:
            configs, bad = self.controls.step(step, self.train, self.test)
            out += bad
            why = "quantize" in configs and M.group_size_problem(self.base, configs["quantize"])
            if why:
                out.append(f"quantize: {why}")
        device, backend = self.controls["device"].value, self.controls["backend"].value
        try:
            resolve_device(device)
            why = M.backend_problem(backend, device)
            if why:
                out.append(f"backend: {why}")
        except SlimkitError as e:
            out.append(f"device: {e}")
        if action == "sweep":
            if method == "pipeline":
                out.append("sweep: choose a single method tab (quantize, prune, distill or sparsify)")
            else:
                try:
                    out += self.controls.sweep(method, self.train, self.test)[1]
                except SlimkitError as e:
                    out.append(f"sweep: {e}")
        if action == "sensitivity" and method not in ("quantize", "prune", "sparsify"):
            out.append("sensitivity: choose the quantize, prune or sparsify tab")
        return out

    def _changed(self, change=None) -> None:
        self.controls.update()
        self._validate()

    def _validate(self) -> list[str]:
        """Show what is wrong with the settings and enable only the buttons that can start."""
        msgs = self.problems()
        self.messages.value = _html_list(msgs)
        busy = self.worker.busy
        for action, b in self.buttons.items():
            b.disabled = busy or bool(msgs if action == "run" else self.problems(action=action))
        return msgs

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
            self.messages.value = _html_list(msgs)
            self.status.value = f"<span style='color:{RED}'>not started: fix the settings</span>"
            raise InvalidParameterError(action, method, "valid settings: " + "; ".join(msgs))
        job = self._job(action, method)
        self.error, self.errors.value = None, ""
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.status.value = f"{action} {method}..."
        started = time.time()

        def done(outcome: Status, value) -> None:
            took = time.time() - started
            self.stop_button.disabled = True
            self._validate()
            self.progress.bar_style = BAR_STYLE[outcome]
            if outcome == Status.OK:
                self.progress.value = 1.0
                self.status.value = f"{action} finished in {took:.1f} s"
            elif outcome == Status.INTERRUPTED:
                self.status.value = f"stopped after {took:.1f} s: the model is as before, or as the last finished step"
            else:
                self.error = value
                self._show_error(value, self.worker.traceback)
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

    def _show_error(self, err: BaseException, tb: str = "") -> None:
        self.status.value = f"<span style='color:{RED}'>failed</span>"
        detail = f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>" if tb else ""
        self.errors.value = (f"<div style='color:{RED}'><b>{type(err).__name__}</b>: "
                             f"{html.escape(str(err))}</div>{detail}")

    # -- results and plots ---------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """The results table as dicts (one per run, the original first)."""
        with self._lock:
            runs = list(self.results)
        return [r.row(runs[0]) for r in runs]

    def table_html(self) -> str:
        return table_html(self.rows())

    def _show_results(self) -> None:
        """The table and the Pareto plot after a run was recorded."""
        self.table.value = self.table_html()
        self.plots.set_runs([{"id": r.id, "label": r.label, "accuracy": r.accuracy, "size_kib": r.size_bytes / 1024,
                              "latency_ms": r.latency_ms} for r in self.results])

    def show_run(self, rid: int) -> Run:
        """Show one run's settings and per-layer report (what a click on the Pareto plot does)."""
        run = next((r for r in self.results if r.id == rid), None)
        if run is None:
            raise InvalidParameterError("rid", rid, f"a run id in 0..{len(self.results) - 1}")
        self.detail.value = run.detail_html()
        self.selected = run
        return run

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
        self.show({"run": ("curves", "histogram", "pareto"), "sweep": ("sweep", "pareto"),
                   "sensitivity": ("sensitivity",)}[action])
