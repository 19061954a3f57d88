"""Figures the tutorial notebooks share. Plotly lives here because only ``slimkit.runs`` may
import notebook libraries in the core."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..measure import pareto_front
from ..table import plot_text

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")
# (key, scale to the axis unit, axis title) of the two panels, accuracy on the y axis of both
_PANELS = (("size_bytes", 1 / 1024, "saved artifact (KiB, log scale)"),
           ("latency_ms", 1.0, "latency per batch (ms, log scale)"))


def pareto_figure(points: Sequence[dict[str, Any]], title: str, device: Any = "cpu") -> go.Figure:
    """Accuracy against saved size and against latency on ``device``, side by side, log x axes:
    a marker colour per ``group``, the points no other beats on both axes joined by a dotted line.

    ``points``: dicts with ``label``, ``group``, ``accuracy`` (0..1), ``size_bytes`` and
    ``latency_ms`` (the rows of :func:`slimkit.compare` with a latency added)."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=("accuracy vs saved size", plot_text(f"accuracy vs latency on {device}")))
    groups = list(dict.fromkeys(p["group"] for p in points))
    colors = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    for col, (key, scale, axis) in enumerate(_PANELS, start=1):
        for g in groups:
            pts = [p for p in points if p["group"] == g]
            fig.add_scatter(x=[p[key] * scale for p in pts], y=[100 * p["accuracy"] for p in pts], mode="markers",
                            name=plot_text(g), legendgroup=g, showlegend=col == 1,
                            marker=dict(size=10, color=colors[g]), text=[plot_text(p["label"]) for p in pts],
                            hovertemplate="%{text}<br>%{x:.3g}, %{y:.1f}%", row=1, col=col)
        front = pareto_front([(p[key], -p["accuracy"]) for p in points])
        best = sorted((p for i, p in enumerate(points) if i in front), key=lambda p: p[key])
        fig.add_scatter(x=[p[key] * scale for p in best], y=[100 * p["accuracy"] for p in best], mode="lines",
                        line=dict(color="grey", dash="dot"), name="Pareto front", showlegend=col == 1,
                        row=1, col=col)
        fig.update_xaxes(type="log", title_text=axis, row=1, col=col)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_layout(title=plot_text(title), template="plotly_white", height=460)
    return fig
