"""The panel's five plotly figures: drawn live through :class:`.PlotWidget`, static headless.

The numbers live here in plain Python (the panel's worker thread appends to them); each
:meth:`Plots.flush` (called through a throttle) rebuilds the figures whose numbers changed
from :mod:`.figures` and sends each one once. Live, every figure is a :class:`.PlotWidget`
whose state is the figure's JSON, so a reloaded page draws the same data. Headless
(papermill/nbconvert) nobody renders widgets, so the figures stay plain ``go.Figure`` s and
:func:`static_bundle` renders them offline (plotly JSON + SVG: no plotly.js, never a CDN).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from . import figures as F

NAMES = ("curves", "sweep", "sensitivity", "histogram", "pareto", "auto")
HIST_LIMIT = 1_000_000  # weights binned per layer; a larger layer is binned from a fixed sample


class Plots:
    """Curves, sweep, sensitivity, histogram and Pareto figures plus their data.

    ``plots.curves`` (and the others) is what the panel places: a :class:`.PlotWidget` live, the
    ``go.Figure`` itself headless; :meth:`figures` always gives the ``go.Figure`` s.
    ``on_pick(run_id)`` is called when a Pareto point is clicked.
    """

    def __init__(self, live: bool, on_pick: Callable[[int], Any] | None = None):
        self.live = live
        self.on_pick = on_pick
        self._lock = threading.RLock()
        self._dirty: set[str] = set()
        self._curve: dict[str, list[list[float]]] = {"loss": [[], []], "val_accuracy": [[], []]}
        self._curve_title = "Training curves (fine-tune / distill)"
        self._sweeps: list[dict[str, Any]] = []  # {name, x, y}
        self._sens: tuple | None = None
        self._hist: tuple | None = None
        self._runs: list[dict[str, Any]] = []
        self._auto: dict[str, Any] = F.auto_state()  # the auto tab's trials, as their events arrive
        self._figs = {name: self._build(name) for name in NAMES}
        self.views: dict[str, Any] = {}
        if live:
            from .plot_widget import PlotWidget

            self.views = {name: PlotWidget(fig) for name, fig in self._figs.items()}
            self.views["pareto"].on_click = self._clicked

    curves = property(lambda self: self._shown("curves"))
    sweep = property(lambda self: self._shown("sweep"))
    sensitivity = property(lambda self: self._shown("sensitivity"))
    histogram = property(lambda self: self._shown("histogram"))
    pareto = property(lambda self: self._shown("pareto"))
    auto = property(lambda self: self._shown("auto"))

    def _shown(self, name: str):
        return self.views[name] if self.live else self._figs[name]

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
        """A new sweep, e.g. "prune: sparsity": drawn on the axis of the setting after the colon."""
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
        """Binned here, so the browser gets ``bins`` counts per series whatever the layer's size.

        Every weight is counted up to :data:`HIST_LIMIT`; past it, the same fixed random sample
        of positions (seed 0) of before and after, and the title says so.
        """
        parts = [np.asarray(p, dtype=np.float64).ravel() for p in (before, after) if p is not None]
        n = parts[0].size
        if n > HIST_LIMIT and all(p.size == n for p in parts):
            pick = np.random.default_rng(0).integers(0, n, HIST_LIMIT)
            parts = [p[pick] for p in parts]
            layer = f"{layer}, a sample of {HIST_LIMIT:,} of {n:,}"
        lo, hi = min(p.min() for p in parts), max(p.max() for p in parts)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        centers = ((edges[:-1] + edges[1:]) / 2).tolist()
        counts = [np.histogram(p, edges)[0].tolist() for p in parts]
        with self._lock:
            self._hist = (layer, centers, counts[0], counts[1] if len(counts) > 1 else [], float(edges[1] - edges[0]))
            self._dirty.add("histogram")

    def set_runs(self, runs: Sequence[dict[str, Any]]) -> None:
        """``runs``: dicts with id, label, accuracy, size_kib, latency_ms (and method, which
        colours the point; without it the method names in the label do)."""
        with self._lock:
            self._runs = [dict(r) for r in runs]
            self._dirty.add("pareto")

    def start_auto(self, objective: str, title: str) -> None:
        """A new search: its trials plot bytes (objective "size") or latency against score drop."""
        with self._lock:
            self._auto = F.auto_state(objective, title)
            self._dirty.add("auto")

    def add_trial(self, metrics: dict[str, float], label: str = "") -> None:
        """One autotune trial event's numbers (drop, size_bytes, latency_ms, ok...)."""
        with self._lock:
            self._auto["trials"].append({**metrics, "label": label})
            self._dirty.add("auto")

    def set_auto_pick(self, pick: int | None, pareto: Sequence[int] = ()) -> None:
        """The search's pick (trial index) and Pareto set, from its report, once it ends."""
        with self._lock:
            self._auto["pick"], self._auto["pareto"] = pick, list(pareto)
            self._dirty.add("auto")

    # -- data out (throttled) -------------------------------------------------------------

    def _build(self, name: str) -> go.Figure:
        if name == "curves":
            return F.curves(self._curve_title, self._curve)
        if name == "sweep":
            return F.sweep(self._sweeps)
        if name == "sensitivity":
            return F.sensitivity(*(self._sens or ([], [], "", [])))
        if name == "histogram":
            return F.histogram(*(self._hist or ("", [], [], [], 0.0)))
        if name == "auto":
            return F.autotune(self._auto)
        return F.pareto(self._runs)

    def flush(self) -> None:
        """Rebuild the figures whose data changed and send each one in one message."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            built = {name: self._build(name) for name in sorted(dirty)}
            self._figs.update(built)
        for name, fig in built.items():
            if name in self.views:
                self.views[name].show(fig)

    def _clicked(self, trace: int, point: int, run_id: int | None = None) -> None:
        """A Pareto click: the run whose id the browser sent (unknown ids do nothing; rows may
        have been deleted since), or, from a client that sends no id, the point's customdata."""
        with self._lock:
            ids = [r["id"] for r in self._runs]
        if run_id is None:
            data = self._figs["pareto"].data[trace].customdata
            run_id = None if data is None else int(data[point])
        if self.on_pick is not None and run_id in ids:
            self.on_pick(run_id)

    def figures(self) -> dict[str, go.Figure]:
        return dict(self._figs)

    def has_data(self, name: str) -> bool:
        return any(v is not None for t in self._figs[name].data for v in (t.x if t.x is not None else ()))


# -- headless rendering -----------------------------------------------------------------

def static_bundle(fig: go.Figure) -> dict[str, str | dict]:
    """A display bundle for a figure without widgets: plotly's JSON mimetype (JupyterLab renders
    it with its plotly extension) and an SVG for every other viewer (slimkit.runs.static), in the
    light template (live figures take JupyterLab's theme instead). No plotly.js, no CDN."""
    from slimkit.runs.static import bundle

    fig = go.Figure(getattr(fig, "figure", fig))  # a PlotWidget's figure, or a figure
    fig.update_layout(template="plotly_white")
    return bundle(fig)


def show_static(fig: go.Figure) -> None:
    from IPython.display import display

    display(static_bundle(fig), raw=True)
