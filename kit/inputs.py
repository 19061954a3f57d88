"""How slimkit calls a model with example inputs: one rule for calibration, Fisher data,
``accel.prepare``, benchmarks and distillation.

- a tensor is the one positional argument: ``model(x)``;
- a tuple (or list) is positional arguments: ``model(*inputs)``;
- a dict is keyword arguments: ``model(**inputs)`` (tokenized text for transformers);
- ``slimkit.Inputs(args=..., kwargs=...)`` says it explicitly, e.g. for a model whose forward
  takes one dict (``Inputs(args=(batch_dict,))``) or one tuple (``Inputs(args=((a, b),))``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from .errors import InvalidParameterError, InvalidTypeError


@dataclass(frozen=True)
class Inputs:
    """Explicit model inputs: ``model(*args, **kwargs)``. Values may be tensors or any nesting of
    tuples, lists and dicts of tensors."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.args, (tuple, list)):
            raise InvalidTypeError("Inputs.args", self.args, "a tuple of positional arguments")
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
            raise InvalidTypeError("Inputs.kwargs", self.kwargs, "a dict of keyword arguments")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))


ModelInputs = Union[torch.Tensor, tuple, list, Mapping, Inputs]

_WHAT = ("a tensor, a tuple of tensors (positional inputs), a dict of tensors (keyword inputs) or "
         "slimkit.Inputs(args=..., kwargs=...)")


def _leaves(value: Any) -> list:
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _leaves(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    return [value]


def _map(value: Any, fn: Callable) -> Any:
    if isinstance(value, Mapping):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_map(v, fn) for v in value)
    return fn(value) if isinstance(value, torch.Tensor) else value


def check_inputs(inputs: Any, name: str = "example_inputs") -> ModelInputs:
    if isinstance(inputs, torch.Tensor):
        return inputs
    if isinstance(inputs, Inputs):
        if not any(isinstance(t, torch.Tensor) for t in _leaves((inputs.args, inputs.kwargs))):
            raise InvalidParameterError(name, inputs, "at least one input tensor")
        return inputs
    if isinstance(inputs, (tuple, list, Mapping)):
        values = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
        if not values:
            raise InvalidParameterError(name, inputs, "at least one input tensor")
        if not all(isinstance(v, torch.Tensor) for v in values):
            raise InvalidTypeError(name, inputs, _WHAT)
        return dict(inputs) if isinstance(inputs, Mapping) else tuple(inputs)
    raise InvalidTypeError(name, inputs, _WHAT)


def call(fn: Callable, inputs: ModelInputs) -> Any:
    """``fn(x)``, ``fn(*args)`` or ``fn(**kwargs)`` depending on the inputs' shape."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Inputs):
        return fn(*inputs.args, **inputs.kwargs)
    if isinstance(inputs, Mapping):
        return fn(**inputs)
    return fn(*inputs)


def tensors(inputs: ModelInputs) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, Inputs):
        return [t for t in _leaves((inputs.args, inputs.kwargs)) if isinstance(t, torch.Tensor)]
    return list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)


def names(inputs: ModelInputs) -> list[str]:
    if isinstance(inputs, Mapping):
        return list(inputs)
    return [f"input_{i}" for i in range(len(tensors(inputs)))]


def apply(inputs: ModelInputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelInputs:
    """The same structure with ``fn`` applied to every tensor."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Inputs):
        return Inputs(_map(inputs.args, fn), _map(inputs.kwargs, fn))
    if isinstance(inputs, Mapping):
        return {k: fn(v) for k, v in inputs.items()}
    return tuple(fn(v) for v in inputs)


def to_device(inputs: ModelInputs, device: torch.device, dtype: torch.dtype | None = None) -> ModelInputs:
    """Move inputs to ``device``; floating tensors are cast to ``dtype`` when given
    (integer ids and masks keep theirs)."""
    def move(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device)
    return apply(inputs, move)


def batch_size(inputs: ModelInputs) -> int:
    """The leading dimension of the first input (what throughput counts as items)."""
    first = tensors(inputs)[0]
    return int(first.shape[0]) if first.dim() else 1
