"""``Panel(model, data)``: compress a model from a notebook with controls and live plots.

Each run starts from the panel's original model (so rows of the results table compare like
with like); the *pipeline* tab chains steps, each step starting from the previous one's
result. Work runs in a background thread (:mod:`.runner`); the kernel stays free. Stop sets
the core's stop flag: the operation in flight raises ``Interrupted`` and its partial work is
discarded, so ``panel.model`` is what it was before the run or, in a pipeline or sweep, the
result of the last step that finished. The original model is never modified.

In a live notebook the panel is a widget; headless (papermill/nbconvert, or ``live=False``)
it has no widgets to render, so :meth:`run`, :meth:`sweep` and :meth:`sensitivity` wait
and then display static figures and the results table as ordinary cell outputs.
"""
from __future__ import annotations

import html
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import torch.nn as nn

import slimkit
from slimkit.data import Split, first_inputs
from slimkit.errors import InvalidParameterError, InvalidTypeError, SlimkitError, check_module
from slimkit.events import Event
from slimkit.nn import WEIGHTED, named_targets, param_count

from . import methods as M
from .plots import Plots, show_static
from .runner import Runner, Throttle

TABS = ("quantize", "prune", "distill", "sparsify", "pipeline")
RED = "#b00020"

SETTING_KEYS = M.SETTING_KEYS  # the settings that describe each method's result (defined with the checks)
# the settings a results table label shows
LABEL_KEYS = {"quantize": ("bits", "granularity", "scheme"), "prune": ("sparsity", "score", "structured"),
              "distill": ("width", "temperature", "alpha"), "sparsify": ("sparsify_sparsity", "threshold", "format")}


class PanelBusyError(SlimkitError, RuntimeError):
    """A job was started while another one runs in the same panel."""


@dataclass
class Run:
    """One row of the results table (``id`` 0 is the original model)."""

    id: int
    method: str
    settings: dict[str, Any]
    accuracy: float
    size_bytes: int
    latency_ms: float
    baseline_ms: float = math.nan  # the original's latency with the same device and backend
    status: str = "done"
    seconds: float = 0.0
    simulated: bool = False
    note: str = ""
    model: nn.Module | None = field(default=None, repr=False)
    reports: list[slimkit.Report] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        if self.method == "original":
            return "original"
        parts = []
        for step in self.method.split("+"):
            vals = ",".join(str(self.settings[k]) for k in LABEL_KEYS.get(step, ()) if k in self.settings)
            parts.append(f"{step}({vals})")
        return " > ".join(parts)

    def row(self, base: Run | None) -> dict[str, Any]:
        out = {"#": self.id, "run": self.label, "accuracy": round(self.accuracy, 4),
               "size KiB": round(self.size_bytes / 1024, 1), "latency ms": round(self.latency_ms, 3),
               "status": self.status + (" (simulated)" if self.simulated else "")}
        if base is not None:
            out["Δ acc (pts)"] = round(100 * (self.accuracy - base.accuracy), 2)
            out["x smaller"] = round(base.size_bytes / max(self.size_bytes, 1), 2)
            out["x faster"] = round(self.baseline_ms / self.latency_ms, 2) if self.latency_ms > 0 else math.nan
        out["seconds"] = round(self.seconds, 1)
        out["note"] = self.note
        return out


def _splits(data) -> tuple[Any, Any]:
    """(train, test) from a Digits-like object, a dict, a pair of splits, or one split for both."""
    if hasattr(data, "train") and hasattr(data, "test"):
        return data.train, data.test
    if isinstance(data, dict) and {"train", "test"} <= set(data):
        return data["train"], data["test"]
    if isinstance(data, Split):
        return data, data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if all(hasattr(d, "dtype") for d in data):  # one (X, y) pair of tensors
            return tuple(data), tuple(data)
        return data[0], data[1]
    raise InvalidTypeError("data", data, "a Digits object (train/test), {'train': ..., 'test': ...}, "
                                         "a pair (train, test) or one (X, y) split")


def frontend_is_live() -> bool:
    """Whether a widget-capable front end (JupyterLab, Notebook 7, VS Code) runs this kernel.

    ``SLIMKIT_PANEL=live|static`` decides when set. Otherwise: live when the ipywidgets
    control channel is open, or when the running cell came with front-end metadata
    (JupyterLab/Notebook 7 send ``cellId``/``recordTiming``; papermill and nbconvert send
    none). No IPython kernel at all means static.
    """
    forced = os.environ.get("SLIMKIT_PANEL", "").strip().lower()
    if forced in ("live", "static"):
        return forced == "live"
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    if getattr(W.Widget, "_control_comm", None) is not None:
        return True
    try:
        meta = (kernel.get_parent("shell") or {}).get("metadata") or {}
    except Exception:  # older ipykernel
        meta = {}
    return bool({"cellId", "recordTiming", "deletedCells"} & set(meta))


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False


def _html_list(items: list[str]) -> str:
    return (f"<ul style='color:{RED};margin:2px'>" + "".join(f"<li>{html.escape(m)}</li>" for m in items)
            + "</ul>") if items else ""


class Panel:
    """Controls, Run/Stop, progress, live plots and a results table for one model.

    ``Panel(model, data)``: ``data`` as in :func:`_splits` (test split for accuracy and
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
        self.train, self.test = _splits(data)
        self.live = frontend_is_live() if live is None else bool(live)
        self.results: list[Run] = []
        self.error: BaseException | None = None
        self.sensitivity_rows: list[dict] = []
        self.selected: Run | None = None
        self.runner = Runner()
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

    def _build(self) -> None:
        d = M.DEFAULTS
        kw = dict(style={"description_width": "120px"}, layout=W.Layout(width="340px"))
        c: dict[str, W.ValueWidget] = {}
        c["bits"] = W.IntSlider(d["bits"], min=2, max=8, description="bits", **kw)
        c["granularity"] = W.Dropdown(options=M.GRANULARITIES, value=d["granularity"], description="granularity", **kw)
        c["group_size"] = W.IntText(d["group_size"], description="group size", **kw)
        c["scheme"] = W.Dropdown(options=M.SCHEMES, value=d["scheme"], description="scheme", **kw)
        c["activations"] = W.Checkbox(d["activations"], description="calibrate activations (int8 inputs)",
                                      indent=False)
        c["sparsity"] = W.FloatSlider(d["sparsity"], min=0.0, max=0.99, step=0.01, description="sparsity", **kw)
        c["score"] = W.Dropdown(options=M.SCORES, value=d["score"], description="score", **kw)
        c["structured"] = W.Checkbox(d["structured"], description="structured (remove whole units)", indent=False)
        c["finetune_epochs"] = W.IntText(d["finetune_epochs"], description="fine-tune epochs", **kw)
        c["width"] = W.FloatSlider(d["width"], min=0.05, max=1.0, step=0.05, description="student width", **kw)
        c["temperature"] = W.FloatText(d["temperature"], description="temperature", **kw)
        c["alpha"] = W.FloatSlider(d["alpha"], min=0.0, max=1.0, step=0.05, description="alpha (soft part)", **kw)
        c["noise"] = W.FloatText(d["noise"], description="teacher noise", **kw)
        c["epochs"] = W.IntText(d["epochs"], description="epochs", **kw)
        c["fraction"] = W.FloatSlider(d["fraction"], min=0.05, max=1.0, step=0.05, description="train fraction", **kw)
        c["sparsify_mode"] = W.ToggleButtons(options=("sparsity", "threshold"), value=d["sparsify_mode"],
                                             description="zero by", style={"button_width": "90px"})
        c["sparsify_sparsity"] = W.FloatSlider(d["sparsify_sparsity"], min=0.0, max=0.99, step=0.01,
                                               description="sparsity", **kw)
        c["threshold"] = W.FloatText(d["threshold"], description="|w| threshold θ", **kw)
        c["format"] = W.Dropdown(options=M.FORMATS, value=d["format"], description="storage format", **kw)
        c["pipeline"] = W.SelectMultiple(options=M.PIPELINE_ORDER, value=d["pipeline"], rows=4,
                                         description="steps (in order)", **kw)
        devs = M.devices()
        c["device"] = W.Dropdown(options=devs, value="cpu" if "cpu" in devs else devs[0], description="device", **kw)
        c["backend"] = W.Dropdown(options=M.backends(), value="eager", description="backend (latency)", **kw)
        for m in M.METHODS:
            c[f"{m}_sweep"] = W.Text(d[f"{m}_sweep"], description=f"sweep {M.SWEEP_PARAM[m].split('_')[-1]}", **kw)
        for w in c.values():
            w.observe(self._changed, names="value")
        self.controls = c

        pages = {
            "quantize": ["bits", "granularity", "group_size", "scheme", "activations", "quantize_sweep"],
            "prune": ["sparsity", "score", "structured", "finetune_epochs", "prune_sweep"],
            "distill": ["width", "temperature", "alpha", "noise", "epochs", "fraction", "distill_sweep"],
            "sparsify": ["sparsify_mode", "sparsify_sparsity", "threshold", "format", "sparsify_sweep"],
            "pipeline": ["pipeline"],
        }
        note = W.HTML("Runs the chosen steps in this order with the settings of their tabs; "
                      "stopping keeps the last finished step.")
        self.tabs = W.Tab(children=[W.VBox(([note] if t == "pipeline" else []) + [c[n] for n in pages[t]])
                                    for t in TABS], titles=TABS)
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
        self.layer = W.Dropdown(options=self._layers, description="histogram of", **kw)
        self.layer.observe(lambda _: self._update_histogram(), names="value")

        for name in ("messages", "errors", "table", "status", "detail"):  # handles for the browser test
            getattr(self, name).add_class(f"slimkit-{name}")
        actions = W.HBox([*self.buttons.values(), self.stop_button, self.progress, self.status])
        settings = W.VBox([self.tabs, W.HBox([c["device"], c["backend"], self.layer])])
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
        s = {name: w.value for name, w in self.controls.items()}
        s["pipeline"] = tuple(s["pipeline"])
        return s

    def set(self, method: str | None = None, **values) -> Panel:
        """Set controls by name, as a user would: ``panel.set("prune", sparsity=0.8)``.

        All or nothing: a bad name or value raises and leaves every control as it was.
        """
        if method is not None and method not in TABS:
            raise InvalidParameterError("method", method, "one of " + ", ".join(TABS))
        for name, value in values.items():
            if name not in self.controls:
                raise InvalidParameterError(name, value, "a control of the panel: " + ", ".join(self.controls))
            w = self.controls[name]
            lo, hi = getattr(w, "min", None), getattr(w, "max", None)  # sliders would clamp silently
            if lo is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and not lo <= value <= hi:
                raise InvalidParameterError(name, value, f"a value in [{lo}, {hi}] (the control's range)")
        old = {name: self.controls[name].value for name in values}
        try:
            for name, value in values.items():
                self.controls[name].value = tuple(value) if name == "pipeline" else value
        except Exception as e:  # traitlets rejects mistyped values and unknown options: say which control
            for n, v in old.items():
                self.controls[n].value = v
            raise InvalidParameterError(name, value, f"a value the control accepts ({e})") from None
        if method is not None:
            self.tabs.selected_index = TABS.index(method)
        return self

    def _steps(self, method: str | None = None) -> tuple[str, ...]:
        method = method or self.method
        if method == "pipeline":
            chosen = set(self.controls["pipeline"].value)
            return tuple(m for m in M.PIPELINE_ORDER if m in chosen)
        return (method,)

    def problems(self, method: str | None = None, action: str = "run") -> list[str]:
        """Everything that keeps ``action`` (run, sweep, sensitivity) from starting now."""
        method = method or self.method
        s = self.settings()
        out = M.problems(s, self._steps(method), self.base)
        if action == "sweep":
            if method == "pipeline":
                out.append("sweep: choose a single method tab (quantize, prune, distill or sparsify)")
            else:
                try:
                    M.parse_values(s[f"{method}_sweep"], M.SWEEP_PARAM[method])
                except SlimkitError as e:
                    out.append(f"sweep: {e}")
        if action == "sensitivity" and method not in ("quantize", "prune", "sparsify"):
            out.append("sensitivity: choose the quantize, prune or sparsify tab")
        return out

    def _changed(self, change=None) -> None:
        c = self.controls
        c["group_size"].disabled = c["granularity"].value != "per_group"
        c["sparsify_sparsity"].disabled = c["sparsify_mode"].value != "sparsity"
        c["threshold"].disabled = c["sparsify_mode"].value != "threshold"
        self._validate()

    def _validate(self) -> list[str]:
        """Show what is wrong with the settings and enable only the buttons that can start."""
        msgs = self.problems()
        self.messages.value = _html_list(msgs)
        busy = self.runner.busy
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
        if self.runner.busy:
            self.runner.stop()
            self.status.value = "stopping..."

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running job ends; False if ``timeout`` seconds passed first."""
        return self.runner.wait(timeout)

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _click(self, action: str) -> None:
        try:
            self._launch(action, wait=False)
        except SlimkitError:  # a button never raises into the kernel; _launch said why in the panel
            pass

    def _launch(self, action: str, wait: bool | None):
        if self.runner.busy:
            self.status.value = f"<span style='color:{RED}'>busy: stop the running job or wait for it</span>"
            raise PanelBusyError("the panel is busy: stop the running job or wait for it (panel.wait())")
        method = self.method
        msgs = self.problems(method, action)
        if msgs:
            self._validate()
            self.messages.value = _html_list(msgs)
            self.status.value = f"<span style='color:{RED}'>not started: fix the settings</span>"
            raise InvalidParameterError(action, method, "valid settings: " + "; ".join(msgs))
        job = {"run": self._job_run, "sweep": self._job_sweep, "sensitivity": self._job_sensitivity}[action]
        settings = self.settings()
        self.error, self.errors.value = None, ""
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.status.value = f"{action} {method}..."
        started = time.time()

        def done(outcome: str, value) -> None:
            took = time.time() - started
            self.stop_button.disabled = True
            self._validate()
            self.progress.bar_style = {"done": "success", "stopped": "warning", "error": "danger"}[outcome]
            if outcome == "done":
                self.progress.value = 1.0
                self.status.value = f"{action} finished in {took:.1f} s"
            elif outcome == "stopped":
                self.status.value = f"stopped after {took:.1f} s: the model is as before, or as the last finished step"
            else:
                self.error = value
                self._show_error(value, self.runner.traceback)
            self.throttle.poke(force=True)

        for b in self.buttons.values():  # before the start: a job that fails at once re-enables them in done()
            b.disabled = True
        self.stop_button.disabled = False
        self.runner.start(lambda stop: job(method, settings, stop), done)
        if wait is None:
            wait = not self.live
        if not wait:
            return None
        self.runner.wait()
        if self.runner.outcome == "error":
            raise self.runner.value
        if not self.live and _in_ipython():
            self._show_outputs(action)
        return self.runner.value if self.runner.outcome == "done" else None

    def _show_error(self, err: BaseException, tb: str = "") -> None:
        self.status.value = f"<span style='color:{RED}'>failed</span>"
        detail = f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>" if tb else ""
        self.errors.value = (f"<div style='color:{RED}'><b>{type(err).__name__}</b>: "
                             f"{html.escape(str(err))}</div>{detail}")

    def _events(self, prefix: str = ""):
        """A core callback: progress bar and curve points, pushed out through the throttle."""

        def on_event(ev: Event) -> None:
            if ev.total:
                self._progress = min(1.0, ev.step / ev.total)
            self._progress_text = f"{prefix}{ev.stage} {ev.step}/{ev.total or '?'}"
            if ev.kind == "metrics" and ("loss" in ev.metrics or "val_accuracy" in ev.metrics):
                self._epoch += 1
                self.plots.add_epoch(self._epoch, ev.metrics)
            self.throttle.poke(force=ev.kind == "end")

        return on_event

    def _refresh(self) -> None:
        """Everything the throttle pushes to the front end at once."""
        if self._progress is not None:
            self.progress.value, self._progress = self._progress, None
        if self.runner.busy and self._progress_text:
            self.status.value = html.escape(self._progress_text)
        self.plots.flush()

    # -- jobs (worker thread) --------------------------------------------------------------

    def _measure(self, method: str, settings: dict, model: nn.Module, reports: list, s: dict, t0: float,
                 status: str = "done") -> Run:
        """Accuracy, size and latency of ``model``; latency is timed alternating with the
        original's on the same device and backend, so "x faster" compares like with like."""
        note = ""
        try:
            timed = M.latencies([model] if model is self.base else [model, self.base], self._latency_x,
                                s["device"], s["backend"])
            latency, baseline = timed[0], timed[-1]
        except Exception as e:  # the compressed model stands; say why it has no latency
            latency = baseline = math.nan
            note = f"latency with {s['backend']} on {s['device']} failed: {type(e).__name__}: {e}"
        with self._lock:
            rid = len(self.results)
        return Run(rid, method, dict(settings), slimkit.evaluate(model, self.test)["accuracy"], slimkit.size(model),
                   latency, baseline, status, time.time() - t0, any(r.simulated for r in reports), note, model,
                   list(reports))

    def _baseline(self, s: dict[str, Any]) -> Run:
        if not self.results:
            self._record(self._measure("original", {"device": s["device"], "backend": s["backend"]}, self.base,
                                       [], s, time.time()), latest=False)
        return self.results[0]

    def _record(self, run: Run, latest: bool = True) -> Run:
        with self._lock:
            self.results.append(run)
            if latest:
                self.model = run.model
        self.table.value = self.table_html()
        self.plots.set_runs([{"id": r.id, "label": r.label, "accuracy": r.accuracy, "size_kib": r.size_bytes / 1024,
                              "latency_ms": r.latency_ms} for r in self.results])
        self.throttle.poke(force=True)
        return run

    def _settings_for(self, steps: tuple[str, ...], s: dict[str, Any]) -> dict[str, Any]:
        out = {k: s[k] for step in steps for k in M.settings_of(step, s)}
        out["device"], out["backend"] = s["device"], s["backend"]
        return out

    def _run_steps(self, steps: tuple[str, ...], s: dict[str, Any], stop, prefix: str = "") -> Run:
        """Apply ``steps`` in order; a stop keeps the last finished step of a pipeline as a row."""
        self._baseline(s)
        t0 = time.time()
        model, reports, finished = self.base, [], []
        if "distill" in steps or ("prune" in steps and s["finetune_epochs"]):  # else keep the last curves
            self._epoch = 0
            self.plots.reset_curves(f"Training curves: run #{len(self.results)} {'+'.join(steps)}")
        try:
            for step in steps:
                result = M.apply(step, model, s, self.train, self.test, callbacks=self._events(prefix), stop=stop)
                model, finished = result.model, finished + [step]
                reports.append(result.report)
        except slimkit.Interrupted:
            if finished:  # the pipeline's finished part is a result
                done = tuple(finished)
                self._record(self._measure("+".join(done), self._settings_for(done, s), model, reports, s, t0,
                                           status=f"stopped after {done[-1]}"))
            raise
        run = self._record(self._measure("+".join(steps), self._settings_for(steps, s), model, reports, s, t0))
        self._update_histogram()
        return run

    def _job_run(self, method: str, s: dict[str, Any], stop) -> Run:
        return self._run_steps(self._steps(method), s, stop)

    def _job_sweep(self, method: str, s: dict[str, Any], stop) -> list[Run]:
        param = M.SWEEP_PARAM[method]
        values = M.parse_values(s[f"{method}_sweep"], param)
        self._baseline(s)
        self.plots.start_sweep(f"{method}: {param.split('_')[-1]}")
        runs = []
        for i, v in enumerate(values):
            run = self._run_steps((method,), {**s, param: v}, stop, prefix=f"sweep {i + 1}/{len(values)}: ")
            runs.append(run)
            self.plots.add_sweep_point(v, run.accuracy)
            self._progress = (i + 1) / len(values)
            self.throttle.poke(force=True)
        return runs

    def _job_sensitivity(self, method: str, s: dict[str, Any], stop) -> list[dict]:
        """Accuracy drop (points) with one layer alone compressed; quantize adds SQNR (core's
        ``quantization.sensitivity``, which swaps one fake-quantized layer in at a time)."""
        from slimkit.quant.api import sensitivity

        base = 100 * self._baseline(s).accuracy
        if method == "quantize":
            rows = sensitivity(self.base, self.test, s["bits"], s["granularity"], s["scheme"],
                               group_size=s["group_size"] if s["granularity"] == "per_group" else None,
                               callbacks=self._events(), stop=stop)
            hover = [f"weight SQNR {r['weight_sqnr_db']:.1f} dB, output SQNR {r['output_sqnr_db']:.1f} dB"
                     for r in rows]
            self.plots.set_sensitivity([r["name"] for r in rows], [r["drop"] for r in rows],
                                       f"quantize {s['bits']}-bit, one layer at a time", hover)
        else:
            rows = []
            for i, name in enumerate(self._layers):
                self._progress_text = f"sensitivity {name} ({i + 1}/{len(self._layers)})"
                result = M.apply(method, self.base, s, self.train, self.test, stop=stop, include=[name])
                score = 100 * slimkit.evaluate(result.model, self.test)["accuracy"]
                rows.append({"name": name, "score": score, "drop": base - score})
                self._progress = (i + 1) / len(self._layers)
                self.plots.set_sensitivity([r["name"] for r in rows], [r["drop"] for r in rows],
                                           f"{method}, one layer at a time")
                self.throttle.poke()
        self.sensitivity_rows = rows
        return rows

    # -- results and plots ---------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """The results table as dicts (one per run, the original first)."""
        with self._lock:
            runs = list(self.results)
        return [r.row(runs[0]) for r in runs]

    def table_html(self) -> str:
        rows = self.rows()
        if not rows:
            return "<i>results appear here after the first run</i>"
        head = "".join(f"<th style='padding:2px 8px'>{html.escape(k)}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(str(v))}</td>"
                                        for v in r.values()) + "</tr>" for r in rows)
        return f"<table class='slimkit-results'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def show_run(self, rid: int) -> Run:
        """Show one run's settings and per-layer report (what a click on the Pareto plot does)."""
        run = next((r for r in self.results if r.id == rid), None)
        if run is None:
            raise InvalidParameterError("rid", rid, f"a run id in 0..{len(self.results) - 1}")
        reports = "".join(r._repr_html_() for r in run.reports)
        self.detail.value = (f"<b>#{run.id} {html.escape(run.label)}</b><pre class='slimkit-settings'>"
                             f"{html.escape(json.dumps(run.settings, indent=1, default=str))}</pre>"
                             f"accuracy {run.accuracy:.2%}, {run.size_bytes / 1024:.1f} KiB, "
                             f"{run.latency_ms:.2f} ms{reports}")
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
