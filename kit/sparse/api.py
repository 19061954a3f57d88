"""Sparse representation: zero small weights, then store them really sparse.

``sparsify`` applies one zeroing rule to every Linear / Conv / Embedding weight, then replaces
each layer with a :mod:`slimkit.sparse.layers` layer whose weight lives in CSR, bitmask or 2:4
buffers, and reports, per layer, the exact stored bytes (indices included) in every format and
what runs at inference (a real sparse kernel, or the weight decompressed to dense once).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

from ..errors import (InvalidParameterError, InvalidTypeError, NothingToCompressError, check_choice, check_fraction,
                     check_module, check_nonnegative)
from ..events import as_progress
from ..nn import (WEIGHTED, is_hf_conv1d, is_linear_like, is_target, linear_weight, named_targets, set_module, tensor_bytes,
                     unselected_reason)
from ..pruning.api import PARAMETRIZATION_NOTE, in_model_order, plain_copy
from ..report import LayerReport, Report, Result
from ..sparse.layers import SparseConv, SparseEmbedding, SparseLinear, format_bytes, holds_2_4

FORMAT_CHOICES = ("csr", "bitmask", "2:4", "auto")
EXECUTION_CHOICES = ("auto", "dense", "sparse")

# Sparsity from which torch's CSR matmul beats dense on CPU (benchmarks/sparse_study.py:
# 4096x4096, one thread, batch 1-32, torch 2.13). Below it "auto" decompresses to dense.
CSR_BREAKEVEN = 0.9


def _patterns(name: str, value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        value = list(value)
        if all(isinstance(v, str) for v in value):
            return value
    raise InvalidTypeError(name, value, "a glob pattern or a list of them")


def _zero(weight: torch.Tensor, threshold: float | None, sparsity: float | None) -> torch.Tensor:
    """The weight after the zeroing rule (a new tensor)."""
    w = weight.detach().clone(memory_format=torch.contiguous_format)  # a Conv1D's (out, in) is a transposed view
    if threshold is not None:
        w[w.abs() < threshold] = 0  # the article's rule
    elif sparsity is not None:
        k = round(sparsity * w.numel())  # the k smallest magnitudes (existing zeros come first)
        if k:
            flat = w.view(-1)
            flat[flat.abs().argsort(stable=True)[:k]] = 0
    return w


def _execution(module: nn.Module, fmt: str, sparsity: float, execution: str) -> tuple[str, str]:
    """(execution, why) for one layer."""
    if execution == "dense":
        return "dense", "decompressed to dense on first use (execution='dense')"
    if fmt == "2:4":
        if is_linear_like(module):
            return "2:4", "2:4 kernel on CUDA (to_sparse_semi_structured); dense on CPU, which has none"
        return "dense", "no 2:4 kernel for this layer type: decompressed to dense on first use"
    if isinstance(module, nn.Embedding) and fmt == "csr":
        return "csr", "rows gathered from CSR (no dense table)"
    if is_linear_like(module):
        if execution == "sparse" or sparsity >= CSR_BREAKEVEN:
            return "csr", f"torch CSR matmul kernel ({sparsity:.1%} sparse)"
        return "dense", (f"decompressed to dense on first use: at {sparsity:.1%} sparsity dense matmul is "
                         f"faster on CPU (CSR breaks even near {CSR_BREAKEVEN:.0%})")
    return "dense", "decompressed to dense on first use (no sparse kernel for this layer type)"


def _convert(module: nn.Module, weight: torch.Tensor, fmt: str, execution: str) -> nn.Module:
    bias = getattr(module, "bias", None)
    if is_linear_like(module):  # weight: the (out, in) matrix, transposed already for a Conv1D
        return SparseLinear.from_dense(weight, bias, fmt, execution)
    if isinstance(module, nn.Embedding):
        return SparseEmbedding.from_dense(weight, None, fmt, execution, padding_idx=module.padding_idx)
    return SparseConv.from_dense(weight, bias, fmt, execution, stride=module.stride, padding=module.padding,
                                 dilation=module.dilation, groups=module.groups)


def _unsupported(module: nn.Module) -> str:
    if isinstance(module, nn.Embedding) and (module.max_norm is not None or module.sparse):
        return "Embedding with max_norm or sparse gradients is left as is"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode != "zeros":
        return f"Conv with padding_mode={module.padding_mode!r} is left as is"
    if type(module) not in WEIGHTED and not is_hf_conv1d(module):
        return f"{type(module).__name__} is a subclass whose forward may differ; left as is"
    return ""


def sparsify(model: nn.Module, threshold: float | None = None, sparsity: float | None = None,
             format: str = "csr", *, execution: str = "auto", include=None, exclude=None,
             callbacks=None, stop=None) -> Result:
    """Zero small weights and store every Linear/Conv/Embedding weight really sparse (transformers'
    Conv1D as the Linear it is; weight-normed layers from their effective weight; other layers
    holding parameters, e.g. LSTM, stay dense and are listed in the report as skipped).

    Zeroing rule, at most one of:
      ``threshold``: weights with ``|w| < threshold`` become 0 (the article's rule);
      ``sparsity``: per layer, that fraction of the weights, smallest magnitudes first;
      neither: existing zeros (e.g. from ``slimkit.prune``) are kept, only storage changes.
    ``format``: "csr", "bitmask", "2:4" (imposes 2:4 by magnitude: the 2 largest of every 4
    consecutive inputs are kept; ``sparsity`` may then only be 0.5), or "auto" (per layer the
    smallest of dense / csr / bitmask / 2:4-if-the-pattern-already-holds).
    ``execution``: "auto" (per layer: a real sparse kernel where it pays, else decompress to
    dense once), "dense" (always decompress), "sparse" (a kernel wherever one exists).
    Biases stay dense. The input model is not modified.
    """
    check_module("model", model)
    if threshold is not None and sparsity is not None:
        raise InvalidParameterError("threshold/sparsity", (threshold, sparsity),
                                    "at most one of threshold or sparsity (neither keeps existing zeros)")
    if threshold is not None:
        threshold = check_nonnegative("threshold", threshold, "a finite number >= 0 (|w| < threshold become 0)")
    if sparsity is not None:
        sparsity = check_fraction("sparsity", sparsity)
    check_choice("format", format, FORMAT_CHOICES)
    check_choice("execution", execution, EXECUTION_CHOICES)
    if format == "2:4" and sparsity is not None and sparsity != 0.5:
        raise InvalidParameterError("sparsity", sparsity, "None or 0.5 with format='2:4' (2 of every 4 are kept)")
    include, exclude = _patterns("include", include), _patterns("exclude", exclude)
    progress = as_progress(callbacks, stop)

    new, unparametrized = plain_copy(model)
    targets = list(named_targets(new, WEIGHTED, include=include, exclude=exclude, method="sparsify"))
    if format == "2:4":
        bad = [n for n, m in targets if not _unsupported(m) and math.prod(_matrix(m).shape[1:]) % 4]
        if bad:
            raise InvalidParameterError(
                "format", "2:4", f"layers whose input size is a multiple of 4; {', '.join(bad)} "
                "is not (exclude=[...] it, or use format='auto')")

    owners: dict[int, list[str]] = {}  # tied weights: sparsifying one copy would untie them
    for name, m in new.named_modules():
        # stored weights only: a quantized layer's .weight property is a fresh tensor per read,
        # whose freed memory could be reused by the next one and look like a tie
        w = m._parameters.get("weight")
        if isinstance(w, torch.Tensor):
            owners.setdefault(w.data_ptr(), []).append(name)

    params = {"threshold": threshold, "sparsity": sparsity, "format": format, "execution": execution}
    report = Report("sparsify", params)
    progress.emit("start", "sparsify", 0, len(targets))
    dense_kept: set[int] = set()  # ids of target weights kept as dense parameters
    totals = {"dense": 0, "csr_int64": 0, "csr": 0, "bitmask": 0, "stored": 0, "zeros": 0, "weights": 0}
    for i, (name, _) in enumerate(targets):
        progress.check()
        module = new.get_submodule(name)
        weight = _matrix(module)
        kind = type(module).__name__
        before = tensor_bytes(module)
        why_not = _unsupported(module)
        tied = [o for o in owners.get(weight.data_ptr(), []) if o != name]
        if why_not or tied:
            reason = why_not or f"weight shared with {', '.join(tied)} (tied); left dense so the tie holds"
            n = weight.numel()
            report.layers.append(LayerReport(name, kind, "skipped", n, n, before, before, reason=reason))
            continue

        w = _zero(weight, threshold, None if format == "2:4" else sparsity)
        if format == "2:4":  # impose the pattern: keep the 2 largest magnitudes of each 4
            w2d = w.view(w.shape[0], -1)
            groups = w2d.view(w2d.shape[0], -1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.abs().topk(2, -1).indices, True)
            w = (groups * keep).view_as(w)
        rows, cols = w.shape[0], math.prod(w.shape[1:])
        nnz = int((w != 0).sum())
        layer_sparsity = 1 - nnz / w.numel()
        sizes = format_bytes(rows, cols, nnz, w.element_size())
        fits_2_4 = holds_2_4(w.view(rows, cols))
        options = {k: sizes[k] for k in ("dense", "csr", "bitmask")}
        if fits_2_4:
            options["2:4"] = sizes["2:4"]
        fmt = min(options, key=options.get) if format == "auto" else format  # dict order: dense wins ties

        details = {"nnz": nnz, "bytes_by_format": {k: (v if k != "2:4" or fits_2_4 else None)
                                                   for k, v in sizes.items()}}
        zeroed = int((weight.detach() != 0).sum()) - nnz
        for k in ("dense", "csr_int64", "csr", "bitmask"):
            totals[k] += sizes[k]
        totals["zeros"] += w.numel() - nnz
        totals["weights"] += w.numel()
        if fmt == "dense":
            with torch.no_grad():
                weight.copy_(w)
            dense_kept.add(id(module.weight))
            totals["stored"] += sizes["dense"]
            report.layers.append(LayerReport(
                name, kind, "zeroed" if zeroed else "kept dense", weight.numel(), weight.numel(), before, before,
                sparsity=layer_sparsity, reason=_note(name, unparametrized,
                                                      f"dense is the smallest format at {layer_sparsity:.1%} sparsity"),
                details={**details, "format": "dense", "execution": "dense", "zeroed": zeroed}))
        else:
            run, why = _execution(module, fmt, layer_sparsity, execution)
            sparse = _convert(module, w, fmt, run)
            set_module(new, name, sparse)
            totals["stored"] += sparse.nbytes()
            note = why
            if sparse.nbytes() > sizes["dense"]:
                note = f"{fmt} ({sparse.nbytes()} B) is larger than dense ({sizes['dense']} B) at this sparsity; " + note
            values = sparse.values.numel() * sparse.values.element_size()
            report.layers.append(LayerReport(
                name, kind, "sparsified", weight.numel(), nnz, before, tensor_bytes(sparse),
                sparsity=layer_sparsity, reason=_note(name, unparametrized, note),
                details={**details, "format": fmt, "execution": run, "zeroed": zeroed,
                         "value_bytes": values, "index_bytes": sparse.nbytes() - values}))
        progress.emit("progress", "sparsify", i + 1, len(targets), sparsity=layer_sparsity)

    chosen = {n for n, _ in targets}
    for name, m in model.named_modules():
        if is_target(m, WEIGHTED) and name not in chosen:
            n, b = m.weight.numel(), tensor_bytes(m)
            report.layers.append(LayerReport(name, type(m).__name__, "skipped", n, n, b, b,
                                             reason=unselected_reason(name, include, exclude)))
    if not report.changed:
        raise NothingToCompressError(
            "sparsify found no layer it could act on: " + "; ".join(f"{l.name}: {l.reason}" for l in report.layers))
    executions = [l.details.get("execution") for l in report.changed]
    report.summary = {
        "sparsity": totals["zeros"] / max(totals["weights"], 1),
        "sparsity_all_params": _all_zeros(new, totals["zeros"], dense_kept) / max(_numel(model.parameters()), 1),
        "weight_bytes_dense": totals["dense"],
        "weight_bytes_stored": totals["stored"],
        "weight_bytes_torch_csr_int64": totals["csr_int64"],
        "weight_bytes_csr": totals["csr"],
        "weight_bytes_bitmask": totals["bitmask"],
        "compression": totals["dense"] / max(totals["stored"], 1),
        "formats": {f: sum(l.details.get("format") == f for l in report.changed) for f in ("dense", *FORMAT_CHOICES[:3])},
        "execution": {e: executions.count(e) for e in sorted(set(executions))},
        "note": "layers that execute 'dense' decompress once on first use: storage shrinks, compute does not",
    }
    in_model_order(report.cover(model, new), model)
    progress.emit("end", "sparsify", len(targets), len(targets), compression=report.summary["compression"])
    return Result(new, report)


def _matrix(module: nn.Module) -> torch.Tensor:
    """The weight as sparse storage views it: (out, in) for Linear-likes (a Conv1D's is
    transposed), the stored weight otherwise."""
    return linear_weight(module) if is_linear_like(module) else module.weight


def _note(name: str, unparametrized: list[str], note: str) -> str:
    return f"{PARAMETRIZATION_NOTE}; {note}" if name in unparametrized else note


def _numel(tensors) -> int:
    return sum(t.numel() for t in tensors)


def _all_zeros(new: nn.Module, target_zeros: int, dense_kept: set[int]) -> int:
    """Zeros over every parameter: those of the sparsified weights plus any in the parameters
    left as they were (the weights kept dense are counted in ``target_zeros`` already)."""
    return target_zeros + sum(int((p == 0).sum()) for p in new.parameters() if id(p) not in dense_kept)
