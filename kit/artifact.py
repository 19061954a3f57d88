"""Compressed artifacts: tensors in safetensors, structure in JSON. Loading runs no code.

An artifact is one safetensors file. Its header metadata holds, as JSON:
- ``builder``: the name (from :data:`slimkit.zoo.models.BUILDERS`) and kwargs that rebuild
  the original architecture, when known; otherwise ``load`` needs a ``model=`` template;
- ``modules``: for every layer whose type or shape the compression changed, the registered
  kind and constructor spec to rebuild it (quantized, sparse and pruned layers);
- ``aliases``: state-dict keys that share storage (tied weights) are stored once;
- ``sha256`` over the tensors (names, dtypes, shapes, bytes) AND every other metadata field
  (canonical JSON), so a corrupt, truncated or edited file is refused. It is a checksum, not a
  signature: whoever can write the file can recompute it, so ``load`` also validates everything
  the metadata claims against the stored tensors before it allocates anything;
- ``coded`` and ``decoded_sha256`` (version 3, ``save(..., entropy=True)``): integer tensors
  stored entropy-coded as byte vectors (:mod:`slimkit.entropy`), each entry naming its coder,
  dtype and shape, and a digest of the decoded tensors. Default saves stay version 2.

``model_class`` is informative only: no class named in a file is ever imported.

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
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from . import entropy as _entropy
from .artifact_checks import check_aliases, check_json, check_spec
from .errors import ArtifactError, InvalidParameterError, check_module
from .jsonsafe import strict_loads
from .nn import set_module
from .report import HISTORY, history

FORMAT = "slimkit-artifact"
VERSION = 2  # v2: the checksum covers the metadata too (v1 files cannot be verified)
CODED_VERSION = 3  # v3: v2 plus entropy-coded integer tensors (``coded``, ``decoded_sha256``)

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


# --- checksum ----------------------------------------------------------------------------------

def _canonical(obj: Any) -> bytes:
    """One byte string per JSON value: what the checksum covers (key order and spacing free)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """sha256 of the metadata (all but ``sha256``) and the tensors. The index (names, dtypes,
    shapes) is hashed as JSON before the raw bytes, so every byte count is fixed by the index."""
    keys = sorted(tensors)
    index = [[k, str(tensors[k].dtype), list(tensors[k].shape)] for k in keys]
    h = hashlib.sha256(_canonical({"meta": {k: v for k, v in meta.items() if k != "sha256"}, "tensors": index}))
    for k in keys:
        t = tensors[k]
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def to_bytes(model: nn.Module, info: dict[str, Any] | None = None, *, entropy: bool = False) -> bytes:
    """The artifact as bytes: what :func:`save` writes and :func:`size` counts. ``entropy``:
    integer tensors are entropy-coded, each with its smallest coder (a version-3 file)."""
    from safetensors.torch import save

    check_module("model", model)
    tensors, aliases = _tensors(model)
    meta = {
        "format": FORMAT, "version": VERSION,
        "builder": getattr(model, "_slimkit_builder", None),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "modules": _structure(model),
        "aliases": aliases,
        "info": info or {},
    }
    if history(model):  # only when a verb made it, so plain saves stay byte-identical to older ones
        meta["history"] = history(model)
    try:  # the metadata as the reader will parse it (tuples -> lists, other objects -> str)
        meta = json.loads(json.dumps(meta, default=str, allow_nan=False))
    except ValueError as e:
        raise InvalidParameterError(f"info must hold JSON values with finite numbers: {e}") from e
    if entropy:
        decoded = tensors
        tensors, coded = _entropy.encode_all(decoded)
        meta.update(version=CODED_VERSION, coded=coded, decoded_sha256=_entropy.digest(decoded, coded))
    meta["sha256"] = _digest(tensors, meta)
    return save(tensors, metadata={"slimkit": json.dumps(meta)})


def save(model: nn.Module, path: str | os.PathLike, *, info: dict[str, Any] | None = None,
         entropy: bool = False) -> Path:
    """Write ``model`` as a compressed artifact (atomically). ``info`` is extra JSON metadata;
    ``entropy=True`` entropy-codes its integer tensors (int8 weights, packed indices, masks,
    sparse indices): smaller, loadable by slimkit versions that read version-3 artifacts."""
    path = Path(path)
    data = to_bytes(model, info, entropy=entropy)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def size(model: nn.Module, *, entropy: bool = False) -> int:
    """Bytes of the artifact ``save`` would write for ``model`` (index bytes, metadata and, with
    ``entropy``, the coders' tables included): the saved file's size exactly."""
    return len(to_bytes(model, entropy=entropy))


# --- reading and validating metadata -----------------------------------------------------------

def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The artifact's JSON metadata, without loading tensors (and so not yet checksum-verified)."""
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
        meta = strict_loads(raw)
    except (ValueError, RecursionError) as e:  # bad JSON, NaN, duplicate keys, absurd nesting or ints
        raise ArtifactError(f"{path} has corrupt slimkit metadata: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT!r} file")
    if meta.get("version") == 1:
        raise ArtifactError(f"{path} is a version-1 slimkit artifact, whose checksum does not cover its "
                            f"metadata, so it cannot be verified; re-save the model with this slimkit (v{VERSION})")
    if meta.get("version") not in (VERSION, CODED_VERSION):
        raise ArtifactError(f"{path} has {FORMAT!r} v{meta.get('version')!r}; "
                            f"this slimkit reads v{VERSION} and v{CODED_VERSION}")
    fields = (("sha256", str), ("modules", dict), ("aliases", dict), ("model_class", str), ("info", dict))
    if meta["version"] == CODED_VERSION:
        fields += (("coded", dict), ("decoded_sha256", str))
    for key, kind in fields:
        if not isinstance(meta.get(key), kind):
            raise ArtifactError(f"{path} has corrupt slimkit metadata: {key!r} missing or not a {kind.__name__}")
    builder = meta.get("builder")
    if builder is not None and not (isinstance(builder, dict) and isinstance(builder.get("name"), str)
                                    and isinstance(builder.get("kwargs"), dict)):
        raise ArtifactError(f"{path} has corrupt slimkit metadata: 'builder' is not null or "
                            "{'name': str, 'kwargs': dict}")
    steps = meta.get("history", {})
    if not (isinstance(steps, dict) and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                            for v in steps.values())):
        raise ArtifactError(f"{path} has corrupt slimkit metadata: 'history' is not {{layer: [step, ...]}}")
    return meta


# --- rebuilding ------------------------------------------------------------------------------

def _base(path, meta: dict, model: nn.Module | None) -> nn.Module:
    """The architecture before compression: a copy of the template, or the named builder's."""
    from .zoo.models import BUILDERS, build

    if model is not None:
        return copy.deepcopy(model)
    builder = meta.get("builder")
    if builder and builder["name"] in BUILDERS:
        check_json(f"{path}: builder kwargs", builder["kwargs"])
        try:
            return build(builder["name"], **builder["kwargs"])
        except Exception as e:  # kwargs the builder does not take
            raise ArtifactError(f"{path}: builder {builder['name']!r} cannot be called with its kwargs: {e}") from e
    raise ArtifactError(
        f"{path} holds a {meta['model_class']} with no registered builder"
        f"{' (' + repr(builder.get('name')) + ')' if builder else ''}: pass model=<an instance of that class> "
        "or register one with slimkit.zoo.models.register_builder")


# The modules whose layers register a kind here; `import slimkit` loads them lazily, so a fresh
# process that only loads an artifact imports them before reading its kinds.
LAYER_MODULES = ("quant.layers", "quant.fakequant", "quant.rnn", "quant.codebook_layers", "sparse.layers",
                 "sparse.quantized")


def _replace_layers(path, skeleton: nn.Module, meta: dict) -> None:
    """Swap in each layer the compression changed. Only existing submodules are replaced: a
    name cannot add attributes (or reach ``__class__`` and the like)."""
    for module in LAYER_MODULES:
        import_module(f"{__package__}.{module}")
    for name, entry in meta["modules"].items():
        kind, spec = check_spec(path, name, entry, _KINDS)
        if not _has_module(skeleton, name):
            raise ArtifactError(f"{path}: the model has no layer {name!r}; "
                                "is it the architecture the artifact was saved from?")
        try:
            layer = _KINDS[kind][2](spec)
        except Exception as e:  # a spec that does not build: corrupt or from another version
            raise ArtifactError(f"{path}: layer {name!r} ({kind}) cannot be rebuilt from its spec: {e}") from e
        set_module(skeleton, name, layer)


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        return bool(name) and isinstance(model.get_submodule(name), nn.Module)
    except AttributeError:
        return False


def _meta_bytes(module: nn.Module) -> int:
    """Bytes the file's metadata made ``module`` allocate (meta tensors; a template's are real)."""
    ts = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in ts if t.is_meta)


def _check_fits(path, skeleton: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The skeleton's state dict must be exactly the stored tensors: same keys, same shapes,
    same dtypes (a float tensor may change precision: a template stays fp32 when saved as fp16)."""
    expected = skeleton.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtifactError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                            f" ({len(missing)} and {len(unexpected)} keys)")
    for key, want in expected.items():
        got = state[key]
        same_dtype = got.dtype == want.dtype or (got.dtype.is_floating_point and want.dtype.is_floating_point)
        if got.shape != want.shape or not same_dtype:
            raise ArtifactError(f"{path} does not fit the model: {key!r} is stored as {got.dtype} "
                                f"{list(got.shape)}, the layer needs {want.dtype} {list(want.shape)}")


_GROWTH = 64  # compression takes off less than this (int4 is 8x, 90% sparse ~10x); coded tensors
# count at their declared (decoded) size, each bounded by its own payload (entropy.declared)
_SLACK = 256 * 2**20  # room for derived buffers (position ids, masks) of small models


def _check_size(path, skeleton: nn.Module, what: str, stored: int, growth: int) -> None:
    need = _meta_bytes(skeleton)
    if need > growth * stored + _SLACK:
        raise ArtifactError(f"{path}: its metadata asks for {what} of {need:,} bytes from {stored:,} "
                            "stored bytes; refused")


class _SkipInitOnMeta(TorchFunctionMode):
    """Meta tensors hold no values: skip random initialisation on them. (torch runs it through
    a Python reference that imports torch._dynamo, 5-25 s on the first load of a process.)"""

    _FILLS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_, torch.Tensor.bernoulli_,
              torch.Tensor.exponential_, torch.Tensor.cauchy_, torch.Tensor.log_normal_, torch.Tensor.geometric_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = args[0] if args else kwargs.get("tensor")  # nn.init functions re-dispatch by keyword
        if (func in self._FILLS or getattr(func, "__module__", "") == "torch.nn.init") and getattr(t, "is_meta", False):
            return t
        return func(*args, **kwargs)


def _validate(path, meta: dict, model: nn.Module | None, state: dict[str, torch.Tensor], stored: int) -> None:
    """Build the whole model on the meta device (shapes, no memory) and check it against the
    file before anything real is allocated: the final model must hold exactly the stored
    (for coded tensors: declared) tensors, and what is built on the way, decoded tensors
    included, is bounded by the ``stored`` bytes."""
    growth = _GROWTH
    with torch.device("meta"), _SkipInitOnMeta():
        skeleton = _base(path, meta, model)
        _check_size(path, skeleton, "an original architecture", stored, growth)
        _replace_layers(path, skeleton, meta)
        _check_fits(path, skeleton, state)
        _check_size(path, skeleton, "a model", stored, growth)  # stored tensors + buffers derived at build


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a saved model exactly. ``model`` is an (uncompressed) instance of the original
    architecture, needed when the artifact names no registered builder; it is not modified.
    Any inconsistency in the file raises :class:`~slimkit.errors.ArtifactError`."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if model is not None:
        check_module("model", model, "a torch.nn.Module (an instance of the saved architecture)")
    try:
        tensors = load_file(str(path))  # memory bounded by the file size
    except Exception as e:
        raise ArtifactError(f"{path} is truncated or corrupt: {e}") from e
    if _digest(tensors, meta) != meta["sha256"]:
        raise ArtifactError(f"{path} is corrupt or was edited: its tensors and metadata do not match "
                            "the recorded checksum")
    check_aliases(path, meta["aliases"], tensors)
    coded = meta.get("coded", {})
    shapes = {**tensors, **_entropy.declared(path, coded, tensors)}  # coded: meta tensors, no memory
    # the bytes the file holds, coded tensors at their declared size (each bounded by its payload)
    stored = sum(t.numel() * t.element_size() for t in shapes.values())
    stored += sum(shapes[target].numel() * shapes[target].element_size() for target in meta["aliases"].values())
    _validate(path, meta, model, {**shapes, **{k: shapes[t] for k, t in meta["aliases"].items()}}, stored)
    if coded:  # declared shapes now fit the bounded skeleton; decoding works a chunk at a time
        tensors = _entropy.decode_all(path, coded, tensors, meta["decoded_sha256"])
    state = {**tensors, **{key: tensors[target] for key, target in meta["aliases"].items()}}
    skeleton = _base(path, meta, model)
    _replace_layers(path, skeleton, meta)
    try:
        skeleton.load_state_dict(state, strict=True, assign=True)
    except Exception as e:  # a layer's own loading hook disagreeing with the checks above
        raise ArtifactError(f"{path} does not fit the model: {e}") from e
    if meta.get("builder"):
        skeleton._slimkit_builder = meta["builder"]
    if meta.get("history"):  # the steps each layer went through, for the next verb's report
        setattr(skeleton, HISTORY, meta["history"])
    return skeleton.eval()
