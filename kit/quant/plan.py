"""What :func:`slimkit.quantize` will do to each layer, decided before any work: which layers it
targets, each one's scale layout, which stay float and why (structure, ties), and whether each
is quantized for real or simulated. Every check here runs before the model is copied, so a bad
argument leaves nothing half done."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import InvalidParameterError
from ..nn import get_module, is_hf_conv1d, is_linear_like, linear_weight, named_targets
from .affine import DEFAULT_GROUP_SIZE
from .config import QuantConfig
from .layers import int8_kernel_format

TARGET_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d, nn.Embedding, nn.LSTM, nn.GRU, nn.RNN)

# parameter-holding modules quantize leaves in float, and why (the report says so)
NOT_QUANTIZED = {
    nn.MultiheadAttention: "kept in float: in_proj_weight is a raw Parameter read by "
                           "F.multi_head_attention_forward; no quantized implementation",
}


def matrices(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The weights quantize acts on, by attribute name: (out, in) for Linear-likes (Conv1D's is
    stored transposed), the computed weight of a parametrized layer, each weight matrix of an RNN."""
    if isinstance(layer, nn.RNNBase):
        return {n: p for n, p in layer.named_parameters(recurse=False) if n.startswith("weight")}
    return {"weight": linear_weight(layer)}  # the weight itself for anything but transformers' Conv1D


def weight_count(layer: nn.Module) -> int:
    return sum(w.numel() for w in matrices(layer).values())


def weight_param(layer: nn.Module) -> nn.Parameter | None:
    """The stored weight Parameter (None when a parametrization computes it): what ties share."""
    return layer._parameters.get("weight")


def check_finite(targets) -> None:
    for name, layer in targets:
        if not all(torch.isfinite(w).all() for w in matrices(layer).values()):
            raise InvalidParameterError("model", f"layer {name!r}", "finite weights (found NaN or inf)")


@dataclass(frozen=True)
class Layout:
    """One layer's scale layout: per_group with ``group_size`` may fall back per layer."""

    granularity: str
    group_size: int | None = None
    note: str = ""


def layout(name: str, layer: nn.Module, config: QuantConfig) -> Layout:
    """The layout for one layer. per_group needs the group size to divide the layer's values per
    channel: an explicit ``group_size`` that does not is an error naming the layer; without one,
    the largest divisor in [8, 32] is used, else one scale per channel (said in the layer's row)."""
    if config.method == "codebook":
        return Layout("per_tensor")  # one codebook per weight matrix
    if config.granularity != "per_group":
        return Layout(config.granularity)
    mats = matrices(layer).values()
    n = math.gcd(*(w.numel() // w.shape[0] for w in mats))  # every matrix of an RNN shares the layout
    group_size = config.group_size
    if group_size is not None:
        if n % group_size:
            shapes = ", ".join(str(tuple(w.shape)) for w in mats)
            raise InvalidParameterError(
                "group_size", group_size, f"a divisor of {n}, the values per output channel of layer {name!r} "
                f"({type(layer).__name__} weight {shapes}); pick one that divides every layer, "
                "or exclude that layer")
        return Layout("per_group", group_size)
    size = next((d for d in range(DEFAULT_GROUP_SIZE, 7, -1) if n % d == 0), None)
    if size is None:
        return Layout("per_channel", None, f"per_channel: no group size in [8, {DEFAULT_GROUP_SIZE}] divides its "
                                           f"{n} values per channel")
    note = "" if size == DEFAULT_GROUP_SIZE else f"group_size={size}: the largest in [8, {DEFAULT_GROUP_SIZE}] " \
                                                 f"dividing its {n} values per channel"
    return Layout("per_group", size, note)


def layouts(model: nn.Module, config: QuantConfig) -> tuple[list[tuple[str, nn.Module]], dict[str, Layout]]:
    """The layers ``config`` targets in ``model`` and each one's layout. Raises the slimkit error
    quantize would (a group size that does not divide a layer...) before any work: the panel
    asks here to refuse settings up front."""
    targets = list(named_targets(model, TARGET_TYPES, include=config.include, exclude=config.exclude,
                                 method="quantize"))
    return targets, {name: layout(name, layer, config) for name, layer in targets}


def structural_skips(model: nn.Module, targets) -> dict[str, str]:
    """Layers whose parent reads their tensors directly, so a replacement would not be used."""
    out = {}
    for name, layer in targets:
        parent = get_module(model, name.rpartition(".")[0])
        if isinstance(parent, nn.MultiheadAttention) and layer is parent.out_proj:
            out[name] = ("kept in float: its parent MultiheadAttention reads .weight/.bias directly "
                         "(F.multi_head_attention_forward)")
    return out


def method_skips(targets, config: QuantConfig) -> dict[str, str]:
    """Layers the chosen method has no implementation for (they stay float, each row says why)."""
    if config.method != "codebook":
        return {}
    return {name: f"kept in float: no codebook {type(layer).__name__} (method='codebook' covers Linear, Conv, "
                  "ConvTranspose and Embedding; method='affine' quantizes recurrent layers)"
            for name, layer in targets if isinstance(layer, nn.RNNBase)}


def tie_groups(model: nn.Module, layers) -> dict[str, list[str]]:
    """For each layer whose weight Parameter other modules hold too (an embedding tied to the LM
    head): the names of every holder."""
    holders: dict[int, list[str]] = {}
    for name, m in model.named_modules():
        for p in m.parameters(recurse=False):
            holders.setdefault(id(p), []).append(name)
    return {n: holders[id(p)] for n, m in layers
            if (p := weight_param(m)) is not None and len(holders[id(p)]) > 1}


def tie_skips(groups: dict[str, list[str]], work: dict[str, nn.Module], layouts) -> dict[str, str]:
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


def module_paths(model: nn.Module) -> dict[int, list[str]]:
    """Every name each module is reachable by: a layer used twice is replaced at both places."""
    paths: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), [])
        if name not in paths[id(m)]:
            paths[id(m)].append(name)
    return paths


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is quantized: its layout; ``real`` integer storage or ``simulated`` in
    float; ``fallback`` when mode='auto' simulates because no real implementation exists; the
    calibrated input range (None: no calibration, or a layer that takes no activations)."""

    layout: Layout
    real: bool
    fallback: bool = False
    act_range: tuple[float, float] | None = None


def has_int8_kernel(layer: nn.Module, config: QuantConfig, layout: Layout) -> bool:
    return (config.method != "codebook" and is_linear_like(layer)
            and int8_kernel_format(config.bits, config.scheme, layout.granularity))


def plan_layer(name: str, layer: nn.Module, config: QuantConfig, layout: Layout, with_acts: bool) -> LayerPlan:
    """Real or simulated for one layer, or raise when mode='real' cannot be honoured."""
    if config.mode == "simulated":
        return LayerPlan(layout, real=False)
    why = None
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        why = f"{type(layer).__name__} with padding_mode={layer.padding_mode!r} (only 'zeros' is implemented)"
    elif with_acts and config.mode == "real" and not isinstance(layer, nn.Embedding) and not has_int8_kernel(
            layer, config, layout):
        why = (f"activations of {type(layer).__name__} with int{config.bits} {config.scheme} {layout.granularity} "
               "weights have no integer kernel (only 8-bit symmetric per-channel/per-tensor Linear does)")
    if why is None:
        return LayerPlan(layout, real=True)  # in auto mode, activations without a kernel are simulated (and labelled so)
    if config.mode == "real":
        raise InvalidParameterError("mode", "real", f"a combination with a real implementation for layer {name!r}: "
                                    f"{why}; use mode='auto' (simulated where needed) or 'simulated'")
    return LayerPlan(layout, real=False, fallback=True)
