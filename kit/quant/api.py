"""``slimkit.quantize``: replace a model's layers with quantized ones.

``quantize(model, ...)`` has two honest modes:

- ``real``: integer storage everywhere it quantizes, and integer execution where a CPU kernel
  exists (int8 Linear: ``torch._int_mm`` on CPUs with VNNI/AMX and GPUs, fbgemm's u8 x s8 kernel
  on CPUs without: :mod:`.kernels`). See :mod:`slimkit.quant.layers`.
- ``simulated``: fake quantization (quantize-dequantize in fp32) for any bit width; the model is
  still fp32 in memory. Reports say ``simulated`` for each such layer.
- ``auto`` (default): real where possible, simulated elsewhere, saying which per layer.

The math is in :mod:`.affine`, the per-layer decisions in :mod:`.plan`, calibration in
:mod:`.calibrate`, the replacement modules in :mod:`.build`, ``keep="auto"`` in :mod:`.sensitivity`.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn

from ..config import signature
from ..errors import InvalidParameterError, InvalidTypeError, NothingToCompressError, check_module
from ..events import as_progress
from ..metrics import sqnr
from ..nn import (
    get_module,
    is_target,
    matches,
    own_param_count,
    param_modules,
    refuse_compressed,
    set_module,
    tensor_bytes,
    unselected_reason,
)
from ..pruning.common import add_history
from ..pruning.config import Finetune
from ..pruning.importance import check_batch
from ..report import Action, Compute, LayerReport, Report, Result
from ..sparse.layers import SparseWeight
from ..sparse.requantize import densify, keep_sparse, sparse_float_layers
from ..training import cross_entropy
from .build import copy_module, quantize_layer, share_weight
from .calibrate import calibrate, input_batches, input_range
from .centroids import train_centroids
from .codebook_layers import CodebookWeight
from .config import QuantConfig
from .gptq import BLOCK, DAMP, gptq_names, hessians, rtn_reason
from .plan import (
    NOT_QUANTIZED,
    TARGET_TYPES,
    LayerPlan,
    check_finite,
    matrices,
    method_skips,
    module_paths,
    plan_layer,
    structural_skips,
    tie_groups,
    tie_skips,
    weight_count,
    weight_param,
)
from .plan import layouts as plan_layouts
from .sensitivity import auto_keep


def quantize(model: nn.Module, config: QuantConfig | None = None, *, activations=None, data=None, metric=None,
             finetune=None, loss_fn=None, callbacks=None, stop=None, **settings) -> Result:
    """Quantize the weights of every Linear (and transformers' Conv1D), Conv, ConvTranspose,
    Embedding and LSTM/GRU/RNN layer (and, with calibration data, their inputs) to ``bits`` bits.
    Returns ``Result(model, report)``; ``model`` is a copy in the input model's dtype (bf16 stays
    bf16 outside the integer buffers). The report has a row for every module holding parameters:
    MultiheadAttention's in_proj and out_proj (read directly by its parent) and tied weights that
    cannot share one quantized copy stay float, each with the reason. Tied layers (an embedding
    shared with the LM head) are quantized once and share the integer copy. Weight-normed
    (parametrized) layers are quantized from their computed weight.

    Settings come as keywords (``quantize(model, bits=4, granularity="per_group")``), as a
    :class:`~slimkit.QuantConfig` (``quantize(model, QuantConfig(bits=4))``; keywords override
    it), or as bare bits (``quantize(model, 4)``).

    bits: 2..8. granularity: "per_channel" (one scale per output channel / embedding row),
    "per_tensor", or "per_group" (``group_size`` values per scale). An explicit ``group_size``
    must divide each layer's values per channel; without one, each layer uses the largest
    divisor in [8, 32] (32 when it divides), else one scale per channel, said in its row.
    scheme: "symmetric" (zero point 0; what int8 kernels need) or "asymmetric" (min-max with a
    zero point).
    activations: None, or calibration data. With None, real int8 Linear layers quantize their
    inputs per token at run time; with data, input ranges are calibrated (static int8) and each
    layer's output SQNR is reported. Accepted: a tensor X (run in batches of 128), a pair of
    tensors (X, y), a slimkit Split, a DataLoader (of (inputs, targets) batches, or of inputs),
    or an iterable of batches. Each batch calls the model by :mod:`slimkit.inputs`' rule: a
    tensor is ``model(x)``, a tuple positional arguments, a dict keyword arguments, and
    ``slimkit.Inputs(args=..., kwargs=...)`` is explicit (a forward taking one dict:
    ``[slimkit.Inputs(args=(d,))]``). A batch the model refuses raises InvalidParameterError
    naming ``activations`` and the batch index.
    mode: "real" (integer storage; int8 matmul where a kernel exists; error where impossible),
    "simulated" (fake-quant in float, any format) or "auto" (real where possible, else simulated).
    include/exclude: glob patterns of layer names. keep: names/globs kept in full precision
    (mixed precision), or "auto": keep the most sensitive layers until ``metric`` (a callable
    model -> score, higher is better, or (X, y) data scored by accuracy in points) drops by at
    most ``max_drop``. act_bits: bits of simulated activation quantization (real ones are int8).
    method: "affine" (the above) or "codebook": per layer, k-means over the non-zero weights to
    2^bits shared values, stored as bit-packed indices + an fp32 codebook (pruned zeros keep the
    reserved index 0 and stay exact zeros); storage is real, compute is SIMULATED (the weight is
    gathered into float per call). scheme/granularity do not apply to it.
    method="gptq": the affine formats and layers above, but each Linear (and transformers' Conv1D)
    weight is rounded by GPTQ (Frantar et al. 2022): columns one at a time, each one's rounding
    error compensated on the columns not yet rounded through the inverse of the layer-input Hessian
    2 X^T X, each group's scale taken when the loop reaches it. ``data`` (required with it, refused
    without it) is the calibration input, in the forms ``activations`` takes; the Hessians come
    from ONE pass of it through the float model (not layer by layer). Other layers (embeddings,
    convs, RNNs, tied weights) are rounded to nearest: their rows say method "affine" and why.
    act_order (gptq only): columns rounded by decreasing Hessian diagonal, group scales taken up
    front from the float weight (static groups). scale_dtype: "float32" (default) or "float16":
    per-group scales stored (and used) in fp16.
    finetune: with method="codebook", ``dict(data=..., epochs=1, lr=1e-3, batch_size=64)`` (or a
    ``slimkit.pruning.config.Finetune``) trains the centroids, indices fixed (Deep Compression):
    each centroid gets the summed gradient of the weights sharing it. ``loss_fn(model, x, y)``
    defaults to cross-entropy. The rows' SQNR is then measured on the trained codebooks.
    """
    check_module("model", model)
    config = QuantConfig.build(config, settings)
    refuse_compressed(model, "quantize", "quantize a layer once: quantize the float or the sparsified model "
                      "(prune, distill or sparsify first: their zeros stay exact zeros)",
                      include=config.include, exclude=config.exclude, allow=lambda m: isinstance(m, SparseWeight))
    sparse = sparse_float_layers(model, config.include, config.exclude)
    if sparse:
        return _quantize_sparse(model, config, sparse, activations=activations, metric=metric, finetune=finetune,
                                loss_fn=loss_fn, callbacks=callbacks, stop=stop)
    if config.auto_keep and metric is None:
        raise InvalidParameterError("metric", None, "a callable model -> score or (X, y) data when keep='auto'")
    progress = as_progress(callbacks, stop)
    tune, loss_fn = _check_finetune(model, config, finetune, loss_fn)
    calib = _check_data(config, data)

    targets, layouts = plan_layouts(model, config)  # every layer checked before any work: nothing half done
    check_finite(targets)
    skip = {**structural_skips(model, targets), **method_skips(targets, config)}
    candidates = [n for n, _ in targets if n not in skip]

    ranking = None
    if config.auto_keep and candidates:
        ranking, kept = auto_keep(model, candidates, metric, config, progress,
                                  lambda c: quantize(model, c, activations=activations, data=data).model)
        for n in kept:
            skip[n] = f"kept in full precision: most sensitive (keep='auto', max_drop={config.max_drop})"
    elif config.keep:
        for n in candidates:
            if matches(n, config.keep):
                skip[n] = f"kept in full precision (keep={list(config.keep)!r})"
    ties = tie_groups(model, targets)
    skip.update(tie_skips(ties, {n: m for n, m in targets if n not in skip}, layouts))
    work = [(n, m) for n, m in targets if n not in skip]
    if not work:
        why = "; ".join(f"{n!r}: {r}" for n, r in list(skip.items())[:3])
        raise NothingToCompressError(f"nothing to quantize: every quantizable layer was kept in full precision or "
                                     f"skipped ({why})")
    plans = {n: plan_layer(n, m, config, layouts[n], activations is not None) for n, m in work}

    q = copy_module(model)
    act_stats = calibrate(q, activations, [n for n, _ in work], progress) if activations is not None else {}
    gptq_set = gptq_names(work, ties) if calib is not None else []
    hess = hessians(model, calib, gptq_set, progress) if gptq_set else {}
    report = Report("quantize", _params(config, activations is not None))
    if calib is not None:
        report.params["gptq"] = {"damp": DAMP, "block_size": BLOCK, "batches": len(calib),
                                 "hessians": "one pass over the float model"}
    target_names, paths, built = {n for n, _ in targets}, module_paths(model), {}
    progress.emit("start", "quantize", 0, len(work))
    done = 0
    for name, layer in model.named_modules():
        if not is_target(layer, TARGET_TYPES):
            continue
        if name not in target_names or name in skip:
            why = skip.get(name) or unselected_reason(name, config.include, config.exclude)
            report.layers.append(_skip_row(name, layer, why, _rank_details(ranking, name)))
            continue
        st = act_stats.get(name)
        plan = dataclasses.replace(plans[name], act_range=input_range(st, layer))
        new, w_sqnr, info = quantize_layer(layer, plan, config, hess.get(name, {}).get("H"))
        if calib is not None and name not in hess:
            info["note"] = "; ".join(filter(None, [info.get("note"), rtn_reason(layer, name, ties)]))
        tied = ties.get(name)
        if tied and id(weight_param(layer)) in built:  # tied: one integer copy for all holders
            first_name, first = built[id(weight_param(layer))]
            share_weight(new, first)
            info["tied_to"] = first_name
        elif tied:
            built[id(weight_param(layer))] = (name, new)
        if st and st["sample"]:
            with torch.no_grad():
                x = st["sample"][0]
                info["output_sqnr_db"] = sqnr(_first(layer(x)), _first(new(x)))
        info.update(_rank_details(ranking, name))
        for path in paths[id(layer)]:  # a layer used at several places is replaced at each
            set_module(q, path, new)
        if len(paths[id(layer)]) > 1:
            info["also_at"] = paths[id(layer)][1:]
        report.layers.append(_row(name, layer, new, w_sqnr, info, plan))
        report.simulated |= info["compute"] is Compute.SIMULATED
        done += 1
        progress.emit("progress", "quantize", done, len(work), sqnr_db=w_sqnr)
    progress.emit("end", "quantize", done, len(work))
    if tune is not None:
        _finetune(model, q, report, tune, loss_fn, progress)
    _unsupported_rows(model, report)
    report.cover(model, q)
    report.summary.update(_summary(report))
    if calib is not None:
        report.summary["gptq_layers"] = sum(l.details.get("method") == "gptq" for l in report.changed)
    step = f"quantize {config.method} {config.bits}-bit"
    report.chain(model, q, lambda row: step + (" (simulated)" if row.action == Action.SIMULATED else ""))
    return Result(q, report)


signature(quantize, QuantConfig)


def _quantize_sparse(model, config: QuantConfig, sparse: dict, **kwargs) -> Result:
    """quantize on a sparsified model: its sparse layers as float, quantized, then stored sparse
    again with their own layout (:mod:`slimkit.sparse.requantize`)."""
    if config.mode == "simulated":
        raise InvalidParameterError("mode", "simulated", f"'real' or 'auto' for sparse layers ({next(iter(sparse))!r}"
                                    "...): simulated quantization keeps float weights and would lose the sparse "
                                    "layout (exclude them, or quantize the float model before sparsify)")
    q, report = quantize(densify(model, sparse), config, **kwargs)
    keep_sparse(q, report, sparse)
    report.summary["model_bytes_before"], report.summary["model_bytes_after"] = tensor_bytes(model), tensor_bytes(q)
    report.summary.update(_summary(report))
    return Result(q, report)


def _params(config: QuantConfig, calibrated: bool) -> dict:
    """The report's settings; a codebook has no scale scheme, granularity or groups: not listed."""
    params = config.params(calibrated=calibrated)
    if config.method == "codebook":
        for key in ("scheme", "granularity", "group_size"):
            params.pop(key)
    return params


def _check_data(config: QuantConfig, data) -> list | None:
    """method='gptq''s calibration batches, checked in form before any work (None for other methods)."""
    if config.method != "gptq":
        if data is not None:
            raise InvalidParameterError("data", "<given>", f"None with method={config.method!r} (calibration data "
                                        "is for method='gptq'; activations= calibrates input ranges)")
        return None
    if data is None:
        raise InvalidParameterError("data", None, "calibration inputs with method='gptq' (a tensor, (X, y), a Split, "
                                    "a DataLoader or an iterable of batches, as activations= takes)")
    return input_batches(data, "data")


def _check_finetune(model, config: QuantConfig, finetune, loss_fn):
    """(Finetune or None, loss_fn): checked, and the first batch tried, before any work."""
    tune = Finetune.of(finetune)
    if tune is None:
        return None, loss_fn
    if config.method != "codebook":
        raise InvalidParameterError("finetune", "<given>", f"None with method={config.method!r} (fine-tuning trains "
                                    "the shared values of method='codebook')")
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidTypeError("loss_fn", loss_fn, "None or a callable loss_fn(model, x, y)")
    loss_fn = loss_fn or cross_entropy
    check_batch("finetune", model, tune.data, loss_fn)
    return tune, loss_fn


def _finetune(model, q, report: Report, tune, loss_fn, progress) -> None:
    """Train the centroids of ``q`` and re-measure each codebook row's weight SQNR."""
    history = train_centroids(q, tune, loss_fn, progress)
    for row in report.layers:
        new = get_module(q, row.name) if row.action == Action.QUANTIZED else None
        new = getattr(new, "inner", new)  # FakeQuantInput wraps
        if isinstance(new, CodebookWeight):
            row.details["sqnr_db_before_finetune"] = row.sqnr_db
            with torch.no_grad():
                row.sqnr_db = sqnr(_flat_weights(get_module(model, row.name)), new.dequantized_weight().reshape(-1))
    report.params["finetune"] = {"epochs": tune.epochs, "lr": tune.lr}
    add_history(report.summary, history)


def _flat_weights(layer) -> torch.Tensor:
    return torch.cat([w.detach().reshape(-1) for w in matrices(layer).values()])


def _first(out):
    """A layer's main output (an RNN returns (output, state))."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _row(name: str, layer: nn.Module, new: nn.Module, w_sqnr: float, info: dict, plan: LayerPlan) -> LayerReport:
    """A quantized layer's row; its reason says how it runs (SIMULATED in capitals where it is)."""
    reason = info["execution"] if plan.real else "SIMULATED: fake-quant in float"
    if plan.fallback:
        reason += f" (no real {type(layer).__name__} implementation for this format)"
    if "tied_to" in info:
        reason += f"; shares the integer weight of tied layer {info['tied_to']!r}"
    n = weight_count(layer)
    return LayerReport(name, type(layer).__name__, Action.QUANTIZED if plan.real else Action.SIMULATED, n, n,
                       tensor_bytes(layer), tensor_bytes(new), sqnr_db=w_sqnr, reason=reason, details=info)


def _rank_details(ranking, name):
    if not ranking:
        return {}
    r = next((r for r in ranking if r["name"] == name), None)
    return {"sensitivity_drop": r["drop"]} if r else {}


def _skip_row(name: str, layer: nn.Module, reason: str, details=None) -> LayerReport:
    n, b = weight_count(layer), tensor_bytes(layer)
    return LayerReport(name, type(layer).__name__, Action.SKIPPED, n, n, b, b, reason=reason, details=details or {})


def _unsupported_rows(model: nn.Module, report: Report) -> None:
    """Rows saying why MultiheadAttention's own weights stay float (before Report.cover)."""
    named = {l.name for l in report.layers}
    for name, m in param_modules(model):
        why = next((w for t, w in NOT_QUANTIZED.items() if isinstance(m, t)), None)
        if why and name not in named:
            n = own_param_count(m)
            b = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
            report.layers.append(LayerReport(name, type(m).__name__, Action.SKIPPED, n, n, b, b, reason=why))


def _summary(report: Report) -> dict:
    q = report.changed
    own = [l for l in q if "tied_to" not in l.details]  # a tied weight is counted once
    before = sum(l.bytes_before for l in own)
    after = sum(l.bytes_after for l in own)
    sq = [l.sqnr_db for l in q if l.sqnr_db is not None and math.isfinite(l.sqnr_db)]
    computes = [l.details.get("compute") for l in q]
    out = {
        "quantized_layers": sum(l.action == Action.QUANTIZED for l in q),
        # fully simulated layers and real-weight layers whose inputs are fake-quantized
        "simulated_layers": computes.count(Compute.SIMULATED),
        "integer_kernel_layers": computes.count(Compute.INTEGER),
        "skipped_layers": len(report.layers) - len(q),
        "layer_bytes": _ratio(before, after),  # the quantized layers only
        "model_bytes": _ratio(report.summary["model_bytes_before"], report.summary["model_bytes_after"]),
        "weight_sqnr_db_min": round(min(sq), 2) if sq else None,
        "weight_sqnr_db_mean": round(sum(sq) / len(sq), 2) if sq else None,
    }
    if report.simulated:
        out["note"] = "some layers are SIMULATED (fake-quant in float): no memory or speed gain there"
    return out


def _ratio(before: int, after: int) -> str:
    return f"{before} -> {after}" + (f" ({before / after:.2f}x smaller)" if after else "")
