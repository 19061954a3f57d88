"""slimkit.sensitivity: one layer at a time, for every method."""
from __future__ import annotations

import pytest
import torch

import slimkit
from slimkit.errors import InvalidParameterError, InvalidTypeError, NothingToCompressError
from tests.conftest import assert_unchanged, state_snapshot

KEYS = {"name", "kind", "params", "score", "baseline", "drop"}


def _data(digits):
    return digits.test.X, digits.test.y


@pytest.mark.parametrize("method", ["quantize", "prune", "sparsify", "structured", "distill"])
def test_every_method_gives_rows_with_the_same_keys_and_leaves_the_model(mlp, digits, method):
    before = state_snapshot(mlp)
    rows = slimkit.sensitivity(mlp, _data(digits), method)
    assert rows and all(KEYS <= set(r) for r in rows)
    names = [n for n, _ in mlp.named_modules()]
    assert [r["name"] for r in rows] == sorted((r["name"] for r in rows), key=names.index)  # model order
    for r in rows:
        assert r["drop"] == pytest.approx(r["baseline"] - r["score"])
        assert r["params"] == mlp.get_submodule(r["name"]).weight.numel()
    assert_unchanged(mlp, before)


def test_structured_rows_name_producers_only_and_the_output_layer_is_left_out(mlp, digits):
    rows = slimkit.sensitivity(mlp, _data(digits), "structured", sparsity=0.9)
    assert [r["name"] for r in rows] == ["net.1", "net.3"]  # the logits layer's units cannot go
    assert all(r["params_after"] < sum(p.numel() for p in mlp.parameters()) for r in rows)
    assert max(r["drop"] for r in rows) > 0  # 90% of a hidden layer's units without retraining costs


def test_distill_is_structured_at_one_minus_width(mlp, digits):
    d = slimkit.sensitivity(mlp, _data(digits), "distill", width=0.25)
    s = slimkit.sensitivity(mlp, _data(digits), "structured", sparsity=0.75)
    assert [r["score"] for r in d] == [r["score"] for r in s]


def test_prune_drop_grows_with_sparsity_and_a_metric_callable_works(mlp, digits):
    calls = []

    def metric(m):
        calls.append(1)
        return 100.0 * slimkit.evaluate(m, _data(digits))["accuracy"]

    light = slimkit.sensitivity(mlp, metric, "prune", sparsity=0.3, layers=["net.1"])
    heavy = slimkit.sensitivity(mlp, metric, "prune", sparsity=0.99, layers=["net.1"])
    assert [r["name"] for r in light] == ["net.1"]
    assert heavy[0]["drop"] > light[0]["drop"]
    assert len(calls) == 4  # baseline + one layer, twice


def test_sparsify_rows_report_the_layer_bytes(mlp, digits):
    rows = slimkit.sensitivity(mlp, _data(digits), "sparsify", sparsity=0.9, format="bitmask")
    assert all(r["bytes_after"] < r["bytes_before"] for r in rows)


def test_quantize_takes_its_settings_and_layers(mlp, digits):
    rows = slimkit.sensitivity(mlp, _data(digits), "quantize", bits=2, layers="net.5")
    assert [r["name"] for r in rows] == ["net.5"] and "weight_sqnr_db" in rows[0]


@pytest.mark.parametrize("kwargs, error", [
    (dict(method="huffman"), InvalidParameterError),
    (dict(method="prune", sparsity=1.5), InvalidParameterError),
    (dict(method="distill", width=0), InvalidParameterError),
    (dict(method="prune", layers=["nothing.*"]), NothingToCompressError),
    (dict(method="prune", layers=5), InvalidTypeError),
    (dict(method="sparsify", bits=4), InvalidTypeError),
    (dict(method="quantize", config=slimkit.PruneConfig()), InvalidTypeError),
])
def test_bad_input_is_a_slimkit_error_before_any_scoring(mlp, digits, kwargs, error):
    calls = []
    with pytest.raises(error):
        slimkit.sensitivity(mlp, lambda m: calls.append(1) or 1.0, **kwargs)
    assert not calls


def test_bad_metric_and_fisher_without_data(mlp):
    with pytest.raises(InvalidTypeError):
        slimkit.sensitivity(mlp, "accuracy", "prune")
    with pytest.raises(InvalidParameterError):
        slimkit.sensitivity(mlp, lambda m: 1.0, "prune", score="fisher")


def test_stop_interrupts(mlp, digits):
    class Stop:
        def is_set(self):
            return True

    with pytest.raises(slimkit.Interrupted):
        slimkit.sensitivity(mlp, _data(digits), "prune", stop=Stop())


def test_model_without_targets_is_refused():
    with pytest.raises(NothingToCompressError):
        slimkit.sensitivity(torch.nn.Sequential(torch.nn.ReLU()), lambda m: 1.0, "sparsify")
