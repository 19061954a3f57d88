"""``slimkit.quant.sensitivity.sensitivity`` (one layer at a time) and ``keep="auto"``."""
import copy
import math

import pytest
import torch
import torch.nn as nn

import slimkit
from conftest import assert_unchanged, state_snapshot
from slimkit.errors import NothingToCompressError
from slimkit.quant.affine import fake_quantize
from slimkit.quant.sensitivity import sensitivity


def test_keep_auto_mixed_precision_meets_the_budget(mlp, digits):
    base = 100 * slimkit.evaluate(mlp, digits.test)["accuracy"]
    plain, _ = slimkit.quantize(mlp, 2)
    assert base - 100 * slimkit.evaluate(plain, digits.test)["accuracy"] > 3  # 2 bits alone hurts
    q, report = slimkit.quantize(mlp, 2, keep="auto", metric=digits.test, max_drop=2.5)
    kept = [l.name for l in report.skipped]
    assert 0 < len(kept) < 3
    assert all(isinstance(q.get_submodule(n), nn.Linear) for n in kept)
    assert base - 100 * slimkit.evaluate(q, digits.test)["accuracy"] <= 2.5
    assert all("sensitivity_drop" in l.details for l in report.layers)
    # the most sensitive layers are the ones kept
    drops = {l.name: l.details["sensitivity_drop"] for l in report.layers}
    assert min(drops[n] for n in kept) >= max(d for n, d in drops.items() if n not in kept)
    with pytest.raises(NothingToCompressError, match="max_drop=0.1"):
        slimkit.quantize(mlp, 2, keep="auto", metric=digits.test, max_drop=0.1)


def test_sensitivity_scores_one_layer_at_a_time(mlp, digits):
    snap = state_snapshot(mlp)
    rows = sensitivity(mlp, digits.test, bits=2)
    assert_unchanged(mlp, snap)
    assert [r["name"] for r in rows] == ["net.1", "net.3", "net.5"]
    base = 100 * slimkit.evaluate(mlp, digits.test)["accuracy"]
    # recompute one row by hand
    m = copy.deepcopy(mlp)
    with torch.no_grad():
        m.net[3].weight.copy_(fake_quantize(m.net[3].weight, 2, "symmetric", "per_channel"))
    assert rows[1]["drop"] == pytest.approx(base - 100 * slimkit.evaluate(m, digits.test)["accuracy"])
    assert all(math.isfinite(r["output_sqnr_db"]) for r in rows)
    # a callable metric works too
    calls = []
    rows2 = sensitivity(mlp, lambda model: calls.append(1) or 1.0, bits=8)
    assert len(calls) == 4 and all(r["drop"] == 0 for r in rows2)


def test_sensitivity_takes_settings_like_quantize_and_simulates_by_default(mlp):
    import inspect

    params = inspect.signature(sensitivity).parameters
    assert params["mode"].default == "simulated" and params["bits"].default == 8
    score = lambda m: 1.0  # noqa: E731
    sim = sensitivity(mlp, score, 8)
    assert sim == sensitivity(mlp, score, bits=8) == sensitivity(mlp, score, slimkit.QuantConfig(mode="simulated"))
    # mode="simulated" is a fake-quantized float layer; auto builds the integer layers quantize would
    seen = []
    sensitivity(mlp, lambda m: seen.append(type(m.net[1]).__name__) or 1.0, bits=8, mode="auto", include=["net.1"])
    assert seen == ["Linear", "QuantLinear"]
    # a QuantConfig is used as given (its mode is "auto")
    seen.clear()
    sensitivity(mlp, lambda m: seen.append(type(m.net[1]).__name__) or 1.0, slimkit.QuantConfig(include=["net.1"]))
    assert seen == ["Linear", "QuantLinear"]


def test_sensitivity_with_gptq_ranks_by_round_to_nearest_and_says_so(mlp, digits):
    rows = sensitivity(mlp, (digits.test.X[:128], digits.test.y[:128]), bits=4, method="gptq")
    assert rows and all("round-to-nearest" in r["note"] for r in rows)
    plain = sensitivity(mlp, (digits.test.X[:128], digits.test.y[:128]), bits=4)
    assert [r["drop"] for r in rows] == [r["drop"] for r in plain] and "note" not in plain[0]
