"""slimkit.autotune: probes, knapsack, verified trials, records, stop, budget flags, bad input."""
from __future__ import annotations

import json

import pytest
import torch

import slimkit
from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.tuning import api as autotune_api

SMALL = {"bits": (4,), "sparsity": (0.9,)}


def _test(digits):
    return digits.test.X, digits.test.y


def _run(mlp, digits, **kw):
    kw.setdefault("methods", ("quantize", "prune"))
    kw.setdefault("options", SMALL)
    return slimkit.autotune(mlp, _test(digits), **kw)


def test_size_pick_meets_the_budget_and_the_report_lists_every_trial(mlp, digits):
    events = []
    model, report = _run(mlp, digits, max_drop=1.0, callbacks=events.append)
    s = report.summary
    assert s["budget_met"] is True and s["trials"] == len(report.trials) >= 1
    pick = report.trials[s["pick_trial"]]
    assert pick["ok"] and pick["drop"] <= 1.0
    assert min(t["bytes"] for t in report.trials if t["ok"]) == pick["bytes"]  # the smallest within budget
    # the model is the pick, its bytes measured (entropy-coded: the file slimkit.save(entropy=True) writes)
    assert slimkit.size(model, entropy=True) == pick["bytes"] < slimkit.size(mlp, entropy=True)
    acc = 100 * slimkit.evaluate(model, _test(digits))["accuracy"]
    assert acc == pytest.approx(pick["score"])
    assert set(report.pareto) <= {t["trial"] for t in report.trials} and pick["trial"] in report.pareto
    metrics = [e for e in events if e.stage == "autotune" and e.kind == "metrics"]
    assert len(metrics) == len(report.trials)  # every trial is an event
    assert {"drop", "size_bytes", "latency_ms", "speedup"} <= set(metrics[0].metrics)
    named = {row.name for row in report.layers}
    assert {n for n, m in mlp.named_modules() if any(True for _ in m.parameters(recurse=False))} <= named
    assert "trials" in report.table() and "pareto" in report.to_markdown()


def test_records_resume_skips_finished_probes_and_trials(mlp, digits, tmp_path, monkeypatch):
    path = tmp_path / "trials.jsonl"
    _, first = _run(mlp, digits, max_drop=1.0, records=path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"probe", "trial"} <= {r["kind"] for r in lines} <= {"probe", "trial", "start"}
    built = []
    real = autotune_api.build
    monkeypatch.setattr(autotune_api, "build", lambda *a, **k: built.append(1) or real(*a, **k))
    _, again = _run(mlp, digits, max_drop=1.0, records=path)
    assert len(built) <= 1  # at most the pick, rebuilt from its settings
    assert [t["settings"] for t in again.trials] == [t["settings"] for t in first.trials]
    assert len(path.read_text().splitlines()) == len(lines)  # nothing re-run, nothing re-written


def test_stop_returns_the_best_so_far(mlp, digits, tmp_path):
    class StopAfterFirstTrial:
        def __init__(self):
            self.set = False

        def is_set(self):
            return self.set

        def __call__(self, event):
            if event.stage == "autotune" and event.kind == "metrics":
                self.set = True

    path = tmp_path / "r.jsonl"
    _, full = _run(mlp, digits, max_drop=1.0, records=path)
    assert full.summary["trials"] > 1 and not full.summary["stopped"]
    flag = StopAfterFirstTrial()
    model, report = _run(mlp, digits, max_drop=1.0, callbacks=flag, stop=flag, records=path)
    assert report.summary["stopped"] and report.summary["trials"] == 1
    first = report.trials[0]
    assert report.summary["budget_met"] == first["ok"] and slimkit.size(model, entropy=True) == first["bytes"]


def test_max_trials_and_time_budget_end_the_search(mlp, digits):
    _, report = _run(mlp, digits, max_drop=1.0, max_trials=1)  # more trials without the cap (test above)
    assert report.summary["trials"] == 1 and "max_trials" in report.summary["stopped"]
    model, report = _run(mlp, digits, time_budget_s=1e-9)
    assert report.summary["trials"] == 0 and not report.summary["budget_met"]
    assert "no trial finished" in report.summary["note"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), mlp.state_dict().values()))


def test_a_budget_nothing_meets_returns_the_closest_flagged(mlp, digits):
    x = digits.test.X[:64]
    with torch.no_grad():
        ref = mlp(x)

    def fidelity(m):  # any change to the weights lowers it: max_drop=0 cannot be met
        with torch.no_grad():
            return -float((m(x) - ref).abs().max())

    _model, report = _run(mlp, digits, max_drop=0.0, metric=fidelity)
    s = report.summary
    assert s["budget_met"] is False and "budget not met" in s["note"] and s["trials"] >= 1
    assert s["drop"] == min(t["drop"] for t in report.trials)


def test_latency_objective_measures_side_by_side(mlp, digits):
    _, report = slimkit.autotune(mlp, _test(digits), objective="latency", max_drop=100.0,
                                 methods=("structured",), options={"structured": (0.5,)})
    assert report.summary["budget_met"]
    for t in report.trials:
        assert t["latency_ms"] > 0 and t["speedup"] == pytest.approx(t["original_latency_ms"] / t["latency_ms"])
        assert all(v.startswith("ch-") for v in t["settings"].values())


@pytest.mark.parametrize("kwargs, error", [
    ({"methods": ("huffman",)}, InvalidParameterError),
    ({"methods": ()}, InvalidParameterError),
    ({"methods": ("distill",)}, InvalidParameterError),
    ({"methods": ("structured", "distill")}, InvalidParameterError),  # distill needs train
    ({"methods": ("prune",), "objective": "latency"}, InvalidParameterError),
    ({"objective": "speed"}, InvalidParameterError),
    ({"max_drop": -1}, InvalidParameterError),
    ({"metric": "accuracy"}, InvalidTypeError),
    ({"metric": lambda m: 1 / 0}, InvalidParameterError),
    ({"options": {"bits": (1,)}}, InvalidParameterError),
    ({"options": {"colour": (1,)}}, InvalidParameterError),
    ({"max_trials": 0}, InvalidParameterError),
    ({"device": "nonsense"}, slimkit.SlimkitError),
    ({"backend": "onnx"}, InvalidParameterError),
])
def test_bad_input_is_refused_before_any_trial(mlp, digits, kwargs, error):
    events = []
    with pytest.raises(error):
        slimkit.autotune(mlp, _test(digits), callbacks=events.append, **kwargs)
    assert not events


def test_data_without_labels_is_refused_when_accuracy_is_needed(mlp, digits):
    with pytest.raises(slimkit.SlimkitError):
        slimkit.autotune(mlp, [digits.test.X[:8]])


def test_size_search_starts_from_the_global_deep_compression_recipe(mlp, digits):
    """The first trial is the hand recipe (global pruning fine-tuned, codebook with trained
    centroids), the same bytes and score as the verbs called by hand; refinement only improves it."""
    train = (digits.train.X[:256], digits.train.y[:256])
    _, report = _run(mlp, digits, max_drop=20.0, train=train, epochs=1, max_trials=3,
                     options={"bits": (4, 2), "sparsity": (0.9,)})
    first = report.trials[0]
    assert first["start"] == {"sparsity": 0.9, "bits": 4} and first["ok"]
    assert all(v.endswith("4b (codebook)") for v in first["settings"].values())
    torch.manual_seed(0)
    pruned, _ = slimkit.prune(mlp, 0.9, scope="global", steps=3, seed=0, finetune={"data": train, "epochs": 1})
    hand, _ = slimkit.quantize(pruned, bits=4, method="codebook", finetune={"data": train, "epochs": 1})
    assert first["bytes"] == slimkit.size(hand, entropy=True)
    assert first["score"] == pytest.approx(100 * slimkit.evaluate(hand, _test(digits))["accuracy"])
    assert report.summary["bytes"] <= first["bytes"] and report.summary["trials"] == len(report.trials) <= 3


def test_latency_probes_are_timed_one_at_a_time_and_the_start_is_uniform_structured(mlp, digits, monkeypatch):
    timed = []
    real = autotune_api._Job._latency
    monkeypatch.setattr(autotune_api._Job, "_latency", lambda self, models: timed.append(len(models))
                        or real(self, models))
    _, report = slimkit.autotune(mlp, _test(digits), objective="latency", max_drop=100.0, max_trials=2,
                                 methods=("structured", "quantize"), options={"structured": (0.25, 0.5)})
    assert timed and max(timed) == 2  # the original and one candidate: no probed model is kept
    first = report.trials[0]["settings"]
    assert first and set(first.values()) == {"ch-50%"}  # the largest uniform share first
    # the output layer cannot lose units: said, not dropped silently
    assert any("net.5 cannot be shrunk" in n for n in report.summary["unavailable"])


class Untraceable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            h = h * 1.0
        return self.fc2(h)


def test_structured_options_an_untraceable_model_cannot_use_are_reported(digits):
    model = Untraceable()
    _, report = slimkit.autotune(model, _test(digits), objective="latency", max_drop=100.0, max_trials=1,
                                 methods=("structured", "quantize"))
    assert any("torch.fx cannot trace Untraceable" in n for n in report.summary["unavailable"])


def test_probes_score_a_subsample_and_trials_all_the_data():
    x, y = torch.zeros(1000, 3), torch.zeros(1000, dtype=torch.long)
    px, py = autotune_api._subsample((x, y))
    assert len(px) == len(py) == autotune_api.PROBE_SAMPLES
    batches = [(x[:10], y[:10])]
    assert autotune_api._subsample(batches) is batches
