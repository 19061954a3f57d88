"""User strings (module and class names, labels) reach the panel's HTML and plotly figures as
literal text, never as markup."""
import numpy as np

BAD = "<img src=x onerror=alert(1)>"
SHOWN = "&lt;img src=x onerror=alert(1)&gt;"


def test_plot_titles_ticks_and_hover_show_user_strings_as_text():
    from slimkit.widgets.plots import Plots

    plots = Plots(live=False)
    plots.reset_curves(BAD)
    plots.start_sweep(f"bits: {BAD}")
    plots.add_sweep_point(4, 0.9)
    plots.set_sensitivity([BAD, "fc"], [1.0, 2.0], BAD, hover=[BAD, "ok"])
    plots.set_histogram(BAD, np.arange(5.0), None)
    plots.set_runs([{"id": 0, "label": BAD, "accuracy": 0.9, "size_kib": 1.0, "latency_ms": 1.0}])
    plots.flush()
    figs = plots.figures()
    texts = [figs[n].layout.title.text for n in ("curves", "sensitivity", "histogram")]
    texts += [figs["sweep"].data[0].name, figs["sweep"].layout.xaxis.title.text, figs["sensitivity"].data[0].x[0],
              figs["sensitivity"].data[0].hovertext[0], figs["pareto"].data[0].hovertext[0]]
    assert all(SHOWN in t and BAD not in t for t in texts), texts


def test_panel_title_and_summary_escape_the_model_class_name(cnn, digits):
    from slimkit.zoo.models import DigitsCNN
    from slimkit.widgets import Panel

    odd = type(BAD, (DigitsCNN,), {})()
    odd.load_state_dict(cnn.state_dict())
    panel = Panel(odd, digits, live=False)
    title = panel.widget.children[0].value
    assert SHOWN in title and BAD not in title
    summary = panel._static_summary()
    assert SHOWN in summary and BAD not in summary


def test_report_html_escapes_layer_names_and_reasons():
    from slimkit.report import LayerReport, Report

    r = Report(BAD, {}, [LayerReport(BAD, "Linear", "skipped", reason=BAD)])
    page = r._repr_html_()
    assert BAD not in page and page.count(SHOWN) == 3
