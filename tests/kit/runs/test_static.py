"""Static figures (slimkit.runs.static): plotly figures redrawn as small SVG for reports and stored
notebooks, with every trace and label, hostile text shown as text."""
import xml.etree.ElementTree as ET

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from slimkit.runs.figures import pareto_figure
from slimkit.runs.static import PLOTLY_MIME, bundle, svg

BAD = "<script>alert(1)</script> $x$"


def _texts(doc: str) -> str:
    """Every text node of the SVG (fonttype none: labels are <text> elements), joined."""
    root = ET.fromstring(doc)
    return "\n".join(t for el in root.iter() for t in (el.text or "",))


def _pareto():
    pts = [{"label": "fp32", "group": "fp32", "accuracy": 0.98, "size_bytes": 4096, "latency_ms": 2.0},
           {"label": "int8", "group": BAD, "accuracy": 0.97, "size_bytes": 1024, "latency_ms": 1.0}]
    fig = pareto_figure(pts, BAD, "cpu")
    fig.add_hline(y=90, line_dash="dash", annotation_text="budget: -1 points")
    return fig


def test_svg_keeps_titles_legend_and_reference_lines_and_shows_hostile_text_as_text():
    doc = svg(_pareto())
    texts = _texts(doc)  # parses: well-formed XML, so no payload broke out of its element
    for words in ("accuracy vs saved size", "accuracy vs latency on cpu", "saved artifact (KiB, log scale)",
                  "test accuracy (%)", "Pareto front", "fp32", "budget: -1 points"):
        assert words in texts, words
    assert "<script>alert(1)</script> $x$" in texts  # literal, not markup, not mathtext
    assert "<script" not in doc and len(doc) < 200_000


def test_svg_is_deterministic_and_small_for_a_histogram_of_many_bins():
    fig = make_subplots(rows=1, cols=2, subplot_titles=("SQNR (dB)", "weights"))
    fig.add_bar(x=["conv1.weight", "fc.weight"], y=[30.5, 41.0], name="SQNR", row=1, col=1)
    for name in ("fp32", "int8"):
        fig.add_bar(x=[i / 100 for i in range(200)], y=list(range(200)), name=name, opacity=0.6, row=1, col=2)
    assert svg(fig) == svg(fig)
    assert "conv1.weight" in _texts(svg(fig)) and len(svg(fig)) < 400_000


def test_a_trace_type_it_cannot_draw_is_named_not_dropped():
    fig = go.Figure([go.Heatmap(z=[[1, 2], [3, 4]]), go.Scatter(x=[1, 2], y=[3, 4], name="line")])
    texts = _texts(svg(fig))
    assert "not drawn in this static copy: heatmap traces" in texts and "line" in texts


def test_bundle_carries_plotly_json_and_svg_but_no_plotly_js():
    b = bundle(_pareto())
    assert set(b) == {PLOTLY_MIME, "image/svg+xml", "text/plain"}
    assert len(b[PLOTLY_MIME]["data"]) == 6 and b["image/svg+xml"].startswith("<?xml")
