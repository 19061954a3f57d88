"""Which output units of a traced model can be removed together: the walk over the torch.fx
graph behind :func:`slimkit.pruning.surgery.analyse`.

From one producer (a Linear/Conv/ConvTranspose layer) :class:`Flood` follows the values carrying
its units forward to their users and, through residual adds, backward to the other operands'
producers, collecting a :class:`Group`; anything it cannot follow raises :class:`Skip` with the
reason the report gives.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)  # weight (in, out, *k)
PRODUCERS = (nn.Linear, *CONVS, *TRANSPOSED_CONVS)
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
# Element-wise merges: every operand carries the same units, so their producers are cut together.
_ADDS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
         operator.imul, torch.add, torch.sub, torch.mul, "add", "sub", "mul", "add_", "sub_", "mul_"}
_CONCATS = {torch.cat, torch.stack, torch.concat}


@dataclass
class Group:
    """Units of ``producer`` that can be removed together with their dependents. ``producers``
    lists every layer whose outputs carry the same units (outputs added in a residual block);
    ``producer``, the first of them in model order, names the group."""

    producer: str
    units: int
    norms: list[str] = field(default_factory=list)
    # (consumer name, inputs per unit): 1 for a direct consumer, H*W behind a Flatten
    consumers: list[tuple[str, int]] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    # depthwise convolutions the units pass through (one filter per channel): sliced like the norms
    channelwise: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.producers:
            self.producers = [self.producer]

    @property
    def modules(self) -> list[str]:
        return [*self.producers, *self.norms, *self.channelwise, *(c for c, _ in self.consumers)]


class Skip(Exception):
    """Why a producer's units cannot be removed (its message is the report's reason)."""


class Graph:
    """The traced graph plus what the walk asks about modules: call counts, shared weights."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module):
        self.gm = gm
        self.calls: dict[str, list[fx.Node]] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                self.calls.setdefault(node.target, []).append(node)
        owners: dict[int, list[str]] = {}
        for name, m in model.named_modules():
            for p in m.parameters(recurse=False):
                owners.setdefault(id(p), []).append(name)
        self.shares = {n: [o for o in names if o != n] for names in owners.values() for n in names if len(names) > 1}

    def module(self, name: str) -> nn.Module:
        return self.gm.get_submodule(name)

    def reused(self, name: str) -> bool:
        """Called more than once and holding state: one weight serving two places."""
        m = self.module(name)
        return len(self.calls.get(name, [])) > 1 and any(True for _ in [*m.parameters(), *m.buffers()])

    def leaf_ancestor(self, name: str) -> str | None:
        """The module traced as one call that contains ``name`` (MultiheadAttention's out_proj)."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in self.calls:
                return ".".join(parts[:i])
        return None


def _units(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, (*CONVS, *TRANSPOSED_CONVS)) else m.out_features


class Flood:
    """Collects one group: every value carrying the start producer's units, walked forward to
    their users and, through residual adds, backward to the other operands' producers."""

    def __init__(self, graph: Graph, skipped: dict[str, str], selected):
        self.g, self.skipped, self.selected = graph, skipped, selected
        self.seen: dict[fx.Node, str] = {}
        self.producers: list[str] = []
        self.group: Group | None = None
        self.todo: list[tuple[fx.Node, str]] = []

    def run(self, name: str) -> Group:
        module = self.g.module(name) if name in self.g.calls else None
        if module is None:
            inside = self.g.leaf_ancestor(name)
            raise Skip(f"inside {inside!r}, which is traced as one call: slimkit cannot resize its parts"
                        if inside else "not called by forward (as traced)")
        self.group = Group(name, _units(module))
        self._producer(self.g.calls[name][0])
        while self.todo:
            self._forward(*self.todo.pop())
        order = {n: i for i, (n, _) in enumerate(self.g.gm.named_modules())}
        self.group.producers.sort(key=order.get)
        self.group.producer = self.group.producers[0]
        return self.group

    def _join(self, node: fx.Node, mode: str, backward: bool) -> None:
        if node in self.seen:
            if self.seen[node] != mode:
                raise Skip(f"its units reach {_op_name(node)} in two layouts")
            return
        self.seen[node] = mode
        if backward:
            self._define(node, mode)
        self.todo.append((node, mode))

    def _producer(self, node: fx.Node) -> None:
        name, m = node.target, self.g.module(node.target)
        why = _producer_problem(self.g, name, m)
        if why:
            raise Skip(why if name == self.group.producer else f"its outputs are added to those of {name!r}, {why}")
        if not self.selected(name):
            raise Skip(f"its outputs are added to those of {name!r}, which include/exclude leaves out")
        if name in self.skipped:
            raise Skip(f"its outputs are added to those of {name!r}, which is skipped ({self.skipped[name]})")
        if _units(m) != self.group.units:
            raise Skip(f"its outputs are added to those of {name!r}, which has {_units(m)} units")
        if name not in self.group.producers:
            self.group.producers.append(name)
        if name not in self.producers:
            self.producers.append(name)
        self.seen[node] = _mode(m)
        self.todo.append((node, _mode(m)))

    def _define(self, node: fx.Node, mode: str) -> None:
        """``node`` carries the group's units because it is added to a value that does: walk back
        to where its units come from."""
        if node.op == "call_module":
            m = self.g.module(node.target)
            if isinstance(m, PRODUCERS):
                return self._producer(node)
            if self.g.reused(node.target):
                raise Skip(f"is added to the output of {node.target!r}, which is called more than once")
            if isinstance(m, _NORMS) and m.num_features == self.group.units:
                self._add_norm(node.target)
                return self._join(node.args[0], mode, True)
            if _depthwise(m, self.group.units) and mode == "conv":
                self._add_channelwise(node.target)
                return self._join(node.args[0], mode, True)
            if isinstance(m, _ELEMENTWISE_MODULES) or (isinstance(m, _POOL_MODULES) and mode == "conv"):
                return self._join(node.args[0], mode, True)
        elif node.op in ("call_function", "call_method"):
            if _passes_through(node, mode):
                return self._join(node.args[0], mode, True)
            if node.target in _ADDS and mode != "flat":
                for arg in _tensor_args(node):
                    self._join(arg, mode, True)
                return None
        elif node.op == "placeholder":
            raise Skip(f"feeds a residual add with the model input {node.target!r}, whose units cannot be removed")
        raise Skip(f"feeds a residual add with the output of {_op_name(node)}, which slimkit cannot follow back")

    def _forward(self, node: fx.Node, mode: str) -> None:
        """Walk every use of ``node``'s value; ``mode`` says where the units live:
        "linear" (last dim), "conv" (dim 1) or "flat" (dim 1 after flattening channels)."""
        group = self.group
        for user in list(node.users):
            if _is_metadata(user):  # x.size(0), x.shape: reads no unit values
                continue
            if user.op == "output":
                raise Skip("its output is the model output")
            if user.op == "call_module":
                m = self.g.module(user.target)
                if self.g.reused(user.target):
                    raise Skip(f"feeds {user.target!r}, which is called more than once")
                if isinstance(m, _ELEMENTWISE_MODULES) or (isinstance(m, _POOL_MODULES) and mode == "conv"):
                    self._join(user, mode, False)
                elif isinstance(m, _NORMS) and mode in ("conv", "linear") and m.num_features == group.units:
                    self._add_norm(user.target)
                    self._join(user, mode, False)
                elif isinstance(m, nn.Flatten) and mode == "conv" and m.start_dim == 1 and m.end_dim == -1:
                    self._join(user, "flat", False)
                elif _depthwise(m, group.units) and mode == "conv" and user.args[0] is node:
                    self._add_channelwise(user.target)
                    self._join(user, mode, False)
                elif _consumes(m, mode, group.units, user, node):
                    shared = self.g.shares.get(user.target)
                    if shared:
                        raise Skip(f"feeds {user.target!r}, whose weight is tied to {', '.join(map(repr, shared))}; "
                                    "resizing one would break the tie")
                    per_unit = m.in_features // group.units if mode == "flat" else 1
                    if (user.target, per_unit) not in group.consumers:
                        group.consumers.append((user.target, per_unit))
                else:
                    raise Skip(f"feeds {type(m).__name__} {user.target!r}, which slimkit cannot resize for it")
            elif _passes_through(user, mode) and user.args[0] is node:
                self._join(user, mode, False)
            elif _is_flatten_1(user) and mode == "conv":
                self._join(user, "flat", False)
            elif _is_spatial_mean(user) and mode == "conv" and user.args[0] is node:
                self._join(user, "linear", False)
            elif user.op in ("call_function", "call_method") and user.target in _ADDS and mode != "flat":
                self._join(user, mode, False)
                for arg in _tensor_args(user):  # the other operands carry the same units
                    self._join(arg, mode, True)
            elif user.op in ("call_function", "call_method") and user.target in _CONCATS:
                raise Skip(f"feeds {_op_name(user)} (a concatenation), which slimkit cannot resize through")
            else:
                raise Skip(f"feeds {_op_name(user)}, which slimkit cannot follow")

    def _add_norm(self, name: str) -> None:
        if name not in self.group.norms:
            self.group.norms.append(name)

    def _add_channelwise(self, name: str) -> None:
        if self.g.shares.get(name):
            raise Skip(f"feeds {name!r}, whose weight is tied to {', '.join(map(repr, self.g.shares[name]))}")
        if name not in self.group.channelwise:
            self.group.channelwise.append(name)


def _depthwise(m: nn.Module, units: int) -> bool:
    """A depthwise convolution with one filter per channel: channel c of its output reads only
    channel c of its input, so a removed channel is removed from it as from a BatchNorm."""
    return isinstance(m, CONVS) and m.groups == m.in_channels == m.out_channels == units


def _producer_problem(g: Graph, name: str, m: nn.Module) -> str:
    if getattr(m, "groups", 1) != 1:
        return "grouped/depthwise convolution"
    if len(g.calls.get(name, [])) > 1:
        return "called more than once in forward (shared layer)"
    if g.shares.get(name):
        return f"its weight is tied to {', '.join(map(repr, g.shares[name]))}"
    return ""


def _mode(m: nn.Module) -> str:
    return "conv" if isinstance(m, (*CONVS, *TRANSPOSED_CONVS)) else "linear"


def _consumes(m: nn.Module, mode: str, units: int, user: fx.Node, node: fx.Node) -> bool:
    """``m`` reads ``node``'s units as its input features/channels."""
    if not user.args or user.args[0] is not node:
        return False
    if isinstance(m, nn.Linear):
        return (mode == "linear" and m.in_features == units) or (mode == "flat" and m.in_features % units == 0)
    if isinstance(m, (*CONVS, *TRANSPOSED_CONVS)):
        return mode == "conv" and m.groups == 1 and m.in_channels == units
    return False


def _passes_through(node: fx.Node, mode: str) -> bool:
    """An element-wise function or method (or a pooling one on channels)."""
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCS or (node.target in _POOL_FUNCS and mode == "conv")
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and not _is_metadata(a)]


def _is_spatial_mean(node: fx.Node) -> bool:
    """``x.mean((2, 3))`` on (N, C, H, W): global average pooling, units end up last."""
    if not ((node.op == "call_method" and node.target == "mean") or
            (node.op == "call_function" and node.target is torch.mean)):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else dims
    return (isinstance(dims, (tuple, list)) and bool(dims) and all(isinstance(d, int) and d >= 2 for d in dims)
            and not node.kwargs.get("keepdim", False) and len(node.args) <= 2)


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
