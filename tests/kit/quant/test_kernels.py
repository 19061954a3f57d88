"""The CPU int8 kernel choice, and fbgemm's path: per-token ranges, no int16 saturation."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import slimkit
from slimkit import hardware
from slimkit.errors import InvalidParameterError
from slimkit.quant import kernels
from slimkit.quant import layers as qlayers
from slimkit.quant.affine import QTensor, quantize_tensor

pytestmark = pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines,
                                reason="this torch build has no fbgemm")


@pytest.fixture(autouse=True)
def _fbgemm(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "fbgemm")


def _qlinear(w: torch.Tensor, b=None, **kw) -> qlayers.QuantLinear:
    qt = quantize_tensor(w, 8, "symmetric", "per_channel")
    return qlayers.QuantLinear(w.shape[1], w.shape[0], qweight=qt, bias_value=b, bias=b is not None, **kw)


def _codes(q: torch.Tensor, scale: float) -> qlayers.QuantLinear:
    """A layer holding exactly these int8 codes, one scale for every row."""
    n, k = q.shape
    qt = QTensor(q.to(torch.int8), torch.full((n,), scale), torch.zeros((), dtype=torch.int8), 8,
                 "symmetric", "per_channel")
    return qlayers.QuantLinear(k, n, qweight=qt, bias=False)


def _cpu(monkeypatch, arch: str, *flags: str) -> None:
    monkeypatch.setattr("slimkit.hardware._static", lambda: {"cpu_arch": arch, "cpu_flags": list(flags)})


def test_choice_follows_the_cpu_and_the_override(monkeypatch):
    monkeypatch.delenv(kernels.ENV)
    _cpu(monkeypatch, "x86_64", "avx2", "avx512f", "avx512_vnni")
    assert kernels.cpu_kernel() == "int_mm"
    _cpu(monkeypatch, "x86_64", "avx2", "avx_vnni")  # AVX-VNNI (Alder Lake, Zen 5)
    assert kernels.cpu_kernel() == "int_mm"
    _cpu(monkeypatch, "aarch64", "neon", "asimd")  # no AVX2 int16 pair sums to saturate
    assert not hardware.x86_without_int8_dot() and kernels.cpu_kernel() == "int_mm"
    _cpu(monkeypatch, "x86_64", "avx2", "fma")
    assert hardware.x86_without_int8_dot()
    assert kernels.cpu_kernel() == "fbgemm"
    monkeypatch.setenv(kernels.ENV, "int_mm")
    assert kernels.cpu_kernel() == "int_mm"
    monkeypatch.setenv(kernels.ENV, "mkl")
    with pytest.raises(InvalidParameterError, match="SLIMKIT_INT8_KERNEL"):
        kernels.cpu_kernel()


def test_fbgemm_layer_never_calls_int_mm_and_says_which_kernel(monkeypatch):
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    q = _qlinear(lin.weight.detach(), lin.bias.detach())

    def refuse(*a):
        raise AssertionError("torch._int_mm called on the fbgemm path")

    monkeypatch.setattr(torch, "_int_mm", refuse)
    x = torch.randn(5, 7, 64)
    out = q(x)
    assert out.shape == (5, 7, 32) and "fbgemm" in q.execution
    assert slimkit.sqnr(lin(x), out) > 30


def test_rows_of_very_different_size_each_get_their_own_range():
    # per-tensor quantization would flatten the small rows to a few levels; per token keeps them
    torch.manual_seed(0)
    lin = nn.Linear(96, 48)
    q = _qlinear(lin.weight.detach(), lin.bias.detach())
    x = torch.randn(8, 96) * torch.tensor([1e-3, 1e-2, 1, 10, 100, 1e3, 1, 1]).unsqueeze(1)
    out, ref = q(x), lin(x)
    for i in range(8):
        assert slimkit.sqnr(ref[i] - lin.bias, out[i] - lin.bias) > 25, i


def test_large_codes_and_large_activations_do_not_saturate():
    # 2 * 255 * 127 overflows int16: exact only with 7-bit activations (reduce_range)
    k = 64
    q = _codes(torch.full((4, k), 127), 0.01)
    assert "7-bit" in q.execution
    x = torch.cat([torch.full((1, k), 5.0), torch.linspace(-5, 5, k).unsqueeze(0), torch.rand(2, k) * 9])
    ref = F.linear(x, q.dequantized_weight())
    torch.testing.assert_close(q(x), ref, rtol=0.02, atol=0.02 * float(ref.abs().max()))


def test_small_codes_keep_8_bit_activations_and_stay_exact_to_8_bits():
    k = 64
    codes = torch.randint(-64, 65, (16, k))
    q = _codes(codes, 0.02)
    assert "8-bit" in q.execution
    torch.manual_seed(1)
    x = torch.randn(32, k) * 4 + 1
    assert slimkit.sqnr(F.linear(x, q.dequantized_weight()), q(x)) > 38


def test_static_range_clamps_like_the_int_mm_path(monkeypatch):
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    q = _qlinear(lin.weight.detach(), lin.bias.detach(), act="static", act_range=(-1.0, 1.0))
    x = torch.randn(10, 32) * 3  # much of it outside the calibrated range
    ref = lin(x.clamp(-1, 1))
    fb = q(x)
    monkeypatch.setenv(kernels.ENV, "int_mm")
    im = q(x)
    assert slimkit.sqnr(ref, fb) > 30 and slimkit.sqnr(ref, im) > 30
    assert slimkit.sqnr(im, fb) > 30


def test_switching_kernels_rebuilds_the_prepared_weights(monkeypatch):
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    q = _qlinear(lin.weight.detach(), lin.bias.detach())
    x = torch.randn(4, 32)
    q(x)
    assert "packed" in q._cache
    monkeypatch.setenv(kernels.ENV, "int_mm")
    q(x)
    assert "packed" not in q._cache and "wt" in q._cache


def test_quantized_model_saves_and_loads_on_the_fbgemm_path(tmp_path, mlp, digits):
    q, _ = slimkit.quantize(mlp, bits=8)
    x = digits.test.X[:64]
    before = q(x)
    path = slimkit.save(q, tmp_path / "q.slim")
    again = slimkit.load(path)
    torch.testing.assert_close(again(x), before)
    assert slimkit.sqnr(mlp(x), before) > 30


def test_rows_far_from_zero_with_a_tiny_spread_stay_accurate():
    # a row's offset dwarfs its range: the shift to [-1, 1] must not cancel it away
    torch.manual_seed(0)
    lin = nn.Linear(48, 24)
    q = _qlinear(lin.weight.detach(), lin.bias.detach())
    x = torch.cat([1000 + torch.randn(3, 48) * 1e-3, torch.full((1, 48), -250.0), torch.randn(2, 48)])
    out, ref = q(x), lin(x)
    for i in range(len(x)):
        assert slimkit.sqnr(ref[i], out[i]) > 30, i
