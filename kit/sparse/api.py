"""Sparse representation: zero small weights, then store them really sparse.

``sparsify`` applies one zeroing rule to every Linear / Conv / Embedding weight, then replaces
each layer with a :mod:`slimkit.sparse.layers` layer whose weight lives in CSR, bitmask or 2:4
buffers, and reports, per layer, the exact stored bytes (indices included) in every format and
what runs at inference (a real sparse kernel, or the weight decompressed to dense once).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import signature
from ..errors import InvalidParameterError, NothingToCompressError, check_module
from ..events import as_progress
from ..nn import (
    WEIGHTED,
    is_hf_conv1d,
    is_linear_like,
    is_target,
    linear_weight,
    named_targets,
    refuse_compressed,
    set_module,
    tensor_bytes,
    unselected_reason,
)
from ..pruning.common import PARAMETRIZATION_NOTE, in_model_order, plain_copy
from ..report import Action, LayerReport, Report, Result
from .config import SparsifyConfig
from .formats import FORMATS, format_bytes, holds_2_4
from .layers import SparseConv, SparseEmbedding, SparseLinear
from .quantized import SPARSE_CLASSES, can_sparsify, zero_codes
from .quantized_pass import quantized_layer

# float layers, and the quantized layers whose integer codes can be stored sparse
TARGETS = WEIGHTED + tuple(SPARSE_CLASSES)

# Sparsity from which torch's CSR matmul beats dense on CPU (benchmarks/sparse_study.py:
# 4096x4096, one thread, batch 1-32, torch 2.13). Below it "auto" decompresses to dense.
CSR_BREAKEVEN = 0.9


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


def sparsify(model: nn.Module, config: SparsifyConfig | float | None = None, *, callbacks=None, stop=None,
             **settings) -> Result:
    """Zero small weights and store every Linear/Conv/Embedding weight really sparse (transformers'
    Conv1D as the Linear it is; weight-normed layers from their effective weight; other layers
    holding parameters, e.g. LSTM, stay dense and are listed in the report as skipped).

    config: a :class:`SparsifyConfig`, or its first setting ``threshold`` (``sparsify(model, 0.01)``);
    keyword settings override it.
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
    config = SparsifyConfig.build(config, settings)
    refuse_compressed(model, "sparsify", "sparsify the float or quantized model once (quantize then sparsify "
                      "stores sparse integer weights; sparsify then quantize keeps the layout)",
                      include=config.include, exclude=config.exclude, allow=can_sparsify)
    progress = as_progress(callbacks, stop)

    new, unparametrized = plain_copy(model)
    targets = list(named_targets(new, TARGETS, include=config.include, exclude=config.exclude, method="sparsify"))
    _check_quantized([(n, m) for n, m in targets if can_sparsify(m)], config)
    if config.format == "2:4":
        bad = [n for n, m in targets if not _unsupported(m) and math.prod(_matrix(m).shape[1:]) % 4]
        if bad:
            raise InvalidParameterError(
                "format", "2:4", f"layers whose input size is a multiple of 4; {', '.join(bad)} "
                "is not (exclude=[...] it, or use format='auto')")

    run = _Pass(new, config, unparametrized)
    progress.emit("start", "sparsify", 0, len(targets))
    for i, (name, _) in enumerate(targets):
        progress.check()
        layer_sparsity = run.layer(name)
        if layer_sparsity is not None:
            progress.emit("progress", "sparsify", i + 1, len(targets), sparsity=layer_sparsity)
    report = run.finish(model, {n for n, _ in targets})
    in_model_order(report.cover(model, new), model)
    report.chain(model, new, _step)
    progress.emit("end", "sparsify", len(targets), len(targets), compression=report.summary["compression"])
    return Result(new, report)


signature(sparsify, SparsifyConfig)


def _step(row: LayerReport) -> str:
    """A row's history step; sparse integer rows say the share of zero codes and the code width."""
    step = f"sparsify {row.details.get('format', '')}".strip()
    if "codes" in row.details and row.sparsity is not None:
        step += f" {row.sparsity:.0%} of {row.details['codes']}"
    return step + (" (zeroed, kept dense)" if row.action == Action.ZEROED else "")


def _check_quantized(targets: list, config: SparsifyConfig) -> None:
    """Quantized layers the settings cannot act on: an error before any work."""
    if targets and config.format == "2:4":
        raise InvalidParameterError("format", "2:4", "'bitmask', 'csr' or 'auto' for quantized layers ("
                                    f"{targets[0][0]!r}): sparse integer storage has no 2:4 layout")
    for name, m in targets:
        if zero_codes(m) is None:
            raise InvalidParameterError(
                "model", f"<layer {name!r}: {type(m).__name__} without a 0 centroid>",
                "a codebook with a 0 centroid (quantize(method='codebook') reserves one only for a weight that "
                "already holds zeros): sparsify or prune the float model first, then quantize(method='codebook'), "
                "or leave the layer out with exclude")


class _Pass:
    """One sparsify run over ``new`` (the caller's copy): a report row per layer and the byte totals."""

    def __init__(self, new: nn.Module, config: SparsifyConfig, unparametrized: list[str]):
        self.new, self.config, self.unparametrized = new, config, unparametrized
        self.owners: dict[int, list[str]] = {}  # tied weights: sparsifying one copy would untie them
        for name, m in new.named_modules():
            # stored weights only: a quantized layer's .weight property is a fresh tensor per read,
            # whose freed memory could be reused by the next one and look like a tie; a quantized
            # layer's own integer buffer (tied layers share it) stands for its weight
            w = m._parameters.get("weight", m._buffers.get("qweight", m._buffers.get("indices")))
            if isinstance(w, torch.Tensor):
                self.owners.setdefault(w.data_ptr(), []).append(name)
        self.report = Report("sparsify", {"threshold": config.threshold, "sparsity": config.sparsity,
                                          "format": config.format, "execution": config.execution})
        self.dense_kept: set[int] = set()  # ids of target weights kept as dense parameters
        self.totals = {"dense": 0, "csr_int64": 0, "csr": 0, "bitmask": 0, "stored": 0, "zeros": 0, "weights": 0}

    def layer(self, name: str) -> float | None:
        """Zero and store layer ``name``; its sparsity, or None when it is left as is."""
        config, totals, report = self.config, self.totals, self.report
        module = self.new.get_submodule(name)
        if can_sparsify(module):
            return quantized_layer(self, name, module)
        weight = _matrix(module)
        kind = type(module).__name__
        before = tensor_bytes(module)
        why_not = _unsupported(module)
        tied = [o for o in self.owners.get(weight.data_ptr(), []) if o != name]
        if why_not or tied:
            reason = why_not or f"weight shared with {', '.join(tied)} (tied); left dense so the tie holds"
            n = weight.numel()
            report.layers.append(LayerReport(name, kind, Action.SKIPPED, n, n, before, before, reason=reason))
            return None

        w = _zero(weight, config.threshold, None if config.format == "2:4" else config.sparsity)
        if config.format == "2:4":
            w = _impose_2_4(w)
        rows, cols = w.shape[0], math.prod(w.shape[1:])
        nnz = int((w != 0).sum())
        layer_sparsity = 1 - nnz / w.numel()
        sizes = format_bytes(rows, cols, nnz, w.element_size())
        fits_2_4 = holds_2_4(w.view(rows, cols))
        options = {k: sizes[k] for k in ("dense", "csr", "bitmask")}
        if fits_2_4:
            options["2:4"] = sizes["2:4"]
        fmt = min(options, key=options.get) if config.format == "auto" else config.format  # dense wins ties

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
            self.dense_kept.add(id(module.weight))
            totals["stored"] += sizes["dense"]
            report.layers.append(LayerReport(
                name, kind, Action.ZEROED if zeroed else Action.KEPT_DENSE,
                weight.numel(), weight.numel(), before, before,
                sparsity=layer_sparsity, reason=self._note(name, f"dense is the smallest format at "
                                                                 f"{layer_sparsity:.1%} sparsity"),
                details={**details, "format": "dense", "execution": "dense", "zeroed": zeroed}))
            return layer_sparsity
        run, why = _execution(module, fmt, layer_sparsity, config.execution)
        sparse = _convert(module, w, fmt, run)
        set_module(self.new, name, sparse)
        totals["stored"] += sparse.nbytes()
        if sparse.nbytes() > sizes["dense"]:
            why = f"{fmt} ({sparse.nbytes()} B) is larger than dense ({sizes['dense']} B) at this sparsity; " + why
        values = sparse.values.numel() * sparse.values.element_size()
        report.layers.append(LayerReport(
            name, kind, Action.SPARSIFIED, weight.numel(), nnz, before, tensor_bytes(sparse),
            sparsity=layer_sparsity, reason=self._note(name, why),
            details={**details, "format": fmt, "execution": run, "zeroed": zeroed,
                     "value_bytes": values, "index_bytes": sparse.nbytes() - values}))
        return layer_sparsity

    def finish(self, model: nn.Module, chosen: set[str]) -> Report:
        """Rows for the layers include/exclude left out, and the summary; refuses a run that changed nothing."""
        report, totals = self.report, self.totals
        for name, m in model.named_modules():
            if is_target(m, TARGETS) and name not in chosen:
                n, b = m.weight.numel(), tensor_bytes(m)
                report.layers.append(LayerReport(name, type(m).__name__, Action.SKIPPED, n, n, b, b,
                                                 reason=unselected_reason(name, self.config.include,
                                                                          self.config.exclude)))
        if not report.changed:
            raise NothingToCompressError("sparsify found no layer it could act on: "
                                         + "; ".join(f"{l.name}: {l.reason}" for l in report.layers))
        executions = [l.details.get("execution") for l in report.changed]
        all_zeros = _all_zeros(self.new, totals["zeros"], self.dense_kept)
        report.summary = {
            "sparsity": totals["zeros"] / max(totals["weights"], 1),
            "sparsity_all_params": all_zeros / max(_numel(model.parameters()) + _quantized_numel(model), 1),
            "weight_bytes_dense": totals["dense"],
            "weight_bytes_stored": totals["stored"],
            "weight_bytes_torch_csr_int64": totals["csr_int64"],
            "weight_bytes_csr": totals["csr"],
            "weight_bytes_bitmask": totals["bitmask"],
            "compression": totals["dense"] / max(totals["stored"], 1),
            "formats": {f: sum(l.details.get("format") == f for l in report.changed)
                        for f in ("dense", *FORMATS)},
            "execution": {e: executions.count(e) for e in sorted(set(executions))},
            "note": "layers that execute 'dense' decompress once on first use: storage shrinks, compute does not",
        }
        return report

    def _note(self, name: str, note: str) -> str:
        return f"{PARAMETRIZATION_NOTE}; {note}" if name in self.unparametrized else note


def _impose_2_4(w: torch.Tensor) -> torch.Tensor:
    """``w`` with only the 2 largest magnitudes of each 4 consecutive inputs kept."""
    groups = w.view(w.shape[0], -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.abs().topk(2, -1).indices, True)
    return (groups * keep).view_as(w)


def _matrix(module: nn.Module) -> torch.Tensor:
    """The weight as sparse storage views it: (out, in) for Linear-likes (a Conv1D's is
    transposed), the stored weight otherwise."""
    return linear_weight(module)  # the weight itself for anything but transformers' Conv1D


def _numel(tensors) -> int:
    return sum(t.numel() for t in tensors)


def _quantized_numel(model: nn.Module) -> int:
    """Weights held as integer codes (buffers, not parameters) by the quantized layers."""
    return sum(math.prod(m.shape) for m in model.modules() if can_sparsify(m))


def _all_zeros(new: nn.Module, target_zeros: int, dense_kept: set[int]) -> int:
    """Zeros over every parameter: those of the sparsified weights plus any in the parameters
    left as they were (the weights kept dense are counted in ``target_zeros`` already)."""
    return target_zeros + sum(int((p == 0).sum()) for p in new.parameters() if id(p) not in dense_kept)
