"""Untrusted JSON data: parsed strictly, then walked within limits.

Run parameters (papermill writes them into a notebook as source code) and artifact metadata
(it chooses the modules ``load`` builds) both come from outside slimkit. One walker bounds
both; each caller turns a :class:`Violation` into its own error and wording.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    depth: int                       # lists and dicts may sit at depths below this (the top is 0)...
    int_range: tuple[int, int]       # inclusive
    max_str: int                     # characters in one string
    max_len: int | None = None       # items in one list or dict
    max_total: int | None = None     # items in all lists and dicts together
    max_key: int | None = None       # dict keys must be str of at most this length (None: unchecked)
    leaves_too: bool = False         # ...and, if set, every other value too


class Violation(Exception):
    """A value outside the limits. ``kind``: "type", "depth", "int", "float", "str", "len" or
    "total"; ``where``: the path to it (``name[0]['k']``, ``name[0] key`` for a dict key);
    ``value``: the offending value ("total": the whole value)."""

    def __init__(self, kind: str, where: str, value: Any):
        super().__init__(f"{where}: {kind}")
        self.kind, self.where, self.value = kind, where, value


def walk(value: Any, where: str, limits: Limits, *, top_inf: bool = False) -> Any:
    """``value`` as plain JSON data (tuples become lists), or :class:`Violation`. Types must be
    exact: a subclass may serialise differently from what was checked. ``top_inf``: the top
    value may be an infinite float (never NaN)."""
    count = 0

    def plain(v: Any, at: str, depth: int) -> Any:
        nonlocal count
        kind = type(v)
        if depth >= limits.depth and (limits.leaves_too or kind in (list, tuple, dict)):
            raise Violation("depth", at, v)
        if v is None or kind is bool:
            return v
        if kind is int:
            if not limits.int_range[0] <= v <= limits.int_range[1]:
                raise Violation("int", at, v)
            return v
        if kind is float:
            if not math.isfinite(v) and not (top_inf and depth == 0 and not math.isnan(v)):
                raise Violation("float", at, v)
            return v
        if kind is str:
            if len(v) > limits.max_str:
                raise Violation("str", at, v)
            return v
        if kind not in (list, tuple, dict):
            raise Violation("type", at, v)
        if limits.max_len is not None and len(v) > limits.max_len:
            raise Violation("len", at, v)
        count += len(v)
        if limits.max_total is not None and count > limits.max_total:
            raise Violation("total", where, value)
        if kind is not dict:
            return [plain(x, f"{at}[{i}]", depth + 1) for i, x in enumerate(v)]
        if limits.max_key is not None:
            for k in v:
                if type(k) is not str:
                    raise Violation("type", f"{at} key", k)
                if len(k) > limits.max_key:
                    raise Violation("str", f"{at} key", k)
        return {k: plain(x, f"{at}[{k!r}]", depth + 1) for k, x in v.items()}

    return plain(value, where, 0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError(f"duplicate key among {sorted(k for k, _ in pairs)[:5]}")
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def strict_loads(raw: str) -> Any:
    """``json.loads`` that refuses duplicate keys and NaN/Infinity with a ValueError (absurd
    nesting still raises RecursionError)."""
    return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
