"""Structured surgery: remove whole output units (neurons, channels) from a layer and fix
every layer that reads them, so the model is physically smaller.

:func:`analyse` traces the model with torch.fx and builds one :class:`Group` per layer
whose output units can be removed safely: the producer (Linear/Conv), the BatchNorms that
normalise those units, and the consumers (the next Linear/Conv, possibly behind a Flatten,
where each channel owns ``in_features // channels`` consecutive inputs). Values may pass
through element-wise activations, dropout and pooling on the way. A producer whose output
reaches anything else (a residual add, a concatenation, a reshape, an unknown op, the model
output) is not touched and is reported as skipped with the reason.

:func:`remove_units` applies one group's cut; pruning and ``distillation.shrink`` both use it.
"""
from __future__ import annotations

import copy
import inspect
import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import NothingToCompressError
from .layers import matches, set_module

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PRODUCERS = (nn.Linear, *_CONV)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Modules and functions that act on each unit independently: removing a unit commutes with them.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_ELEMENTWISE_FUNCS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish,
                      torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.hardswish, F.softplus,
                      F.dropout, torch.dropout}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_POOL_FUNCS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
               F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
               F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_MERGES = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
           torch.cat, torch.stack, torch.concat}


@dataclass
class Group:
    """Units of ``producer`` that can be removed together with their dependents."""

    producer: str
    units: int
    norms: list[str] = field(default_factory=list)
    # (consumer name, inputs per unit): 1 for a direct consumer, H*W behind a Flatten
    consumers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def modules(self) -> list[str]:
        return [self.producer, *self.norms, *(c for c, _ in self.consumers)]


@dataclass
class Analysis:
    groups: list[Group]
    skipped: dict[str, str]  # producer name -> why its units cannot be removed


class _Skip(Exception):
    pass


def trace(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """torch.fx graph of ``model``. Forward code that branches on shapes needs an
    ``example`` input: it is then traced with meta tensors carrying concrete shapes."""
    try:
        return fx.symbolic_trace(model)
    except Exception as plain_error:
        if example is None:
            raise
        from torch.fx.experimental.meta_tracer import symbolic_trace as meta_trace

        arg = next(iter(inspect.signature(model.forward).parameters))
        try:  # a meta-device copy, so every layer's output shape is known too
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return meta_trace(copy.deepcopy(model).to("meta"), meta_args={arg: example.to("meta")})
        except Exception:
            raise plain_error from None


def analyse(model: nn.Module, *, include=None, exclude=None, example: torch.Tensor | None = None) -> Analysis:
    """Which Linear/Conv layers' output units can be removed, and what else must change.

    Raises whatever torch.fx raises when the model cannot be traced.
    """
    gm = trace(model, example)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    groups, skipped = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, PRODUCERS):
            continue
        if (include and not matches(name, include)) or matches(name, exclude):
            continue
        try:
            if isinstance(module, _CONV) and module.groups != 1:
                raise _Skip("grouped/depthwise convolution")
            if calls.get(name, 0) == 0:
                raise _Skip("not called by forward (as traced)")
            if calls[name] > 1:
                raise _Skip("called more than once in forward (shared layer)")
            node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
            units = module.out_channels if isinstance(module, _CONV) else module.out_features
            group = Group(name, units)
            _follow(gm, node, "conv" if isinstance(module, _CONV) else "linear", group, calls)
            if not group.consumers:
                raise _Skip("its output reaches no Linear/Conv layer")
            groups.append(group)
        except _Skip as why:
            skipped[name] = str(why)
    return Analysis(groups, skipped)


def analyse_for(what: str, model: nn.Module, *, include=None, exclude=None, example: torch.Tensor | None = None,
                hint: str = "") -> Analysis:
    """:func:`analyse` for a method (``what``) that needs at least one group: a model that cannot
    be traced, or has no removable units, is a NothingToCompressError saying why."""
    try:
        analysis = analyse(model, include=include, exclude=exclude, example=example)
    except Exception as e:
        raise NothingToCompressError(
            f"{what} needs a model torch.fx can trace{hint}; tracing {type(model).__name__} failed: "
            f"{type(e).__name__}: {e}".strip()) from e
    if not analysis.groups:
        why = "; ".join(f"{n}: {r}" for n, r in analysis.skipped.items()) or "no Linear/Conv layer selected"
        raise NothingToCompressError(f"{type(model).__name__} has no layer whose units {what} can remove ({why})")
    return analysis


def _follow(gm: fx.GraphModule, node: fx.Node, mode: str, group: Group, calls: dict[str, int]) -> None:
    """Walk every use of ``node``'s value; ``mode`` says where the units live:
    "linear" (last dim), "conv" (dim 1) or "flat" (dim 1 after flattening channels)."""
    for user in node.users:
        if _is_metadata(user):  # x.size(0), x.shape: reads no unit values
            continue
        if user.op == "output":
            raise _Skip("its output is the model output")
        if user.op == "call_module":
            m = gm.get_submodule(user.target)
            if calls.get(user.target, 0) > 1:
                raise _Skip(f"feeds {user.target!r}, which is called more than once")
            if isinstance(m, _ELEMENTWISE_MODULES):
                _follow(gm, user, mode, group, calls)
            elif isinstance(m, _POOL_MODULES) and mode == "conv":
                _follow(gm, user, mode, group, calls)
            elif isinstance(m, _NORMS) and mode in ("conv", "linear") and m.num_features == group.units:
                group.norms.append(user.target)
                _follow(gm, user, mode, group, calls)
            elif isinstance(m, nn.Flatten) and mode == "conv" and m.start_dim == 1 and m.end_dim == -1:
                _follow(gm, user, "flat", group, calls)
            elif isinstance(m, nn.Linear) and mode == "linear" and m.in_features == group.units:
                group.consumers.append((user.target, 1))
            elif isinstance(m, nn.Linear) and mode == "flat" and m.in_features % group.units == 0:
                group.consumers.append((user.target, m.in_features // group.units))
            elif (isinstance(m, _CONV) and mode == "conv" and m.groups == 1
                  and m.in_channels == group.units and user.args[0] is node):
                group.consumers.append((user.target, 1))
            else:
                raise _Skip(f"feeds {type(m).__name__} {user.target!r}, which slimkit cannot resize for it")
        elif user.op == "call_function" and user.target in _ELEMENTWISE_FUNCS and user.args[0] is node:
            _follow(gm, user, mode, group, calls)
        elif user.op == "call_function" and user.target in _POOL_FUNCS and mode == "conv" and user.args[0] is node:
            _follow(gm, user, mode, group, calls)
        elif user.op == "call_method" and user.target in _ELEMENTWISE_METHODS and user.args[0] is node:
            _follow(gm, user, mode, group, calls)
        elif _is_flatten_1(user) and mode == "conv":
            _follow(gm, user, "flat", group, calls)
        elif user.op in ("call_function", "call_method") and user.target in _MERGES:
            raise _Skip(f"feeds {_op_name(user)} (a residual or merge), whose other input keeps its units")
        else:
            raise _Skip(f"feeds {_op_name(user)}, which slimkit cannot follow")


def _is_metadata(node: fx.Node) -> bool:
    return ((node.op == "call_method" and node.target in ("size", "dim"))
            or (node.op == "call_function" and node.target is getattr
                and node.args[1] in ("shape", "dtype", "device", "ndim")))


def _is_flatten_1(node: fx.Node) -> bool:
    if not ((node.op == "call_function" and node.target is torch.flatten)
            or (node.op == "call_method" and node.target == "flatten")):
        return False
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _op_name(node: fx.Node) -> str:
    t = node.target
    return f"{node.op} {getattr(t, '__name__', t)}"


# ---- the cut ---------------------------------------------------------------------------

def remove_units(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    """Keep only units ``keep`` (sorted indices) of ``group.producer``, in place on ``model``
    (callers pass their own copy), and slice the norms' and consumers' inputs to match."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    producer = model.get_submodule(group.producer)
    set_module(model, group.producer, _slice(producer, keep, dim=0))
    for name in group.norms:
        set_module(model, name, _slice_norm(model.get_submodule(name), keep))
    for name, per_unit in group.consumers:
        idx = keep if per_unit == 1 else (keep[:, None] * per_unit + torch.arange(per_unit)).flatten()
        set_module(model, name, _slice(model.get_submodule(name), idx, dim=1))


def _slice(m: nn.Module, idx: torch.Tensor, dim: int) -> nn.Module:
    """A copy of a Linear/Conv with ``idx`` kept along the weight's out (0) or in (1) dim."""
    new = copy.deepcopy(m)
    with torch.no_grad():
        new.weight = nn.Parameter(m.weight.index_select(dim, idx).clone(), m.weight.requires_grad)
        if dim == 0 and m.bias is not None:
            new.bias = nn.Parameter(m.bias.index_select(0, idx).clone(), m.bias.requires_grad)
    n = len(idx)
    if isinstance(m, nn.Linear):
        if dim == 0:
            new.out_features = n
        else:
            new.in_features = n
    elif dim == 0:
        new.out_channels = n
    else:
        new.in_channels = n
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


def unit_scores(weight_scores: torch.Tensor) -> torch.Tensor:
    """One number per output unit: the sum of its incoming weights' scores (for magnitude,
    the unit's L1 norm)."""
    return weight_scores.flatten(1).sum(1)
