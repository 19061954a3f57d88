"""``Panel(model, data)``: compress a model from a notebook with controls and live plots.

Each run starts from the panel's original model (so rows of the results table compare like
with like); the *pipeline* tab chains steps, each step starting from the previous one's
result. Work runs in a background thread (:mod:`.runner`); the kernel stays free. Stop sets
the core's stop flag: the operation in flight raises ``Interrupted`` and is discarded, so
``panel.model`` is what it was before the run or, in a pipeline or sweep, the result of the
last step that finished.

In a live notebook the panel is a widget; headless (papermill/nbconvert, or ``live=False``)
it has no widgets to render, so :meth:`run`, :meth:`sweep` and :meth:`sensitivity` wait
and then display static figures and the results table as ordinary cell outputs.
"""
from __future__ import annotations

import html
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import torch.nn as nn

import slimkit
from slimkit.errors import InvalidParameterError, InvalidTypeError, SlimkitError
from slimkit.events import Event
from slimkit.layers import WEIGHTED, named_targets

from . import methods as M
from .plots import Plots, show_static
from .runner import Runner, Throttle

TABS = ("quantize", "prune", "distill", "sparsify", "pipeline")


@dataclass
class Run:
    """One row of the results table (``id`` 0 is the original model)."""

    id: int
    method: str
    settings: dict[str, Any]
    accuracy: float
    size_bytes: int
    latency_ms: float
    status: str = "done"
    seconds: float = 0.0
    simulated: bool = False
    model: nn.Module | None = field(default=None, repr=False)
    reports: list[slimkit.Report] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        if self.method == "original":
            return "original"
        keys = {"quantize": ("bits", "granularity", "scheme"), "prune": ("sparsity", "score", "structured"),
                "distill": ("width", "temperature", "alpha"), "sparsify": ("sparsify_sparsity", "format")}
        steps = self.method.split("+")
        parts = []
        for step in steps:
            vals = ",".join(f"{self.settings[k]}" for k in keys.get(step, ()) if k in self.settings)
            parts.append(f"{step}({vals})")
        return " > ".join(parts)

    def row(self, base: "Run | None") -> dict[str, Any]:
        out = {"#": self.id, "run": self.label, "accuracy": round(self.accuracy, 4),
               "size KiB": round(self.size_bytes / 1024, 1), "latency ms": round(self.latency_ms, 3),
               "status": self.status + (" (simulated)" if self.simulated else "")}
        if base is not None:
            out["Δ acc (pts)"] = round(100 * (self.accuracy - base.accuracy), 2)
            out["x smaller"] = round(base.size_bytes / max(self.size_bytes, 1), 2)
            out["x faster"] = round(base.latency_ms / max(self.latency_ms, 1e-9), 2)
        out["seconds"] = round(self.seconds, 1)
        return out


def _splits(data):
    """(train, test) from a Digits-like object, a dict, a pair of splits, or one split for both."""
    if hasattr(data, "train") and hasattr(data, "test"):
        return data.train, data.test
    if isinstance(data, dict) and {"train", "test"} <= set(data):
        return data["train"], data["test"]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(hasattr(d, "__iter__") for d in data) \
            and not any(hasattr(d, "dtype") for d in data):
        return data[0], data[1]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data, data
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
    ip = get_ipython()
    kernel = getattr(ip, "kernel", None)
    if kernel is None:
        return False
    if getattr(W.Widget, "_control_comm", None) is not None:
        return True
    try:
        meta = (kernel.get_parent("shell") or {}).get("metadata") or {}
    except Exception:  # noqa: BLE001 - older ipykernel
        meta = {}
    return bool({"cellId", "recordTiming", "deletedCells"} & set(meta))


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False


class Panel:
    """Controls, Run/Stop, progress, live plots and a results table for one model.

    ``Panel(model, data)``: ``data`` as in :func:`_splits` (test split for accuracy, train
    split for calibration, Fisher scores, fine-tuning and distillation). ``live``: None
    detects the front end (see :func:`frontend_is_live`). ``interval``: seconds between
    plot refreshes while work runs.
    """

    def __init__(self, model: nn.Module, data, *, live: bool | None = None, interval: float = 0.25,
                 latency_batch: int = 256):
        if not isinstance(model, nn.Module):
            raise InvalidTypeError("model", model, "a torch.nn.Module")
        list(named_targets(model, WEIGHTED, method="the panel"))  # fails early on a model with nothing to do
        self.base = model
        self.model = model  # the latest finished result (or the original)
        self.train, self.test = _splits(data)
        self.live = frontend_is_live() if live is None else bool(live)
        self.results: list[Run] = []
        self.error: BaseException | None = None
        self.runner = Runner()
        self.plots = Plots(self.live, on_pick=self.show_run)
        self.throttle = Throttle(self._refresh, interval)
        self._latency_x = self.test.X[:latency_batch] if hasattr(self.test, "X") else None
        self._progress_text = ""
        self._epoch = 0
        self._lock = threading.RLock()
        self._build()
        self._validate()

    # -- widgets ------------------------------------------------------------------------

    def _build(self) -> None:
        d = M.DEFAULTS
        style = {"description_width": "110px"}
        wide = W.Layout(width="330px")
        c: dict[str, W.ValueWidget] = {}
        c["bits"] = W.IntSlider(d["bits"], min=2, max=8, description="bits", style=style, layout=wide)
        c["granularity"] = W.Dropdown(options=M.GRANULARITIES, value=d["granularity"], description="granularity",
                                      style=style, layout=wide)
        c["group_size"] = W.IntText(d["group_size"], description="group size", style=style, layout=wide)
        c["scheme"] = W.Dropdown(options=M.SCHEMES, value=d["scheme"], description="scheme", style=style, layout=wide)
        c["activations"] = W.Checkbox(d["activations"], description="calibrate activations", indent=False)
        c["sparsity"] = W.FloatSlider(d["sparsity"], min=0.0, max=0.99, step=0.01, description="sparsity",
                                      style=style, layout=wide)
        c["score"] = W.Dropdown(options=M.SCORES, value=d["score"], description="score", style=style, layout=wide)
        c["structured"] = W.Checkbox(d["structured"], description="structured (remove units)", indent=False)
        c["finetune_epochs"] = W.IntText(d["finetune_epochs"], description="fine-tune epochs", style=style,
                                         layout=wide)
        c["width"] = W.FloatSlider(d["width"], min=0.05, max=1.0, step=0.05, description="student width",
                                   style=style, layout=wide)
        c["temperature"] = W.FloatText(d["temperature"], description="temperature", style=style, layout=wide)
        c["alpha"] = W.FloatSlider(d["alpha"], min=0.0, max=1.0, step=0.05, description="alpha (soft)",
                                   style=style, layout=wide)
        c["noise"] = W.FloatText(d["noise"], description="teacher noise", style=style, layout=wide)
        c["epochs"] = W.IntText(d["epochs"], description="epochs", style=style, layout=wide)
        c["fraction"] = W.FloatSlider(d["fraction"], min=0.05, max=1.0, step=0.05, description="train fraction",
                                      style=style, layout=wide)
        c["sparsify_mode"] = W.ToggleButtons(options=("sparsity", "threshold"), value=d["sparsify_mode"],
                                             description="target", style={"button_width": "90px"})
        c["sparsify_sparsity"] = W.FloatSlider(d["sparsify_sparsity"], min=0.0, max=0.99, step=0.01,
                                               description="sparsity", style=style, layout=wide)
        c["threshold"] = W.FloatText(d["threshold"], description="|w| threshold", style=style, layout=wide)
        c["format"] = W.Dropdown(options=M.FORMATS, value=d["format"], description="format", style=style,
                                 layout=wide)
        c["pipeline"] = W.SelectMultiple(options=M.PIPELINE_ORDER, value=d["pipeline"], rows=4,
                                         description="steps (in order)", style=style, layout=wide)
        devs = M.devices()
        c["device"] = W.Dropdown(options=devs, value="cpu" if "cpu" in devs else devs[0], description="device",
                                 style=style, layout=wide)
        c["backend"] = W.Dropdown(options=M.backends(), value="eager", description="backend", style=style,
                                  layout=wide)
        for m in M.METHODS:
            c[f"{m}_sweep"] = W.Text(d[f"{m}_sweep"], description=f"sweep {M.SWEEP_PARAM[m].split('_')[-1]}",
                                     style=style, layout=wide)
        self.controls = c
        for name, w in c.items():
            w.observe(self._changed, names="value")

        pages = {
            "quantize": [c["bits"], c["granularity"], c["group_size"], c["scheme"], c["activations"],
                         c["quantize_sweep"]],
            "prune": [c["sparsity"], c["score"], c["structured"], c["finetune_epochs"], c["prune_sweep"]],
            "distill": [c["width"], c["temperature"], c["alpha"], c["noise"], c["epochs"], c["fraction"],
                        c["distill_sweep"]],
            "sparsify": [c["sparsify_mode"], c["sparsify_sparsity"], c["threshold"], c["format"],
                         c["sparsify_sweep"]],
            "pipeline": [W.HTML("Runs the chosen steps in order with the settings of their tabs; "
                                "stopping keeps the last finished step."), c["pipeline"]],
        }
        self.tabs = W.Tab(children=[W.VBox(pages[t]) for t in TABS], titles=TABS)
        self.tabs.observe(self._changed, names="selected_index")

        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.sweep_button = W.Button(description="Sweep", icon="line-chart")
        self.sensitivity_button = W.Button(description="Sensitivity", icon="bar-chart")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.run_button.on_click(lambda _: self._click(self.run))
        self.sweep_button.on_click(lambda _: self._click(self.sweep))
        self.sensitivity_button.on_click(lambda _: self._click(self.sensitivity))
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout=W.Layout(width="260px"))
        self.status = W.HTML("ready")
        self.messages = W.HTML("")
        self.table = W.HTML(self.table_html())
        self.detail = W.HTML("<i>click a point in the Pareto plot to see its settings</i>")
        self.layer = W.Dropdown(options=[n for n, _ in named_targets(self.base, WEIGHTED)], description="histogram",
                                style=style, layout=wide)
        self.layer.observe(lambda _: self._update_histogram(), names="value")

        actions = W.HBox([self.run_button, self.sweep_button, self.sensitivity_button, self.stop_button,
                          self.progress, self.status])
        settings = W.VBox([self.tabs, W.HBox([c["device"], c["backend"], self.layer])])
        p = self.plots
        if self.live:
            plots = W.VBox([W.HBox([p.curves, p.sweep]), W.HBox([p.sensitivity, p.histogram]),
                            W.HBox([p.pareto, self.detail])])
        else:
            plots = W.HTML("(plots are shown as cell outputs in this mode)")
        title = W.HTML(f"<b>slimkit panel</b>: {type(self.base).__name__}, "
                       f"{sum(q.numel() for q in self.base.parameters()):,} parameters")
        self.widget = W.VBox([title, settings, actions, self.messages, self.table, plots])
        self.widget.add_class("slimkit-panel")

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if self.live:
            display(self.widget)
            return
        display(HTML(self._static_summary()))
        self.show()

    def _static_summary(self) -> str:
        s = self.settings()
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in s.items()
                       if not k.endswith("_sweep"))
        msgs = "".join(f"<li>{html.escape(m)}</li>" for m in self.problems())
        return (f"<p><b>slimkit panel</b> (static: no widget front end) - {type(self.base).__name__}, "
                f"method <code>{self.method}</code></p><details><summary>settings</summary><table>{rows}</table>"
                f"</details>" + (f"<ul style='color:#b00'>{msgs}</ul>" if msgs else ""))

    # -- settings and validation ----------------------------------------------------------

    @property
    def method(self) -> str:
        return TABS[self.tabs.selected_index or 0]

    def settings(self) -> dict[str, Any]:
        s = {name: w.value for name, w in self.controls.items()}
        s["pipeline"] = tuple(s["pipeline"])
        return s

    def set(self, method: str | None = None, **values) -> "Panel":
        """Set controls by name, as a user would: ``panel.set("prune", sparsity=0.8)``."""
        if method is not None:
            if method not in TABS:
                raise InvalidParameterError("method", method, "one of " + ", ".join(TABS))
            self.tabs.selected_index = TABS.index(method)
        for name, value in values.items():
            if name not in self.controls:
                raise InvalidParameterError(name, value, "a control of the panel: " + ", ".join(self.controls))
            w = self.controls[name]
            if name == "pipeline":
                value = tuple(value)
            try:
                w.value = value
            except Exception as e:  # traitlets rejects out-of-range/typed values: say which control
                raise InvalidParameterError(name, value, f"a value the control accepts ({e})") from None
        return self

    def _steps(self, method: str | None = None) -> tuple[str, ...]:
        method = method or self.method
        if method == "pipeline":
            chosen = set(self.controls["pipeline"].value)
            return tuple(m for m in M.PIPELINE_ORDER if m in chosen)
        return (method,)

    def problems(self, method: str | None = None, action: str = "run") -> list[str]:
        s = self.settings()
        out = M.problems(s, self._steps(method), self.base)
        method = method or self.method
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
        gs = self.controls["group_size"]
        gs.disabled = self.controls["granularity"].value != "per_group"
        mode = self.controls["sparsify_mode"].value
        self.controls["sparsify_sparsity"].disabled = mode != "sparsity"
        self.controls["threshold"].disabled = mode != "threshold"
        self._validate()

    def _validate(self) -> list[str]:
        msgs = self.problems()
        self.messages.value = ("<ul style='color:#b00020;margin:2px'>" + "".join(
            f"<li>{html.escape(m)}</li>" for m in msgs) + "</ul>") if msgs else ""
        busy = self.runner.busy
        self.run_button.disabled = bool(msgs) or busy
        self.sweep_button.disabled = busy or bool(self.problems(action="sweep"))
        self.sensitivity_button.disabled = busy or bool(self.problems(action="sensitivity"))
        return msgs

    # -- running ---------------------------------------------------------------------------

    def run(self, wait: bool | None = None) -> Run | None:
        """Run the selected tab's method (or pipeline) with the current settings.

        ``wait`` (default: True headless, False live) blocks until done and returns the new
        :class:`Run`; a failure then raises. Invalid settings raise before anything runs.
        """
        return self._launch("run", self._job_run, wait)

    def sweep(self, wait: bool | None = None) -> list[Run] | None:
        """Run the tab's method once per value in its sweep box (e.g. bits 8, 6, 4, 3, 2)."""
        return self._launch("sweep", self._job_sweep, wait)

    def sensitivity(self, wait: bool | None = None) -> list[dict] | None:
        """Compress one layer at a time with the tab's settings; bars = accuracy drop."""
        return self._launch("sensitivity", self._job_sensitivity, wait)

    def stop(self) -> None:
        """Ask the running job to stop at its next step (the model stays as it was)."""
        if self.runner.busy:
            self.runner.stop()
            self.status.value = "stopping..."

    def wait(self, timeout: float | None = None) -> bool:
        return self.runner.wait(timeout)

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _click(self, action) -> None:
        try:
            action(wait=False)
        except SlimkitError as e:  # a button never raises into the kernel: show it
            self._show_error(e)

    def _launch(self, action: str, job, wait: bool | None):
        if self.runner.busy:
            raise SlimkitError("the panel is busy: stop the running job or wait for it")
        method = self.method
        msgs = self.problems(method, action)
        if msgs:
            self._validate()
            self.messages.value += "<div style='color:#b00020'>not started: fix the settings above</div>"
            raise InvalidParameterError(action, method, "valid settings: " + "; ".join(msgs))
        settings = self.settings()
        self.error = None
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.status.value = f"{action} {method}..."
        self._set_busy(True)
        self._started = time.time()

        def done(outcome, value):
            self._set_busy(False)
            self.progress.value = 1.0 if outcome == "done" else self.progress.value
            self.progress.bar_style = {"done": "success", "stopped": "warning", "error": "danger"}[outcome]
            took = time.time() - self._started
            if outcome == "done":
                self.status.value = f"{action} finished in {took:.1f} s"
            elif outcome == "stopped":
                self.status.value = (f"stopped after {took:.1f} s; model kept as before the run "
                                     f"or at the last finished step")
            else:
                self.error = value
                self._show_error(value, self.runner.traceback)
            self.throttle.poke(force=True)

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

    def _set_busy(self, busy: bool) -> None:
        self.stop_button.disabled = not busy
        for b in (self.run_button, self.sweep_button, self.sensitivity_button):
            b.disabled = busy
        if not busy:
            self._validate()

    def _show_error(self, err: BaseException, tb: str = "") -> None:
        self.status.value = "<span style='color:#b00020'>failed</span>"
        detail = f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>" if tb else ""
        self.messages.value = (f"<div style='color:#b00020'><b>{type(err).__name__}</b>: "
                               f"{html.escape(str(err))}</div>{detail}")

    def _events(self, stage_prefix: str = ""):
        """A core callback: progress bar + curve points, pushed out through the throttle."""

        def on_event(ev: Event) -> None:
            if ev.total:
                self._pending_progress = min(1.0, ev.step / ev.total)
            self._progress_text = f"{stage_prefix}{ev.stage} {ev.step}/{ev.total or '?'}"
            if ev.kind == "metrics" and ("loss" in ev.metrics or "val_accuracy" in ev.metrics
                                         or "accuracy" in ev.metrics):
                metrics = dict(ev.metrics)
                if "val_accuracy" not in metrics and "accuracy" in metrics:
                    metrics["val_accuracy"] = metrics["accuracy"]
                self._epoch += 1
                self.plots.add_epoch(self._epoch, metrics)
            self.throttle.poke(force=ev.kind == "end")

        return on_event

    def _refresh(self) -> None:
        """Everything the throttle pushes to the front end at once."""
        if getattr(self, "_pending_progress", None) is not None:
            self.progress.value = self._pending_progress
            self._pending_progress = None
        if self.runner.busy and self._progress_text:
            self.status.value = html.escape(self._progress_text)
        self.plots.flush()

    def _baseline(self, settings) -> Run:
        if not self.results:
            t = time.time()
            self.results.append(self._measure(0, "original", {}, self.base, [], settings, t))
            self._publish()
        return self.results[0]

    def _measure(self, rid, method, settings, model, reports, s, t0, status="done") -> Run:
        acc = slimkit.evaluate(model, self.test)["accuracy"]
        size = slimkit.size(model)
        lat = M.latency_ms(model, self._latency_x, s["device"], s["backend"]) if self._latency_x is not None \
            else float("nan")
        return Run(rid, method, dict(settings), acc, size, lat, status, time.time() - t0,
                   any(r.simulated for r in reports), model, list(reports))

    def _next_id(self) -> int:
        return len(self.results)

    def _record(self, run: Run) -> Run:
        with self._lock:
            self.results.append(run)
            self.model = run.model
        self._publish()
        return run

    def _publish(self) -> None:
        self.table.value = self.table_html()
        base = self.results[0] if self.results else None
        self.plots.set_runs([{"id": r.id, "label": r.label, "accuracy": r.accuracy,
                              "size_kib": r.size_bytes / 1024, "latency_ms": r.latency_ms,
                              "settings": r.settings} for r in self.results])
        self.throttle.poke(force=True)
        del base

    def _settings_for(self, steps, s) -> dict[str, Any]:
        keys = {"quantize": ("bits", "granularity", "scheme", "activations"),
                "prune": ("sparsity", "score", "structured", "finetune_epochs"),
                "distill": ("width", "temperature", "alpha", "noise", "epochs", "fraction"),
                "sparsify": ("sparsify_mode", "sparsify_sparsity" if s["sparsify_mode"] == "sparsity" else "threshold",
                             "format")}
        out = {k: s[k] for step in steps for k in keys[step]}
        if "quantize" in steps and s["granularity"] == "per_group":
            out["group_size"] = s["group_size"]
        out["device"], out["backend"] = s["device"], s["backend"]
        return out

    def _run_steps(self, steps, s, stop, label_prefix="") -> Run:
        """Apply ``steps`` in order; a stop keeps the last finished step as a row."""
        self._baseline(s)
        t0 = time.time()
        model, reports, done_steps = self.base, [], []
        self._epoch = 0
        self.plots.reset_curves(f"Training curves: #{self._next_id()} {'+'.join(steps)}")
        try:
            for step in steps:
                result = M.apply(step, model, s, self.train, self.test, callbacks=self._events(label_prefix),
                                 stop=stop)
                model, done_steps = result.model, done_steps + [step]
                reports.append(result.report)
        except slimkit.Interrupted:
            if done_steps and len(steps) > 1:  # the pipeline's finished part is a result
                self._record(self._measure(self._next_id(), "+".join(done_steps), self._settings_for(done_steps, s),
                                           model, reports, s, t0, status=f"stopped after {done_steps[-1]}"))
            raise
        run = self._record(self._measure(self._next_id(), "+".join(steps), self._settings_for(steps, s),
                                         model, reports, s, t0))
        self._update_histogram()
        return run

    def _job_run(self, method, s, stop) -> Run:
        return self._run_steps(self._steps(method), s, stop)

    def _job_sweep(self, method, s, stop) -> list[Run]:
        param = M.SWEEP_PARAM[method]
        values = M.parse_values(s[f"{method}_sweep"], param)
        self._baseline(s)
        self.plots.start_sweep(f"{method}: {param.split('_')[-1]}")
        runs = []
        for i, v in enumerate(values):
            stop_check(stop)
            run = self._run_steps((method,), {**s, param: v}, stop, label_prefix=f"sweep {i + 1}/{len(values)}: ")
            runs.append(run)
            self.plots.add_sweep_point(v, run.accuracy)
            self._pending_progress = (i + 1) / len(values)
            self.throttle.poke(force=True)
        return runs

    def _job_sensitivity(self, method, s, stop) -> list[dict]:
        base = self._baseline(s).accuracy
        layers = [n for n, _ in named_targets(self.base, WEIGHTED)]
        names, drops, rows = [], [], []
        for i, name in enumerate(layers):
            stop_check(stop)
            self._progress_text = f"sensitivity {name} ({i + 1}/{len(layers)})"
            result = M.apply(method, self.base, s, self.train, self.test, stop=stop, include=[name])
            acc = slimkit.evaluate(result.model, self.test)["accuracy"]
            names.append(name)
            drops.append(100 * (base - acc))
            rows.append({"layer": name, "accuracy": acc, "drop": 100 * (base - acc)})
            self._pending_progress = (i + 1) / len(layers)
            self.plots.set_sensitivity(names, drops, f"accuracy drop (points), {method} one layer alone")
            self.throttle.poke()
        self.sensitivity_rows = rows
        return rows

    # -- results and plots ---------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        base = self.results[0] if self.results else None
        return [r.row(base) for r in self.results]

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
        run = next(r for r in self.results if r.id == rid)
        report = "".join(f"<pre style='font-size:11px'>{html.escape(r.table())}</pre>" for r in run.reports)
        self.detail.value = (f"<b>#{run.id} {html.escape(run.label)}</b><pre>"
                             f"{html.escape(json.dumps(run.settings, indent=1, default=str))}</pre>"
                             f"accuracy {run.accuracy:.2%}, {run.size_bytes / 1024:.1f} KiB, "
                             f"{run.latency_ms:.2f} ms{report}")
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
            self.plots.set_histogram(f"{name} (run #{last.id if last else 0})", before.numpy(),
                                     None if after is None else after.numpy())
            self.throttle.poke(force=True)

    def show(self, which: tuple[str, ...] | None = None) -> None:
        """Display the results table and the figures that have data as plain outputs."""
        from IPython.display import HTML, display

        display(HTML(self.table_html()))
        for name, fig in self.plots.figures().items():
            if (which is None or name in which) and self.plots.has_data(name):
                show_static(fig)

    def _show_outputs(self, action: str) -> None:
        self.plots.flush()
        which = {"run": ("curves", "histogram", "pareto"), "sweep": ("sweep", "pareto"),
                 "sensitivity": ("sensitivity",)}[action]
        self.show(which)


def stop_check(stop) -> None:
    if stop.is_set():
        raise slimkit.Interrupted("stopped on request")
