"""Reports from runs: a notebook as self-contained HTML, and a comparison across run records.

Headless ``fig.show()`` stores only plotly's JSON mime type, which nbconvert's HTML ignores,
and plotly's HTML renderers load plotly.js from a CDN (these machines may be offline).
:func:`export_html` adds a ``text/html`` rendering to every plotly output at conversion time,
embedding plotly.js once per page, so the report shows its plots offline while the notebooks
themselves stay small. Notebook libraries are imported inside the functions.
"""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from ..runs.records import Record, varying_keys

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _add_plotly_html(nb) -> int:
    """Give each plotly output a text/html twin; plotly.js is inlined in the first only."""
    import plotly.io as pio

    first, count = True, 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data and "text/html" not in data:
                fig = data[PLOTLY_MIME]
                data["text/html"] = pio.to_html(fig, include_plotlyjs=first, full_html=False,
                                                config={"displaylogo": False})
                first, count = False, count + 1
    return count


# nbconvert's lab template loads require.js, MathJax and mermaid from a CDN; the report needs
# none of them (plots carry plotly.js inline), so this template leaves the three out.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def export_html(notebook: str | Path, html_path: str | Path | None = None) -> Path:
    """Convert an executed notebook to one HTML file that loads nothing from the network."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    html_path = Path(html_path) if html_path else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    _add_plotly_html(nb)
    exporter = HTMLExporter(extra_loaders=[DictLoader({"slimkit_offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="slimkit_offline.html.j2")
    body, _ = exporter.from_notebook_node(nb)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def comparison_rows(records: list[Record], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One flat row per run: id, status, notebook, parameters that vary, numeric metrics."""
    varying = varying_keys(r.params for r in records)
    if metrics is None:
        metrics = sorted({k for r in records for k, v in r.metrics.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
    rows = []
    for r in records:
        row: dict[str, Any] = {"id": r.id, "status": r.status, "notebook": Path(r.notebook).name}
        row.update({n: r.params.get(n) for n in varying})
        row.update({m: r.metrics.get(m) for m in metrics})
        row["duration_s"] = r.duration_s
        row["hardware"] = _hw(r.hardware)
        rows.append(row)
    return rows


def _hw(info: dict[str, Any]) -> str:
    if not info:
        return ""
    gpus = ", ".join(g.get("name", "?") for g in info.get("gpus", []))
    return f"{info.get('cpu_model', '?')} x{info.get('cpu_usable_cores', '?')}" + (f" + {gpus}" if gpus else "")


def compare(records: list[Record], out_dir: str | Path, *, x: str | None = None, y: str | None = None,
            metrics: list[str] | None = None, title: str = "slimkit runs") -> dict[str, Path]:
    """Write ``compare.csv``, ``compare.md`` and (with plotly) ``compare.html``: a table of the
    runs and a scatter of metric ``y`` against ``x`` (default: the first two numeric metrics)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(records, metrics)
    cols = list(dict.fromkeys(k for row in rows for k in row))
    paths = {"csv": out_dir / "compare.csv", "md": out_dir / "compare.md"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    paths["md"].write_text(markdown_table(rows, cols))
    numeric = [c for c in cols if c not in ("duration_s",) and any(
        isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool) for row in rows)]
    metric_cols = [c for c in numeric if any(c in r.metrics for r in records)]
    x = x or (metric_cols[0] if metric_cols else None)
    y = y or next((c for c in metric_cols if c != x), None)
    if x and y:
        paths["html"] = _scatter(rows, x, y, out_dir / "compare.html", title)
    return paths


# After HTML escaping, what Markdown itself would still act on: a pipe splits a table cell,
# a backtick opens a code span, brackets make links and images, a backslash escapes the next
# character, a newline ends the row. (``*`` and ``_`` only format, and are common in names.)
_MD_SPECIALS = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]",
                              "\n": " ", "\r": " "})


def md_text(v: Any) -> str:
    """``v`` as literal Markdown table text: renders as the characters it holds, never as HTML
    (Markdown passes raw HTML through: a ``<script>`` in a run name would run in the report).
    Quotes stay as they are: outside a tag they are text, and &#x27; would show in terminals."""
    if v is None:
        return ""
    return html.escape(f"{v:.4g}" if isinstance(v, float) else str(v), quote=False).translate(_MD_SPECIALS)


def plot_text(v: Any) -> str:
    """``v`` for plotly titles, labels and hover text, which render a subset of HTML tags:
    shown literally. (Quotes stay: plotly decodes only a few named entities.)"""
    return html.escape(str(v), quote=False)


def markdown_table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> str:
    """A Markdown table of ``rows`` (columns: ``cols``, default every key in order of appearance).
    Every header and cell is escaped (:func:`md_text`)."""
    if cols is None:
        cols = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(md_text(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_text(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _scatter(rows: list[dict[str, Any]], x: str, y: str, path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    ok = [r for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    fig = go.Figure(go.Scatter(
        x=[r[x] for r in ok], y=[r[y] for r in ok], mode="markers+text",
        text=[plot_text(r["id"][-6:]) for r in ok], textposition="top center",
        hovertext=["<br>".join(plot_text(f"{k}={v}") for k, v in r.items() if k != "hardware") for r in ok]))
    fig.update_layout(title=plot_text(title), xaxis_title=plot_text(x), yaxis_title=plot_text(y),
                      template="plotly_white")
    fig.write_html(path, include_plotlyjs=True, full_html=True)  # offline: plotly.js inlined
    return path
