"""``quantize`` on a sparsified model: the float sparse layers become sparse integer layers.

The sparse layers are turned back into the float layers they store (same values, zeros
included), quantized like any model (calibration, keep, codebook fine-tuning all apply), and each
quantized result is stored sparse again with the float layer's own layout: zeros quantize to the
zero code exactly, so they stay exact zeros, and the non-zeros are the stored codes.
"""
from __future__ import annotations

import copy

import torch.nn as nn

from ..nn import get_module, matches, set_module, tensor_bytes
from ..report import HISTORY, Action, _order
from .layers import SparseWeight
from .quantized import LAYOUTS, can_sparsify, dense_codes, to_sparse_int, zero_codes


def sparse_float_layers(model: nn.Module, include=None, exclude=None) -> dict[str, SparseWeight]:
    """The float sparse layers ``quantize`` would act on (by include/exclude), by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseWeight) and n
            and (not include or matches(n, include)) and not matches(n, exclude)}


def densify(model: nn.Module, layers: dict[str, SparseWeight]) -> nn.Module:
    """A copy of ``model`` with ``layers`` replaced by their float layers (history kept)."""
    dense = copy.deepcopy(model)
    for name, m in layers.items():
        set_module(dense, name, m.to_float())
    return dense


def keep_sparse(q: nn.Module, report, layers: dict[str, SparseWeight]) -> None:
    """Store each quantized layer that was sparse with its original layout; put back the sparse
    layers quantize left float; rows and history say so."""
    hist = getattr(q, HISTORY, {})
    for row in report.layers:
        original = layers.get(row.name)
        if original is None:
            continue
        row.kind, row.bytes_before = type(original).__name__, tensor_bytes(original)
        layer = get_module(q, row.name)
        inner = getattr(layer, "inner", layer)  # FakeQuantInput wraps
        if row.action == Action.SKIPPED:  # kept float: it stays the sparse layer it was
            set_module(q, row.name, original)
            row.bytes_after = row.bytes_before
            continue
        if row.action != Action.QUANTIZED or not can_sparsify(inner):
            row.reason += "; the sparse layout is NOT kept (quantization stores this layer as float)"
            continue
        if zero_codes(inner) is None:  # a codebook over a weight without zeros: nothing to keep sparse
            row.reason += "; no zeros to keep sparse: stored as dense codes"
            continue
        fmt = original.fmt if original.fmt in LAYOUTS else "bitmask"
        keep = original.dense_weight().reshape(inner.shape) != 0
        new = to_sparse_int(inner, dense_codes(inner), fmt, keep=keep)
        if inner is layer:
            set_module(q, row.name, new)
        else:
            layer.inner = new
        row.params_after = new.nnz  # fillers of the CSR gaps not counted
        row.sparsity = new.sparsity
        row.bytes_after = tensor_bytes(get_module(q, row.name))
        kept = f"sparse {fmt} layout kept"
        row.reason = new.execution if original.fmt in LAYOUTS else \
            f"2:4 stored as bitmask (no integer 2:4 layout); {new.execution}"
        row.details.update(format=fmt, nnz=new.nnz, stored_entries=new.stored_entries, fillers=new.fillers)
        if row.history:
            row.history[-1] += f" ({kept}, {row.sparsity:.0%} zeros)"
            hist[row.name] = row.history
    report.summary["steps"] = sorted({s for h in hist.values() for s in h}, key=_order(hist))
