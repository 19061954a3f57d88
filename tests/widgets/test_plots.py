"""The panel's figures from Python: the widget state a reloaded page redraws from, and what each
figure shows (axes, colours, labels). The browser side is tests/widgets/test_browser_plots.py."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from slimkit.widgets import figures as F
from slimkit.widgets.plots import Plots


def runs(n: int) -> list[dict]:
    methods = ["original", "quantize", "prune", "distill", "sparsify", "prune+quantize"]
    return [{"id": i, "method": methods[i % len(methods)], "label": f"run {i}", "accuracy": 0.5 + i / (3 * n),
             "size_kib": 1000 / (i + 1), "latency_ms": 1.0 + (i % 3)} for i in range(n)]


def filled(live: bool, on_pick=None) -> Plots:
    plots = Plots(live=live, on_pick=on_pick)
    plots.reset_curves("Training curves: run #1 distill")
    for epoch in (1, 2, 3):
        plots.add_epoch(epoch, {"loss": 2.0 / epoch ** 2, "val_accuracy": 0.6 + epoch / 10})
    plots.start_sweep("quantize: bits")
    for bits, acc in ((8, 0.98), (4, 0.97), (2, 0.4)):
        plots.add_sweep_point(bits, acc)
    plots.start_sweep("prune: sparsity")
    for s, acc in ((0.5, 0.98), (0.9, 0.9)):
        plots.add_sweep_point(s, acc)
    plots.set_sensitivity(["features.0", "fc"], [0.5, 3.0], "quantize 4-bit", ["a", "b"])
    plots.set_histogram("features.0", np.linspace(-1, 1, 5000), np.round(np.linspace(-1, 1, 5000) * 4) / 4)
    plots.set_runs(runs(12))
    plots.flush()
    return plots


def test_live_figures_are_widgets_whose_state_is_the_figure():
    plots = filled(live=True)
    for name, fig in plots.figures().items():
        view = plots.views[name]
        state = view.get_state()  # what the widget manager hands a view after a reload
        assert [t.get("y") for t in state["spec"]["data"]] == [
            None if t.y is None else [None if v is None else v for v in t.y] for t in fig.data]
        assert "template" not in state["spec"]["layout"]  # coloured by the front end's theme
        assert "width" not in state["spec"]["layout"]  # fills the output area
        assert state["lib"] == f"IPY_MODEL_{plots.views['curves'].lib.model_id}"  # one plotly.js for all
    assert plots.curves is plots.views["curves"] and list(plots.pareto.data[0].customdata) == list(range(12))


def test_plotly_js_ships_from_the_installed_package_once():
    import plotly

    from slimkit.widgets.plot_widget import PLOTLY_JS, PlotWidget, plotly_js

    lib = plotly_js()
    assert lib is plotly_js() and PLOTLY_JS.is_relative_to(Path(plotly.__file__).parent)
    assert gzip.decompress(lib.source) == PLOTLY_JS.read_bytes()
    assert len(lib.source) < PLOTLY_JS.stat().st_size / 2
    esm = str(PlotWidget._esm)  # the ES module shipped beside plot_widget.py
    assert "export default" in esm and "http" not in esm  # nothing fetched from elsewhere


def test_a_flush_sends_only_the_figures_that_changed():
    plots = filled(live=True)
    sent = []
    for name, view in plots.views.items():
        view.observe(lambda change, name=name: sent.append(name), names="spec")
    plots.add_epoch(4, {"loss": 0.1, "val_accuracy": 0.95})
    plots.add_epoch(5, {"loss": 0.09, "val_accuracy": 0.96})
    plots.flush()
    assert sent == ["curves"]  # two epochs, one message
    assert plots.curves.spec["data"][0]["x"] == [1, 2, 3, 4, 5]
    plots.flush()
    assert sent == ["curves"]


def test_clicking_a_pareto_point_picks_its_run_and_bad_messages_do_nothing():
    picked = []
    plots = filled(live=True, on_pick=picked.append)
    view = plots.views["pareto"]
    view._handle_custom_msg({"event": "click", "trace": 1, "point": 7}, [])  # what plot.js sends
    for bad in ({"event": "click", "trace": 9, "point": 0}, {"event": "click", "trace": 0, "point": 99},
                {"event": "click", "trace": "0", "point": 1}, {"event": "other"}, ["click"]):
        view._handle_custom_msg(bad, [])
    assert picked == [7]


def test_a_pareto_click_picks_the_run_by_the_id_the_browser_drew_not_by_its_index():
    picked = []
    plots = filled(live=True, on_pick=picked.append)
    view = plots.views["pareto"]
    drawn = plots.figures()["pareto"].data[0].customdata  # what the browser holds: ids 0..11
    plots.set_runs([r for r in runs(12) if r["id"] not in (2, 3)])  # rows deleted before the message came
    plots.flush()
    view._handle_custom_msg({"event": "click", "trace": 0, "point": 5, "id": drawn[5]}, [])
    assert picked == [5]  # by index the new figure's point 5 is run 7
    view._handle_custom_msg({"event": "click", "trace": 0, "point": 2, "id": 2}, [])  # a deleted run
    view._handle_custom_msg({"event": "click", "trace": 0, "point": 2, "id": True}, [])  # not an id
    view._handle_custom_msg({"event": "click", "trace": 0, "point": 2, "id": "7"}, [])
    assert picked == [5]


def test_autotune_plot_adds_trials_as_they_arrive_and_stars_the_pick():
    plots = Plots(live=True)
    plots.start_auto("size", "run #1 auto <b>x</b>")
    plots.flush()
    assert not plots.has_data("auto")
    trials = [(0.1, 50_000, True), (0.9, 20_000, False), (0.3, 30_000, True)]
    for i, (drop, size, ok) in enumerate(trials):
        plots.add_trial({"drop": drop, "size_bytes": size, "latency_ms": 1.0, "ok": float(ok)}, f"fc: {i}")
        plots.flush()
        assert len(plots.auto.spec["data"][0]["x"]) == i + 1  # each trial drawn as its event arrives
    points, front, pick = plots.figures()["auto"].data
    assert list(points.y) == [0.1, 0.9, 0.3] and points.x[1] == pytest.approx(20_000 / 1024)
    assert list(points.marker.symbol) == ["circle", "circle-open", "circle"]  # outside the budget: hollow
    assert list(pick.x) == []
    plots.set_auto_pick(2, [1, 2])
    plots.flush()
    points, front, pick = plots.figures()["auto"].data
    assert list(pick.x) == [points.x[2]] and list(pick.y) == [0.3]
    assert sorted(front.x) == sorted([points.x[1], points.x[2]])
    assert "<b>" not in plots.figures()["auto"].layout.title.text  # user text never markup
    plots.start_auto("latency", "")
    plots.add_trial({"drop": 0.2, "size_bytes": 1, "latency_ms": 3.5, "ok": 1.0})
    plots.flush()
    fig = plots.figures()["auto"]
    assert list(fig.data[0].x) == [3.5] and "latency" in fig.layout.xaxis.title.text


def test_sweeps_of_different_settings_keep_their_own_axes():
    fig = filled(live=False).figures()["sweep"]
    bits, sparsity = fig.data
    assert (bits.xaxis, sparsity.xaxis) == ("x", "x2") and list(bits.x) == [8, 4, 2]
    assert fig.layout.xaxis.title.text == "bits" and fig.layout.xaxis2.title.text == "sparsity"
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"  # whole bits only
    assert fig.layout.xaxis2.tickformat == ".0%"
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]  # side by side
    assert fig.layout.yaxis.tickformat.endswith("%")

    again = Plots(live=False)
    for _ in range(2):  # the same setting twice: one axis, two named traces
        again.start_sweep("quantize: bits")
        again.add_sweep_point(8, 0.9)
    again.flush()
    fig = again.figures()["sweep"]
    assert [t.xaxis for t in fig.data] == ["x", "x"] and len({t.name for t in fig.data}) == 2


def test_curves_tick_whole_epochs_and_show_accuracy_in_percent():
    fig = filled(live=False).figures()["curves"]
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"
    _, acc = fig.data
    assert acc.yaxis == "y2" and fig.layout.yaxis2.tickformat.endswith("%") and fig.layout.yaxis2.overlaying == "y"
    assert fig.layout.yaxis.type == "log"  # the loss falls 9x over three epochs
    many = F.curves("t", {"loss": [list(range(1, 41)), [1.0] * 40], "val_accuracy": [[], []]})
    assert many.layout.xaxis.dtick == 4  # forty epochs: every fourth tick


def test_pareto_colours_by_method_and_labels_only_the_front():
    rs = runs(12)
    fig = F.pareto(rs)
    size, latency = fig.data[:2]
    assert list(size.y) == [r["accuracy"] for r in rs] and list(latency.x) == [r["latency_ms"] for r in rs]
    colours = dict(zip([r["method"] for r in rs], size.marker.color))
    assert len(set(colours.values())) == 6  # one colour per method
    legend = [t.name for t in fig.data if t.showlegend is not False and t.name != "Pareto front"]
    assert sorted(legend) == sorted(colours)  # the legend names every colour
    front = [i for i, t in enumerate(size.text) if t]
    assert 0 < len(front) < len(rs)  # the dominated runs are unlabelled (hover says who they are)
    assert all(size.marker.size[i] > size.marker.size[j] for i in front for j in range(12) if j not in front)
    assert all(f"run {r['id']}" in h for r, h in zip(rs, size.hovertext))
    assert fig.layout.yaxis2.matches == "y" and fig.layout.yaxis2.showticklabels is False  # one accuracy axis
    assert fig.layout.xaxis.type == "log"  # sizes span 12x
    assert fig.layout.legend.itemclick is False  # a colour key: clicking it hides nothing


def test_pareto_method_from_the_label_and_missing_latency():
    rs = [{"id": 0, "label": "original", "accuracy": 0.9, "size_kib": 100.0, "latency_ms": math.nan},
          {"id": 1, "label": "prune 80% magnitude > quantize 8-bit", "accuracy": 0.8, "size_kib": 20.0,
           "latency_ms": 1.0}]
    fig = F.pareto(rs)
    assert [t.name for t in fig.data[4:]] == ["original", "prune+quantize"]
    assert fig.data[1].x[0] is None  # NaN is not JSON: no point


def test_log_axes_get_readable_ticks():
    axis = F.scale_axis([0.3, 12.0])
    assert axis["type"] == "log"
    assert axis["ticktext"][:6] == ["0.1", "0.2", "0.5", "1", "2", "5"]
    assert F.scale_axis([1.0, 3.0]) == {"type": "linear"}  # a narrow span stays linear
    assert F.scale_axis([None, 2.0, float("nan")]) == {"type": "linear"}
    assert F.percent_axis([0.975, 0.985])["tickformat"] == ".2%"  # not a row of "98%" ticks
    assert F.percent_axis([0.1, 0.98])["tickformat"] == ".0%"


def test_histogram_counts_every_weight_on_a_log_axis():
    plots = filled(live=False)
    fig = plots.figures()["histogram"]
    before, after = fig.data
    assert sum(before.y) == sum(after.y) == 5000 and len(before.y) == 80
    assert fig.layout.yaxis.type == "log"
    assert sum(1 for c in after.y if c) == 9  # the quarter grid: nine values


def test_histogram_of_a_huge_layer_bins_a_fixed_sample(monkeypatch):
    import slimkit.widgets.plots as P

    monkeypatch.setattr(P, "HIST_LIMIT", 1000)
    w = np.random.default_rng(1).normal(size=50_000)
    shown = []
    for _ in range(2):
        plots = Plots(live=False)
        plots.set_histogram("big", w, w * 0.5)
        plots.flush()
        shown.append(plots.figures()["histogram"])
    assert sum(shown[0].data[0].y) == sum(shown[0].data[1].y) == 1000
    assert list(shown[0].data[0].y) == list(shown[1].data[0].y)  # deterministic
    assert "a sample of 1,000 of 50,000" in shown[0].layout.title.text


def test_no_plot_has_a_fixed_width_and_widgets_fill_their_row():
    plots = filled(live=True)
    assert all(fig.layout.width is None for fig in plots.figures().values())
    assert all(v.layout.min_width == "0" and v.layout.flex.startswith("1 1") for v in plots.views.values())


def test_static_figures_stay_plain_and_render_with_a_light_template():
    from slimkit.widgets.plots import static_bundle

    plots = filled(live=False)
    assert type(plots.pareto).__name__ == "Figure" and not plots.views
    bundle = static_bundle(plots.pareto)
    layout = bundle["application/vnd.plotly.v1+json"]["layout"]
    assert layout["template"]["layout"]["plot_bgcolor"] == "white"
    assert plots.has_data("pareto") and not Plots(live=False).has_data("pareto")


@pytest.mark.parametrize("name", ["curves", "sweep", "sensitivity", "histogram", "pareto"])
def test_empty_figures_build(name):
    plots = Plots(live=False)
    assert not plots.has_data(name) and plots.figures()[name].layout.title.text
