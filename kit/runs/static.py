"""Plotly figures as small static SVG, drawn with matplotlib.

Reports and stored notebooks must stay small and work offline: plotly.js is ~4.8 MB, inlined once
per page, while an SVG of a notebook's plot is tens of kB. :func:`svg` redraws the traces the
notebooks use (scatter lines/markers, bars, horizontal/vertical reference lines, subplots, log
axes) from the figure's JSON; any other trace type is named in the figure, never dropped silently.
:func:`show` displays a figure as an SVG plus plotly's JSON (interactive in JupyterLab).
"""
from __future__ import annotations

import html
import io
import re
from itertools import pairwise
from typing import Any

PLOTLY_MIME = "application/vnd.plotly.v1+json"
_DASH = {"dot": ":", "dash": "--", "dashdot": "-.", "longdash": "--", "solid": "-"}
_TAG = re.compile(r"<br\s*/?>|<[^>]+>", re.IGNORECASE)


def _text(value: Any) -> str:
    """Plotly label text (HTML-ish, already escaped by slimkit.table.plot_text) as plain text that
    matplotlib prints literally: no tags, entities decoded, ``$`` not taken as mathtext."""
    if isinstance(value, dict):
        value = value.get("text")
    s = _TAG.sub(lambda m: "\n" if m.group(0).lower().startswith("<br") else "", str(value or ""))
    return html.unescape(s).replace("$", r"\$")


def _axis_names(trace: dict[str, Any]) -> tuple[str, str]:
    x, y = trace.get("xaxis", "x"), trace.get("yaxis", "y")
    return "xaxis" + x[1:], "yaxis" + y[1:]


def _draw_trace(ax, trace: dict[str, Any], index: int) -> bool:
    """Draw one trace on ``ax``; False for a trace type this module does not draw."""
    kind = trace.get("type", "scatter")
    if kind not in ("scatter", "scattergl", "bar"):
        return False
    name = _text(trace.get("name")) or None
    show = trace.get("showlegend", True) is not False and name is not None
    label = name if show else "_nolegend_"
    x, y = list(trace.get("x") or []), list(trace.get("y") or [])
    if not y and not x:
        return True
    if not x:
        x = list(range(len(y)))
    marker, line = trace.get("marker") or {}, trace.get("line") or {}
    color = line.get("color") or (marker.get("color") if isinstance(marker.get("color"), str) else None)
    color = color or f"C{index % 10}"
    if kind == "bar":
        pts = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
        if pts:
            xs, ys = zip(*pts)
            if all(isinstance(v, str) for v in xs):
                ax.bar([_text(v) for v in xs], ys, color=color, alpha=trace.get("opacity", 1.0), label=label)
                ax.tick_params(axis="x", labelrotation=45)
            else:
                width = min(abs(b - a) for a, b in pairwise(xs)) if len(xs) > 1 else 0.8
                ax.bar(xs, ys, width=width, color=color, alpha=trace.get("opacity", 1.0), label=label)
        return True
    mode = trace.get("mode") or "lines+markers"
    colors = marker.get("color")
    pts = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    if "lines" in mode and pts:
        ax.plot(*zip(*pts), linestyle=_DASH.get(line.get("dash") or "solid", "-"), color=color,
                label=label if "markers" not in mode else "_nolegend_")
    if "markers" in mode and pts:
        keep = [i for i, (a, b) in enumerate(zip(x, y)) if a is not None and b is not None]
        c = _per_point(colors, keep, color)
        sizes = _per_point(marker.get("size"), keep, 6)
        area = [(v or 6) ** 2 * 0.8 for v in sizes] if isinstance(sizes, list) else (sizes or 6) ** 2 * 0.8
        ax.scatter(*zip(*pts), c=c, s=area, label=label, zorder=3)
    if "text" in mode and pts:
        for (a, b), t in zip(pts, trace.get("text") or []):
            ax.annotate(_text(t), (a, b), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    return True


def _per_point(value, keep: list[int], default):
    """A marker property given per point (plotly allows a list, possibly shorter) or for all."""
    if isinstance(value, (list, tuple)):
        return [value[i] if i < len(value) and value[i] is not None else default for i in keep]
    return default if value is None else value


def _style_axis(ax, layout: dict[str, Any], xname: str, yname: str) -> None:
    xa, ya = layout.get(xname) or {}, layout.get(yname) or {}
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for spec, axis, set_label, set_scale in ((xa, ax.xaxis, ax.set_xlabel, ax.set_xscale),
                                             (ya, ax.yaxis, ax.set_ylabel, ax.set_yscale)):
        set_label(_text(spec.get("title")), fontsize=9)
        if spec.get("type") == "log":  # ticks at 1, 2, 5 x 10^k written as plain numbers
            set_scale("log")
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
    if xa.get("range") and xa.get("type") != "log":
        ax.set_xlim(*xa["range"])
    if ya.get("range") and ya.get("type") != "log":
        ax.set_ylim(*ya["range"])
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)


def _ref(ref: str | None) -> str:
    """'x2 domain' -> 'xaxis2'; 'paper' -> 'paper'."""
    ref = (ref or "paper").split()[0]
    return ref if ref == "paper" else ref[0] + "axis" + ref[1:]


def _shapes(layout: dict[str, Any], axes: dict[tuple[str, str], Any]) -> None:
    """Reference lines (fig.add_hline/add_vline) on the subplots they name."""
    for shape in layout.get("shapes") or []:
        if shape.get("type") != "line":
            continue
        xref, yref = _ref(shape.get("xref")), _ref(shape.get("yref"))
        line = shape.get("line") or {}
        style = {"linestyle": _DASH.get(line.get("dash") or "solid", "-"), "color": line.get("color") or "grey",
                 "linewidth": 1}
        for (xn, yn), ax in axes.items():
            if shape.get("y0") == shape.get("y1") and yref == yn and "domain" in str(shape.get("xref")):
                ax.axhline(shape["y0"], **style)
            elif shape.get("x0") == shape.get("x1") and xref == xn and "domain" in str(shape.get("yref")):
                ax.axvline(shape["x0"], **style)


def _annotations(fig, layout: dict[str, Any], axes: dict[tuple[str, str], Any], box) -> None:
    """Subplot titles (paper coordinates) and reference-line labels (axis coordinates)."""
    from matplotlib.transforms import blended_transform_factory

    left, bottom, width, height = box
    for note in layout.get("annotations") or []:
        text = _text(note.get("text"))
        if not text:
            continue
        xref, yref = _ref(note.get("xref")), _ref(note.get("yref"))
        if xref == "paper" and yref == "paper":
            fig.text(left + width * note.get("x", 0.5), bottom + height * note.get("y", 1.0), text,
                     ha="center", va="bottom", fontsize=9)
            continue
        for (xn, yn), ax in axes.items():
            if yn == yref and "domain" in str(note.get("xref")):
                ax.text(note.get("x", 1.0), note.get("y", 0), text, fontsize=8, ha="right", va="bottom",
                        transform=blended_transform_factory(ax.transAxes, ax.transData))
                break
            if xn == xref and "domain" in str(note.get("yref")):
                ax.text(note.get("x", 0), note.get("y", 1.0), text, fontsize=8, ha="left", va="top",
                        transform=blended_transform_factory(ax.transData, ax.transAxes))
                break


def svg(figure: Any, width: float = 9.0) -> str:
    """The figure (a plotly Figure, FigureWidget or its dict) as an SVG document: a few tens of kB,
    deterministic for the same figure (fixed hash salt, no date)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    spec = figure.to_dict() if hasattr(figure, "to_dict") else dict(figure)
    data, layout = spec.get("data") or [], spec.get("layout") or {}
    height_px = layout.get("height") or 450
    fig = Figure(figsize=(width, width * min(height_px / 900, 0.8)))
    box = (0.08, 0.14, 0.78, 0.7)  # the plotting area, room for titles and the legend on the right
    axes: dict[tuple[str, str], Any] = {}
    skipped: list[str] = []
    for i, trace in enumerate(data):
        xn, yn = _axis_names(trace)
        if (xn, yn) not in axes:
            x0, x1 = (layout.get(xn) or {}).get("domain") or (0, 1)
            y0, y1 = (layout.get(yn) or {}).get("domain") or (0, 1)
            rect = (box[0] + box[2] * x0, box[1] + box[3] * y0, box[2] * (x1 - x0), box[3] * (y1 - y0))
            axes[(xn, yn)] = fig.add_axes(rect)
            _style_axis(axes[(xn, yn)], layout, xn, yn)
        if not _draw_trace(axes[(xn, yn)], trace, i):
            skipped.append(trace.get("type", "?"))
    if not axes:
        axes[("xaxis", "yaxis")] = fig.add_axes(box)
    _shapes(layout, axes)
    _annotations(fig, layout, axes, box)
    title = _text(layout.get("title"))
    if skipped:  # said in the figure itself: a static copy never silently misses data
        title += f"\n(not drawn in this static copy: {', '.join(sorted(set(skipped)))} traces)"
    fig.suptitle(title, fontsize=11, y=0.99)
    handles = [h for ax in axes.values() for h in ax.get_legend_handles_labels()[0]]
    labels = [lb for ax in axes.values() for lb in ax.get_legend_handles_labels()[1]]
    if labels:
        seen = dict(zip(labels, handles))
        fig.legend(list(seen.values()), list(seen.keys()), loc="center left", bbox_to_anchor=(0.87, 0.5),
                   fontsize=8, frameon=False)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "slimkit", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")  # the legend in full
    return buf.getvalue()


def bundle(figure: Any) -> dict[str, Any]:
    """A display bundle: plotly's JSON (JupyterLab draws it interactively) and the SVG (every other
    viewer, the HTML report, GitHub). No plotly.js: nothing of megabytes, nothing from a CDN."""
    import json

    import plotly.io as pio

    spec = json.loads(pio.to_json(figure, validate=False))
    return {PLOTLY_MIME: {"data": spec.get("data", []), "layout": spec.get("layout", {}),
                          "config": {"displaylogo": False}},
            "image/svg+xml": svg(spec), "text/plain": describe(spec)}


def describe(spec: dict[str, Any]) -> str:
    """A figure's plain-text stand-in (and the report's alt text): its title."""
    return f"<figure: {_text((spec.get('layout') or {}).get('title'))}>"


def show(figure: Any) -> None:
    """Display a plotly figure in a notebook as :func:`bundle` (the notebooks' ``fig.show()``)."""
    from IPython.display import display

    display(bundle(figure), raw=True)
