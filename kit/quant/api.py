"""``slimkit.quantize``: replace a model's layers with quantized ones (math in :mod:`.affine`).

``quantize(model, ...)`` has two honest modes:

- ``real``: integer storage everywhere it quantizes, and integer execution where a CPU kernel
  exists (int8 Linear: ``torch._int_mm`` with int8 activations). See :mod:`slimkit.quant.layers`.
- ``simulated``: fake quantization (quantize-dequantize in fp32) for any bit width; the model is
  still fp32 in memory. Reports say ``simulated`` for each such layer.
- ``auto`` (default): real where possible, simulated elsewhere, saying which per layer.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .. import inputs as _inputs
from ..data import batch_errors, batches
from ..errors import (InvalidParameterError, InvalidTypeError, NothingToCompressError, check_choice,
                     check_int, check_module, check_positive)
from ..events import as_progress
from ..inputs import Inputs
from ..nn import (get_module, is_hf_conv1d, is_linear_like, is_parametrized, is_target, linear_weight, matches,
                     named_targets, own_param_count, param_modules, set_module, tensor_bytes, unparametrize,
                     unselected_reason)
from ..metrics import evaluate, sqnr
from ..report import LayerReport, Report, Result

TARGET_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d, nn.Embedding, nn.LSTM, nn.GRU, nn.RNN)


# --------------------------------------------------------------------------- the math

from .affine import (DEFAULT_GROUP_SIZE, GRANULARITIES, MODES, SCHEMES, QTensor, dequantize_tensor, quantize_tensor, storage_bits)
from . import layers as qlayers


# float layer type -> its quantized counterpart (transformers' Conv1D is handled as the Linear it is)
_QUANT_CLASS = {nn.Linear: qlayers.QuantLinear, nn.Embedding: qlayers.QuantEmbedding,
                nn.Conv1d: qlayers.QuantConv1d, nn.Conv2d: qlayers.QuantConv2d, nn.Conv3d: qlayers.QuantConv3d,
                nn.ConvTranspose1d: qlayers.QuantConvTranspose1d, nn.ConvTranspose2d: qlayers.QuantConvTranspose2d,
                nn.ConvTranspose3d: qlayers.QuantConvTranspose3d}

# parameter-holding modules quantize leaves in float, and why (the report says so)
_NOT_QUANTIZED = {
    nn.MultiheadAttention: "kept in float: in_proj_weight is a raw Parameter read by "
                           "F.multi_head_attention_forward; no quantized implementation",
}


def _matrices(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The weights quantize acts on, by attribute name: (out, in) for Linear-likes (Conv1D's is
    stored transposed), the computed weight of a parametrized layer, each weight matrix of an RNN."""
    if isinstance(layer, nn.RNNBase):
        return {n: p for n, p in layer.named_parameters(recurse=False) if n.startswith("weight")}
    return {"weight": linear_weight(layer) if is_linear_like(layer) else layer.weight}


def _weight_count(layer: nn.Module) -> int:
    return sum(w.numel() for w in _matrices(layer).values())


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _first(out):
    """A layer's main output (an RNN returns (output, state))."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _weight_param(layer: nn.Module) -> nn.Parameter | None:
    """The stored weight Parameter (None when a parametrization computes it): what ties share."""
    return layer._parameters.get("weight")


def _check_args(bits, granularity, scheme, mode, group_size, act_bits):
    check_int("bits", bits, 2, 8)
    check_choice("granularity", granularity, GRANULARITIES)
    check_choice("scheme", scheme, SCHEMES)
    check_choice("mode", mode, MODES)
    check_int("act_bits", act_bits, 2, 8)
    if granularity == "per_group":
        if group_size is not None:
            check_positive("group_size", group_size, integer=True)
    elif group_size is not None:
        raise InvalidParameterError("group_size", group_size, "None unless granularity='per_group'")
    return group_size


@dataclass(frozen=True)
class _Layout:
    """One layer's scale layout: per_group with ``group_size`` may fall back per layer."""

    granularity: str
    group_size: int | None = None
    note: str = ""


def _layout(name, layer, granularity, group_size) -> _Layout:
    """The layout for one layer. per_group needs the group size to divide the layer's values per
    channel: an explicit ``group_size`` that does not is an error naming the layer; without one,
    the largest divisor in [8, 32] is used, else one scale per channel (said in the layer's row)."""
    if granularity != "per_group":
        return _Layout(granularity)
    mats = _matrices(layer).values()
    n = math.gcd(*(w.numel() // w.shape[0] for w in mats))  # every matrix of an RNN shares the layout
    if group_size is not None:
        if n % group_size:
            shapes = ", ".join(str(tuple(w.shape)) for w in mats)
            raise InvalidParameterError(
                "group_size", group_size, f"a divisor of {n}, the values per output channel of layer {name!r} "
                f"({type(layer).__name__} weight {shapes}); pick one that divides every layer, "
                "or exclude that layer")
        return _Layout("per_group", group_size)
    size = next((d for d in range(DEFAULT_GROUP_SIZE, 7, -1) if n % d == 0), None)
    if size is None:
        return _Layout("per_channel", None, f"per_channel: no group size in [8, {DEFAULT_GROUP_SIZE}] divides its "
                                            f"{n} values per channel")
    note = "" if size == DEFAULT_GROUP_SIZE else f"group_size={size}: the largest in [8, {DEFAULT_GROUP_SIZE}] " \
                                                 f"dividing its {n} values per channel"
    return _Layout("per_group", size, note)


def _structural_skips(model: nn.Module, targets) -> dict[str, str]:
    """Layers whose parent reads their tensors directly, so a replacement would not be used."""
    out = {}
    for name, layer in targets:
        parent = get_module(model, name.rpartition(".")[0])
        if isinstance(parent, nn.MultiheadAttention) and layer is parent.out_proj:
            out[name] = ("kept in float: its parent MultiheadAttention reads .weight/.bias directly "
                         "(F.multi_head_attention_forward)")
    return out


def _tie_groups(model: nn.Module, layers) -> dict[str, list[str]]:
    """For each layer whose weight Parameter other modules hold too (an embedding tied to the LM
    head): the names of every holder."""
    holders: dict[int, list[str]] = {}
    for name, m in model.named_modules():
        for p in m.parameters(recurse=False):
            holders.setdefault(id(p), []).append(name)
    return {n: holders[id(p)] for n, m in layers
            if (p := _weight_param(m)) is not None and len(holders[id(p)]) > 1}


def _tie_skips(groups: dict[str, list[str]], work: dict[str, nn.Module], layouts) -> dict[str, str]:
    """Tied layers are quantized once and share the integer copy. Where that is impossible (a
    holder stays float, or the layouts differ: Conv1D's transposed weight, other group sizes)
    every holder stays float, so the weight is never stored twice."""
    out = {}
    for name, group in groups.items():
        if name not in work:
            continue
        floating = [n for n in group if n not in work]
        if floating:
            why = f"{floating[0]!r} stays float"
        elif len({(is_hf_conv1d(work[n]), layouts[n]) for n in group}) > 1:
            why = "their quantized layouts differ"
        else:
            continue
        others = [n for n in group if n != name]
        out[name] = (f"kept in float: its weight is tied to {others} and {why}; quantizing one copy would "
                     "store the weight twice")
    return out


def _share_weight(new: nn.Module, first: nn.Module) -> None:
    """Make ``new`` use ``first``'s weight storage (tied layers: one copy, and saved once)."""
    new, first = getattr(new, "inner", new), getattr(first, "inner", first)  # FakeQuantInput wraps
    if isinstance(new, qlayers._QWeight):
        new.qweight, new.scale, new.zero_point = first.qweight, first.scale, first.zero_point
    else:
        new.weight = first.weight


def _module_paths(model: nn.Module) -> dict[int, list[str]]:
    """Every name each module is reachable by: a layer used twice is replaced at both places."""
    paths: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), [])
        if name not in paths[id(m)]:
            paths[id(m)].append(name)
    return paths


def _calibrate(model: nn.Module, data, names: list[str], progress, max_rows: int = 512):
    """Run ``data`` through ``model``, recording each target's input range and a sample of inputs."""
    stats: dict[str, dict] = {n: {"lo": math.inf, "hi": -math.inf, "sample": []} for n in names}

    def hook(name):
        def pre(_mod, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
                return
            st = stats[name]
            st["lo"] = min(st["lo"], x.min().item())
            st["hi"] = max(st["hi"], x.max().item())
            if sum(len(s) for s in st["sample"]) < max_rows:
                st["sample"].append(x.detach()[: max(1, max_rows // 8)].clone())
        return pre

    handles = [get_module(model, n).register_forward_pre_hook(hook(n)) for n in names]
    batches_ = _input_batches(data)
    progress.emit("start", "calibrate", 0, len(batches_))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, x in enumerate(batches_):
                _call(model, x, i)
                progress.emit("progress", "calibrate", i + 1, len(batches_))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    progress.emit("end", "calibrate", len(batches_), len(batches_))
    for st in stats.values():
        st["sample"] = st["sample"] and [torch.cat(st["sample"])]
    return stats


def _chunks(x: torch.Tensor, n: int = 128) -> list[torch.Tensor]:
    return [x[i:i + n] for i in range(0, len(x), n)]


def _input_batches(data) -> list:
    """Model inputs from a calibration argument (the forms in :func:`quantize`'s docstring)."""
    if isinstance(data, torch.Tensor):
        return _chunks(data)
    if isinstance(data, (Inputs, Mapping)):
        return [_inputs.check_inputs(data, "activations")]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return _chunks(data[0])  # (X, y)
    if hasattr(data, "X") and isinstance(getattr(data, "X"), torch.Tensor):  # slimkit.data.Split
        return _chunks(data.X)
    if isinstance(data, DataLoader):  # batches of (inputs, targets), or of inputs
        out = [b[0] if isinstance(b, (tuple, list)) else b for b in data]
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        out = list(data)  # each element is one batch, called by slimkit.inputs' rule
    else:
        raise InvalidTypeError("activations", data, "calibration data: a tensor, (X, y), a Split, a DataLoader, "
                               "or an iterable of batches (tensor, tuple, dict or slimkit.Inputs)")
    if not out:
        raise InvalidParameterError("activations", data, "calibration data with at least one batch")
    return [_inputs.check_inputs(b, f"activations[{i}]") for i, b in enumerate(out)]


def _call(model, x, i: int):
    """model(batch) by slimkit.inputs' rule; a batch the model refuses is the caller's error."""
    with batch_errors(i, "activations", x, "batches the model accepts"):
        return _inputs.call(model, x)


def _plan_layer(name, layer, mode, bits, scheme, layout, with_acts):
    """'real' or 'simulated' for one layer, or raise when mode='real' cannot be honoured."""
    if mode == "simulated":
        return "simulated"
    why = None
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        why = f"{type(layer).__name__} with padding_mode={layer.padding_mode!r} (only 'zeros' is implemented)"
    elif with_acts and mode == "real" and not isinstance(layer, nn.Embedding) and not _has_int8_kernel(
            layer, bits, scheme, layout.granularity):
        why = (f"activations of {type(layer).__name__} with int{bits} {scheme} {layout.granularity} weights have "
               "no integer kernel (only 8-bit symmetric per-channel/per-tensor Linear does)")
    if why is None:
        return "real"  # in auto mode, activations without a kernel are simulated (and labelled so)
    if mode == "real":
        raise InvalidParameterError("mode", "real", f"a combination with a real implementation for layer {name!r}: "
                                    f"{why}; use mode='auto' (simulated where needed) or 'simulated'")
    return "simulated"


def _has_int8_kernel(layer, bits, scheme, granularity) -> bool:
    return is_linear_like(layer) and qlayers.int8_kernel_format(bits, scheme, granularity)


def _build_real(layer, qts: dict[str, QTensor], dtype: torch.dtype, act, act_range):
    qt = next(iter(qts.values()))
    q = dict(bits=qt.bits, scheme=qt.scheme, granularity=qt.granularity, group_size=qt.group_size,
             dtype=qlayers.dtype_name(dtype))
    if isinstance(layer, nn.RNNBase):
        return qlayers.QuantRNN.from_float(layer, qts, **q)
    q["qweight"] = qt
    if is_linear_like(layer):
        out_f, in_f = qt.q.shape
        return qlayers.QuantLinear(in_f, out_f, act=act, bias=layer.bias is not None, bias_value=layer.bias,
                                   act_range=act_range, **q)
    if isinstance(layer, nn.Embedding):
        return qlayers.QuantEmbedding(layer.num_embeddings, layer.embedding_dim, layer.padding_idx, **q)
    cls = next(c for t, c in _QUANT_CLASS.items() if isinstance(layer, t))
    return cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
               layer.dilation, layer.groups, output_padding=getattr(layer, "output_padding", 0),
               bias=layer.bias is not None, bias_value=layer.bias, **q)


def _weight_norm_hooks(layer: nn.Module) -> list:
    """The legacy ``torch.nn.utils.weight_norm`` hooks that recompute the layer's weight per call."""
    from torch.nn.utils.weight_norm import WeightNorm

    return [h for h in layer._forward_pre_hooks.values() if isinstance(h, WeightNorm)]


def _copy(module: nn.Module) -> nn.Module:
    """copy.deepcopy that also copies modules using the legacy weight_norm: the weight it computed
    in the last grad-enabled call is a non-leaf tensor, which deepcopy refuses (it is recomputed
    at the next call anyway)."""
    memo = {id(t): t.detach().clone() for m in module.modules() for t in vars(m).values()
            if isinstance(t, torch.Tensor) and not t.is_leaf}
    return copy.deepcopy(module, memo)


def _float_copy(layer: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A float copy of ``layer`` holding ``weights`` (as :func:`_matrices` names them) as plain
    Parameters: a weight parametrization (weight_norm) is folded, so the new values are the ones used."""
    new = _copy(layer)
    if is_parametrized(new):  # the copy holds the computed tensors as plain Parameters
        unparametrize(new)
    for hook in _weight_norm_hooks(new):
        nn.utils.remove_weight_norm(new, hook.name)
    with torch.no_grad():
        for name, w in weights.items():
            target = getattr(new, name)
            target.copy_((w.t() if is_hf_conv1d(new) else w).to(target.dtype))
    return new


def _quantize_layer(name, layer, plan, bits, scheme, layout, act_stats, act_bits):
    """The replacement module for one layer and what to say about it."""
    mats = {n: w.detach() for n, w in _matrices(layer).items()}
    qts = {n: quantize_tensor(w, bits, scheme, layout.granularity, 0, layout.group_size) for n, w in mats.items()}
    deq = {n: dequantize_tensor(qt) for n, qt in qts.items()}
    w_sqnr = sqnr(_flat(mats.values()), _flat(deq.values()))
    dtype = next(iter(mats.values())).dtype
    takes_acts = not isinstance(layer, nn.Embedding)
    act_range = (act_stats["lo"], act_stats["hi"]) if act_stats and takes_acts else None
    info = {"mode": plan, "bits": bits, "scheme": scheme, "granularity": layout.granularity}
    if layout.group_size:
        info["group_size"] = layout.group_size
    notes = [layout.note] if layout.note else []
    if is_parametrized(layer) or _weight_norm_hooks(layer):
        notes.append("its weight parametrization (e.g. weight_norm) is folded: the computed weight is quantized")
    if plan == "real":
        kernel_ok = _has_int8_kernel(layer, bits, scheme, layout.granularity)
        act = ("static" if act_range else "dynamic") if kernel_ok else "none"
        new = _build_real(layer, qts, dtype, act, act_range)
        info["storage"], info["execution"] = new.storage, new.execution
        info["activations"] = {"dynamic": "int8 per token, at run time", "static": "int8 calibrated (static)",
                               "none": "float"}[act]
        if act_range is not None and not kernel_ok:  # only in mode="auto": activations simulated
            info["mode"] = "real weights, simulated activations"
            info["execution"] += f"; input fake-quantized to int{act_bits} (SIMULATED)"
            info["activations"] = f"int{act_bits} calibrated (simulated)"
            new = qlayers.FakeQuantInput(act_bits, new, act_range)
        if bits < 8 and storage_bits(bits) == 8:
            notes.append(f"int{bits} values are stored one per int8 byte (only 2-4 bits are packed)")
    else:
        new = _float_copy(layer, deq)
        if act_range is not None:
            new = qlayers.FakeQuantInput(act_bits, new, act_range)
        info["storage"] = f"{qlayers.dtype_name(dtype)} (simulated)"
        info["execution"] = "SIMULATED: float with fake-quantized weights" + (
            f" and int{act_bits} fake-quantized inputs" if act_range is not None else "")
        info["activations"] = f"int{act_bits} calibrated (simulated)" if act_range is not None else "float"
    if notes:
        info["note"] = "; ".join(notes)
    return new, w_sqnr, info


def _skip_row(name: str, layer: nn.Module, reason: str, details=None) -> LayerReport:
    n, b = _weight_count(layer), tensor_bytes(layer)
    return LayerReport(name, type(layer).__name__, "skipped", n, n, b, b, reason=reason, details=details or {})


def _unsupported_rows(model: nn.Module, report: Report) -> None:
    """Rows saying why MultiheadAttention's own weights stay float (before Report.cover)."""
    named = {l.name for l in report.layers}
    for name, m in param_modules(model):
        why = next((w for t, w in _NOT_QUANTIZED.items() if isinstance(m, t)), None)
        if why and name not in named:
            n = own_param_count(m)
            b = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
            report.layers.append(LayerReport(name, type(m).__name__, "skipped", n, n, b, b, reason=why))


def quantize(model: nn.Module, bits: int = 8, granularity: str = "per_channel", scheme: str = "symmetric",
             activations=None, *, group_size: int | None = None, mode: str = "auto",
             include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
             keep: str | Iterable[str] | None = None, metric=None, max_drop: float = 0.5, act_bits: int = 8,
             callbacks=None, stop=None) -> Result:
    """Quantize the weights of every Linear (and transformers' Conv1D), Conv, ConvTranspose,
    Embedding and LSTM/GRU/RNN layer (and, with calibration data, their inputs) to ``bits`` bits.
    Returns ``Result(model, report)``; ``model`` is a copy in the input model's dtype (bf16 stays
    bf16 outside the integer buffers). The report has a row for every module holding parameters:
    MultiheadAttention's in_proj and out_proj (read directly by its parent) and tied weights that
    cannot share one quantized copy stay float, each with the reason. Tied layers (an embedding
    shared with the LM head) are quantized once and share the integer copy. Weight-normed
    (parametrized) layers are quantized from their computed weight.

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
    """
    check_module("model", model)
    group_size = _check_args(bits, granularity, scheme, mode, group_size, act_bits)
    auto_keep = isinstance(keep, str) and keep == "auto"
    if auto_keep:
        if metric is None:
            raise InvalidParameterError("metric", None, "a callable model -> score or (X, y) data when keep='auto'")
        if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
            raise InvalidParameterError("max_drop", max_drop, "a number >= 0 (allowed metric drop)")
    elif isinstance(keep, str):
        keep = [keep]
    elif keep is not None:
        keep = list(keep)
        if not all(isinstance(k, str) for k in keep):
            raise InvalidTypeError("keep", keep, "layer names/glob patterns, 'auto' or None")
    progress = as_progress(callbacks, stop)

    targets = list(named_targets(model, TARGET_TYPES, include=include, exclude=exclude, method="quantize"))
    # Validate every layer before any work: errors leave nothing half done.
    layouts = {name: _layout(name, layer, granularity, group_size) for name, layer in targets}
    for name, layer in targets:
        if not all(torch.isfinite(w).all() for w in _matrices(layer).values()):
            raise InvalidParameterError("model", f"layer {name!r}", "finite weights (found NaN or inf)")
    skip = _structural_skips(model, targets)
    candidates = [(n, m) for n, m in targets if n not in skip]

    ranking = None
    if auto_keep and candidates:
        ranking, kept = _auto_keep(model, candidates, metric, max_drop, progress,
                                   dict(bits=bits, granularity=granularity, scheme=scheme, activations=activations,
                                        group_size=group_size, mode=mode, act_bits=act_bits))
        for n in kept:
            skip[n] = f"kept in full precision: most sensitive (keep='auto', max_drop={max_drop})"
    elif keep:
        for n, _ in candidates:
            if matches(n, keep):
                skip[n] = f"kept in full precision (keep={keep!r})"
    ties = _tie_groups(model, targets)
    skip.update(_tie_skips(ties, {n: m for n, m in targets if n not in skip}, layouts))
    work = [(n, m) for n, m in targets if n not in skip]
    if not work:
        why = "; ".join(f"{n!r}: {r}" for n, r in list(skip.items())[:3])
        raise NothingToCompressError(f"nothing to quantize: every quantizable layer was kept in full precision or "
                                     f"skipped ({why})")
    plans = {n: _plan_layer(n, m, mode, bits, scheme, layouts[n], activations is not None) for n, m in work}

    q = _copy(model)
    act_stats = _calibrate(q, activations, [n for n, _ in work], progress) if activations is not None else {}
    report = Report("quantize", dict(bits=bits, granularity=granularity, scheme=scheme, mode=mode,
                                     group_size=group_size, activations="calibrated" if activations is not None
                                     else None, keep=keep if not auto_keep else "auto", act_bits=act_bits))
    target_names, paths, built = {n for n, _ in targets}, _module_paths(model), {}
    progress.emit("start", "quantize", 0, len(work))
    done = 0
    for name, layer in model.named_modules():
        if not is_target(layer, TARGET_TYPES):
            continue
        if name not in target_names or name in skip:
            why = skip.get(name) or unselected_reason(name, include, exclude)
            report.layers.append(_skip_row(name, layer, why, _rank_details(ranking, name)))
            continue
        st = act_stats.get(name)
        new, w_sqnr, info = _quantize_layer(name, layer, plans[name], bits, scheme, layouts[name],
                                            st if st and math.isfinite(st["lo"]) else None, act_bits)
        tied = ties.get(name)
        if tied and id(_weight_param(layer)) in built:  # tied: one integer copy for all holders
            first_name, first = built[id(_weight_param(layer))]
            _share_weight(new, first)
            info["tied_to"] = first_name
        elif tied:
            built[id(_weight_param(layer))] = (name, new)
        if st and st["sample"]:
            x = st["sample"][0]
            with torch.no_grad():
                info["output_sqnr_db"] = sqnr(_first(layer(x)), _first(new(x)))
        info.update(_rank_details(ranking, name))
        for path in paths[id(layer)]:  # a layer used at several places is replaced at each
            set_module(q, path, new)
        if len(paths[id(layer)]) > 1:
            info["also_at"] = paths[id(layer)][1:]
        simulated = "simulated" in info["mode"]
        reason = "SIMULATED: fake-quant in float" if info["mode"] == "simulated" else info["execution"]
        if info["mode"] == "simulated" and plans[name] == "simulated" and mode == "auto":
            reason += f" (no real {type(layer).__name__} implementation for this format)"
        if "tied_to" in info:
            reason += f"; shares the integer weight of tied layer {info['tied_to']!r}"
        n = _weight_count(layer)
        report.layers.append(LayerReport(
            name, type(layer).__name__, "simulated" if info["mode"] == "simulated" else "quantized", n, n,
            tensor_bytes(layer), tensor_bytes(new), sqnr_db=w_sqnr, reason=reason, details=info))
        report.simulated |= simulated
        done += 1
        progress.emit("progress", "quantize", done, len(work), sqnr_db=w_sqnr)
    progress.emit("end", "quantize", done, len(work))
    _unsupported_rows(model, report)
    report.cover(model, q)
    report.summary.update(_summary(report))
    return Result(q, report)


def _rank_details(ranking, name):
    if not ranking:
        return {}
    r = next((r for r in ranking if r["name"] == name), None)
    return {"sensitivity_drop": r["drop"]} if r else {}


def _summary(report: Report) -> dict:
    q = [l for l in report.layers if l.action != "skipped"]
    own = [l for l in q if "tied_to" not in l.details]  # a tied weight is counted once
    before = sum(l.bytes_before for l in own)
    after = sum(l.bytes_after for l in own)
    sq = [l.sqnr_db for l in q if l.sqnr_db is not None and math.isfinite(l.sqnr_db)]
    out = {
        "quantized_layers": sum(l.action == "quantized" for l in q),
        # fully simulated layers and real-weight layers whose inputs are fake-quantized
        "simulated_layers": sum("simulated" in l.details.get("mode", "") for l in q),
        "integer_kernel_layers": sum("_int_mm" in l.details.get("execution", "") for l in q),
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


# --------------------------------------------------------------------------- sensitivity

def _metric_fn(metric) -> tuple[Callable[[nn.Module], float], object]:
    """A score function (higher is better) and, for data, the inputs used for output SQNR."""
    if callable(metric) and not isinstance(metric, nn.Module):
        return metric, None
    try:
        batches(metric)
    except Exception:
        raise InvalidTypeError("metric", metric, "a callable model -> score (higher is better) or (X, y) data")
    return (lambda m: 100.0 * evaluate(m, metric)["accuracy"]), metric


def sensitivity(model: nn.Module, data_or_metric_fn, bits: int = 8, granularity: str = "per_channel",
                scheme: str = "symmetric", *, group_size: int | None = None, include=None, exclude=None,
                activations=None, mode: str = "simulated", act_bits: int = 8, callbacks=None,
                stop=None) -> list[dict]:
    """Quantize one layer at a time and score the model: how much each layer alone costs.

    ``data_or_metric_fn``: (X, y) data (score = accuracy in points; also the output SQNR of the
    model's logits vs the original) or a callable ``model -> score`` (higher is better).
    Returns one dict per layer in model order: name, kind, score, baseline (the unquantized
    model's score), drop (baseline - score; larger = more sensitive), weight_sqnr_db,
    output_sqnr_db (data only). ``mode`` "simulated"
    (default; fast, same weight numerics) or "auto"/"real" (the layers quantize() would build).
    The input model is not changed.
    """
    check_module("model", model)
    group_size = _check_args(bits, granularity, scheme, mode, group_size, act_bits)
    score_fn, data = _metric_fn(data_or_metric_fn)
    progress = as_progress(callbacks, stop)
    base_model = _copy(model).eval()
    targets = list(named_targets(base_model, TARGET_TYPES, include=include, exclude=exclude,
                                 method="quantize"))
    layouts = {name: _layout(name, layer, granularity, group_size) for name, layer in targets}
    base = float(score_fn(base_model))
    ref_out = _outputs(base_model, data) if data is not None else None
    act_stats = _calibrate(base_model, activations, [n for n, _ in targets], progress) if activations is not None else {}
    out = []
    progress.emit("start", "sensitivity", 0, len(targets), baseline=base)
    for i, (name, layer) in enumerate(targets):
        progress.check()
        plan = _plan_layer(name, layer, mode, bits, scheme, layouts[name], activations is not None)
        st = act_stats.get(name)
        new, w_sqnr, _ = _quantize_layer(name, layer, plan, bits, scheme, layouts[name],
                                         st if st and math.isfinite(st["lo"]) else None, act_bits)
        set_module(base_model, name, new)  # swap one layer in, then put the original back
        try:
            score = float(score_fn(base_model))
            row = {"name": name, "kind": type(layer).__name__, "score": score, "baseline": base,
                   "drop": base - score, "weight_sqnr_db": w_sqnr}
            if ref_out is not None:
                row["output_sqnr_db"] = sqnr(ref_out, _outputs(base_model, data))
        finally:
            set_module(base_model, name, layer)
        out.append(row)
        progress.emit("progress", "sensitivity", i + 1, len(targets), drop=row["drop"])
    progress.emit("end", "sensitivity", len(targets), len(targets))
    return out


@torch.no_grad()
def _outputs(model, data):
    return torch.cat([model(x).float() for x, _ in batches(data, batch_size=512)])


def _auto_keep(model, targets, metric, max_drop, progress, qkw) -> tuple[list[dict], list[str]]:
    """Rank layers by sensitivity, then find the fewest most-sensitive layers to keep in fp32 so
    that the whole quantized model's score drops by at most ``max_drop`` (binary search)."""
    score_fn, data = _metric_fn(metric)
    ranking = sensitivity(model, metric, qkw["bits"], qkw["granularity"], qkw["scheme"],
                          group_size=qkw["group_size"], include=[n for n, _ in targets],
                          mode="simulated", act_bits=qkw["act_bits"], callbacks=progress)
    order = sorted(ranking, key=lambda r: (-r["drop"], r.get("output_sqnr_db", 0.0), r["weight_sqnr_db"]))
    names = [r["name"] for r in order]
    base = ranking[0]["baseline"]  # sensitivity scored the unquantized model already

    def drop_with(k: int) -> float:
        keep = names[:k]
        if len(keep) == len(names):
            return 0.0
        m, _ = quantize(model, **qkw, include=[n for n, _ in targets], keep=keep or None)
        return base - float(score_fn(m))

    lo, hi = 0, len(names)  # invariant: keeping names[:hi] satisfies the budget
    if drop_with(0) <= max_drop:
        return ranking, []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        progress.emit("progress", "auto_keep", mid, len(names))
        if drop_with(mid) <= max_drop:
            hi = mid
        else:
            lo = mid
    if hi == len(names):
        least = min(ranking, key=lambda r: r["drop"])
        raise NothingToCompressError(
            f"keep='auto': no layer can be quantized to {qkw['bits']} bits within max_drop={max_drop}; even the "
            f"least sensitive layer alone ({least['name']!r}) costs {least['drop']:.3g}. Raise max_drop or bits")
    return ranking, names[:hi]
