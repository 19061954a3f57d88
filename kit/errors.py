"""Structured exception types and the argument checks that raise them.

Every user-facing check raises a subclass of :class:`SlimkitError` that is also a
``ValueError`` or ``TypeError``, with a message naming the parameter, the value given
and what is allowed. Nothing in slimkit validates user input with ``assert``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a module is checked, not with the package (CLI help)
    import torch.nn as nn


class SlimkitError(Exception):
    """Base class of every error slimkit raises on purpose."""


class InvalidParameterError(SlimkitError, ValueError):
    """A parameter has a value outside what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is not allowed: expected {allowed}")


class InvalidTypeError(SlimkitError, TypeError):
    """A parameter has the wrong type."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name} must be {allowed}, got {type(value).__name__} ({value!r:.80})")


class NothingToCompressError(SlimkitError, ValueError):
    """The model has no layer the requested method can act on."""


class IncompatibleModelsError(SlimkitError, ValueError):
    """Two models that must agree (teacher/student, template/artifact) do not."""


class ArtifactError(SlimkitError, ValueError):
    """A saved artifact is corrupt, truncated, or not a slimkit artifact."""


class DeviceUnavailableError(SlimkitError, RuntimeError):
    """The requested device or backend is not present on this machine."""


class Interrupted(SlimkitError):
    """A long operation was stopped on request; the input model is unchanged."""


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    if isinstance(value, bool) or value not in allowed:
        raise InvalidParameterError(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def check_module(name: str, value: Any, allowed: str = "a torch.nn.Module") -> nn.Module:
    import torch.nn as nn

    if not isinstance(value, nn.Module):
        raise InvalidTypeError(name, value, allowed)
    return value


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(name, value, f"an int in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise InvalidParameterError(name, value, f"an int in [{lo}, {hi}]")
    return value


def check_fraction(name: str, value: Any, *, allow_one: bool = False) -> float:
    """A float in [0, 1) (or [0, 1]); rejects bools, NaN and non-numbers."""
    hi = "1]" if allow_one else "1)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(name, value, f"a float in [0, {hi}")
    value = float(value)
    if math.isnan(value) or value < 0 or value > 1 or (value == 1 and not allow_one):
        raise InvalidParameterError(name, value, f"a float in [0, {hi}")
    return value


def check_nonnegative(name: str, value: Any, allowed: str = "a finite number >= 0") -> float:
    """A finite number >= 0; rejects bools, NaN, inf and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(name, value, allowed)
    if not (math.isfinite(value) and value >= 0):
        raise InvalidParameterError(name, value, allowed)
    return float(value)


def check_positive(name: str, value: Any, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    what = "a positive int" if integer else "a positive number"
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InvalidTypeError(name, value, what)
    if math.isnan(value) or value <= 0:
        raise InvalidParameterError(name, value, what)
    return value
