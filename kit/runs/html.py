"""Reports from runs: a notebook as self-contained HTML (its escaping helpers live in slimkit.table).

Headless ``fig.show()`` stores only plotly's JSON mime type, which nbconvert's HTML ignores,
and plotly's HTML renderers load plotly.js from a CDN (these machines may be offline).
:func:`export_html` adds a ``text/html`` rendering to every plotly output at conversion time,
embedding plotly.js once per page, so the report shows its plots offline while the notebooks
themselves stay small. Notebook libraries are imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path

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
