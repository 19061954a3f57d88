"""Building one layer's replacement from its :class:`~.plan.LayerPlan`: integer modules (real),
or a float copy holding the quantize-dequantized weights (simulated), and the row details that
say which, with a typed :class:`~slimkit.report.Compute` beside the words users read."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..metrics import sqnr
from ..nn import is_hf_conv1d, is_linear_like, is_parametrized, unparametrize
from ..report import Compute
from .affine import QTensor, dequantize_tensor, quantize_tensor, storage_bits
from .codebook import Codebook, codebook_tensor
from .codebook_layers import CODEBOOK_CLASSES, CodebookWeight
from .config import QuantConfig
from .fakequant import FakeQuantInput
from .gptq import gptq_tensor
from .layers import (
    QuantConv1d,
    QuantConv2d,
    QuantConv3d,
    QuantConvTranspose1d,
    QuantConvTranspose2d,
    QuantConvTranspose3d,
    QuantEmbedding,
    QuantLinear,
    QWeight,
    dtype_name,
)
from .plan import LayerPlan, has_int8_kernel, matrices
from .rnn import QuantRNN

# float conv type -> its quantized counterpart (Linear-likes, Embedding and RNNs are built apart)
_QUANT_CONV = {nn.Conv1d: QuantConv1d, nn.Conv2d: QuantConv2d, nn.Conv3d: QuantConv3d,
               nn.ConvTranspose1d: QuantConvTranspose1d, nn.ConvTranspose2d: QuantConvTranspose2d,
               nn.ConvTranspose3d: QuantConvTranspose3d}

_ACTIVATIONS = {"dynamic": "int8 per token, at run time", "static": "int8 calibrated (static)", "none": "float"}


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def quantize_layer(layer: nn.Module, plan: LayerPlan, config: QuantConfig,
                   hessian: torch.Tensor | None = None) -> tuple[nn.Module, float, dict]:
    """The replacement module for one layer, its weight SQNR, and what to say about it. With
    method='gptq' a Linear-like layer given its input ``hessian`` is rounded by GPTQ; any other
    layer is rounded to nearest (its row says method 'affine')."""
    bits, scheme, lay, act_range = config.bits, config.scheme, plan.layout, plan.act_range
    mats = {n: w.detach() for n, w in matrices(layer).items()}
    # fp16 scales only where they are per group (a per-channel fallback layout keeps fp32: int8 kernels)
    sdt = config.scale_dtype if lay.granularity == "per_group" else "float32"
    if config.method == "codebook":  # one codebook per weight matrix; zeros keep index 0
        qts = {n: codebook_tensor(w, bits) for n, w in mats.items()}
        deq = {n: qt.dequantize() for n, qt in qts.items()}
    elif config.method == "gptq" and hessian is not None:
        qts = {"weight": gptq_tensor(mats["weight"], hessian, bits, scheme, lay.granularity, lay.group_size, sdt,
                                     config.act_order)}
    else:
        qts = {n: quantize_tensor(w, bits, scheme, lay.granularity, 0, lay.group_size, sdt)
               for n, w in mats.items()}
    if config.method != "codebook":
        deq = {n: dequantize_tensor(qt) for n, qt in qts.items()}
    w_sqnr = sqnr(_flat(mats.values()), _flat(deq.values()))
    dtype = next(iter(mats.values())).dtype
    method = "affine" if config.method == "gptq" and hessian is None else config.method
    info = {"mode": "real" if plan.real else "simulated", "bits": bits, "method": method}
    if config.method == "codebook":
        info["codebook_size"] = 2 ** bits
    else:
        info.update(scheme=scheme, granularity=lay.granularity)
        if sdt != "float32":
            info["scale_dtype"] = sdt
    if lay.group_size:
        info["group_size"] = lay.group_size
    notes = [lay.note] if lay.note else []
    if is_parametrized(layer) or _weight_norm_hooks(layer):
        notes.append("its weight parametrization (e.g. weight_norm) is folded: the computed weight is quantized")
    sim_acts = f"int{config.act_bits} calibrated (simulated)"
    if plan.real:
        kernel_ok = has_int8_kernel(layer, config, lay)
        act = ("static" if act_range else "dynamic") if kernel_ok else "none"
        new = _build_real(layer, qts, dtype, act, act_range)
        info["storage"], info["execution"] = new.storage, new.execution
        info["activations"] = _ACTIVATIONS[act]
        info["compute"] = Compute.INTEGER if kernel_ok else Compute.FLOAT
        if act_range is not None and not kernel_ok:  # only in mode="auto": activations simulated
            info["mode"] = "real weights, simulated activations"
            info["execution"] += f"; input fake-quantized to int{config.act_bits} (SIMULATED)"
            info["activations"], info["compute"] = sim_acts, Compute.SIMULATED
            new = FakeQuantInput(config.act_bits, new, act_range)
        if bits < 8 and storage_bits(bits) == 8 and config.method != "codebook":
            notes.append(f"int{bits} values are stored one per int8 byte (only 2-4 bits are packed)")
    else:
        new = _float_copy(layer, deq)
        if act_range is not None:
            new = FakeQuantInput(config.act_bits, new, act_range)
        info["storage"] = f"{dtype_name(dtype)} (simulated)"
        info["execution"] = "SIMULATED: float with fake-quantized weights" + (
            f" and int{config.act_bits} fake-quantized inputs" if act_range is not None else "")
        info["activations"] = sim_acts if act_range is not None else "float"
        info["compute"] = Compute.SIMULATED
    if notes:
        info["note"] = "; ".join(notes)
    return new, w_sqnr, info


def _build_real(layer, qts: dict[str, QTensor | Codebook], dtype: torch.dtype, act: str, act_range) -> nn.Module:
    qt = next(iter(qts.values()))
    if isinstance(qt, Codebook):  # the affine layer's codebook twin: same constructor, codebook storage
        q = dict(bits=qt.bits, dtype=dtype_name(dtype), reserved_zero=qt.reserved_zero)
    else:
        q = dict(bits=qt.bits, scheme=qt.scheme, granularity=qt.granularity, group_size=qt.group_size,
                 dtype=dtype_name(dtype))
    if isinstance(layer, nn.RNNBase):
        return QuantRNN.from_float(layer, qts, **q)
    q["qweight"] = qt
    if is_linear_like(layer):
        out_f, in_f = qt.idx.shape if isinstance(qt, Codebook) else qt.q.shape
        return _twin(QuantLinear, qt)(in_f, out_f, act=act, bias=layer.bias is not None, bias_value=layer.bias,
                                 act_range=act_range, **q)
    if isinstance(layer, nn.Embedding):
        return _twin(QuantEmbedding, qt)(layer.num_embeddings, layer.embedding_dim, layer.padding_idx, **q)
    cls = _twin(next(c for t, c in _QUANT_CONV.items() if isinstance(layer, t)), qt)
    return cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
               layer.dilation, layer.groups, output_padding=getattr(layer, "output_padding", 0),
               bias=layer.bias is not None, bias_value=layer.bias, **q)


def _twin(cls: type, qt) -> type:
    """The layer class for ``qt``'s storage: the affine class, or its codebook twin."""
    return CODEBOOK_CLASSES[cls] if isinstance(qt, Codebook) else cls


def share_weight(new: nn.Module, first: nn.Module) -> None:
    """Make ``new`` use ``first``'s weight storage (tied layers: one copy, and saved once)."""
    new, first = getattr(new, "inner", new), getattr(first, "inner", first)  # FakeQuantInput wraps
    if isinstance(new, CodebookWeight):
        new.indices, new.codebook = first.indices, first.codebook
    elif isinstance(new, QWeight):
        new.qweight, new.scale, new.zero_point = first.qweight, first.scale, first.zero_point
    else:
        new.weight = first.weight


def _weight_norm_hooks(layer: nn.Module) -> list:
    """The legacy ``torch.nn.utils.weight_norm`` hooks that recompute the layer's weight per call."""
    from torch.nn.utils.weight_norm import WeightNorm

    return [h for h in layer._forward_pre_hooks.values() if isinstance(h, WeightNorm)]


def copy_module(module: nn.Module) -> nn.Module:
    """copy.deepcopy that also copies modules using the legacy weight_norm: the weight it computed
    in the last grad-enabled call is a non-leaf tensor, which deepcopy refuses (it is recomputed
    at the next call anyway)."""
    memo = {id(t): t.detach().clone() for m in module.modules() for t in vars(m).values()
            if isinstance(t, torch.Tensor) and not t.is_leaf}
    return copy.deepcopy(module, memo)


def _float_copy(layer: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A float copy of ``layer`` holding ``weights`` (as :func:`~.plan.matrices` names them) as
    plain Parameters: a weight parametrization (weight_norm) is folded, so the new values are the ones used."""
    new = copy_module(layer)
    if is_parametrized(new):  # the copy holds the computed tensors as plain Parameters
        unparametrize(new)
    for hook in _weight_norm_hooks(new):
        nn.utils.remove_weight_norm(new, hook.name)
    with torch.no_grad():
        for name, w in weights.items():
            target = getattr(new, name)
            target.copy_((w.t() if is_hf_conv1d(new) else w).to(target.dtype))
    return new
