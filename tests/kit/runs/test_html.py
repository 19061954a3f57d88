"""Reports in HTML: every user string (run names, params, metrics, titles) shows as literal
text; none can add markup or script. Markdown is rendered as nbconvert renders it (mistune)."""
from html.parser import HTMLParser

import nbformat
import pytest

from slimkit import table
from slimkit.runs import html as reporting
from slimkit.runs.compare import compare_runs
from slimkit.runs.records import Record

PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
            "a|b", "`code` & \\", "two\nlines", "&lt;b&gt;"]


class _Tags(HTMLParser):
    """Start tags and the text of each table cell."""

    def __init__(self):
        super().__init__()
        self.tags, self.cells, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cells.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def _markdown_html(md: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    return markdown2html_mistune(md)


def test_markdown_table_cells_render_as_their_literal_text():
    row = {f"col{i}": p for i, p in enumerate(PAYLOADS)}
    row[PAYLOADS[0]] = 1.5  # a header too
    parsed = _parse(_markdown_html(table.markdown_table([row])))
    assert set(parsed.tags) <= {"table", "thead", "tbody", "tr", "th", "td"}, parsed.tags
    head, cells = parsed.cells[:len(row)], parsed.cells[len(row):]
    assert head == list(row)
    assert cells == [str(v).replace("\n", " ") for v in row.values()]


def _record(i, name):
    return Record(id=f"run-{name}-{i}", key=str(i), notebook=f"/nb/{name}.ipynb",
                  params={"lr": i, name: f"{name}!{i}"}, status="done",
                  metrics={"accuracy": 0.9 + i / 100, "size": 100 + i, name: i})


def test_compare_report_escapes_every_user_string(tmp_path):
    pytest.importorskip("plotly")
    bad = PAYLOADS[0]
    paths = compare_runs([_record(i, bad) for i in range(3)], tmp_path, x="accuracy", y="size", title=bad)
    parsed = _parse(_markdown_html(paths["md"].read_text()))
    assert "script" not in parsed.tags and bad in parsed.cells
    page = paths["html"].read_text()
    assert bad not in page
    # plotly renders a subset of HTML in titles and hover text: the payload reaches it escaped
    # (inside the figure's JSON, where plotly also writes "/" as \u002f)
    assert page.count(r"&lt;script&gt;alert(1)&lt;\u002fscript&gt;") >= 4  # title, hover, axis...


def _notebook_with_outputs(md: str, fig: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": md}),
                    nbformat.v4.new_output("display_data", data={reporting.PLOTLY_MIME: fig})]
    nb.cells = [cell]
    return nb


def test_exported_html_shows_payloads_as_text(tmp_path):
    import plotly.graph_objects as go

    bad = PAYLOADS[0] + PAYLOADS[1]
    md = table.markdown_table([{"run": bad, "accuracy": 0.5}])
    fig = go.Figure(go.Scatter(x=[1], y=[2], name=bad, hovertext=[bad]), layout=dict(title=bad)).to_plotly_json()
    path = tmp_path / "r.ipynb"
    nbformat.write(_notebook_with_outputs(md, fig), path)
    page = reporting.export_html(path).read_text()
    assert "<img src=x" not in page and "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # visible text
    # the figure's JSON sits inside a <script>: plotly escapes "<" and "/" there, so no string
    # from the figure can close that script element
    assert "</script><img" not in page and r"\u003cscript\u003ealert(1)\u003c\u002fscript\u003e" in page


def test_plot_text_and_md_text_leave_plain_values_alone():
    assert table.md_text("val_accuracy 0.5 (int8)") == "val_accuracy 0.5 (int8)"
    assert table.md_text(0.123456) == "0.1235" and table.md_text(None) == ""
    assert table.plot_text('a "b" <i>') == 'a "b" &lt;i&gt;'
