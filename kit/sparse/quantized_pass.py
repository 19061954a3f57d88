"""``sparsify`` on one quantized layer: zero codes, store the rest sparse, report the bytes.

Zeros are chosen on the integer codes: a code becomes the zero code (the zero point, or the
codebook's 0 centroid), so the result differs from the quantized layer only where zeros were
added. ``threshold`` zeroes codes whose dequantized magnitude is below it; ``sparsity`` the
smallest dequantized magnitudes first (existing zero codes come first).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..nn import set_module, tensor_bytes
from ..report import Action, LayerReport
from .quantized import byte_options, code_bits, dense_codes, to_sparse_int, with_codes, zero_codes


def zero_by_rule(layer: nn.Module, threshold: float | None, sparsity: float | None) -> torch.Tensor:
    """The layer's codes with the zeroing rule applied (a new tensor)."""
    codes, zero = dense_codes(layer).clone(), zero_codes(layer)
    zero = zero.expand_as(codes)
    magnitude = layer.dequantized_weight().detach().abs().reshape(codes.shape)
    if threshold is not None:
        hit = magnitude < threshold
    elif sparsity is not None:
        hit = torch.zeros(codes.numel(), dtype=torch.bool)
        hit[magnitude.reshape(-1).argsort(stable=True)[: round(sparsity * codes.numel())]] = True
        hit = hit.view(codes.shape)
    else:
        return codes
    return torch.where(hit, zero, codes)


def _stored_code_ptr(m: nn.Module) -> int:
    return m._buffers.get("qweight", m._buffers.get("indices")).data_ptr()


def quantized_layer(run, name: str, module: nn.Module) -> float | None:
    """Sparsify quantized layer ``name`` of ``run.new`` (a sparsify ``_Pass``); its sparsity, or None
    when it is left as is (a tied integer weight)."""
    config, totals, report = run.config, run.totals, run.report
    kind, before, n = type(module).__name__, tensor_bytes(module), math.prod(module.shape)
    tied = [o for o in run.owners.get(_stored_code_ptr(module), []) if o != name]
    if tied:
        report.layers.append(LayerReport(name, kind, Action.SKIPPED, n, n, before, before,
                                         reason=f"integer weight shared with {', '.join(tied)} (tied); "
                                                f"left dense so the tie holds"))
        return None
    old = int((dense_codes(module) != zero_codes(module)).sum())
    codes = zero_by_rule(module, config.threshold, None if config.format == "2:4" else config.sparsity)
    nnz = int((codes != zero_codes(module)).sum())
    sparsity = 1 - nnz / n
    options = byte_options(module, codes != zero_codes(module))
    fmt = min(options, key=options.get) if config.format == "auto" else config.format  # dense wins ties
    rows = module.shape[0]
    value_bytes = math.ceil(nnz * code_bits(module) / 8)
    for k in ("dense", "csr", "bitmask"):
        totals[k] += options[k]
    totals["csr_int64"] += (rows + 1) * 8 + nnz * 8 + value_bytes
    totals["zeros"] += n - nnz
    totals["weights"] += n
    width = f"{code_bits(module)}-bit {'codebook indices' if module.scheme == 'codebook' else 'int codes'}"
    details = {"nnz": nnz, "zeroed": old - nnz, "codes": width, "bytes_by_format": options}
    if fmt == "dense":
        with_codes(module, codes)
        totals["stored"] += options["dense"]
        report.layers.append(LayerReport(
            name, kind, Action.ZEROED if old > nnz else Action.KEPT_DENSE, n, n, before, tensor_bytes(module),
            sparsity=sparsity, reason=f"dense integer codes are the smallest format at {sparsity:.1%} sparsity; "
                                      + module.execution,
            details={**details, "format": "dense", "execution": "dense"}))
        return sparsity
    new = to_sparse_int(module, codes, fmt)
    set_module(run.new, name, new)
    details.update(stored_entries=new.stored_entries, fillers=new.fillers)  # CSR gap fillers: stored zeros
    totals["stored"] += options[fmt]
    why = new.execution
    if config.execution == "sparse":
        why = "no sparse integer kernel exists (execution='sparse' not possible): " + why
    if options[fmt] > options["dense"]:
        why = f"{fmt} ({options[fmt]} B) is larger than dense codes ({options['dense']} B) at this sparsity; " + why
    report.layers.append(LayerReport(
        name, kind, Action.SPARSIFIED, n, nnz, before, tensor_bytes(new), sparsity=sparsity, reason=why,
        details={**details, "format": fmt, "execution": "dense (integer weight rebuilt once)",
                 "value_bytes": value_bytes, "index_bytes": options[fmt] - value_bytes}))
    return sparsity
