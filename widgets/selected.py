"""The selected run, and getting its model out: a picker, its settings and per-layer report (a
sortable table at full width), Save (``slimkit.save``), Export (ONNX, with ``slimkit.export``
where this slimkit has it), the Python that reproduces it (with a copy button), and Delete.

Chosen by the picker or by a click on the Pareto plot. No job runs here: saving a model the
panel already holds takes as long as writing the file.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as W

import slimkit
from slimkit.errors import InvalidParameterError

from .results import RED, Run, table_html

if TYPE_CHECKING:
    from .panel import Panel

HELP = ("From code: <code>panel.results[i].model</code> is the model of row <i>i</i> (row 0 the original), "
        "<code>panel.selected.model</code> the one chosen here, <code>panel.model</code> the latest; "
        "<code>panel.selected.code()</code> is the Python that reproduces it.")
BOX = "white-space:pre-wrap;max-height:16em;overflow:auto;margin:4px 0;padding:4px 8px;border:1px solid #ccc"
# copies the code block next to the button; a real click in the browser, so the clipboard allows it
COPY_JS = ("navigator.clipboard.writeText(this.parentNode.querySelector('pre').textContent)"
           ".then(()=>{this.textContent='copied'},()=>{this.textContent='select the code and copy it'})")


def export_problem() -> str | None:
    """Why Export is disabled here (None when ``slimkit.export`` exists)."""
    return None if callable(getattr(slimkit, "export", None)) else \
        "export needs slimkit.export (ONNX), which this version of slimkit does not have"


class Selected:
    """The widgets of the selected run; ``panel`` holds the runs and does the deleting."""

    def __init__(self, panel: Panel):
        self.panel = panel
        self.run: Run | None = None
        self.pick = W.Dropdown(options=[], description="run", style={"description_width": "40px"},
                               layout=W.Layout(width="420px"))
        self.pick.observe(self._picked, names="value")
        self.path = W.Text("", placeholder="file (default: slimkit-run-N.safetensors here)",
                           layout=W.Layout(width="320px"))
        why = export_problem()
        self.buttons = {
            "save": W.Button(description="Save", icon="save", tooltip="write the model with slimkit.save"),
            "export": W.Button(description="Export ONNX", icon="share", disabled=bool(why),
                               tooltip=why or "write the model as ONNX with slimkit.export"),
            "code": W.Button(description="Show code", icon="code", tooltip="the Python that reproduces this run"),
            "delete": W.Button(description="Delete row", icon="trash", tooltip="remove this run from the table"),
        }
        for action, b in self.buttons.items():
            b.on_click(lambda _, a=action: self._click(a))
        self.outcome = W.HTML(f"<span style='color:#666'>{html.escape(why)}</span>" if why else "")
        self.code = W.HTML("")
        self.detail = W.HTML("<i>pick a run (or click a point in the Pareto plot) to see its settings, "
                             "its per-layer report and how to get its model</i>", layout=W.Layout(width="100%"))
        for name in ("outcome", "code", "detail"):
            getattr(self, name).add_class(f"slimkit-{name}")
        row = W.HBox([self.pick, *self.buttons.values(), self.path], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([W.HTML("<b>selected run</b>"), row, self.outcome, self.code, self.detail,
                              W.HTML(f"<small>{HELP}</small>")], layout=W.Layout(width="100%"))
        self.widget.add_class("slimkit-selected")

    def update(self, runs: list[Run]) -> None:
        """The picker's options after the table changed (a new run is selected at once)."""
        options = [(f"#{r.id} {r.label}", r.id) for r in runs]
        known = {v for _, v in self.pick.options}
        keep = self.run.id if self.run is not None and any(r.id == self.run.id for r in runs) else None
        if options and options[-1][1] not in known:  # a new run: show it
            keep = options[-1][1]
        self.pick.options = options
        self.pick.value = keep if keep is not None else (options[-1][1] if options else None)

    def _picked(self, change) -> None:
        if change["new"] is not None:
            self.panel.show_run(change["new"])
        else:
            self.show(None)

    def show(self, run: Run | None) -> None:
        self.run, self.code.value = run, ""
        if self.pick.value != (None if run is None else run.id):
            self.pick.value = None if run is None else run.id
        for b in self.buttons.values():
            b.disabled = run is None or (b is self.buttons["export"] and bool(export_problem()))
        if run is None:
            self.detail.value = "<i>no run selected</i>"
            return
        settings = ", ".join(f"{k}={v}" for k, v in run.settings.items())
        note = (f"<div style='{BOX};color:{RED};border-color:{RED}'>{html.escape(run.note)}</div>"
                if run.note else "")
        sim = " (simulated: fake-quantized in float)" if run.simulated else ""
        self.detail.value = (
            f"<b>#{run.id} {html.escape(run.label)}</b>: {html.escape(run.status)}{sim}, accuracy "
            f"{run.accuracy:.2%}, {run.size_bytes / 1024:.1f} KiB"
            + (f" ({run.entropy_bytes / 1024:.1f} KiB entropy-coded)" if run.entropy_bytes is not None else "")
            + ", "
            f"{'latency: error' if run.note else f'{run.latency_ms:.3g} ms'}{note}"
            f"<div class='slimkit-settings' style='{BOX}'>{html.escape(settings)}</div>"
            f"<div style='max-height:32em;overflow:auto;width:100%'>"
            + table_html(run.layer_rows(), "slimkit-layers", "the original model: no per-layer report")
            + "</div>" + self._trials(run))

    @staticmethod
    def _trials(run: Run) -> str:
        """An autotune run's trials table (every whole-model trial of its search)."""
        rows = run.trial_rows()
        if not rows:
            return ""
        summary = run.reports[-1].summary
        note = html.escape(summary.get("note") or f"{len(rows)} trials in {summary.get('wall_s', 0):.1f} s")
        return (f"<p><b>autotune trials</b>: {note}</p><div style='max-height:24em;overflow:auto;width:100%'>"
                + table_html(rows, "slimkit-trials") + "</div>")

    def _click(self, action: str) -> None:
        run = self.run
        if run is None:
            return
        try:
            if action == "delete":
                self.panel.delete(run.id)
            elif action == "code":
                self.code.value = (f"<div><pre style='{BOX}'>{html.escape(run.code())}</pre>"
                                   f"<button class='slimkit-copy' onclick=\"{COPY_JS}\">copy code</button></div>")
            else:
                path = self.save(run, action, self.path.value.strip() or None)
                self.outcome.value = f"saved #{run.id} to <code>{html.escape(str(path))}</code>" \
                                     f" ({path.stat().st_size / 1024:,.1f} KiB)"
        except Exception as e:  # shown beside the buttons: a click never raises into the kernel
            self.outcome.value = f"<span style='color:{RED}'>{html.escape(f'{type(e).__name__}: {e}')}</span>"

    def save(self, run: Run, action: str = "save", path: str | None = None) -> Path:
        """Write ``run``'s model: a slimkit artifact (``save``) or ONNX (``export``)."""
        if run.model is None:
            raise InvalidParameterError("run", run.id, "a run that still holds its model")
        suffix = ".onnx" if action == "export" else ".safetensors"
        path = Path(path or f"slimkit-run-{run.id}{suffix}").expanduser().resolve()
        if action == "export":
            why = export_problem()
            if why:
                raise InvalidParameterError("export", "onnx", why)
            slimkit.export(run.model, self.panel.example_inputs, path, format="onnx")
        else:
            slimkit.save(run.model, path, info={"run": run.id, "label": run.label, "status": run.status,
                                                "steps": [s.method for s in run.steps],  # in the order run
                                                "settings": {k: str(v) for k, v in run.settings.items()}})
        return path
