"""``quantize`` driven by :class:`slimkit.QuantConfig`: the three call forms, help, typed rows."""
import inspect

import pytest
import torch

import slimkit
from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.report import Action, Compute


def _same(a, b):
    assert a.report.to_dict() == b.report.to_dict()
    for (k, x), (k2, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(x, y)


def test_bits_by_position_keyword_or_config_are_one_call(mlp):
    by_position = slimkit.quantize(mlp, 4, granularity="per_group")
    _same(by_position, slimkit.quantize(mlp, bits=4, granularity="per_group"))
    _same(by_position, slimkit.quantize(mlp, slimkit.QuantConfig(bits=4, granularity="per_group")))
    # keywords override a config
    _same(by_position, slimkit.quantize(mlp, slimkit.QuantConfig(bits=8), bits=4, granularity="per_group"))
    assert by_position.report.params == dict(bits=4, granularity="per_group", scheme="symmetric", mode="auto",
                                             group_size=None, activations=None, keep=None, act_bits=8,
                                             method="affine")


def test_keep_is_reported_as_a_list(mlp):
    assert slimkit.quantize(mlp, 8, keep="net.5").report.params["keep"] == ["net.5"]


def test_help_lists_every_setting():
    params = inspect.signature(slimkit.quantize).parameters
    assert list(params)[:2] == ["model", "config"]
    for name, (_, default) in slimkit.QuantConfig.settings().items():
        assert params[name].default == default and params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert {"activations", "metric", "callbacks", "stop"} <= set(params)


def test_bad_calls_name_the_setting(mlp):
    with pytest.raises(InvalidParameterError, match="bits.*given once"):
        slimkit.quantize(mlp, 4, bits=8)
    with pytest.raises(InvalidTypeError, match="bitz"):
        slimkit.quantize(mlp, bitz=4)
    with pytest.raises(InvalidTypeError, match="config"):
        slimkit.quantize(mlp, slimkit.SparsifyConfig())


@pytest.mark.parametrize("kw,computes", [
    (dict(bits=8), {Compute.INTEGER}),
    (dict(bits=4), {Compute.FLOAT}),
    (dict(bits=3, mode="simulated"), {Compute.SIMULATED}),
])
def test_rows_carry_a_typed_compute(mlp, kw, computes):
    report = slimkit.quantize(mlp, **kw).report
    assert {l.details["compute"] for l in report.layers} == computes
    assert all(isinstance(l.details["compute"], Compute) for l in report.layers)
    assert report.summary["integer_kernel_layers"] == (3 if Compute.INTEGER in computes else 0)
    assert report.simulated == (Compute.SIMULATED in computes)
    assert report.to_dict()["layers"][0]["details"]["compute"] == next(iter(computes)).value


def test_calibrated_inputs_without_a_kernel_are_simulated(cnn, digits):
    report = slimkit.quantize(cnn, 8, activations=digits.train.X[:64]).report
    rows = {l.name: l for l in report.layers}
    assert rows["features.0"].details["compute"] is Compute.SIMULATED  # conv: no int8 kernel
    assert rows["features.0"].action == Action.QUANTIZED  # its weights are real int8
    assert rows["classifier.1"].details["compute"] is Compute.INTEGER
