"""Reports from runs: a notebook as one small, self-contained HTML file that loads nothing from the
network, opening with a summary of the run (parameters, status, key metrics, hardware, duration).

Plots are static SVG (:mod:`slimkit.runs.static`): a plotly output that carries no image gets one
at conversion time, and its plotly HTML (which inlines ~4.8 MB of plotly.js) is left out, so a
report stays well under 2 MB. ``interactive=True`` keeps plotly instead (plotly.js inlined once).
Every value in the summary is escaped: parameters and errors may hold any text.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from .static import PLOTLY_MIME, describe, svg

KEY_METRICS = 8  # numeric metrics shown in the summary; all of them are in metrics.json


def _static_plots(nb) -> int:
    """Give each plotly output an SVG and drop its plotly HTML; returns how many were converted."""
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                data.pop("text/html", None)
                if "image/svg+xml" not in data and "image/png" not in data:
                    try:
                        data["image/svg+xml"] = svg(data[PLOTLY_MIME])
                    except Exception as e:  # one figure the SVG drawing cannot handle must not lose the report
                        data["text/plain"] = f"{describe(data[PLOTLY_MIME])} could not be drawn: {e}"
                        continue
                    data.setdefault("text/plain", describe(data[PLOTLY_MIME]))
                    count += 1
    return count


def _interactive_plots(nb) -> int:
    """Give each plotly output a text/html twin; plotly.js is inlined in the first only."""
    import plotly.io as pio

    first, count = True, 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                data["text/html"] = pio.to_html(data[PLOTLY_MIME], include_plotlyjs=first, full_html=False,
                                                config={"displaylogo": False})
                first, count = False, count + 1
    return count


def _number(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def summary_html(record: Any) -> str:
    """The report's header for a run record (:class:`slimkit.runs.records.Record` or its dict)."""
    r = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    e = html.escape
    status = str(r.get("status") or "?")
    params = r.get("params") or {}
    metrics = {k: v for k, v in (r.get("metrics") or {}).items()  # not echoes of a parameter (seed)
               if not k.startswith("_") and k not in params and isinstance(v, (int, float)) and not isinstance(v, bool)}
    shown = list(metrics.items())[:KEY_METRICS]
    hw = r.get("hardware") or {}
    gpus = ", ".join(str(g.get("name", "?")) for g in hw.get("gpus", []) if isinstance(g, dict))
    hardware = (f"{hw.get('cpu_model', '?')}, {hw.get('cpu_usable_cores', '?')} cores"
                + (f", {gpus}" if gpus else "") + f", torch {(hw.get('packages') or {}).get('torch', '?')}"
                if hw else "not recorded")
    duration = r.get("duration_s")
    rows = [("status", f'<b class="slimkit-{e(status)}">{e(status)}</b>'
             + (f" — {e(str(r['error']))}" if r.get("error") else "")),
            ("run", e(f"{r.get('id', '?')} ({Path(str(r.get('output_dir') or '')).name})")),
            ("notebook", e(Path(str(r.get("notebook") or "?")).name)),
            ("duration", e(f"{duration:.1f} s" if isinstance(duration, (int, float)) else "?")),
            ("hardware", e(hardware)),
            ("parameters", ", ".join(f"<code>{e(str(k))} = {e(repr(v))}</code>"
                                     for k, v in params.items()) or "none"),
            ("key metrics", ", ".join(f"{e(k)} <b>{e(_number(v))}</b>" for k, v in shown)
             + (f" (+{len(metrics) - len(shown)} more in metrics.json)" if len(metrics) > len(shown) else "")
             or "none recorded")]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    color = {"ok": "#2ca02c", "failed": "#d62728"}.get(status, "#ff7f0e")
    return (f'<section class="slimkit-summary" style="border-left:6px solid {color};padding:8px 16px;'
            f'margin:16px auto;max-width:1100px;font:14px sans-serif;background:#f7f7f7">'
            f'<h2 style="margin:4px 0">slimkit run report</h2>'
            f'<table style="border-collapse:collapse;text-align:left">{body}</table></section>')


# nbconvert's lab template loads require.js, MathJax and mermaid from a CDN; the report needs none of
# them, so this template leaves the three out, and puts the run's summary above the notebook.
# Figures stay <img> of a base64 SVG (an SVG shown as an image never runs script), with alt text.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}{{ super() }}{{ resources.slimkit_summary }}{%- endblock body_header -%}
{% block data_svg scoped -%}
<div class="jp-RenderedSVG jp-OutputArea-output {{ extra_class }}" data-mime-type="image/svg+xml">
<img alt="{{ output.data.get('text/plain', 'figure') | escape_html }}"
 src="data:image/svg+xml;base64,{{ output.data['image/svg+xml'] | text_base64 | escape_html }}">
</div>
{%- endblock data_svg %}
"""


def export_html(notebook: str | Path, html_path: str | Path | None = None, *, record: Any = None,
                interactive: bool = False) -> Path:
    """Convert an executed notebook to one HTML file that loads nothing from the network; with a
    run ``record``, the report opens with its summary."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    html_path = Path(html_path) if html_path else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    (_interactive_plots if interactive else _static_plots)(nb)
    exporter = HTMLExporter(extra_loaders=[DictLoader({"slimkit_offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="slimkit_offline.html.j2")
    summary = summary_html(record) if record is not None else ""
    body, _ = exporter.from_notebook_node(nb, resources={"slimkit_summary": summary})
    html_path.write_text(body, encoding="utf-8")
    return html_path
