"""The panel's figures, built from plain numbers (pure functions: same numbers, same figure).

Plot hygiene shared by all: accuracy is one axis in percent with as many decimals as its range
needs; epochs and bit widths tick on integers; an axis whose values span 5x or more is
logarithmic with 1-2-5 ticks; the histogram counts on a log axis; no fixed width (the figure
fills its output area). Every user string (module names, labels, titles) goes through
``plot_text``: plotly shows it as text, never as markup.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from slimkit.measure import pareto_front
from slimkit.table import plot_text

HEIGHT = 320
CURVE_COLORS = {"loss": "#d62728", "val_accuracy": "#1f77b4"}
METHOD_COLORS = {"original": "#7f7f7f", "quantize": "#1f77b4", "prune": "#d62728", "distill": "#2ca02c",
                 "sparsify": "#9467bd"}
MORE_COLORS = ("#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")  # pipelines, other methods
LOG_SPAN = 5.0  # positive values spanning this ratio or more get a log axis


def _figure(**layout) -> go.Figure:
    """No template here (validating one costs more than the rest of a figure): the live front end
    colours figures after JupyterLab's theme, ``static_bundle`` adds plotly_white."""
    # titles left-aligned and small: long ones (layer names, settings) stay inside a narrow plot
    title = {"text": layout.pop("title", ""), "x": 0.01, "xanchor": "left", "font": {"size": 14}}
    return go.Figure(layout={"height": HEIGHT, "autosize": True, "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
                             "legend": {"orientation": "h", "y": -0.25}, "title": title} | layout)


def percent_axis(values: Sequence[float | None]) -> dict[str, Any]:
    """Accuracy (a fraction) shown in percent: 97.6%, not 0.976 or a row of "98%" ticks."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    span = max(vals) - min(vals) if vals else 1.0
    return {"tickformat": ".0%" if span >= 0.2 else ".1%" if span >= 0.02 else ".2%", "hoverformat": ".2%"}


def scale_axis(values: Sequence[float | None]) -> dict[str, Any]:
    """Log with 1-2-5 ticks when the positive values span :data:`LOG_SPAN` x or more, else linear."""
    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if len(vals) < 2 or max(vals) / min(vals) < LOG_SPAN:
        return {"type": "linear"}
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in (1, 2, 5)]
    return {"type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def integer_axis(count: int) -> dict[str, Any]:
    """Ticks on whole numbers only (epochs, bits): every one, or every k-th past ten."""
    return {"tickmode": "linear", "tick0": 0, "dtick": max(1, math.ceil(count / 10)), "tickformat": "d"}


def curves(title: str, data: dict[str, list[list[float]]]) -> go.Figure:
    """Loss (left) and validation accuracy (right, percent) per epoch."""
    (lx, ly), (ax, ay) = data["loss"], data["val_accuracy"]
    fig = _figure(title=plot_text(title), margin={"l": 60, "r": 70, "t": 40, "b": 40},  # room for the % axis
                  xaxis=dict(title_text="epoch", **integer_axis(int(max([*lx, *ax], default=1)))),
                  yaxis=dict(title_text="loss", **scale_axis(ly)),
                  yaxis2=dict(title_text="val accuracy", overlaying="y", side="right", showgrid=False,
                              **percent_axis(ay)))
    fig.add_scatter(x=list(lx), y=list(ly), name="loss", mode="lines+markers", line={"color": CURVE_COLORS["loss"]})
    fig.add_scatter(x=list(ax), y=list(ay), name="val accuracy", mode="lines+markers", yaxis="y2",
                    line={"color": CURVE_COLORS["val_accuracy"]})
    return fig


def _sweep_axis(values: list[float]) -> dict[str, Any]:
    if values and all(float(v).is_integer() for v in values):  # bits
        return integer_axis(int(max(values) - min(values)) or 1)
    if values and all(0 <= v <= 1 for v in values):  # sparsity, width
        return {"tickformat": ".0%"}
    return scale_axis(values)  # temperature


def sweep(sweeps: Sequence[dict[str, Any]]) -> go.Figure:
    """Test accuracy per swept value: one x axis per swept setting (the text after the sweep
    name's colon), side by side, so a sparsity sweep is never drawn on the bits axis."""
    params = list(dict.fromkeys(s["name"].split(":")[-1].strip() for s in sweeps)) or ["setting"]
    ys = [v for s in sweeps for v in s["y"]]
    fig = _figure(title="Accuracy vs setting (sweep)", yaxis=dict(title_text="test accuracy", **percent_axis(ys)))
    gap = 0.08
    width = (1 - gap * (len(params) - 1)) / len(params)
    for i, param in enumerate(params):
        xs = [v for s in sweeps if s["name"].split(":")[-1].strip() == param for v in s["x"]]
        fig.update_layout({f"xaxis{i + 1 if i else ''}": dict(
            domain=[i * (width + gap), i * (width + gap) + width], anchor="y", title={"text": plot_text(param)},
            **_sweep_axis(xs))})
    names = [s["name"] for s in sweeps]
    for k, s in enumerate(sweeps):
        i = params.index(s["name"].split(":")[-1].strip())
        name = s["name"] + (f" #{names[:k + 1].count(s['name'])}" if names.count(s["name"]) > 1 else "")
        fig.add_scatter(x=list(s["x"]), y=list(s["y"]), name=plot_text(name), mode="lines+markers",
                        xaxis=f"x{i + 1 if i else ''}", yaxis="y")
    return fig


def sensitivity(layers: Sequence[str], drops: Sequence[float], what: str, hover: Sequence[str]) -> go.Figure:
    title = f"Per-layer sensitivity: {plot_text(what)}" if what else "Per-layer sensitivity"
    fig = _figure(title=title, xaxis_title="layer", yaxis_title="accuracy drop (points)")
    fig.add_bar(x=[plot_text(n) for n in layers], y=list(drops), name="sensitivity", marker_color="#9467bd",
                hovertext=[plot_text(h) for h in hover] or None)
    return fig


def histogram(layer: str, centers: list[float], before: list[int], after: list[int], width: float) -> go.Figure:
    title = f"Weights of {plot_text(layer)}: before / after" if layer else "Weights before / after"
    fig = _figure(title=title, barmode="overlay", bargap=0, xaxis_title="weight value",
                  yaxis={"title_text": "count (log)", "type": "log", "dtick": 1})  # decades: 1, 10, 100
    fig.add_bar(x=centers, y=before, width=width, name="before", opacity=0.6, marker_color="#7f7f7f")
    fig.add_bar(x=centers if after else [], y=after, width=width, name="after", opacity=0.6, marker_color="#ff7f0e")
    return fig


def method_of(run: dict[str, Any]) -> str:
    """The run's method ("prune+quantize" for a pipeline): given, or the method names in its label."""
    if run.get("method"):
        return str(run["method"])
    found = [w for w in re.findall(r"[a-z]+", str(run.get("label", ""))) if w in METHOD_COLORS]
    return "+".join(found) or "other"


def pareto(runs: Sequence[dict[str, Any]]) -> go.Figure:
    """Accuracy vs size (left) and vs latency (right), one point per run coloured by method.

    Traces 0 and 1 hold every run (customdata: the run id); the Pareto-front points are larger,
    outlined and labelled "#id" (the others say who they are on hover, so labels stay readable
    past ten runs); a dotted line joins the front; legend-only traces name the colours.
    """
    acc = [r["accuracy"] for r in runs]
    fig = _figure(title="Pareto: accuracy vs size and latency (click a point)", height=HEIGHT + 40,
                  legend={"orientation": "h", "y": -0.3, "itemclick": False, "itemdoubleclick": False},
                  xaxis={"domain": [0, 0.46], "anchor": "y"}, xaxis2={"domain": [0.54, 1], "anchor": "y2"},
                  yaxis=dict(anchor="x", title_text="test accuracy", **percent_axis(acc)),
                  yaxis2={"anchor": "x2", "matches": "y", "showticklabels": False})  # one accuracy axis
    methods = [method_of(r) for r in runs]
    extra = iter(MORE_COLORS * (len(runs) // len(MORE_COLORS) + 1))
    colors = {m: METHOD_COLORS.get(m) or next(extra) for m in dict.fromkeys(methods)}
    hover = [f"#{r['id']} {plot_text(r['label'])}<br>accuracy {r['accuracy']:.2%}<br>"
             f"{r['size_kib']:.1f} KiB, {r['latency_ms']:.3g} ms" for r in runs]
    for col, key, title in ((1, "size_kib", "artifact size (KiB)"), (2, "latency_ms", "latency (ms / batch)")):
        n = "" if col == 1 else "2"
        x = [None if math.isnan(r[key]) else r[key] for r in runs]  # NaN is not JSON
        front = pareto_front([(v if v is not None else math.inf, -a) for v, a in zip(x, acc)])
        fig.add_scatter(x=x, y=acc, mode="markers+text", name="vs size" if col == 1 else "vs latency",
                        text=[f"#{r['id']}" if i in front else "" for i, r in enumerate(runs)],
                        textposition="top center", customdata=[r["id"] for r in runs], hovertext=hover,
                        hoverinfo="text", showlegend=False, cliponaxis=False, xaxis=f"x{n}", yaxis=f"y{n}",
                        marker={"size": [13 if i in front else 9 for i in range(len(runs))],
                                    "color": [colors[m] for m in methods],
                                    "line": {"width": [2 if i in front else 0 for i in range(len(runs))],
                                              "color": "#888888"}})
        fig.layout[f"xaxis{n}"].update(title_text=title, **scale_axis(x))
    for col, n in ((1, ""), (2, "2")):  # after the points: traces 0 and 1 stay the runs
        pts = sorted((x, a) for x, a in zip(fig.data[col - 1].x, acc) if x is not None)
        best, line = -math.inf, []
        for x, a in pts:  # the front, cheapest first: each point better than all cheaper ones
            if a > best:
                best, line = a, line + [(x, a)]
        fig.add_scatter(x=[p[0] for p in line], y=[p[1] for p in line], mode="lines", name="Pareto front",
                        line={"dash": "dot", "color": "#888888", "shape": "hv"}, hoverinfo="skip",
                        showlegend=col == 1 and len(line) > 1, xaxis=f"x{n}", yaxis=f"y{n}")
    for m, c in colors.items():
        fig.add_scatter(x=[None], y=[None], mode="markers", name=plot_text(m), marker={"size": 10, "color": c},
                        hoverinfo="skip")
    return fig


def auto_state(objective: str = "size", title: str = "") -> dict[str, Any]:
    """What :func:`autotune` draws: the objective, every trial's numbers, the pick, the Pareto set."""
    return {"objective": objective, "title": title, "trials": [], "pick": None, "pareto": []}


def autotune(state: dict[str, Any]) -> go.Figure:
    """The search's trials as they arrive: artifact bytes (or latency) against score drop, within
    the budget filled, outside it hollow; the Pareto set joined by a dotted line; the pick a star."""
    size = state["objective"] == "size"
    key, unit = ("size_bytes", "artifact size (KiB)") if size else ("latency_ms", "latency (ms / batch)")
    trials = state["trials"]
    xs = [t[key] / 1024 if size else t[key] for t in trials]
    drops = [t["drop"] for t in trials]
    title = f"autotune: {plot_text(state['title'])}" if state["title"] else "autotune: trials (auto tab)"
    fig = _figure(title=title, xaxis=dict(title_text=unit, **scale_axis(xs)),
                  yaxis={"title_text": "score drop (points)"})
    hover = [f"trial {i}: {plot_text(t['label']) or 'original'}<br>drop {t['drop']:+.3f} pts<br>"
             f"{t['size_bytes'] / 1024:,.1f} KiB, {t['latency_ms']:.3g} ms" for i, t in enumerate(trials)]
    ok = [bool(t.get("ok")) for t in trials]
    fig.add_scatter(x=xs, y=drops, mode="markers", name="trials", customdata=list(range(len(trials))),
                    hovertext=hover, hoverinfo="text",
                    marker={"size": 9, "color": "#1f77b4", "symbol": ["circle" if o else "circle-open" for o in ok]})
    front = sorted((xs[i], drops[i]) for i in state["pareto"] if i < len(trials))
    fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto set",
                    line={"dash": "dot", "color": "#888888", "shape": "hv"}, hoverinfo="skip")
    pick = state["pick"]
    shown = pick is not None and pick < len(trials)
    fig.add_scatter(x=[xs[pick]] if shown else [], y=[drops[pick]] if shown else [], mode="markers+text",
                    name="pick", text=[f"pick: trial {pick}"] if shown else [], textposition="top center",
                    marker={"size": 16, "symbol": "star", "color": "#d62728"}, hoverinfo="skip", cliponaxis=False)
    return fig
