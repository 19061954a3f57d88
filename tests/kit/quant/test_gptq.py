"""GPTQ rounding (slimkit.quantize(method="gptq", data=...)) and fp16 per-group scales."""
import pytest
import torch
from conftest import assert_unchanged, state_snapshot

import slimkit
from slimkit.errors import InvalidParameterError
from slimkit.quant.affine import dequantize_tensor, quantize_tensor
from slimkit.quant.gptq import gptq_tensor
from slimkit.quant.layers import QuantLinear

LINEARS = ("net.1", "net.3", "net.5")


def output_error(w: torch.Tensor, deq: torch.Tensor, x: torch.Tensor) -> float:
    """||X W^T - X Q^T|| (Frobenius): what GPTQ minimises, on inputs ``x`` (rows, in)."""
    return float(torch.linalg.matrix_norm(x.detach().float() @ (w.detach().float() - deq.detach().float()).t()))


def layer_inputs(model, x, names):
    """Each named layer's input rows when ``x`` runs through ``model``."""
    got, handles = {}, []
    for n in names:
        handles.append(model.get_submodule(n).register_forward_pre_hook(
            lambda _m, args, n=n: got.__setitem__(n, args[0].detach().reshape(-1, args[0].shape[-1]))))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return got


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("granularity,group_size", [("per_channel", None), ("per_group", 16)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_lowers_layer_output_error_vs_round_to_nearest(mlp, digits, bits, granularity, group_size, act_order):
    x = layer_inputs(mlp, digits.train.X[:512], ["net.3"])["net.3"]
    w = mlp.net[3].weight.detach()
    H = 2 * x.double().t() @ x.double() / len(x)
    g = gptq_tensor(w, H, bits, "symmetric", granularity, group_size, act_order=act_order)
    r = quantize_tensor(w, bits, "symmetric", granularity, 0, group_size)
    assert g.q.shape == r.q.shape and g.scale.shape == r.scale.shape and g.q.dtype == torch.int8
    assert g.q.abs().max() <= 2 ** (bits - 1) - 1
    assert output_error(w, dequantize_tensor(g), x) < 0.9 * output_error(w, dequantize_tensor(r), x)


@pytest.mark.parametrize("bits", [3, 4])
def test_quantize_gptq_beats_rtn_on_every_linear(mlp, digits, bits):
    X = digits.train.X[:512]
    kw = {"bits": bits, "granularity": "per_group", "group_size": 16}
    g = slimkit.quantize(mlp, method="gptq", data=X, **kw)
    r = slimkit.quantize(mlp, **kw)
    xs = layer_inputs(mlp, X, LINEARS)  # the float model's inputs: what the one-pass Hessians saw
    for n in LINEARS:
        w, gq, rq = mlp.get_submodule(n).weight, g.model.get_submodule(n), r.model.get_submodule(n)
        assert isinstance(gq, QuantLinear) and type(gq) is type(rq)
        assert gq.qweight.dtype == rq.qweight.dtype and gq.qweight.shape == rq.qweight.shape  # same storage
        assert output_error(w, gq.dequantized_weight(), xs[n]) < output_error(w, rq.dequantized_weight(), xs[n])
    assert [row.details["method"] for row in g.report.layers] == ["gptq"] * 3
    assert g.report.params["method"] == "gptq" and g.report.summary["gptq_layers"] == 3
    tensors = [{k: (v.dtype, v.shape) for k, v in m.state_dict().items()} for m in (g.model, r.model)]
    assert tensors[0] == tensors[1]  # only the codes and scales differ


def test_gptq_round_trips_bit_exactly_with_fp16_scales(mlp, digits, tmp_path):
    X = digits.train.X[:256]
    kw = {"bits": 4, "granularity": "per_group", "group_size": 16, "method": "gptq", "data": X}
    q32 = slimkit.quantize(mlp, **kw).model
    q16 = slimkit.quantize(mlp, scale_dtype="float16", **kw).model
    layer = q16.net[1]
    assert layer.scale.dtype == torch.float16 and q32.net[1].scale.dtype == torch.float32
    # the stored fp16 scale is exactly the one used: dequantization is codes x that scale
    deq = layer.qtensor().q.float().reshape(256, -1, 16) * layer.scale.float()[..., None]
    assert torch.equal(layer.dequantized_weight(), deq.reshape(256, 64))
    halved = sum(m.scale.numel() * 2 for m in (q32.net[1], q32.net[3], q32.net[5]))
    assert abs(slimkit.size(q32) - slimkit.size(q16) - halved) <= 16  # 2 bytes per scale (header aligned to 8)
    for q in (q32, q16):
        back = slimkit.load(slimkit.save(q, tmp_path / "q.slim"))
        assert back.net[1].scale.dtype == q.net[1].scale.dtype
        for k, v in q.state_dict().items():
            assert torch.equal(back.state_dict()[k], v), k
        assert torch.equal(back(digits.test.X), q(digits.test.X))
        path = tmp_path / "e.slim"
        slimkit.save(q, path, entropy=True)
        assert path.stat().st_size == slimkit.size(q, entropy=True)


def test_non_linear_layers_are_rounded_to_nearest_and_said_so(cnn, digits):
    res = slimkit.quantize(cnn, bits=4, method="gptq", data=digits.train.X[:128])
    rows = {r.name: r for r in res.report.layers}
    for n in ("features.0", "features.2"):
        assert rows[n].details["method"] == "affine"
        assert "round-to-nearest" in rows[n].details["note"] and "Conv2d" in rows[n].details["note"]
    for n in ("classifier.1", "classifier.3"):
        assert rows[n].details["method"] == "gptq"
    assert res.report.summary["gptq_layers"] == 2


def test_a_linear_that_sees_no_input_is_rounded_to_nearest():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.used(x)

    res = slimkit.quantize(TwoHeads(), bits=4, method="gptq", data=torch.randn(64, 8))
    rows = {r.name: r for r in res.report.layers}
    assert rows["used"].details["method"] == "gptq" and rows["unused"].details["method"] == "affine"
    assert "saw none" in rows["unused"].details["note"]


def test_pruned_zeros_stay_exact_zeros(mlp, digits):
    with torch.no_grad():
        w = mlp.net[3].weight
        w[w.abs() < w.abs().median()] = 0
    zeros = mlp.net[3].weight == 0
    q = slimkit.quantize(mlp, bits=4, granularity="per_group", group_size=16, method="gptq",
                         data=digits.train.X[:256]).model
    assert torch.all(q.net[3].dequantized_weight()[zeros] == 0)


def test_dead_inputs_keep_their_weights():
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    x[:, :4] = 0  # inputs never active on the calibration data
    w = torch.randn(16, 32)
    g = gptq_tensor(w, 2 * x.t() @ x / 256, 4, "symmetric", "per_group", 8)
    assert torch.equal(g.q[:, :4], quantize_tensor(w, 4, "symmetric", "per_group", 0, 8).q[:, :4])


def test_bad_input_errors_before_work(mlp, digits):
    snap = state_snapshot(mlp)
    with pytest.raises(InvalidParameterError, match="data"):
        slimkit.quantize(mlp, bits=4, method="gptq")  # no calibration data
    with pytest.raises(InvalidParameterError, match="data"):
        slimkit.quantize(mlp, bits=4, data=digits.train.X)  # data without gptq
    with pytest.raises(InvalidParameterError, match=r"data.*batch 0"):
        slimkit.quantize(mlp, bits=4, method="gptq", data=torch.randn(8, 7))  # the model cannot run it
    with pytest.raises(InvalidParameterError, match="data"):
        slimkit.quantize(mlp, bits=4, method="gptq", data=[])
    with pytest.raises(InvalidParameterError, match="bits"):
        slimkit.quantize(mlp, bits=9, method="gptq", data=digits.train.X)
    with pytest.raises(InvalidParameterError, match="scale_dtype"):
        slimkit.quantize(mlp, bits=4, scale_dtype="float16")  # per_channel scales stay fp32
    with pytest.raises(InvalidParameterError, match="scale_dtype"):
        slimkit.quantize(mlp, bits=4, granularity="per_group", scale_dtype="bfloat16")
    with pytest.raises(InvalidParameterError, match="act_order"):
        slimkit.quantize(mlp, bits=4, act_order=True)  # act_order is GPTQ's
    assert_unchanged(mlp, snap)
