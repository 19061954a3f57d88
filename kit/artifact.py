"""Compressed artifacts: tensors in safetensors, structure in JSON. Loading runs no code.

An artifact is one safetensors file. Its header metadata holds, as JSON:
- ``builder``: the name (from :data:`slimkit.models.BUILDERS`) and kwargs that rebuild
  the original architecture, when known; otherwise ``load`` needs a ``model=`` template;
- ``modules``: for every layer whose type or shape the compression changed, the registered
  kind and constructor spec to rebuild it (quantized, sparse and pruned layers);
- ``aliases``: state-dict keys that share storage (tied weights) are stored once;
- ``sha256`` of the tensor bytes, so a corrupt or truncated file is refused.

Modules slimkit creates register here with :func:`register_module`: they expose
``spec() -> dict`` (JSON) and ``from_spec(spec) -> module`` (empty buffers of the right
shape and dtype, filled by ``load_state_dict``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import ArtifactError, check_module
from .layers import set_module

FORMAT = "slimkit-artifact"
VERSION = 1

# kind -> (class, spec_fn, build_fn)
_KINDS: dict[str, tuple[type, Callable[[nn.Module], dict], Callable[[dict], nn.Module]]] = {}


def register_module(kind: str):
    """Class decorator for slimkit layers with ``spec()`` and ``from_spec(spec)``."""

    def deco(cls):
        cls._slimkit_kind = kind
        _KINDS[kind] = (cls, lambda m: m.spec(), cls.from_spec)
        return cls

    return deco


def _conv_spec(m: nn.Module) -> dict:
    return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
                stride=list(m.stride), padding=m.padding if isinstance(m.padding, str) else list(m.padding),
                dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)


_STD: dict[str, tuple[type, Callable[[nn.Module], dict]]] = {
    "torch.Linear": (nn.Linear, lambda m: dict(in_features=m.in_features, out_features=m.out_features,
                                                bias=m.bias is not None)),
    "torch.Conv1d": (nn.Conv1d, _conv_spec),
    "torch.Conv2d": (nn.Conv2d, _conv_spec),
    "torch.Embedding": (nn.Embedding, lambda m: dict(num_embeddings=m.num_embeddings,
                                                      embedding_dim=m.embedding_dim, padding_idx=m.padding_idx)),
    "torch.LayerNorm": (nn.LayerNorm, lambda m: dict(normalized_shape=list(m.normalized_shape), eps=m.eps,
                                                      elementwise_affine=m.elementwise_affine,
                                                      bias=getattr(m, "bias", None) is not None)),
    "torch.BatchNorm1d": (nn.BatchNorm1d, lambda m: dict(num_features=m.num_features, eps=m.eps,
                                                          momentum=m.momentum, affine=m.affine)),
    "torch.BatchNorm2d": (nn.BatchNorm2d, lambda m: dict(num_features=m.num_features, eps=m.eps,
                                                          momentum=m.momentum, affine=m.affine)),
}
for _kind, (_cls, _spec) in _STD.items():
    _KINDS[_kind] = (_cls, _spec, lambda s, _cls=_cls: _cls(**s))


def _kind_of(m: nn.Module) -> str | None:
    kind = getattr(type(m), "_slimkit_kind", None)
    if kind is not None:
        return kind
    for kind, (cls, _) in _STD.items():
        if type(m) is cls:  # exact type: a user subclass may hold more than its constructor says
            return kind
    return None


def _structure(model: nn.Module) -> dict[str, dict]:
    out = {}
    for name, m in model.named_modules():
        kind = _kind_of(m)
        if kind is not None and name:
            out[name] = {"kind": kind, "spec": _KINDS[kind][1](m)}
    return out


def _tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, aliases, seen = {}, {}, {}
    for key, t in model.state_dict(keep_vars=False).items():
        if t.is_sparse or t.layout != torch.strided:
            raise ArtifactError(f"state-dict entry {key!r} is a {t.layout} tensor; slimkit layers store "
                                "sparse data as dense index/value buffers")
        sig = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and sig in seen:
            aliases[key] = seen[sig]
            continue
        seen[sig] = key
        tensors[key] = t.detach().to("cpu").contiguous()
    return tensors, aliases


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def to_bytes(model: nn.Module, info: dict[str, Any] | None = None) -> bytes:
    """The artifact as bytes: what :func:`save` writes and :func:`size` counts."""
    from safetensors.torch import save

    check_module("model", model)
    tensors, aliases = _tensors(model)
    meta = {
        "format": FORMAT, "version": VERSION,
        "builder": getattr(model, "_slimkit_builder", None),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "modules": _structure(model),
        "aliases": aliases,
        "sha256": _digest(tensors),
        "info": info or {},
    }
    return save(tensors, metadata={"slimkit": json.dumps(meta, default=str)})


def save(model: nn.Module, path: str | os.PathLike, *, info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a compressed artifact (atomically). ``info`` is extra JSON metadata."""
    path = Path(path)
    data = to_bytes(model, info)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def size(model: nn.Module) -> int:
    """Bytes of the artifact ``save`` would write for ``model`` (index bytes included)."""
    return len(to_bytes(model))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The artifact's JSON metadata, without loading tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("slimkit")
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ArtifactError(f"{path} is not a readable slimkit artifact: {e}") from e
    if raw is None:
        raise ArtifactError(f"{path} is a safetensors file but not a slimkit artifact")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} has corrupt slimkit metadata: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        got = meta if not isinstance(meta, dict) else f"format {meta.get('format')!r} v{meta.get('version')!r}"
        raise ArtifactError(f"{path} has {got}; this slimkit reads {FORMAT!r} v{VERSION}")
    for key, kind in (("sha256", str), ("modules", dict), ("aliases", dict), ("model_class", str)):
        if not isinstance(meta.get(key), kind):
            raise ArtifactError(f"{path} has corrupt slimkit metadata: {key!r} missing or not a {kind.__name__}")
    return meta


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a saved model exactly. ``model`` is an (uncompressed) instance of the original
    architecture, needed when the artifact names no registered builder; it is not modified."""
    from safetensors.torch import load_file

    from .models import BUILDERS, build

    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise ArtifactError(f"{path} is truncated or corrupt: {e}") from e
    if _digest(tensors) != meta["sha256"]:
        raise ArtifactError(f"{path} is corrupt: its tensor data does not match the recorded checksum")

    if model is not None:
        check_module("model", model, "a torch.nn.Module (an instance of the saved architecture)")
        skeleton = copy.deepcopy(model)
    elif meta.get("builder") and meta["builder"]["name"] in BUILDERS:
        skeleton = build(meta["builder"]["name"], **meta["builder"]["kwargs"])
    else:
        named = meta.get("builder") or {}
        raise ArtifactError(
            f"{path} holds a {meta['model_class']} with no registered builder"
            f"{' (' + repr(named.get('name')) + ')' if named else ''}: pass model=<an instance of that class> "
            "or register one with slimkit.models.register_builder")

    for name, entry in meta["modules"].items():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in _KINDS:
            raise ArtifactError(f"{path}: layer {name!r} has unknown kind {kind!r}")
        try:
            layer = _KINDS[kind][2](entry["spec"])
        except Exception as e:  # a spec that does not build: corrupt or from another version
            raise ArtifactError(f"{path}: layer {name!r} ({kind}) cannot be rebuilt from its spec: {e}") from e
        try:
            set_module(skeleton, name, layer)
        except AttributeError as e:
            raise ArtifactError(f"{path}: the given model has no layer {name!r}; "
                                "is it the architecture the artifact was saved from?") from e
    state = dict(tensors)
    for key, target in meta["aliases"].items():
        if target not in tensors:
            raise ArtifactError(f"{path} is corrupt: alias {key!r} points to missing tensor {target!r}")
        state[key] = tensors[target]
    try:
        skeleton.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ArtifactError(f"{path} does not fit the model: {e}") from e
    if meta.get("builder"):
        skeleton._slimkit_builder = meta["builder"]
    return skeleton.eval()
