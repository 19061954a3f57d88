"""The panel's controls come from the verbs' configs: one per setting, the config's help as
tooltip, its choices (registries included) as options, its checks as the panel's validation."""
from __future__ import annotations

import slimkit
from slimkit.quant.layers import QuantConv2d


def test_every_setting_has_a_control_with_its_help(make_panel):
    panel = make_panel(live=False)
    c = panel.controls
    for name, (setting, _) in slimkit.QuantConfig.settings().items():
        if setting.kind != "any" and name != "max_drop":
            control = "quantize_method" if name == "method" else name  # panel.set(method, ...) names the tab
            assert c[control].tooltip == setting.help, name
    assert {"prune_include", "sparsify_include", "sparsify_sparsity", "distill_seed", "finetune_lr"} <= set(c.widgets)
    assert set(c["granularity"].options) == {"per_channel", "per_tensor", "per_group"}


def test_a_registered_score_appears(make_panel, monkeypatch):
    from slimkit.pruning import importance

    monkeypatch.setattr(importance, "SCORES", dict(importance.SCORES))
    importance.register_score("my_score", lambda ctx: None)
    panel = make_panel(live=False)
    assert "my_score" in panel.controls["score"].options
    panel.set("prune", score="my_score")
    assert panel.problems() == []


def test_text_controls_and_config_errors(make_panel):
    panel = make_panel(live=False)
    panel.set("quantize", granularity="per_group", group_size="abc")
    assert "group_size=&#x27;abc&#x27; is not allowed" in panel.messages.value and panel.run_button.disabled
    panel.set(group_size=None, exclude=["features.*"])
    assert panel.controls["exclude"].value == "features.*" and not panel.run_button.disabled
    panel.set("distill", temperature=0.0)  # the config's check, shown as the panel's message
    assert "distill: temperature=0.0" in panel.messages.value and panel.run_button.disabled


def test_int4_per_group_on_a_cnn_chooses_group_sizes_per_layer(make_panel):
    # only changed settings reach quantize: no group_size, so each layer gets one that divides it
    panel = make_panel(live=False)
    run = panel.set("quantize", bits=4, granularity="per_group").run(wait=True)
    assert run.settings["group_size"] is None
    convs = [m for m in run.model.modules() if isinstance(m, QuantConv2d)]
    assert convs and all(m.bits == 4 for m in convs)


def test_labels_read_as_a_person_writes_them(make_panel):
    panel = make_panel(live=False)
    plan = lambda method: panel.controls.plan(method, panel.train, panel.test).label  # noqa: E731
    panel.set("prune", sparsity=0.8000000000000002, finetune_epochs=0)
    assert plan("prune") == "prune 80% magnitude"  # no float noise, no bare False
    panel.set(structured=True, finetune_epochs=3)
    assert plan("prune") == "prune 80% magnitude structured +3 epochs fine-tune"
    panel.set("quantize", bits=4, granularity="per_group")
    assert plan("quantize") == "quantize int4 per_group"
    panel.set(group_size=9, scheme="asymmetric", activations=True)
    assert plan("quantize") == "quantize int4 per_group group 9 asymmetric +int8 activations"
    panel.set("sparsify", sparsify_mode="threshold", threshold=0.02, format="csr")
    assert plan("sparsify") == "sparsify |w|<0.02 csr"
    panel.set("distill", width=0.5, temperature=2.0, fraction=0.25)
    assert plan("distill") == "distill width 50% on 25% of train T=2 alpha=0.7 5 epochs"
    # the core's own: numbers named, choices and flags as words, unset and False left out
    assert slimkit.PruneConfig(sparsity=0.1 + 0.2, structured=False, score="fisher").label() == \
        "prune sparsity=0.3 fisher"
    assert slimkit.QuantConfig(bits=4, granularity="per_group").label(["bits", "granularity", "group_size"]) == \
        "quantize bits=4 per_group"
