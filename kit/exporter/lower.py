"""Lowering: a copy of a slimkit model whose layers are written in ops ONNX expresses.

Each slimkit layer becomes what ONNX can say about it, with slimkit's own integers and scales:

- int8 weights (8-bit or 5-7-bit values in int8 bytes, per tensor or per output channel, with the
  zero point when asymmetric) -> an int8 initializer + ``DequantizeLinear``;
- :class:`~slimkit.quant.layers.QuantLinear` on the int8 kernel, static activations (calibrated)
  -> ``QuantizeLinear``/``DequantizeLinear`` with slimkit's activation scale and zero point, then
  ``MatMul`` on the dequantized weight: the standard QDQ pattern runtimes fuse into int8 kernels;
- the same with dynamic activations -> slimkit's per-token asymmetric quantize-dequantize written out
  as arithmetic (min/max per row, scale, round, clip: the exact numbers slimkit uses). ONNX's
  QuantizeLinear takes one scale per tensor or per axis of a *constant* layout, and runtimes do not
  fuse a run-time per-row scale, so this part runs in float; the weights stay int8 on disk;
- ``activations="runtime"`` leaves dynamic activations float (``MatMul`` on the DQ'd int8 weight):
  the runtime may quantize them itself (OpenVINO's CPU plugin treats int8 weights + DequantizeLinear
  as compressed weights and, with ``DYNAMIC_QUANTIZATION_GROUP_SIZE``, quantizes activations per
  group at run time). Then the numbers are the runtime's, not slimkit's;
- :class:`~slimkit.quant.fakequant.FakeQuantInput` (simulated in torch) -> a real Q/DQ pair;
- sparse layers (CSR/bitmask) -> their dense weight (pruned / shrunk models are dense graphs);
- packed int4/int2 weights and per-group scales have no standard ONNX/OpenVINO form here: an
  :class:`ExportError` names them, unless ``dequantize=True`` exports them as float weights.
"""
from __future__ import annotations

import copy
import types

import torch
from torch import nn

from ..errors import SlimkitError
from ..quant.affine import qrange, storage_bits
from ..quant.fakequant import FakeQuantInput
from ..quant.layers import QuantEmbedding, QuantLinear, QWeight
from ..sparse.layers import SparseWeight


class ExportError(SlimkitError, ValueError):
    """The model holds layers the target format cannot express (and what to do instead)."""


def _qd():
    import torch.ao.quantization.fx._decomposed

    return torch.ops.quantized_decomposed


def expressible(layer: QWeight) -> bool:
    """Weights DequantizeLinear states exactly: values in int8 bytes, one scale in all or per channel."""
    return storage_bits(layer.bits) == 8 and layer.granularity in ("per_tensor", "per_channel")


def _weight_dq(layer, q: torch.Tensor, axis: int) -> torch.Tensor:
    """DequantizeLinear of ``q`` (the layer's int8 values, maybe transposed) with the layer's scale
    and zero point, as prepared by :func:`_qparams` (the exporter wants them as constants: Python
    numbers per tensor, int32/fp32 buffers per channel)."""
    qd = _qd()
    lo, hi = qrange(layer.bits, layer.scheme)
    if layer.granularity == "per_tensor":
        return qd.dequantize_per_tensor(q, layer._export_scale, layer._export_zp, lo, hi, torch.int8)
    return qd.dequantize_per_channel(q, layer.scale, layer._export_zp, axis, lo, hi, torch.int8)


def _qparams(target: nn.Module, layer: QWeight) -> None:
    """Give ``target`` the constants :func:`_weight_dq` reads, taken from ``layer``."""
    zp = layer.zero_point if layer.zero_point is not None else torch.zeros_like(layer.scale, dtype=torch.int8)
    if layer.granularity == "per_tensor":
        target._export_scale, target._export_zp = float(layer.scale), int(zp)
    else:
        target.register_buffer("_export_zp", zp.to(torch.int32).clone())


def _dq_weight_method(self) -> torch.Tensor:
    return _weight_dq(self, self.qweight, self.axis)


def _float_weight_method(self) -> torch.Tensor:
    return self._export_float_weight


def _fake_quant_forward(self, x, *args, **kwargs):
    """FakeQuantInput as a real QuantizeLinear/DequantizeLinear pair (same scale, zero point, range)."""
    if torch.is_floating_point(x):
        qd = _qd()
        lo, hi = qrange(self.bits, "asymmetric")
        s, zp = self._export_qparams
        x = qd.dequantize_per_tensor(qd.quantize_per_tensor(x.float(), s, zp, lo, hi, torch.int8),
                                     s, zp, lo, hi, torch.int8).to(x.dtype)
    return self.inner(x, *args, **kwargs)


class QDQLinear(nn.Module):
    """A QuantLinear on the int8 kernel as ONNX sees it: activations quantized the way slimkit does
    (static: Q/DQ with the calibrated scale; dynamic: per-token arithmetic), times the DQ'd int8 weight.
    The weight is stored transposed (in, out), DQ per column, so it feeds ``MatMul`` directly (the
    layout ONNX Runtime's QDQ fusion and OpenVINO's weight decompression match)."""

    def __init__(self, q: QuantLinear, activations: str = "exact"):
        super().__init__()
        self.bits, self.scheme, self.granularity = q.bits, q.scheme, q.granularity
        self.float_act = activations == "runtime" and q.act == "dynamic"
        self.act, self.in_features, self.out_features, self.dtype = q.act, q.in_features, q.out_features, q.dtype
        self.register_buffer("qweight_t", q.qweight.t().contiguous())
        self.register_buffer("scale", q.scale.clone())
        _qparams(self, q)
        self.register_buffer("bias", None if q.bias is None else q.bias.float().clone())
        if q.act == "static":  # constants of the graph
            self.act_scale, self.act_zero_point = float(q.act_scale), int(q.act_zero_point)

    @property
    def weight(self) -> torch.Tensor:  # for model code that reads layer.weight (dtype, shape)
        return _weight_dq(self, self.qweight_t, 1).t().to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = _qd()
        shape, dtype = x.shape, x.dtype
        x = x.reshape(-1, shape[-1]).float()
        if self.act == "static":
            xq = qd.quantize_per_tensor(x, self.act_scale, self.act_zero_point, -128, 127, torch.int8)
            x = qd.dequantize_per_tensor(xq, self.act_scale, self.act_zero_point, -128, 127, torch.int8)
        elif not self.float_act:  # slimkit's per-token asymmetric int8 (QuantLinear.forward), quantized then dequantized
            hi = x.amax(1, keepdim=True).clamp(min=0)
            lo = x.amin(1, keepdim=True).clamp(max=0)
            s = ((hi - lo) / 255).clamp(min=1e-12)
            zp = -torch.round(lo / s) - 128
            x = (torch.round(x * s.reciprocal() + zp).clamp(-128, 127) - zp) * s
        y = torch.matmul(x, _weight_dq(self, self.qweight_t, 1))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(dtype)


def _sparse_dense_method(self) -> torch.Tensor:
    return self._export_dense


ACTIVATIONS = ("exact", "runtime")


def lower(model: nn.Module, dequantize: bool = False, activations: str = "exact") -> tuple[nn.Module, dict[str, str]]:
    """A copy of ``model`` written in exportable ops, and how each slimkit layer is expressed
    (by qualified name). Raises :class:`ExportError` naming every layer that has no form in the
    target format unless ``dequantize`` (then those become float weights). ``activations``:
    "exact" writes slimkit's dynamic per-token quantization out, "runtime" leaves it to the runtime."""
    _qd()  # before the exporter builds its op registry, or it has no ONNX function for these ops
    model = copy.deepcopy(model).eval()
    how: dict[str, str] = {}
    refused: list[str] = []
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantLinear) and m.integer_kernel:
            layer = QDQLinear(m, activations)
            _replace(model, name, layer)
            how[name] = ("int8 weights (DequantizeLinear, " + m.granularity + "), activations "
                         + ("QuantizeLinear/DequantizeLinear, calibrated static scale" if m.act == "static"
                            else "float, quantized by the runtime if it does" if layer.float_act
                            else "per-token dynamic (exact arithmetic, float matmul)"))
        elif isinstance(m, QWeight):  # convs, embeddings, RNN matrices, Linear formats without int8 kernel
            if isinstance(m, QuantEmbedding) and m.granularity == "per_channel" and storage_bits(m.bits) == 8:
                how[name] = f"int{m.bits} table (Gather of int8 rows, then scaled: slimkit's own lookup)"
            elif expressible(m):
                _qparams(m, m)
                m.dequantized_weight = types.MethodType(_dq_weight_method, m)
                how[name] = f"int{m.bits} weights (DequantizeLinear, {m.granularity}), float compute"
            elif dequantize:
                m.register_buffer("_export_float_weight", m.dequantized_weight().detach().clone())
                m.dequantized_weight = types.MethodType(_float_weight_method, m)
                how[name] = f"dequantized to float (slimkit stores {m.storage}, {m.granularity})"
            else:
                refused.append(f"{name} ({type(m).__name__}: {m.storage}, {m.granularity})")
        elif isinstance(m, FakeQuantInput):
            m._export_qparams = (float(m.act_scale), int(m.act_zero_point))  # graph constants
            m.forward = types.MethodType(_fake_quant_forward, m)
            how[name] = f"input QuantizeLinear/DequantizeLinear ({m.bits}-bit, calibrated)"
        elif isinstance(m, SparseWeight):
            m.register_buffer("_export_dense", m.dense_weight().detach().clone())
            m.dense_weight = types.MethodType(_sparse_dense_method, m)
            m.execution = "dense"
            how[name] = f"dense weight (slimkit stores {m.fmt})"
    if refused:
        raise ExportError(
            "these layers have no standard ONNX/OpenVINO form (their integers are only simulated or packed "
            "below 8 bits): " + "; ".join(refused) + ". Pass dequantize=True to export them as float weights, "
            "or quantize them to 8 bits per channel / per tensor.")
    return model, how


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
