"""Example inputs in the three shapes a model may take them: one tensor, a tuple of
positional tensors, or a dict of keyword tensors (transformers models)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import torch

from slimkit.errors import InvalidParameterError, InvalidTypeError

Inputs = Union[torch.Tensor, tuple, list, Mapping]

_WHAT = "a tensor, a tuple of tensors (positional inputs) or a dict of tensors (keyword inputs)"


def check_inputs(inputs: Any, name: str = "example_inputs") -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs
    if isinstance(inputs, (tuple, list, Mapping)):
        values = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
        if not values:
            raise InvalidParameterError(name, inputs, "at least one input tensor")
        if not all(isinstance(v, torch.Tensor) for v in values):
            raise InvalidTypeError(name, inputs, _WHAT)
        return dict(inputs) if isinstance(inputs, Mapping) else tuple(inputs)
    raise InvalidTypeError(name, inputs, _WHAT)


def call(fn: Callable, inputs: Inputs) -> Any:
    """``fn(x)``, ``fn(*args)`` or ``fn(**kwargs)`` depending on the inputs' shape."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return fn(**inputs)
    return fn(*inputs)


def tensors(inputs: Inputs) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    return list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)


def names(inputs: Inputs) -> list[str]:
    if isinstance(inputs, Mapping):
        return list(inputs)
    return [f"input_{i}" for i in range(len(tensors(inputs)))]


def apply(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    """The same structure with ``fn`` applied to every tensor."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: fn(v) for k, v in inputs.items()}
    return tuple(fn(v) for v in inputs)


def to_device(inputs: Inputs, device: torch.device, dtype: torch.dtype | None = None) -> Inputs:
    """Move inputs to ``device``; floating tensors are cast to ``dtype`` when given
    (integer ids and masks keep theirs)."""
    def move(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device)
    return apply(inputs, move)


def batch_size(inputs: Inputs) -> int:
    """The leading dimension of the first input (what throughput counts as items)."""
    first = tensors(inputs)[0]
    return int(first.shape[0]) if first.dim() else 1
