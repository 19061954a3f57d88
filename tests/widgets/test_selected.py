"""What issue 11 asked of the panel, from Python: failed steps look failed, the status tells the
current state, the selected run's model comes out (Save, Export, code), the per-layer report
is a table, rows can be deleted and cleared, nothing is clamped silently, labels read as a
person writes them, the progress bar never goes backwards, and Stop keeps finished epochs."""
from __future__ import annotations

import html
import math
import re

import pytest
import torch

import slimkit
from slimkit.errors import Interrupted, InvalidParameterError
from slimkit.events import Event, Status
from slimkit.widgets import methods as M



def table_rows(panel) -> list[list[str]]:
    """Cells of each body row of the results table (numbers and text alike)."""
    body = panel.table.value.split("<tbody>")[-1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]


def test_a_failing_latency_backend_is_a_failed_run(make_panel, click, monkeypatch):
    panel = make_panel()
    why = "latency with onnxruntime on cpu failed: RuntimeError: " + "no kernel for QuantLinear " * 20
    monkeypatch.setattr(M, "latencies", lambda models, *a, **k: ([math.nan] * len(models), why))
    panel.set("quantize", bits=4)
    click(panel, panel.run_button)

    run = panel.results[-1]
    assert run.status == "failed: latency" and run.failed and run.note == why
    assert run.model is not None and panel.model is run.model  # the compressed model still stands
    row = table_rows(panel)[-1]
    assert "failed: latency" in row and row.count("error") == 2  # latency and x faster, not nan
    assert panel.progress.bar_style == "danger" and "failed" in panel.status.value
    assert "finished" not in panel.status.value
    box = panel.errors.value  # the whole message, in a wrapped box that scrolls, not a table cell
    assert "slimkit-error-box" in box and "white-space:pre-wrap" in box and "max-height" in box
    assert html.escape(why) in box and f"#{run.id} quantize int4" in box
    assert "note" not in panel.rows()[-1]


def test_the_status_describes_the_current_state(make_panel, click):
    panel = make_panel()
    panel.set("quantize", bits=8)
    click(panel, panel.run_button)
    assert "finished" in panel.status.value
    panel.set(granularity="per_group", group_size=7)
    with pytest.raises(InvalidParameterError):
        panel.run()
    assert "not started" in panel.status.value
    panel.set(granularity="per_channel")  # valid again: no stale "fix the settings"
    assert "not started" not in panel.status.value and "fix" not in panel.status.value
    assert "finished" in panel.status.value and panel.progress.bar_style == "success"


def test_save_export_and_the_code_of_the_selected_run(make_panel, click, tmp_path, monkeypatch, digits):
    panel = make_panel()
    panel.set("prune", sparsity=0.6, finetune_epochs=0)
    click(panel, panel.run_button)
    panel.set("quantize", bits=4, granularity="per_group", group_size=None)
    click(panel, panel.run_button)
    run = panel.results[-1]
    assert panel.selected is run and panel.picked.pick.value == run.id  # the new run is selected
    assert "panel.results[i].model" in panel.picked.widget.children[-1].value  # documented in the panel

    panel.picked.path.value = str(tmp_path / "q.safetensors")
    panel.picked.buttons["save"].click()
    assert "saved #2" in panel.picked.outcome.value
    loaded = slimkit.load(tmp_path / "q.safetensors", model=panel.base)
    assert slimkit.evaluate(loaded, panel.test)["accuracy"] == pytest.approx(run.accuracy)

    panel.picked.buttons["code"].click()
    code = html.unescape(re.search(r"<pre[^>]*>(.*?)</pre>", panel.picked.code.value, re.DOTALL).group(1))
    assert "slimkit.quantize(m, bits=4, granularity='per_group')" in code and "copy code" in panel.picked.code.value
    scope = {"model": panel.base, "data": digits}
    exec(code, scope)  # noqa: S102  the exact call reproduces the run
    assert slimkit.evaluate(scope["m"], panel.test)["accuracy"] == run.accuracy
    assert slimkit.size(scope["m"]) == run.size_bytes

    panel.show_run(1)  # prune: reproduced too
    exec(panel.selected.code(), scope)  # noqa: S102
    assert all(torch.equal(a, b) for a, b in zip(scope["m"].state_dict().values(),
                                                 panel.results[1].model.state_dict().values()))

    export = panel.picked.buttons["export"]
    if not hasattr(slimkit, "export"):  # disabled, and the panel says why
        assert export.disabled and "slimkit.export" in panel.picked.outcome.value + export.tooltip
    calls = []
    monkeypatch.setattr(slimkit, "export", lambda *a, **k: calls.append((a, k)) or a[2].write_bytes(b"onnx"),
                        raising=False)
    panel.show_run(1)
    assert not export.disabled
    panel.picked.path.value = str(tmp_path / "p.onnx")
    export.click()
    assert calls and calls[0][0][0] is panel.results[1].model and calls[0][1] == {"format": "onnx"}
    assert "saved #1" in panel.picked.outcome.value


def test_the_per_layer_report_is_a_sortable_table(make_panel, click):
    panel = make_panel()
    panel.set("quantize", bits=4)
    click(panel, panel.run_button)
    detail = panel.detail.value
    table = detail.split("slimkit-layers")[1]
    layers = [n for n, m in panel.base.named_modules() if list(m.parameters(recurse=False))]
    assert len(re.findall("<tr>", table)) == len(layers) + 1  # a row per layer that holds parameters
    assert table.count("onclick=") == len(panel.results[-1].layer_rows()[0])  # every header sorts
    assert "380px" not in detail and "width:100%" in detail
    assert re.search(r"<td data-v='\d+' style='text-align:right'>", table)  # numbers sort as numbers


def test_delete_and_clear_rows(make_panel, click):
    panel = make_panel()
    for bits in (8, 4):
        panel.set("quantize", bits=bits)
        click(panel, panel.run_button)
    assert [r.id for r in panel.results] == [0, 1, 2]
    panel.show_run(1)
    panel.picked.buttons["delete"].click()
    assert [r.id for r in panel.results] == [0, 2] and [r[0] for r in table_rows(panel)] == ["0", "2"]
    assert len(panel.plots.pareto.data[0].x) == 2 and panel.picked.pick.value == 2
    with pytest.raises(InvalidParameterError):
        panel.delete(0)  # the original stays: every ratio is against it
    panel.clear_button.click()
    assert [r.id for r in panel.results] == [0] and panel.model is panel.base
    click(panel, panel.run_button)
    assert [r.id for r in panel.results] == [0, 3]  # ids are never reused


def test_out_of_range_values_are_refused_not_clamped(make_panel):
    panel = make_panel()
    panel.set("prune", sparsity=1.5)
    assert panel.controls["sparsity"].value == 1.5  # kept as typed
    assert "sparsity=1.5" in panel.messages.value and panel.run_button.disabled
    assert "slimkit-invalid" in panel.controls["sparsity"]._dom_classes
    assert panel.controls["sparsity"].layout.border == "2px solid #b00020"
    panel.set(sparsity=0.5)
    assert "slimkit-invalid" not in panel.controls["sparsity"]._dom_classes and not panel.run_button.disabled
    assert panel.controls["sparsity"].layout.border is None
    with pytest.raises(InvalidParameterError):
        panel.set(bits=9)  # a dropdown of the allowed widths

    panel.set("quantize", quantize_sweep="8, eight")
    assert panel.sweep_button.disabled and "Sweep is disabled" in panel.messages.value
    assert "eight" in panel.messages.value and "slimkit-invalid" in panel.controls["quantize_sweep"]._dom_classes
    panel.set(quantize_sweep="8, 9")
    assert "bits=9" in panel.messages.value and "slimkit-invalid" in panel.controls["quantize_sweep"]._dom_classes
    assert "slimkit-invalid" not in panel.controls["bits"]._dom_classes


def test_progress_never_goes_backwards_in_a_sweep(make_panel, click):
    panel = make_panel()
    seen = []
    panel.progress.observe(lambda c: seen.append(c["new"]), names="value")
    panel.set("prune", sparsity=0.5, finetune_epochs=2, prune_sweep="0.3, 0.6")
    click(panel, panel.sweep_button)
    assert panel.worker.outcome == Status.OK
    after_reset = seen[seen.index(0.0) + 1:] if 0.0 in seen else seen
    assert 0.5 in after_reset and after_reset == sorted(after_reset) and after_reset[-1] == 1.0


def test_stop_keeps_the_finished_epochs_as_a_stopped_row(make_panel, click, monkeypatch):
    panel = make_panel()
    real = M.apply

    def stopped_after_one_epoch(method, model, configs, train, test, *, callbacks=None, stop=None, include=None):
        done = real(method, model, configs, train, test)  # what one epoch left, as the core would keep it
        callbacks(Event("metrics", "finetune", 1, 3, {"loss": 0.5}))
        err = Interrupted("stopped after epoch 1 of 3")
        err.result = done
        raise err

    monkeypatch.setattr(M, "apply", stopped_after_one_epoch)
    panel.set("prune", sparsity=0.5, finetune_epochs=0)
    click(panel, panel.run_button)
    assert panel.worker.outcome == Status.INTERRUPTED
    run = panel.results[-1]
    assert run.status.startswith("stopped in prune") and "epoch 1 of 3" in run.status
    assert panel.model is run.model and "stopped" in table_rows(panel)[-1][5]
    assert "kept #1" in panel.status.value and panel.progress.bar_style == "warning"


def test_layout_wraps_instead_of_scrolling_sideways(make_panel):
    panel = make_panel()
    boxes = [w for w in panel.widget.children if hasattr(w, "children") and len(w.children) > 1]
    rows = [panel.widget.children[2], panel.picked.widget.children[1]]  # actions, the selected run's buttons
    assert all(b.layout.flex_flow == "row wrap" for b in rows)
    assert panel.widget.layout.width == "100%" and panel.table.layout.overflow == "auto"
    assert boxes


def test_sensitivity_asks_the_core_for_every_method(make_panel, click, monkeypatch):
    panel = make_panel()
    calls = []

    def core(model, data, method, *, callbacks=None, stop=None, **settings):
        calls.append((model, method, settings))
        return [{"name": "features.0", "drop": 1.5}, {"name": "classifier.3", "drop": 0.25}]

    monkeypatch.setattr(slimkit, "sensitivity", core, raising=False)
    panel.set("distill", width=0.25)
    assert not panel.sensitivity_button.disabled  # distill too, once the core measures it
    click(panel, panel.sensitivity_button)
    panel.set("prune", sparsity=0.7)
    click(panel, panel.sensitivity_button)
    assert [c[1] for c in calls] == ["distill", "prune"] and calls[0][0] is panel.base
    assert calls[0][2] == {"width": 0.25} and calls[1][2]["config"].sparsity == 0.7
    assert list(panel.plots.sensitivity.data[0].y) == [1.5, 0.25]
    assert "prune 70% magnitude" in panel.plots.figures()["sensitivity"].layout.title.text
