"""What an artifact's metadata may claim, checked before any constructor sees it: layer specs
(known fields within their ranges, every value bounded) and tensor aliases. The file comes from
outside: whoever can write it can also recompute its checksum."""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch

from .errors import ArtifactError
from .jsonsafe import Limits, Violation, walk

# Spec fields shared by the built-in and slimkit layers, with the values they allow. A spec is
# checked against this table before any constructor sees it; other fields still get check_json.
_BIG = 2**40  # no real dimension is larger; bounds every int a spec or builder may hold
_DIMS = ("in_features", "out_features", "in_channels", "out_channels", "num_embeddings", "embedding_dim",
         "num_features")


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= _BIG


def _int_list(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and 0 < len(v) <= 8 and all(_is_int(x, lo) for x in v)


_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{d: (_is_int, "an int >= 0") for d in _DIMS},
    "groups": (lambda v: _is_int(v, 1), "an int >= 1"),
    "kernel_size": (_int_list(1), "a list of ints >= 1"),
    "stride": (_int_list(1), "a list of ints >= 1"),
    "dilation": (_int_list(1), "a list of ints >= 1"),
    "normalized_shape": (_int_list(1), "a list of ints >= 1"),
    "shape": (_int_list(0), "a list of ints >= 0"),
    "padding": (lambda v: v in ("same", "valid") or _int_list(0)(v), "'same', 'valid' or a list of ints >= 0"),
    "padding_mode": (lambda v: v in ("zeros", "reflect", "replicate", "circular"), "a torch padding mode"),
    "padding_idx": (lambda v: v is None or _is_int(v), "null or an int >= 0"),
    "eps": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1, "a number in [0, 1]"),
    "momentum": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1),
                 "null or a number in [0, 1]"),
    "bits": (lambda v: _is_int(v, 1) and v <= 32, "an int in [1, 32]"),
    "group_size": (lambda v: v is None or _is_int(v, 1), "null or an int >= 1"),
    **{b: (lambda v: isinstance(v, bool), "true or false") for b in ("elementwise_affine", "affine")},
    # a flag, or (sparse layers) null or [shape, dtype] of a stored bias
    "bias": (lambda v: isinstance(v, bool) or v is None or (
        isinstance(v, list) and len(v) == 2 and _int_list(0)(v[0]) and isinstance(v[1], str)),
             "true, false, null or [shape, dtype]"),
}


_LIMITS = Limits(depth=9, int_range=(-_BIG, _BIG), max_str=256, max_len=4096, leaves_too=True)
_WORDS = {"depth": "is nested too deeply", "int": "holds the out-of-range int {}",
          "float": "holds the non-finite number {}", "len": "holds a container of {} items",
          "str": "holds a string of {} characters", "type": "holds a {}"}


def check_json(where: str, v: Any) -> None:
    """Bound a spec or builder value: finite numbers, ints within +-2**40, small containers."""
    try:
        walk(v, where, _LIMITS)
    except Violation as e:
        shown = len(e.value) if e.kind in ("len", "str") else type(e.value).__name__ if e.kind == "type" else e.value
        raise ArtifactError(f"{e.where} " + _WORDS[e.kind].format(shown)) from None


def check_spec(path, name: str, entry: Any, kinds: Collection[str]) -> tuple[str, dict]:
    """(kind, spec) of one layer entry, if its kind is one of ``kinds`` and its spec within bounds."""
    if not (isinstance(entry, dict) and set(entry) == {"kind", "spec"} and isinstance(entry["spec"], dict)):
        raise ArtifactError(f"{path}: layer {name!r} is not {{'kind': str, 'spec': dict}}")
    kind, spec = entry["kind"], entry["spec"]
    if not isinstance(kind, str) or kind not in kinds:
        raise ArtifactError(f"{path}: layer {name!r} has unknown kind {kind!r}; known: {sorted(kinds)}")
    check_json(f"{path}: layer {name!r} spec", spec)
    for field, v in spec.items():
        ok, allowed = _FIELDS.get(field, (None, ""))
        if ok is not None and not ok(v):
            raise ArtifactError(f"{path}: layer {name!r} ({kind}) has {field}={v!r}; allowed: {allowed}")
    return kind, spec


def check_aliases(path, aliases: dict, tensors: dict[str, torch.Tensor]) -> None:
    """An alias names a state-dict key that is not stored and points at one that is: it can
    neither shadow a stored tensor nor chain to another alias."""
    for key, target in aliases.items():
        if key in tensors:
            raise ArtifactError(f"{path} is corrupt: alias {key!r} would replace the stored tensor of that name")
        if not isinstance(target, str) or target not in tensors:
            raise ArtifactError(f"{path} is corrupt: alias {key!r} points to missing tensor {target!r}")
