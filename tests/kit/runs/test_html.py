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
    assert bad not in page and "<script" not in page  # a static page: SVG plot and table, no script at all
    cells = _parse(page).cells
    assert bad in cells and f"run-{bad}-0" in cells  # the table: the payload is the literal text of its cells
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # title, heading, SVG title, cells
    assert paths["html"].stat().st_size < 200_000


def test_compare_refuses_an_unknown_axis_and_lists_the_metrics(tmp_path):
    from slimkit.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="accuracy, .*size"):
        compare_runs([_record(i, "n") for i in range(2)], tmp_path / "c", x="acuracy", y="size")
    assert not (tmp_path / "c").exists()  # refused before anything is written


def _notebook_with_outputs(md: str, fig: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": md}),
                    nbformat.v4.new_output("display_data", data={reporting.PLOTLY_MIME: fig})]
    nb.cells = [cell]
    return nb


def _figure(bad: str) -> dict:
    import plotly.graph_objects as go

    return go.Figure(go.Scatter(x=[1], y=[2], name=bad, hovertext=[bad]), layout={"title": bad}).to_plotly_json()


def test_exported_html_shows_payloads_as_text(tmp_path):
    bad = PAYLOADS[0] + PAYLOADS[1]
    md = table.markdown_table([{"run": bad, "accuracy": 0.5}])
    path = tmp_path / "r.ipynb"
    nbformat.write(_notebook_with_outputs(md, _figure(bad)), path)
    page = reporting.export_html(path).read_text()
    assert "<img src=x" not in page and "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # visible text
    assert "Plotly.newPlot" not in page  # the figure, as a static SVG image with its title as alt text
    assert page.count('data-mime-type="image/svg+xml"') == 1
    assert 'alt="&lt;figure: alert(1)&gt;"' in page  # unescaped tags in a plotly title drop out, as in plotly


def test_interactive_export_keeps_plotly_with_its_json_escaped(tmp_path):
    bad = PAYLOADS[0] + PAYLOADS[1]
    path = tmp_path / "r.ipynb"
    nbformat.write(_notebook_with_outputs("x", _figure(bad)), path)
    page = reporting.export_html(path, interactive=True).read_text()
    # the figure's JSON sits inside a <script>: plotly escapes "<" and "/" there, so no string
    # from the figure can close that script element
    assert "Plotly.newPlot" in page and "</script><img" not in page
    assert r"\u003cscript\u003ealert(1)\u003c\u002fscript\u003e" in page


def test_a_notebook_holding_plotly_js_still_gives_a_small_report(tmp_path):
    """A plotly output whose HTML inlines plotly.js (fig.show(), the panel's static plots) is
    reported by its SVG: the report does not carry the ~4.8 MB script."""
    import plotly.io as pio

    fig = _figure("w")
    nb = _notebook_with_outputs("x", fig)
    nb.cells[0].outputs[1].data["text/html"] = pio.to_html(fig, include_plotlyjs=True, full_html=False)
    path = tmp_path / "r.ipynb"
    nbformat.write(nb, path)
    assert path.stat().st_size > 3_000_000
    report = reporting.export_html(path)
    assert report.stat().st_size < 1_000_000 and "data:image/svg+xml;base64," in report.read_text()


def test_the_report_opens_with_an_escaped_summary_of_the_run(tmp_path):
    bad = PAYLOADS[0]
    img = PAYLOADS[1]  # a file name holds no "/"
    rec = Record(id="20250101-000000-abcdef", key="k", notebook=f"/nb/{img}.ipynb", params={"bits": 4, "tag": bad},
                 status="failed", error=f"RuntimeError: {bad}", duration_s=12.34, output_dir="/runs/my-run",
                 metrics={"accuracy": 0.9712, "size_bytes": 1024, "nan": float("nan"), bad: 1, "_error": "x",
                          "bits": 4},
                 hardware={"cpu_model": bad, "cpu_usable_cores": 2, "packages": {"torch": "2.13.0"}})
    path = tmp_path / "r.ipynb"
    nbformat.write(_notebook_with_outputs("# the notebook", _figure("f")), path)
    page = reporting.export_html(path, record=rec).read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    header = page[page.index('<section class="slimkit-summary"'):page.index("</section>")]
    cells = _parse(header).cells
    assert cells[0:2] == ["status", f"failed — RuntimeError: {bad}"]
    assert "my-run" in cells[3] and f"{img}.ipynb" in cells[5] and cells[7] == "12.3 s"
    assert cells[9] == f"{bad}, 2 cores, torch 2.13.0"
    assert "bits = 4" in cells[11] and f"tag = '{bad}'" in cells[11]
    assert "accuracy 0.9712" in cells[13] and "size_bytes 1024" in cells[13] and "nan n/a" in cells[13]
    assert "_error" not in cells[13] and "bits" not in cells[13]  # private keys and parameter echoes left out
    assert page.index("slimkit-summary") < page.index(">the notebook")  # it opens the report


def test_plot_text_and_md_text_leave_plain_values_alone():
    assert table.md_text("val_accuracy 0.5 (int8)") == "val_accuracy 0.5 (int8)"
    assert table.md_text(0.123456) == "0.1235" and table.md_text(None) == ""
    assert table.plot_text('a "b" <i>') == 'a "b" &lt;i&gt;'


def test_a_figure_that_cannot_be_drawn_does_not_lose_the_report(tmp_path, monkeypatch):
    nb = _notebook_with_outputs("x", _figure("w"))
    path = tmp_path / "r.ipynb"
    nbformat.write(nb, path)

    def broken(spec):
        raise ValueError("a trace this SVG drawing does not know")

    monkeypatch.setattr(reporting, "svg", broken)
    page = reporting.export_html(path).read_text()
    assert "could not be drawn: a trace this SVG drawing does not know" in page
