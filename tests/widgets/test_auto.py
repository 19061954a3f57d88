"""The auto tab (``slimkit.autotune`` as a panel job), codebook controls, and pipelines whose chains
the library decides: driven from Python as a user drives the panel."""
from __future__ import annotations

import pytest

import slimkit
from slimkit.errors import InvalidParameterError
from slimkit.widgets.controls import INVALID_BORDER

QUICK = {"auto_prune": False, "auto_sparsify": False, "auto_structured": False, "auto_time_budget_s": 300.0}


def test_auto_tab_runs_autotune_draws_each_trial_and_keeps_the_pick(make_panel, mlp):
    panel = make_panel(live=True, model=mlp)
    panel.set("auto", auto_max_trials=2, **QUICK)
    assert panel.messages.value == "" and panel.sweep_button.disabled and panel.sensitivity_button.disabled
    run = panel.run(wait=True)
    report = run.reports[-1]
    assert run.method == "auto" and panel.model is run.model and panel.results[-1] is run
    assert 1 <= len(report.trials) <= 2 and len(run.trial_rows()) == len(report.trials)
    drawn = panel.plots.figures()["auto"]
    assert list(drawn.data[0].y) == pytest.approx([t["drop"] for t in report.trials])  # one point per trial event
    pick = report.summary.get("pick_trial")
    assert list(drawn.data[2].x) == ([] if pick is None else [report.trials[pick]["bytes"] / 1024])
    assert run.status.startswith(("done", "search ended early", "budget not met"))
    assert slimkit.evaluate(run.model, panel.test)["accuracy"] == pytest.approx(run.accuracy)
    assert "slimkit.autotune(m, test, max_drop=0.5, objective='size', methods=('quantize',)" in run.code()
    panel.show_run(run.id)
    assert "autotune trials" in panel.detail.value and "slimkit-trials" in panel.detail.value


def test_stop_during_a_search_keeps_the_best_so_far(make_panel, mlp, wait_until):
    panel = make_panel(live=True, model=mlp)
    panel.set("auto", auto_prune=True, auto_time_budget_s=600.0)
    panel.run(wait=False)
    wait_until(lambda: panel.plots._auto["trials"] or not panel.busy, 300, "a first trial")
    panel.stop()
    assert panel.wait(300)
    run = panel.results[-1]
    assert panel.error is None  # a stopped search is a result, not a failure
    assert run.method == "auto" and run.model is panel.model
    assert run.status.startswith(("search ended early", "budget not met", "done"))
    assert len(run.reports[-1].trials) >= 1


def test_bad_auto_settings_are_outlined_and_nothing_starts(make_panel):
    panel = make_panel(live=True)
    panel.set("auto", auto_max_drop=-1.0)
    assert "max_drop" in panel.messages.value and panel.run_button.disabled
    assert panel.controls["auto_max_drop"].layout.border == INVALID_BORDER
    with pytest.raises(InvalidParameterError, match="max_drop"):
        panel.run()
    panel.set(auto_max_drop=0.5, auto_quantize=False, auto_prune=False, auto_sparsify=False, auto_structured=False)
    assert "methods" in panel.messages.value and panel.run_button.disabled
    assert panel.controls["auto_quantize"].layout.border == INVALID_BORDER  # the checkboxes, asked of autotune
    panel.set(auto_quantize=True, auto_distill=True)  # distill needs a pruning method and epochs
    assert "distill" in panel.messages.value and panel.run_button.disabled
    panel.set(auto_distill=False, auto_max_trials="0")
    assert "max_trials" in panel.messages.value
    panel.set(auto_max_trials="")
    assert panel.messages.value == "" and not panel.run_button.disabled
    assert panel.results == []


def test_codebook_controls_run_quantize_codebook_with_trained_centroids(make_panel, mlp):
    panel = make_panel(live=False, model=mlp)
    assert panel.controls["centroid_epochs"].disabled  # affine trains no centroids
    panel.set("quantize", quantize_method="codebook", granularity="per_group")
    assert "codebook" in panel.messages.value and panel.run_button.disabled  # the config's own refusal
    panel.set(granularity="per_channel", bits=3, centroid_epochs=1)
    assert not panel.controls["centroid_epochs"].disabled and panel.messages.value == ""
    run = panel.run()
    assert {type(m).__name__ for m in run.model.modules()} >= {"CodebookLinear"}
    assert run.reports[-1].params["finetune"]["epochs"] == 1
    assert run.label == "quantize int3 per_channel codebook +1 epochs centroids"
    assert "finetune=dict(data=train, epochs=1)" in run.code() and "method='codebook'" in run.code()
    assert run.entropy_bytes == slimkit.size(run.model, entropy=True) < run.size_bytes
    assert panel.rows()[1]["entropy-coded KiB"] == round(run.entropy_bytes / 1024, 1)


def test_gptq_from_the_panel_calibrates_on_the_training_data(make_panel, mlp):
    panel = make_panel(live=False, model=mlp)
    panel.set("quantize", quantize_method="gptq", bits=4, granularity="per_channel")
    assert panel.messages.value == "" and not panel.run_button.disabled
    run = panel.run()
    assert run.reports[-1].summary["gptq_layers"] > 0
    assert "method='gptq'" in run.code() and "data=train" in run.code()


def test_pipeline_runs_prune_then_codebook_and_shows_the_history(make_panel, mlp):
    panel = make_panel(live=False, model=mlp)
    panel.set("pipeline", pipeline=("prune", "quantize"), sparsity=0.8, finetune_epochs=0, quantize_method="codebook",
              bits=4)
    run = panel.run()
    histories = {r["history"] for r in run.layer_rows() if r["step"] == "quantize" and r["action"] == "quantized"}
    assert histories == {"prune 80% magnitude → quantize codebook 4-bit"}


def test_quantize_then_sparsify_runs_as_one_pipeline(make_panel, mlp):
    panel = make_panel(live=False, model=mlp)
    panel.set("pipeline", pipeline=("quantize", "sparsify"), bits=8)
    run = panel.run()
    assert run.method == "quantize+sparsify" and run.status == "done"
    histories = {r["history"] for r in run.layer_rows() if r["step"] == "sparsify" and r["history"]}
    assert histories and all("quantize" in h and "sparsify" in h for h in histories)


def test_a_chain_the_library_refuses_shows_its_error_and_keeps_the_finished_step(make_panel, mlp):
    """2:4 storage of integer codes is refused by the library (not by the panel): the error is shown
    and the quantized model of the finished step is kept."""
    panel = make_panel(live=False, model=mlp)
    panel.set("pipeline", pipeline=("quantize", "sparsify"), bits=8, format="2:4", sparsify_sparsity=0.5)
    with pytest.raises(InvalidParameterError) as e:
        panel.run()
    assert "2:4" in str(e.value) and "2:4" in panel.errors.value
    kept = panel.results[-1]
    assert kept.label.startswith("quantize") and kept.status.startswith("failed: sparsify refused after quantize")
    assert panel.model is kept.model
