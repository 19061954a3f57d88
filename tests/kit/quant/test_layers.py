"""Quantized layers: the int8 kernel's arithmetic, integer storage, and exact rebuilds."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import slimkit
from slimkit.quant import layers as qlayers
from slimkit.quant.affine import quantize_tensor
from slimkit.quant.fakequant import FakeQuantInput
from slimkit.quant.kernels import ENV
from slimkit.quant.rnn import QuantMatrix


@pytest.fixture(autouse=True)
def _int_mm(monkeypatch):
    """These tests check the int_mm path's exact arithmetic (it runs on every CPU, fast only with
    VNNI); the fbgemm path is tested in test_kernels.py."""
    monkeypatch.setenv(ENV, "int_mm")


def _linear(k=40, m=24, seed=0, **kw):
    torch.manual_seed(seed)
    lin = nn.Linear(k, m)
    qt = quantize_tensor(lin.weight.detach(), 8, "symmetric", kw.pop("granularity", "per_channel"))
    return lin, qlayers.QuantLinear(k, m, qweight=qt, bias_value=lin.bias, **kw)


def _fake_rows(x):
    """Per-row asymmetric int8 fake quantization, written out independently."""
    hi = x.amax(1, keepdim=True).clamp(min=0)
    lo = x.amin(1, keepdim=True).clamp(max=0)
    s = (hi - lo) / 255
    zp = -(lo / s).round() - 128
    return ((x / s + zp).round().clamp(-128, 127) - zp) * s


@pytest.mark.parametrize("shape", [(1, 40), (7, 40), (33, 40), (2, 5, 40)])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_dynamic_int8_equals_fake_quant_reference(shape, granularity):
    lin, q = _linear(granularity=granularity)
    assert q.integer_kernel and "_int_mm" in q.execution
    x = torch.randn(*shape) * 3 + 0.5
    ref = F.linear(_fake_rows(x.reshape(-1, 40)), q.dequantized_weight(), lin.bias).reshape(*shape[:-1], 24)
    out = q(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # the zero-point correction is exact
    assert slimkit.sqnr(lin(x), out) > 35


def test_static_int8_equals_fake_quant_reference():
    lin, q = _linear(act="static", act_range=(-2.0, 6.0))
    s, zp = 8.0 / 255, round(-128 + 2.0 / (8.0 / 255))
    assert float(q.act_scale) == pytest.approx(s) and float(q.act_zero_point) == zp
    x = torch.rand(9, 40) * 7 - 2.5  # a little outside the calibrated range: clipped
    xq = ((x / s).round() + zp).clamp(-128, 127)
    ref = F.linear((xq - zp) * s, q.dequantized_weight(), lin.bias)
    torch.testing.assert_close(q(x), ref, rtol=1e-5, atol=1e-5)


def test_all_zero_rows_and_no_bias():
    torch.manual_seed(1)
    lin = nn.Linear(16, 8, bias=False)
    q = qlayers.QuantLinear(16, 8, bias=False, qweight=quantize_tensor(lin.weight.detach(), 8))
    x = torch.zeros(3, 16)
    assert torch.equal(q(x), torch.zeros(3, 8))
    x[1] = torch.randn(16)
    assert slimkit.sqnr(lin(x), q(x)) > 30


def test_non_kernel_formats_dequantize_and_say_so():
    torch.manual_seed(0)
    lin = nn.Linear(32, 8)
    qt = quantize_tensor(lin.weight.detach(), 4, "asymmetric", "per_group", group_size=8)
    q = qlayers.QuantLinear(32, 8, bits=4, scheme="asymmetric", granularity="per_group", group_size=8,
                            act="none", qweight=qt, bias_value=lin.bias)
    assert not q.integer_kernel and "fp32 compute" in q.execution and q.qweight.dtype == torch.uint8
    assert q.zero_point.dtype == torch.int8 and q.zero_point.shape == (8, 4)
    x = torch.randn(4, 32)
    torch.testing.assert_close(q(x), F.linear(x, q.dequantized_weight(), lin.bias))


def test_conv_uses_the_dequantized_weight():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
    qt = quantize_tensor(conv.weight.detach(), 8, "symmetric", "per_channel")
    q = qlayers.QuantConv2d(3, 6, 3, 2, 1, bias=True, qweight=qt, bias_value=conv.bias)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(q(x), F.conv2d(x, q.dequantized_weight(), conv.bias, 2, 1))
    assert slimkit.sqnr(conv(x), q(x)) > 35
    assert q.qweight.dtype == torch.int8 and q.scale.shape == (6,)


def test_fake_quant_input_is_a_simulation():
    inner = nn.Identity()
    f = FakeQuantInput(4, inner, (-1.0, 2.0))
    x = torch.linspace(-1, 2, 100)
    assert len(torch.unique(f(x))) <= 16 and "simulated" in f.execution
    assert float(f(torch.zeros(1))) == 0.0


def test_prepared_cache_follows_the_buffers():
    lin, q = _linear()
    x = torch.randn(4, 40)
    before = q(x)
    _, other = _linear(seed=3)
    q.load_state_dict(other.state_dict())  # replaces qweight/scale in place
    torch.testing.assert_close(q(x), other(x))
    assert not torch.allclose(q(x), before)
    c = copy.deepcopy(q)
    assert c._cache is None
    torch.testing.assert_close(c(x), other(x))


@pytest.mark.parametrize("cls,kw", [
    (qlayers.QuantLinear, dict(in_features=12, out_features=4, bits=3, scheme="asymmetric", act="none")),
    (qlayers.QuantConv2d, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, bits=2)),
    (qlayers.QuantEmbedding, dict(num_embeddings=9, embedding_dim=8, bits=8, granularity="per_group",
                                  group_size=4)),
    (qlayers.QuantConv1d, dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, bits=4, dtype="bfloat16")),
    (qlayers.QuantConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=2, stride=2, bits=8)),
    (QuantMatrix, dict(shape=(12, 5), bias=True, bits=8, scheme="asymmetric")),
])
def test_spec_rebuilds_buffers_of_the_same_shape_and_dtype(cls, kw):
    torch.manual_seed(0)
    layer = cls(**kw)
    shape = layer.shape
    qt = quantize_tensor(torch.randn(shape), layer.bits, layer.scheme, layer.granularity,
                         group_size=layer.group_size)
    full = cls(**kw, qweight=qt)
    empty = cls.from_spec(full.spec())
    for (k, a), (k2, b) in zip(full.state_dict().items(), empty.state_dict().items()):
        assert k == k2 and a.shape == b.shape and a.dtype == b.dtype


def test_weight_and_outputs_follow_the_float_layers_dtype():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8).to(torch.bfloat16)
    qt = quantize_tensor(lin.weight.detach(), 8, "symmetric", "per_channel")
    for act in ("dynamic", "none"):
        q = qlayers.QuantLinear(16, 8, act=act, qweight=qt, bias_value=lin.bias, dtype="bfloat16")
        assert q.bias.dtype == q.weight.dtype == torch.bfloat16 and q.scale.dtype == torch.float32
        x = torch.randn(3, 16).bfloat16()
        out = q(x)
        assert out.dtype == torch.bfloat16 and slimkit.sqnr(lin(x).float(), out.float()) > 25
    # the weight property is read-only and dequantizes in the layer's dtype
    torch.testing.assert_close(q.weight, q.dequantized_weight().bfloat16())
    with pytest.raises(AttributeError):
        q.weight = torch.zeros(8, 16)


def test_kernel_cache_from_an_inference_mode_call_serves_autograd_calls():
    lin, q = _linear()
    x = torch.randn(4, 40)
    with torch.inference_mode():
        q(x)  # fills the cache
    y = x.clone().requires_grad_()
    out = q(y * 1.0)  # autograd records the call: the cached tensors must be normal tensors
    assert out.requires_grad and not q._cache["colsum"].is_inference()
