"""The panel's plotly figures: live ``FigureWidget`` s in a notebook, static figures headless.

All five figures keep their numbers in plain Python lists here; the panel's worker thread
appends to them and :meth:`Plots.flush` (called through a throttle) copies whatever changed
into the figures inside ``batch_update`` so each refresh is one message per figure.

Headless (papermill/nbconvert) nobody renders widgets, and a ``FigureWidget`` would store
its ~5 MB plotly.js bundle in the notebook's widget state, so the same code builds plain
``go.Figure`` s and :func:`static_bundle` renders them offline (plotly.js inlined once per
kernel, never from a CDN).
"""
from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from slimkit.measure import pareto_front
from slimkit.table import plot_text  # user strings in titles, ticks and hover: shown as text

HEIGHT = 300
WIDTHS = {"curves": 500, "sweep": 500, "sensitivity": 500, "histogram": 500, "pareto": 620}
CURVE_COLORS = {"loss": "#d62728", "val_accuracy": "#1f77b4"}


def _figure(base: go.Figure | None = None, **layout) -> go.Figure:
    fig = base if base is not None else go.Figure()
    layout = dict(height=HEIGHT, margin=dict(l=50, r=20, t=40, b=40), template="plotly_white",
                  legend=dict(orientation="h", y=-0.25)) | layout
    fig.update_layout(**layout)
    return fig


class Plots:
    """Curves, sweep, sensitivity, histogram and Pareto figures plus their data."""

    def __init__(self, live: bool, on_pick: Callable[[int], Any] | None = None):
        self.live = live
        self._lock = threading.RLock()
        self._dirty: set[str] = set()
        self.on_pick = on_pick

        # loss (left axis) and validation accuracy (right axis) of fine-tuning / distillation
        self.curves = _figure(make_subplots(specs=[[{"secondary_y": True}]]),
                              title="Training curves (fine-tune / distill)")
        self.curves.add_scatter(x=[], y=[], name="loss", mode="lines+markers",
                                line=dict(color=CURVE_COLORS["loss"]), secondary_y=False)
        self.curves.add_scatter(x=[], y=[], name="val accuracy", mode="lines+markers",
                                line=dict(color=CURVE_COLORS["val_accuracy"]), secondary_y=True)
        self.curves.update_xaxes(title_text="epoch")
        self.curves.update_yaxes(title_text="loss", secondary_y=False)
        self.curves.update_yaxes(title_text="accuracy", secondary_y=True)
        self._curve: dict[str, list[list[float]]] = {"loss": [[], []], "val_accuracy": [[], []]}

        self.sweep = _figure(title="Accuracy vs setting (sweep)",
                             xaxis_title="setting", yaxis_title="test accuracy")
        self._sweeps: list[dict[str, Any]] = []  # {name, x, y}

        self.sensitivity = _figure(title="Per-layer sensitivity",
                                   xaxis_title="layer", yaxis_title="accuracy drop (points)")
        self.sensitivity.add_bar(x=[], y=[], name="sensitivity", marker_color="#9467bd")

        self.histogram = _figure(title="Weights before / after", barmode="overlay",
                                 xaxis_title="weight value", yaxis_title="count")
        self.histogram.add_bar(x=[], y=[], name="before", opacity=0.6, marker_color="#7f7f7f")
        self.histogram.add_bar(x=[], y=[], name="after", opacity=0.6, marker_color="#ff7f0e")

        self.pareto = _figure(make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06),
                              title="Pareto: accuracy vs size and latency (click a point)", height=HEIGHT + 40)
        for col in (1, 2):
            self.pareto.add_scatter(x=[], y=[], mode="markers+text", name="vs size" if col == 1 else "vs latency",
                                    marker=dict(size=11, color="#2ca02c"), textposition="middle right",
                                    textfont=dict(size=9, color="#555"), showlegend=False, row=1, col=col)
        self.pareto.update_xaxes(title_text="artifact size (KiB)", rangemode="tozero", row=1, col=1)
        self.pareto.update_xaxes(title_text="latency (ms / batch)", rangemode="tozero", row=1, col=2)
        self.pareto.update_yaxes(title_text="test accuracy", row=1, col=1)
        self._runs: list[dict[str, Any]] = []
        if live:  # traces are added before wrapping: subplot grids do not survive the copy
            for name, width in WIDTHS.items():  # side by side in the panel; static figures autosize
                getattr(self, name).update_layout(width=width)
            for name in self.figures():
                setattr(self, name, go.FigureWidget(getattr(self, name)))
            for trace in self.pareto.data:
                trace.on_click(self._clicked)

    # -- data in (any thread) -------------------------------------------------------------

    def reset_curves(self, title: str) -> None:
        with self._lock:
            self._curve = {"loss": [[], []], "val_accuracy": [[], []]}
            self._curve_title = title
            self._dirty.add("curves")

    def add_epoch(self, step: float, metrics: dict[str, float]) -> None:
        with self._lock:
            for key in ("loss", "val_accuracy"):
                if key in metrics:
                    self._curve[key][0].append(step)
                    self._curve[key][1].append(float(metrics[key]))
            self._dirty.add("curves")

    def start_sweep(self, name: str) -> None:
        with self._lock:
            self._sweeps.append({"name": name, "x": [], "y": []})
            self._dirty.add("sweep")

    def add_sweep_point(self, x: float, accuracy: float) -> None:
        with self._lock:
            self._sweeps[-1]["x"].append(x)
            self._sweeps[-1]["y"].append(accuracy)
            self._dirty.add("sweep")

    def set_sensitivity(self, layers: Sequence[str], drops: Sequence[float], what: str,
                        hover: Sequence[str] | None = None) -> None:
        """Bars: accuracy drop (points) per layer when ``what`` (e.g. "quantize 4-bit") hits it alone."""
        with self._lock:
            self._sens = (list(layers), [float(v) for v in drops], what, list(hover or []))
            self._dirty.add("sensitivity")

    def set_histogram(self, layer: str, before: np.ndarray, after: np.ndarray | None, bins: int = 80) -> None:
        """Binned here (not in the browser): a layer can have 10^5..10^7 weights."""
        before = np.asarray(before, dtype=np.float64).ravel()
        parts = [before] if after is None else [before, np.asarray(after, dtype=np.float64).ravel()]
        lo, hi = min(p.min() for p in parts), max(p.max() for p in parts)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        centers = ((edges[:-1] + edges[1:]) / 2).tolist()
        counts = [np.histogram(p, edges)[0].tolist() for p in parts]
        with self._lock:
            self._hist = (layer, centers, counts[0], counts[1] if len(counts) > 1 else [], float(edges[1] - edges[0]))
            self._dirty.add("histogram")

    def set_runs(self, runs: Sequence[dict[str, Any]]) -> None:
        """``runs``: dicts with id, label, accuracy, size_kib, latency_ms."""
        with self._lock:
            self._runs = [dict(r) for r in runs]
            self._dirty.add("pareto")

    # -- data out (throttled) -------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for name in sorted(dirty):
                fig = getattr(self, name)
                with fig.batch_update():
                    getattr(self, "_draw_" + name)(fig)

    def _draw_curves(self, fig) -> None:
        for trace, key in zip(fig.data, ("loss", "val_accuracy")):
            trace.x, trace.y = list(self._curve[key][0]), list(self._curve[key][1])
        fig.layout.title.text = plot_text(getattr(self, "_curve_title", "Training curves"))

    def _draw_sweep(self, fig) -> None:
        while len(fig.data) < len(self._sweeps):
            fig.add_scatter(x=[], y=[], mode="lines+markers")
        for trace, s in zip(fig.data, self._sweeps):
            trace.x, trace.y, trace.name = list(s["x"]), list(s["y"]), plot_text(s["name"])
        if self._sweeps:
            fig.layout.xaxis.title.text = plot_text(self._sweeps[-1]["name"].split(":")[-1].strip())

    def _draw_sensitivity(self, fig) -> None:
        layers, drops, what, hover = self._sens
        fig.data[0].x, fig.data[0].y = [plot_text(n) for n in layers], drops  # module names are the user's
        fig.data[0].hovertext = [plot_text(h) for h in hover] or None
        fig.layout.title.text = f"Per-layer sensitivity: {plot_text(what)}"

    def _draw_histogram(self, fig) -> None:
        layer, centers, before, after, width = self._hist
        fig.data[0].x, fig.data[0].y, fig.data[0].width = centers, before, width
        fig.data[1].x, fig.data[1].y, fig.data[1].width = (centers if after else []), after, width
        fig.layout.title.text = f"Weights of {plot_text(layer)}: before / after"

    def _draw_pareto(self, fig) -> None:
        runs = self._runs
        hover = [f"#{r['id']} {plot_text(r['label'])}<br>acc {r['accuracy']:.2%}<br>"
                 f"{r['size_kib']:.1f} KiB, {r['latency_ms']:.2f} ms" for r in runs]
        for trace, key in zip(fig.data, ("size_kib", "latency_ms")):
            x = [None if math.isnan(r[key]) else r[key] for r in runs]  # NaN is not JSON
            front = pareto_front([(v if v is not None else math.inf, -r["accuracy"]) for v, r in zip(x, runs)])
            trace.x, trace.y = x, [r["accuracy"] for r in runs]
            trace.text = [f"#{r['id']}" for r in runs]
            trace.customdata = [r["id"] for r in runs]
            trace.hovertext, trace.hoverinfo = hover, "text"
            trace.marker.color = ["#2ca02c" if i in front else "#aaaaaa" for i in range(len(runs))]

    def _clicked(self, trace, points, state=None) -> None:
        if points.point_inds and self.on_pick is not None:
            self.on_pick(int(trace.customdata[points.point_inds[0]]))

    def figures(self) -> dict[str, go.Figure]:
        return {"curves": self.curves, "sweep": self.sweep, "sensitivity": self.sensitivity,
                "histogram": self.histogram, "pareto": self.pareto}

    def has_data(self, name: str) -> bool:
        return any(len(t.x or ()) for t in getattr(self, name).data)


# -- headless rendering -----------------------------------------------------------------

_plotlyjs_sent = False


def static_bundle(fig: go.Figure) -> dict[str, str | dict]:
    """A display bundle for a figure without widgets: plotly's JSON mimetype (JupyterLab
    renders it with its plotly extension) plus offline HTML for nbconvert/other viewers.

    The first figure of a kernel session inlines plotly.js (~4.8 MB, once); later ones reuse
    ``window.Plotly``. MathJax is left out (plotly would fetch it from a CDN).
    """
    global _plotlyjs_sent
    import plotly.io as pio

    fig = go.Figure(fig)  # a FigureWidget's state, as a plain figure
    include = not _plotlyjs_sent
    _plotlyjs_sent = True
    body = pio.to_html(fig, full_html=False, include_plotlyjs=include, include_mathjax=False,
                       config={"displaylogo": False})
    spec = json.loads(pio.to_json(fig, validate=False))
    return {"application/vnd.plotly.v1+json": {"data": spec.get("data", []), "layout": spec.get("layout", {}),
                                               "config": {"displaylogo": False}},
            "text/html": body, "text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"}


def show_static(fig: go.Figure) -> None:
    from IPython.display import display

    display(static_bundle(fig), raw=True)
