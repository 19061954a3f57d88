"""Quantization: the affine math, and ``slimkit.quantize`` on real models."""
import math
import threading

import pytest
import torch
import torch.nn as nn

import slimkit
from conftest import assert_unchanged, state_snapshot
from slimkit.quant import layers as qlayers
from slimkit.errors import InvalidParameterError, InvalidTypeError, Interrupted, NothingToCompressError
from slimkit.quant.affine import (dequantize_tensor, fake_quantize, pack, qparams, qrange, quantize_tensor,
                                  unpack)


def _weights(seed=0, shape=(16, 48)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.linspace(0.1, 3, shape[0]).unsqueeze(1)


# ---- the affine mapping --------------------------------------------------------------------

def test_qrange():
    assert qrange(8, "symmetric") == (-127, 127)
    assert qrange(8, "asymmetric") == (-128, 127)
    assert qrange(4, "symmetric") == (-7, 7)
    assert qrange(2, "asymmetric") == (-2, 1)


def _reference_asymmetric(row: torch.Tensor, bits: int) -> torch.Tensor:
    """The formula written out for one row, independently of the implementation."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = min(row.min().item(), 0.0), max(row.max().item(), 0.0)
    scale = (hi - lo) / (qmax - qmin)
    zp = min(max(round(qmin - lo / scale), qmin), qmax)
    q = torch.clamp(torch.round(row / scale) + zp, qmin, qmax)
    return (q - zp) * scale


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_channel_asymmetric_matches_the_formula(bits):
    w = _weights()
    out = fake_quantize(w, bits, "asymmetric", "per_channel")
    ref = torch.stack([_reference_asymmetric(r, bits) for r in w])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("granularity,kw", [("per_tensor", {}), ("per_channel", {}),
                                             ("per_group", {"group_size": 8})])
def test_round_trip_error_is_at_most_half_a_step(scheme, granularity, kw):
    w = _weights()
    qt = quantize_tensor(w, 8, scheme, granularity, **kw)
    assert qt.q.dtype == torch.int8 and qt.q.shape == w.shape
    qmin, qmax = qrange(8, scheme)
    assert int(qt.q.min()) >= qmin and int(qt.q.max()) <= qmax
    back = dequantize_tensor(qt)
    steps = qt.scale.reshape(-1, 1) if qt.scale.dim() else qt.scale
    rows = w.reshape(steps.shape[0], -1) if qt.scale.dim() else w.reshape(1, -1)
    err = (back.reshape(rows.shape) - rows).abs()
    assert bool((err <= steps / 2 + 1e-6).all())


def test_scale_shapes_per_granularity():
    w = _weights()
    assert quantize_tensor(w, 8, granularity="per_tensor").scale.shape == ()
    assert quantize_tensor(w, 8, granularity="per_channel").scale.shape == (16,)
    assert quantize_tensor(w, 8, granularity="per_group", group_size=12).scale.shape == (16, 4)
    assert quantize_tensor(w, 8, granularity="per_channel", axis=1).scale.shape == (48,)


def test_per_group_scales_follow_each_group():
    w = torch.cat([torch.full((2, 4), 0.01), torch.full((2, 4), 100.0)], 1)
    qt = quantize_tensor(w, 8, "symmetric", "per_group", group_size=4)
    torch.testing.assert_close(qt.scale, torch.tensor([[0.01, 100.0], [0.01, 100.0]]) / 127)
    torch.testing.assert_close(dequantize_tensor(qt), w)  # each group's max is exact
    # per tensor, the small group underflows to zero
    assert float(fake_quantize(w, 8, granularity="per_tensor")[0, 0]) == 0.0


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_zero_is_exact(scheme):
    relu_like = torch.tensor([[0.0, 0.3, 1.7, 0.0, 2.9, 0.05]])  # all >= 0: min is 0
    shifted = torch.tensor([[-3.1, 0.0, 0.2, 5.3, 0.0, -0.7]])
    for x in (relu_like, shifted):
        back = fake_quantize(x, 4, scheme, "per_tensor")
        assert bool((back[x == 0] == 0).all())


def test_symmetric_range_maps_max_abs_to_qmax():
    w = _weights()
    qt = quantize_tensor(w, 8, "symmetric", "per_channel")
    assert bool((qt.zero_point == 0).all())
    assert bool((qt.q.abs().amax(1) == 127).all())
    assert bool((qt.q != -128).all())  # the restricted range keeps +-x symmetric
    torch.testing.assert_close(qt.scale, w.abs().amax(1) / 127)


def test_asymmetric_uses_the_full_range():
    x = torch.linspace(-1.0, 3.0, 200).reshape(1, -1)
    qt = quantize_tensor(x, 8, "asymmetric", "per_tensor")
    assert int(qt.q.min()) == -128 and int(qt.q.max()) == 127
    assert len(torch.unique(qt.q)) > 190
    # symmetric wastes the negative half's unused range: coarser steps on skewed data
    sym = quantize_tensor(x, 8, "symmetric", "per_tensor")
    assert float(sym.scale) > 1.4 * float(qt.scale)


def test_sqnr_rises_about_6db_per_bit():
    w = _weights(1, (64, 256))
    sq = [slimkit.sqnr(w, fake_quantize(w, b, "symmetric", "per_channel")) for b in range(2, 9)]
    assert all(b > a for a, b in zip(sq, sq[1:])), sq
    per_bit = (sq[-1] - sq[2]) / 4  # 4 -> 8 bits
    assert 5.0 < per_bit < 7.0, sq


def test_qparams_constant_and_zero_tensors():
    scale, zp = qparams(torch.zeros(3, 4), 8, "asymmetric", "per_channel")
    assert bool((scale == 1).all())
    assert bool((dequantize_tensor(quantize_tensor(torch.zeros(3, 4), 8, "asymmetric")) == 0).all())


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_pack_unpack_round_trip(bits, n):
    qmin, qmax = qrange(bits, "asymmetric")
    q = torch.randint(qmin, qmax + 1, (n,), generator=torch.Generator().manual_seed(n)).to(torch.int8)
    packed = pack(q, bits)
    assert packed.dtype == torch.uint8
    per_byte = 4 if bits == 2 else 2
    assert packed.numel() == math.ceil(n / per_byte)
    assert torch.equal(unpack(packed, bits, (n,)), q)


def test_pack_refuses_wide_values():
    with pytest.raises(InvalidParameterError, match="bits=8"):
        pack(torch.zeros(4, dtype=torch.int8), 8)


def test_quantize_tensor_bad_input():
    with pytest.raises(InvalidTypeError, match="x must be"):
        quantize_tensor(torch.ones(3, dtype=torch.int64))
    with pytest.raises(InvalidParameterError, match="NaN"):
        quantize_tensor(torch.tensor([1.0, float("nan")]))
    with pytest.raises(InvalidParameterError, match="group_size=5.*divisor of 48"):
        quantize_tensor(_weights(), 8, granularity="per_group", group_size=5)
    with pytest.raises(InvalidParameterError, match="axis=2"):
        quantize_tensor(_weights(), 8, granularity="per_channel", axis=2)


# ---- quantize(model) ---------------------------------------------------------------------

def test_int8_cnn_real_storage_size_and_accuracy(cnn, digits):
    snap = state_snapshot(cnn)
    q, report = slimkit.quantize(cnn, bits=8)
    assert_unchanged(cnn, snap)
    assert not report.simulated and all(l.action == "quantized" for l in report.layers)
    lin = q.classifier[1]
    assert isinstance(lin, qlayers.QuantLinear) and lin.integer_kernel
    assert lin.qweight.dtype == torch.int8 and lin.qweight.shape == (256, 1024)
    assert isinstance(q.features[2], qlayers.QuantConv2d) and q.features[2].qweight.dtype == torch.int8
    assert slimkit.size(cnn) / slimkit.size(q) >= 3.9
    drop = slimkit.evaluate(cnn, digits.test)["accuracy"] - slimkit.evaluate(q, digits.test)["accuracy"]
    assert drop <= 0.01
    assert report.summary["integer_kernel_layers"] == 2
    assert all(l.sqnr_db > 30 for l in report.layers)


def test_int4_is_packed_two_per_byte(cnn):
    q, report = slimkit.quantize(cnn, bits=4)
    lin = q.classifier[1]
    assert lin.qweight.dtype == torch.uint8 and lin.qweight.numel() == 256 * 1024 // 2
    assert "packed 2 per byte" in report.layers[2].reason
    assert slimkit.size(cnn) / slimkit.size(q) > 7
    # the packed weight decodes to the same grid the simulation uses
    sim, _ = slimkit.quantize(cnn, bits=4, mode="simulated")
    torch.testing.assert_close(lin.dequantized_weight(), sim.classifier[1].weight, rtol=0, atol=0)


def test_int8_linear_runs_the_integer_kernel(mlp, digits, monkeypatch):
    monkeypatch.setenv("SLIMKIT_INT8_KERNEL", "int_mm")  # fbgemm's path: tests/kit/quant/test_kernels.py
    calls = []
    real = torch._int_mm

    def counting(a, b):
        calls.append((a.dtype, b.dtype))
        return real(a, b)

    q, _ = slimkit.quantize(mlp, bits=8)
    monkeypatch.setattr(torch, "_int_mm", counting)
    x = digits.test.X[:64]
    out = q(x)
    assert len(calls) == 3 and all(c == (torch.int8, torch.int8) for c in calls)
    assert slimkit.sqnr(mlp(x), out) > 30


def test_simulated_mode_is_labelled(mlp):
    q, report = slimkit.quantize(mlp, bits=3, mode="simulated")
    assert report.simulated and "SIMULATED" in report.table()
    assert all(l.action == "simulated" and "SIMULATED" in l.reason for l in report.layers)
    assert "SIMULATED" in report.summary["note"]
    w = q.net[1].weight
    assert w.dtype == torch.float32 and isinstance(q.net[1], nn.Linear)
    assert max(len(torch.unique(r)) for r in w) <= 7  # 3-bit symmetric grid: 7 levels per row
    assert slimkit.size(q) > 0.9 * slimkit.size(mlp)  # no storage saving, and it says so


def test_real_mode_refuses_what_it_cannot_do(cnn, digits):
    with pytest.raises(InvalidParameterError, match="mode='real'.*features.0"):
        slimkit.quantize(cnn, bits=8, mode="real", activations=digits.train.X[:64])
    with pytest.raises(InvalidParameterError, match="mode='real'.*padding_mode='reflect'"):
        slimkit.quantize(nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, padding_mode="reflect")), bits=8, mode="real")


def test_auto_mode_labels_simulated_activations(cnn, digits):
    q, report = slimkit.quantize(cnn, bits=8, activations=digits.train.X[:256])
    rows = {l.name: l for l in report.layers}
    assert report.simulated
    assert "SIMULATED" in rows["features.0"].reason  # conv inputs: no int8 conv kernel
    assert rows["classifier.1"].details["activations"] == "int8 calibrated (static)"
    assert report.summary["simulated_layers"] == 2


def test_activation_calibration_sets_static_ranges(mlp, digits):
    x = digits.train.X[:300]
    q, report = slimkit.quantize(mlp, bits=8, activations=x)
    first = q.net[1]
    assert first.act == "static" and first.integer_kernel
    # pixel inputs span [0, 1] exactly: scale 1/255, zero point -128
    torch.testing.assert_close(first.act_scale, torch.tensor(float(x.max()) / 255))
    assert float(first.act_zero_point) == -128
    hidden = mlp.net[:3](x)
    torch.testing.assert_close(q.net[3].act_scale, hidden.max().detach() / 255)
    for l in report.layers:
        assert l.details["output_sqnr_db"] > 25
    assert slimkit.evaluate(q, digits.test)["accuracy"] > slimkit.evaluate(mlp, digits.test)["accuracy"] - 0.01


def test_calibration_emits_progress_and_stop_leaves_model_unchanged(mlp, digits):
    events, stop = [], threading.Event()

    def listener(e):
        events.append(e)
        if e.stage == "calibrate" and e.kind == "progress":
            stop.set()

    snap = state_snapshot(mlp)
    with pytest.raises(Interrupted):
        slimkit.quantize(mlp, 8, activations=digits.train, callbacks=listener, stop=stop)
    assert_unchanged(mlp, snap)
    assert [e.kind for e in events][:2] == ["start", "progress"]


def test_keep_names_and_globs(mlp):
    q, report = slimkit.quantize(mlp, 4, keep=["net.5"])
    assert isinstance(q.net[5], nn.Linear) and isinstance(q.net[1], qlayers.QuantLinear)
    assert "kept in full precision" in {l.name: l for l in report.layers}["net.5"].reason
    with pytest.raises(NothingToCompressError, match="kept"):
        slimkit.quantize(mlp, 4, keep="net.*")


def test_include_exclude(mlp):
    q, report = slimkit.quantize(mlp, 8, exclude=["net.1"])
    assert isinstance(q.net[1], nn.Linear)
    assert "excluded" in report.layers[0].reason and report.layers[0].action == "skipped"
    with pytest.raises(NothingToCompressError, match="include"):
        slimkit.quantize(mlp, 8, include=["nope.*"])


def test_embedding_quantization_per_row_and_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16))
    ids = torch.tensor([[1, 4, 49], [0, 0, 7]])
    for kw in (dict(scheme="symmetric"), dict(scheme="asymmetric", granularity="per_group", group_size=4)):
        q, report = slimkit.quantize(model, 8, **kw)
        emb = q[0]
        assert isinstance(emb, qlayers.QuantEmbedding) and emb.qweight.dtype == torch.int8
        torch.testing.assert_close(emb(ids), nn.functional.embedding(ids, emb.dequantized_weight()))
        assert slimkit.sqnr(model(ids), emb(ids)) > 35


@pytest.mark.parametrize("kw", [dict(bits=8), dict(bits=4), dict(bits=2), dict(bits=6),
                                dict(bits=4, scheme="asymmetric", granularity="per_group", group_size=16),
                                dict(bits=8, granularity="per_tensor"), dict(bits=5, mode="simulated")])
def test_quantized_models_round_trip_exactly(mlp, digits, tmp_path, kw):
    q, _ = slimkit.quantize(mlp, **kw)
    back = slimkit.load(slimkit.save(q, tmp_path / "q.slim"))
    for (k, a), (k2, b) in zip(q.state_dict().items(), back.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    x = digits.test.X[:32]
    assert torch.equal(back(x), q(x))


def test_static_activations_round_trip(cnn, digits, tmp_path):
    q, _ = slimkit.quantize(cnn, 8, activations=digits.train.X[:128])
    back = slimkit.load(slimkit.save(q, tmp_path / "q.slim"))
    x = digits.test.X[:32]
    assert torch.equal(back(x), q(x))


# ---- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,param,err", [
    (dict(bits=1), "bits=1", InvalidParameterError),
    (dict(bits=9), "bits=9", InvalidParameterError),
    (dict(bits=8.0), "bits must be", InvalidTypeError),
    (dict(bits=True), "bits must be", InvalidTypeError),
    (dict(granularity="per_row"), "granularity='per_row'", InvalidParameterError),
    (dict(scheme="affine"), "scheme='affine'", InvalidParameterError),
    (dict(mode="fast"), "mode='fast'", InvalidParameterError),
    (dict(granularity="per_group", group_size=7), "group_size=7", InvalidParameterError),
    (dict(granularity="per_group", group_size=0), "group_size", InvalidParameterError),
    (dict(group_size=8), "group_size=8", InvalidParameterError),
    (dict(keep="auto"), "metric=None", InvalidParameterError),
    (dict(activations=42), "activations must be", InvalidTypeError),
])
def test_bad_arguments_raise_and_change_nothing(mlp, kw, param, err):
    snap = state_snapshot(mlp)
    with pytest.raises(err, match=param.replace("(", r"\(")) as e:
        slimkit.quantize(mlp, **kw)
    assert isinstance(e.value, slimkit.SlimkitError)
    assert_unchanged(mlp, snap)


def test_group_size_error_names_the_layer(cnn):
    with pytest.raises(InvalidParameterError, match=r"group_size=16.*divisor of 9.*'features.0'"):
        slimkit.quantize(cnn, 4, granularity="per_group", group_size=16)


def test_nothing_to_quantize_and_non_module():
    with pytest.raises(NothingToCompressError, match="no layer quantize"):
        slimkit.quantize(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), 8)
    with pytest.raises(InvalidTypeError, match="model must be"):
        slimkit.quantize({"weight": torch.zeros(2)}, 8)


def test_nan_weights_refused(mlp):
    with torch.no_grad():
        mlp.net[3].weight[0, 0] = float("nan")
    with pytest.raises(InvalidParameterError, match="finite"):
        slimkit.quantize(mlp, 8)
