"""Structured surgery: remove whole output units (neurons, channels) from a layer and fix
every layer that reads them, so the model is physically smaller.

:func:`analyse` traces the model with torch.fx and (:mod:`slimkit.pruning.groups`) builds one :class:`Group` per set of output
units that can be removed safely: the producers (Linear/Conv/ConvTranspose layers whose outputs
carry those units; several when outputs meet in a residual add, so the channels stay aligned
across the add), the BatchNorms that normalise them, and the consumers (the next layers, possibly
behind a Flatten, where each channel owns ``in_features // channels`` consecutive inputs). Values
may pass through element-wise activations, dropout, pooling and residual adds on the way. A
producer whose units reach anything else (a concatenation, a reshape, an unknown op, the model
input or output, a layer whose weight is shared) is not touched and is reported as skipped with
the reason. Stateless modules (an ``nn.ReLU`` called twice, as in torchvision's ResNet) may be
reused; a layer with weights called more than once may not.

:func:`remove_units` applies one group's cut; pruning and ``distillation.shrink`` both use it.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import NothingToCompressError
from ..inputs import Inputs
from ..nn import matches, set_module
from .groups import PRODUCERS, TRANSPOSED_CONVS, Flood, Graph, Group, Skip  # noqa: F401  (PRODUCERS: public here)


@dataclass
class Analysis:
    groups: list[Group]
    skipped: dict[str, str]  # producer name -> why its units cannot be removed


def trace(model: nn.Module, example=None) -> fx.GraphModule:
    """torch.fx graph of ``model``. Forward code that branches on shapes needs an
    ``example`` input (a tensor, tuple, dict or ``slimkit.Inputs``, see :mod:`slimkit.inputs`):
    it is then traced with meta tensors carrying concrete shapes."""
    try:
        return fx.symbolic_trace(model)
    except Exception as plain_error:
        if example is None:
            raise
        from torch.fx.experimental.meta_tracer import symbolic_trace as meta_trace

        try:  # a meta-device copy, so every layer's output shape is known too
            meta_args = {k: v.to("meta") for k, v in _named_inputs(model, example).items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return meta_trace(copy.deepcopy(model).to("meta"), meta_args=meta_args)
        except Exception:
            raise plain_error from None


def _named_inputs(model: nn.Module, example) -> dict[str, torch.Tensor]:
    """``example`` as forward's parameter names -> tensors."""
    params = list(inspect.signature(model.forward).parameters)
    if isinstance(example, torch.Tensor):
        return {params[0]: example}
    if isinstance(example, Inputs):
        return {**dict(zip(params, example.args)), **example.kwargs}
    if isinstance(example, Mapping):
        return dict(example)
    return dict(zip(params, example))


def analyse(model: nn.Module, *, include=None, exclude=None, example=None) -> Analysis:
    """Which Linear/Conv layers' output units can be removed, and what else must change.

    Raises whatever torch.fx raises when the model cannot be traced.
    """
    gm = trace(model, example)
    graph = Graph(gm, model)
    selected = lambda n: not ((include and not matches(n, include)) or matches(n, exclude))  # noqa: E731
    groups, skipped = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, PRODUCERS) or name in skipped or any(name in g.producers for g in groups):
            continue
        if not selected(name):
            continue
        flood = Flood(graph, skipped, selected)
        try:
            group = flood.run(name)
            if not group.consumers:
                raise Skip("its output reaches no layer slimkit can resize")
            groups.append(group)
        except Skip as why:
            skipped[name] = str(why)
            for other in flood.producers:  # tied to it across an add: kept with it
                skipped.setdefault(other, f"its outputs are added to those of {name!r}, which is skipped ({why})")
    return Analysis(groups, skipped)


def analyse_for(what: str, model: nn.Module, *, include=None, exclude=None, example=None,
                hint: str = "", instead: str = "") -> Analysis:
    """:func:`analyse` for a method (``what``) that needs at least one group: a model that cannot
    be traced, or has no removable units, is a NothingToCompressError saying why (and ``instead``,
    what to do instead)."""
    try:
        analysis = analyse(model, include=include, exclude=exclude, example=example)
    except Exception as e:
        raise NothingToCompressError(
            f"{what} needs a model torch.fx can trace{hint}; tracing {type(model).__name__} failed: "
            f"{type(e).__name__}: {e}".strip() + (f". {instead}" if instead else "")) from e
    if not analysis.groups:
        why = "; ".join(f"{n}: {r}" for n, r in analysis.skipped.items()) or "no Linear/Conv layer selected"
        raise NothingToCompressError(f"{type(model).__name__} has no layer whose units {what} can remove ({why})"
                                     + (f". {instead}" if instead else ""))
    return analysis


# ---- the cut ---------------------------------------------------------------------------

def remove_units(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    """Keep only units ``keep`` (sorted indices) of ``group``'s producers, in place on ``model``
    (callers pass their own copy), and slice the norms' and consumers' inputs to match."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    for name in group.producers:
        set_module(model, name, _slice(model.get_submodule(name), keep, out=True))
    for name in group.norms:
        set_module(model, name, _slice_norm(model.get_submodule(name), keep))
    for name in group.channelwise:
        m = _slice(model.get_submodule(name), keep, out=True)
        m.in_channels = m.groups = len(keep)
        set_module(model, name, m)
    for name, per_unit in group.consumers:
        idx = keep if per_unit == 1 else (keep[:, None] * per_unit + torch.arange(per_unit)).flatten()
        set_module(model, name, _slice(model.get_submodule(name), idx, out=False))


def unit_dim(m: nn.Module, out: bool = True) -> int:
    """The weight dim holding a layer's output (``out``) or input units: a transposed conv
    stores (in, out, *kernel)."""
    return int(out) if isinstance(m, TRANSPOSED_CONVS) else int(not out)


def _slice(m: nn.Module, idx: torch.Tensor, out: bool) -> nn.Module:
    """A copy of a Linear/Conv/ConvTranspose with ``idx`` kept among its output (``out``) or input units."""
    new = copy.deepcopy(m)
    with torch.no_grad():
        new.weight = nn.Parameter(m.weight.index_select(unit_dim(m, out), idx).clone(), m.weight.requires_grad)
        if out and m.bias is not None:
            new.bias = nn.Parameter(m.bias.index_select(0, idx).clone(), m.bias.requires_grad)
    attr = ("out_features" if out else "in_features") if isinstance(m, nn.Linear) else (
        "out_channels" if out else "in_channels")
    setattr(new, attr, len(idx))
    return new


def _slice_norm(m: nn.Module, idx: torch.Tensor) -> nn.Module:
    new = copy.deepcopy(m)
    with torch.no_grad():
        for pname in ("weight", "bias"):
            p = getattr(m, pname, None)
            if p is not None:
                setattr(new, pname, nn.Parameter(p.index_select(0, idx).clone(), p.requires_grad))
        for bname in ("running_mean", "running_var"):
            b = getattr(m, bname, None)
            if b is not None:
                setattr(new, bname, b.index_select(0, idx).clone())
    new.num_features = len(idx)
    return new


def unit_scores(weight_scores: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
    """One number per output unit: the sum of its incoming weights' scores (for magnitude,
    the unit's L1 norm)."""
    if module is not None:
        weight_scores = weight_scores.movedim(unit_dim(module), 0)
    return weight_scores.flatten(1).sum(1)
