"""The pipeline tab runs the steps in the order the user lists them (issue 12 §1: every chain the
library allows), shows the library's refusal of a chain it does not take and keeps the finished
steps, and records the order."""
from __future__ import annotations

import re

import pytest

from slimkit.artifact import read_metadata
from slimkit.errors import InvalidParameterError
from slimkit.report import HISTORY_SEP
from slimkit.sparse.quantized import SparseIntWeight
from slimkit.widgets.step_order import StepOrder


def test_the_list_is_built_and_reordered_with_its_buttons():
    order = StepOrder(("distill", "prune", "quantize", "sparsify"), ("prune",))
    b = order.buttons
    assert order.choice.options == ("distill", "quantize", "sparsify")  # prune is in the list already
    order.choice.value = "sparsify"
    b["add"].click()
    order.choice.value = "quantize"
    b["add"].click()
    assert order.value == ("prune", "sparsify", "quantize") and order.chain.value == 2  # the added step picked
    b["up"].click()
    assert order.value == ("prune", "quantize", "sparsify") and order.chain.value == 1
    assert b["down"].disabled is False and b["up"].disabled is False
    order.chain.value = 0
    assert b["up"].disabled  # the first step cannot move up
    b["remove"].click()
    assert order.value == ("quantize", "sparsify")
    assert [label for label, _ in order.chain.options] == ["1. quantize", "2. sparsify"]
    order.chain.value = 1
    assert b["down"].disabled
    for method in ("distill", "prune"):
        order.choice.value = method
        b["add"].click()
    assert b["add"].disabled and order.choice.options == ()  # every step is listed once


def test_the_order_is_set_from_code_as_it_reads_and_bad_chains_are_refused(make_panel):
    panel = make_panel(live=False)
    panel.set("pipeline", pipeline="sparsify > quantize")
    assert panel.settings()["pipeline"] == ("sparsify", "quantize") and panel.messages.value == ""
    for bad, why in ((("quantize", "quantize"), "twice"), (("quantize", "shrink"), "unknown step 'shrink'")):
        with pytest.raises(InvalidParameterError, match=why):
            panel.set(pipeline=bad)
        assert panel.settings()["pipeline"] == ("sparsify", "quantize")  # left as it was
    panel.set(pipeline=())
    assert "choose at least one step" in panel.messages.value and panel.run_button.disabled


def test_sparsify_then_quantize_from_the_panel_stores_sparse_integer_weights(make_panel, mlp, tmp_path):
    panel = make_panel(live=False, model=mlp)
    panel.set("pipeline", pipeline=("sparsify", "quantize"), sparsify_sparsity=0.7, bits=8)
    run = panel.run()
    assert run.status == "done" and run.method == "sparsify+quantize"
    assert run.label.startswith("sparsify") and " > quantize int8" in run.label
    assert [r.method for r in run.reports] == ["sparsify", "quantize"]
    histories = {r["history"] for r in run.layer_rows() if r["step"] == "quantize" and r["action"] == "quantized"}
    assert histories and all(re.fullmatch(rf"sparsify .*{HISTORY_SEP}quantize .*", h) for h in histories)
    assert any(isinstance(m, SparseIntWeight) for m in run.model.modules())
    code = run.code()
    assert code.index("slimkit.sparsify(") < code.index("slimkit.quantize(")

    # the order is in the run's record: its settings (the table, the selected-run box) and a saved artifact
    assert run.settings["order"] == "sparsify > quantize"
    info = read_metadata(panel.picked.save(run, path=str(tmp_path / "run.safetensors")))["info"]
    assert info["steps"] == ["sparsify", "quantize"] and info["settings"]["order"] == "sparsify > quantize"


def test_a_refused_order_shows_the_library_s_reason_and_keeps_the_finished_step(make_panel, mlp):
    """quantize then prune: prune refuses a quantized layer and says which order works."""
    panel = make_panel(live=False, model=mlp)
    panel.set("pipeline", pipeline=("quantize", "prune"), bits=8, sparsity=0.5, finetune_epochs=0)
    with pytest.raises(InvalidParameterError, match="prune cannot follow") as e:
        panel.run()
    assert "prune the float model first" in str(e.value)  # the library's word on the order that works
    assert "prune cannot follow" in panel.errors.value and "prune the float model first" in panel.errors.value
    kept = panel.results[-1]
    assert kept.method == "quantize" and kept.status.startswith("failed: prune refused after quantize")
    assert panel.model is kept.model and kept.accuracy > 0.9
    assert f"kept #{kept.id} (quantize int8" in panel.status.value

    panel.set(pipeline=("prune", "quantize"))  # the order the library named runs
    assert panel.run().method == "prune+quantize"
