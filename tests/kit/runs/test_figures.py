"""The figures the tutorials share (slimkit.runs.figures) and Report.to_markdown, which replaced
the helpers pasted into the notebooks."""
from slimkit.report import LayerReport, Report
from slimkit.runs.figures import pareto_figure
from slimkit.table import markdown_table


def test_pareto_figure_draws_each_group_and_the_front_on_both_panels():
    pts = [dict(label="fp32", group="fp32", accuracy=0.98, size_bytes=4096, latency_ms=2.0),
           dict(label="int8", group="quantize", accuracy=0.97, size_bytes=1024, latency_ms=1.0),
           dict(label="<b>int2</b>", group="quantize", accuracy=0.5, size_bytes=2048, latency_ms=1.5)]
    fig = pareto_figure(pts, "title", "cpu")
    markers = [t for t in fig.data if t.mode == "markers"]
    fronts = [t for t in fig.data if t.name == "Pareto front"]
    assert [t.name for t in markers] == ["fp32", "quantize"] * 2 and len(fronts) == 2
    assert list(fronts[0].x) == [1.0, 4.0] and list(fronts[0].y) == [97.0, 98.0]  # KiB; int2 is beaten
    assert list(fronts[1].x) == [1.0, 2.0]
    assert markers[1].text == ("int8", "&lt;b&gt;int2&lt;/b&gt;")  # labels show as text, not HTML
    assert fig.layout.annotations[1].text == "accuracy vs latency on cpu"
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "log"


def test_report_to_markdown_has_a_row_per_layer_with_the_notebook_columns():
    r = Report("prune", {}, [LayerReport("fc", "Linear", "pruned", 1000, 1000, 4000, 4000, sparsity=0.5),
                             LayerReport("a|b", "Conv2d", "quantized", 10, 10, 40, 10, sqnr_db=31.26,
                                         reason="<script>`x`</script> [link]")])
    md = r.to_markdown()
    assert md.splitlines()[:3] == [
        "| layer | kind | action | params | bytes | sparsity | SQNR | note |", "|---|---|---|---|---|---|---|---|",
        "| fc | Linear | pruned | 1,000 → 1,000 | 4,000 → 4,000 | 50.0% |  |  |"]
    assert "a\\|b" in md and "31.3 dB" in md and "&lt;script&gt;\\`x\\`&lt;/script&gt; \\[link\\]" in md
    # the same escaping as the run reports' tables (slimkit.runs.html.markdown_table)
    assert md == markdown_table([{"layer": "fc", "kind": "Linear", "action": "pruned", "params": "1,000 → 1,000",
                                  "bytes": "4,000 → 4,000", "sparsity": "50.0%", "SQNR": "", "note": ""},
                                 {"layer": "a|b", "kind": "Conv2d", "action": "quantized", "params": "10 → 10",
                                  "bytes": "40 → 10", "sparsity": "", "SQNR": "31.3 dB",
                                  "note": "<script>`x`</script> [link]"}])
