"""The panel driven from Python as a user drives it: set widget values, click, wait; then check
the model, the results table and the figures' data."""
from __future__ import annotations

import html
import re

import pytest
import torch

import slimkit
from slimkit.errors import InvalidParameterError, InvalidTypeError, NothingToCompressError
from slimkit.events import Status
from slimkit.quant.layers import QuantConv2d, QuantLinear

from conftest import assert_unchanged, state_snapshot


def table_rows(panel) -> list[list[str]]:
    """The results table as the browser shows it (cells of each body row)."""
    body = panel.table.value.split("<tbody>")[-1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_quantize_run_from_the_widgets(make_panel, click):
    panel = make_panel()
    before = state_snapshot(panel.base)
    panel.tabs.selected_index = 0  # quantize
    panel.controls["bits"].value = 4
    click(panel, panel.run_button)

    assert panel.worker.outcome == Status.OK, panel.errors.value
    assert [r.method for r in panel.results] == ["original", "quantize"]
    quantized = panel.results[1]
    assert panel.model is quantized.model and panel.model is not panel.base
    kinds = {type(m) for m in panel.model.modules()}
    assert QuantConv2d in kinds and QuantLinear in kinds
    assert all(m.bits == 4 for m in panel.model.modules() if isinstance(m, (QuantConv2d, QuantLinear)))
    assert_unchanged(panel.base, before)  # the original is never modified
    assert quantized.accuracy == pytest.approx(slimkit.evaluate(panel.model, panel.test)["accuracy"])
    assert quantized.size_bytes == slimkit.size(panel.model) < panel.results[0].size_bytes / 4
    assert quantized.latency_ms > 0 and quantized.baseline_ms > 0

    rows = table_rows(panel)
    assert len(rows) == 2 and rows[1][1] == "quantize int4 per_channel"
    assert panel.rows()[1]["x smaller"] == pytest.approx(panel.results[0].size_bytes / quantized.size_bytes, rel=0.01)

    pareto = panel.plots.pareto
    assert list(pareto.data[0].y) == [r.accuracy for r in panel.results]
    assert list(pareto.data[0].x) == pytest.approx([r.size_bytes / 1024 for r in panel.results])
    assert list(pareto.data[1].x) == pytest.approx([r.latency_ms for r in panel.results])

    hist = panel.plots.histogram  # the first layer's weights: original vs dequantized 4-bit
    n = panel.base.get_submodule(panel.layer.value).weight.numel()
    assert sum(trace(hist, "before").y) == sum(trace(hist, "after").y) == n
    assert list(trace(hist, "before").y) != list(trace(hist, "after").y)

    assert panel.progress.value == 1.0 and panel.progress.bar_style == "success"
    assert "finished" in panel.status.value and not panel.errors.value
    assert not panel.run_button.disabled and panel.stop_button.disabled


def test_table_grows_and_curves_follow_training(make_panel, click):
    panel = make_panel()
    panel.set("distill", width=0.5, epochs=2, fraction=0.1)
    click(panel, panel.run_button)
    panel.set("prune", sparsity=0.6, finetune_epochs=0)
    click(panel, panel.run_button)
    panel.set("sparsify", sparsify_sparsity=0.5, format="csr")
    click(panel, panel.run_button)

    assert [r.method for r in panel.results] == ["original", "distill", "prune", "sparsify"]
    assert len(table_rows(panel)) == 4
    assert len(panel.plots.pareto.data[0].x) == 4
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(panel.results[1].model) < n(panel.base) / 2  # the half-width student
    conv = panel.results[2].model.get_submodule("features.0").weight
    assert (conv == 0).float().mean().item() == pytest.approx(0.6, abs=0.02)
    assert panel.results[3].model.get_submodule("features.2").fmt == "csr"
    # two distillation epochs: two points each of loss and test accuracy; later runs without
    # training left the curves alone
    curves = panel.plots.curves
    assert list(trace(curves, "loss").x) == [1, 2] and len(trace(curves, "val accuracy").y) == 2
    assert all(0 < a <= 1 for a in trace(curves, "val accuracy").y)
    assert "#1 distill" in panel.plots.figures()["curves"].layout.title.text


def test_sweep_plots_accuracy_against_bits(make_panel, click):
    panel = make_panel()
    panel.set("quantize", quantize_sweep="8, 2")
    click(panel, panel.sweep_button)

    runs = panel.results[1:]
    assert [r.settings["bits"] for r in runs] == [8, 2]
    sweep = panel.plots.sweep.data[0]
    assert list(sweep.x) == [8, 2] and list(sweep.y) == [r.accuracy for r in runs]
    assert runs[1].accuracy < runs[0].accuracy  # 2-bit weights cost accuracy on digits
    assert panel.model is runs[-1].model


def test_sensitivity_bars_per_layer(make_panel, click):
    panel = make_panel()
    panel.set("quantize", bits=2)
    click(panel, panel.sensitivity_button)
    bars = panel.plots.sensitivity.data[0]
    layers = [n for n, _ in panel.base.named_modules() if isinstance(_, (torch.nn.Conv2d, torch.nn.Linear))]
    assert list(bars.x) == layers
    assert list(bars.y) == pytest.approx([r["drop"] for r in panel.sensitivity_rows])
    assert all("SQNR" in h for h in bars.hovertext)
    assert len(panel.results) == 1  # only the original's row: sensitivity adds no runs

    panel.set("prune", sparsity=0.9)
    click(panel, panel.sensitivity_button)
    assert list(panel.plots.sensitivity.data[0].x) == layers
    assert "prune" in panel.plots.figures()["sensitivity"].layout.title.text


def test_pipeline_chains_steps(make_panel, click):
    panel = make_panel()
    panel.set("pipeline", pipeline=("prune", "quantize"), sparsity=0.5, finetune_epochs=0, bits=8)
    click(panel, panel.run_button)
    run = panel.results[-1]
    assert run.method == "prune+quantize" and run.label == "prune 50% magnitude > quantize int8 per_channel"
    assert len(run.reports) == 2
    w = run.model.get_submodule("classifier.1").dequantized_weight()
    assert (w == 0).float().mean().item() >= 0.45  # pruned zeros survive quantization


def test_stop_leaves_the_model_as_before(make_panel, wait_until):
    panel = make_panel()
    before = state_snapshot(panel.base)
    panel.set("prune", sparsity=0.5, finetune_epochs=500)
    panel.run_button.click()
    assert panel.busy  # the click returned while the job runs: the kernel is free
    assert slimkit.evaluate(panel.base, panel.test)["accuracy"] > 0.9  # ...and usable meanwhile
    wait_until(lambda: "finetune" in panel._progress_text, what="fine-tuning to start")
    assert not panel.stop_button.disabled and panel.run_button.disabled
    panel.stop_button.click()
    assert panel.wait(120)

    assert panel.worker.outcome == Status.INTERRUPTED
    # prune keeps what it finished (the pruning, and any whole fine-tune epoch) and says it stopped
    assert [r.method for r in panel.results] == ["original", "prune"]
    kept = panel.results[-1]
    assert kept.status.startswith("stopped in prune") and panel.model is kept.model
    weights = [m.weight for m in kept.model.modules() if isinstance(m, torch.nn.Linear)]
    assert sum(int((w == 0).sum()) for w in weights) > 0.4 * sum(w.numel() for w in weights)
    assert_unchanged(panel.base, before)
    assert "stopped" in panel.status.value and panel.progress.bar_style == "warning"
    assert not panel.run_button.disabled and panel.stop_button.disabled
    assert panel.progress.value < 1.0

    panel.set("quantize", bits=8)  # still usable
    assert panel.run(wait=True).method == "quantize"


def test_stop_in_a_pipeline_keeps_the_last_finished_step(make_panel, wait_until):
    panel = make_panel()
    panel.set("pipeline", pipeline=("distill", "prune"), epochs=1, width=0.5, fraction=0.1, finetune_epochs=500)
    panel.run()
    wait_until(lambda: "finetune" in panel._progress_text, what="the prune step's fine-tuning")
    # the plots are live: the distillation epoch is drawn while the job still runs
    assert panel.busy and len(trace(panel.plots.curves, "loss").x) >= 1
    panel.stop()
    assert panel.wait(120) and panel.worker.outcome == Status.INTERRUPTED

    # the distilled student is finished; prune stopped in its fine-tuning keeps its pruning
    last = panel.results[-1]
    assert last.method == "distill+prune" and last.status.startswith("stopped in prune")
    assert panel.model is last.model
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(panel.model) < n(panel.base) / 2  # built on the student
    assert any((p == 0).float().mean() > 0.05 for p in panel.model.parameters() if p.dim() > 1)


def test_an_error_shows_in_the_panel_and_it_stays_usable(make_panel, click, monkeypatch):
    panel = make_panel()
    before = state_snapshot(panel.base)

    def broken(*args, **kwargs):
        raise RuntimeError("kernel of doom")

    monkeypatch.setattr(slimkit, "quantize", broken)
    panel.set("quantize", bits=4)
    click(panel, panel.run_button)  # a button never raises into the kernel

    assert panel.worker.outcome == Status.FAILED and isinstance(panel.error, RuntimeError)
    assert "RuntimeError" in panel.errors.value and "kernel of doom" in panel.errors.value
    assert "traceback" in panel.errors.value
    assert "failed" in panel.status.value and panel.progress.bar_style == "danger"
    assert [r.method for r in panel.results] == ["original"] and panel.model is panel.base
    assert_unchanged(panel.base, before)
    assert not panel.run_button.disabled
    with pytest.raises(RuntimeError, match="kernel of doom"):
        panel.run(wait=True)  # from code, waiting, the error reaches the caller

    monkeypatch.undo()
    click(panel, panel.run_button)
    assert panel.worker.outcome == Status.OK and not panel.errors.value
    assert panel.results[-1].method == "quantize"


def test_validation_blocks_a_run_before_anything_starts(make_panel, click):
    panel = make_panel()
    panel.set("quantize", granularity="per_group", group_size=7)
    msg = html.unescape(panel.messages.value)  # quantize's own message, asked before anything runs
    assert "group_size=7" in msg and "a divisor of 9" in msg and "'features.0'" in msg
    assert panel.run_button.disabled and not panel.controls["group_size"].disabled
    click(panel, panel.run_button)  # a click on the disabled button reaches Python anyway
    assert panel.worker.outcome is None and panel.results == []
    assert "not started" in panel.status.value
    with pytest.raises(InvalidParameterError, match="group_size=7"):
        panel.run()

    panel.set(group_size=3)  # divides 9 and 288 but not 1024
    assert panel.run_button.disabled
    panel.set(granularity="per_channel")
    assert panel.messages.value == "" and not panel.run_button.disabled

    panel.set("distill", temperature=-1.0)
    assert "temperature=-1.0" in panel.messages.value and panel.run_button.disabled
    panel.set(temperature=2.0)
    panel.set("quantize", quantize_sweep="8, eight")
    assert panel.sweep_button.disabled and not panel.run_button.disabled
    with pytest.raises(InvalidParameterError, match="eight"):
        panel.sweep()
    panel.set("pipeline", pipeline=())
    assert "choose at least one step" in panel.messages.value and panel.run_button.disabled
    panel.set(pipeline=("quantize", "sparsify"))  # the library says whether it takes this chain, when it runs
    assert panel.messages.value == "" and not panel.run_button.disabled
    panel.set("sparsify", format="2:4", sparsify_sparsity=0.9)
    assert "2 of every 4" in panel.messages.value and panel.run_button.disabled
    panel.set(sparsify_sparsity=0.5)
    assert not panel.run_button.disabled
    assert panel.results == []


def test_backend_and_device_are_checked(make_panel):
    panel = make_panel()
    assert panel.controls["device"].options[0] == "cpu"
    assert {"eager", "compile", "onnxruntime"} <= set(panel.controls["backend"].options)
    if not torch.cuda.is_available():
        panel.set(backend="sparse24")  # 2:4 kernels are CUDA-only
        assert "sparse24" in panel.messages.value and panel.run_button.disabled
        with pytest.raises(InvalidParameterError):
            panel.set(device="cuda")  # not offered on a machine without a GPU


def test_set_is_all_or_nothing(make_panel):
    panel = make_panel()
    with pytest.raises(InvalidParameterError, match="bits=9"):
        panel.set(bits=9)  # a slider would clamp it silently
    with pytest.raises(InvalidParameterError, match="colour"):
        panel.set(colour="red")
    with pytest.raises(InvalidParameterError, match="granularity"):
        panel.set(bits=3, granularity="per_row")
    assert panel.controls["bits"].value == 8  # the first value was rolled back
    with pytest.raises(InvalidParameterError, match="method"):
        panel.set("quantise")


def test_clicking_a_pareto_point_shows_its_settings(make_panel, click):
    panel = make_panel()
    panel.set("quantize", bits=6)
    click(panel, panel.run_button)
    fig = panel.plots.pareto
    # what the browser sends when a point is clicked: trace 0 (vs size), point 1 (run #1)
    fig._handle_custom_msg({"event": "click", "trace": 0, "point": 1}, [])
    assert panel.selected is panel.results[1]
    assert "#1 quantize int6 per_channel" in panel.detail.value
    assert "bits=6" in panel.detail.value
    with pytest.raises(InvalidParameterError):
        panel.show_run(7)


def test_bad_inputs(cnn, digits):
    from slimkit.widgets import Panel

    with pytest.raises(InvalidTypeError, match="model"):
        Panel("cnn", digits, live=False)
    with pytest.raises(InvalidTypeError, match="data"):
        Panel(cnn, 42, live=False)
    with pytest.raises(NothingToCompressError):
        Panel(torch.nn.Sequential(torch.nn.ReLU()), digits, live=False)


def test_data_forms(cnn, digits):
    from slimkit.widgets import Panel

    one = Panel(cnn, digits.test, live=False)
    assert one.train is digits.test and one.test is digits.test
    pair = Panel(cnn, (digits.train, digits.test), live=False)
    assert pair.train is digits.train and pair.test is digits.test
    d = Panel(cnn, {"train": digits.train, "test": digits.test}, live=False)
    assert d.test is digits.test


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_latency_on_the_gpu(make_panel, click):
    panel = make_panel()
    panel.set("prune", sparsity=0.5, finetune_epochs=0, device="cuda")
    click(panel, panel.run_button)
    run = panel.results[-1]
    assert run.settings["device"] == "cuda" and run.note == ""
    assert run.latency_ms > 0 and run.baseline_ms > 0  # both timed on the GPU, side by side
