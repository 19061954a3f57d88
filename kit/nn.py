"""Finding the layers a method can act on, and replacing modules by dotted name."""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn

from .errors import NothingToCompressError

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def is_hf_conv1d(m: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2's attention and MLP): a Linear whose weight is stored
    transposed, (in_features, out_features). Recognised by shape, without importing transformers."""
    w = getattr(m, "weight", None)
    return (type(m).__name__ == "Conv1D" and isinstance(getattr(m, "nf", None), int)
            and isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == m.nf)


def is_linear_like(m: nn.Module) -> bool:
    """nn.Linear or transformers' Conv1D: y = x W^T + b with a 2-d weight."""
    return isinstance(m, nn.Linear) or is_hf_conv1d(m)


def linear_weight(m: nn.Module) -> torch.Tensor:
    """The (out_features, in_features) weight of a Linear-like layer (a view for Conv1D)."""
    return m.weight.t() if is_hf_conv1d(m) else m.weight


def is_parametrized(m: nn.Module) -> bool:
    """True when the layer's weight is computed by a parametrization (weight_norm, spectral_norm...):
    its stored tensors are not the weight a method would change."""
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(m)


def unparametrize(m: nn.Module) -> None:
    """Fold ``m``'s parametrizations (weight_norm, spectral_norm...) into plain Parameters holding
    the computed tensors, in place. Not ``parametrize.remove_parametrizations``: it deletes the
    properties from the generated Parametrized* class, which a deep copy shares with the original
    model, so the caller's model would lose its ``weight``."""
    values = {p: (getattr(m, p).detach().clone(), next(plist.parameters()).requires_grad)
              for p, plist in m.parametrizations.items()}
    del m._modules["parametrizations"]
    m.__class__ = type(m).__bases__[0]
    for p, (value, grad) in values.items():
        m.register_parameter(p, nn.Parameter(value, requires_grad=grad))


def param_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every module that holds parameters of its own (recurse=False), once each, in order: what a
    complete report has one row for."""
    seen: set[int] = set()
    for name, m in model.named_modules(remove_duplicate=False):
        if id(m) in seen:
            continue
        if any(True for _ in m.parameters(recurse=False)):
            seen.add(id(m))
            yield name, m


def own_param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False))


def matches(name: str, patterns: Iterable[str] | None) -> bool:
    """True if ``name`` matches any glob pattern ("encoder.*.query", "fc?")."""
    return bool(patterns) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_target(m: nn.Module, types: tuple[type, ...]) -> bool:
    """``m`` is one of ``types``; transformers' Conv1D counts as the ``nn.Linear`` it is."""
    return isinstance(m, types) or (nn.Linear in types and is_hf_conv1d(m))


def named_targets(model: nn.Module, types: tuple[type, ...] = WEIGHTED, *,
                  include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                  method: str = "this method") -> Iterator[tuple[str, nn.Module]]:
    """Modules of ``types`` (see :func:`is_target`; optionally filtered by glob patterns), in
    definition order.

    Raises NothingToCompressError when nothing qualifies: a silent no-op would let a user
    believe a model was compressed when it was not.
    """
    include = list(include) if include else None
    exclude = list(exclude) if exclude else []
    found = [(n, m) for n, m in model.named_modules()
             if is_target(m, types) and (include is None or matches(n, include)) and not matches(n, exclude)]
    if not found:
        kinds = ", ".join(t.__name__ for t in types)
        raise NothingToCompressError(
            f"{type(model).__name__} has no layer {method} can act on "
            f"(looked for {kinds}{'; include=' + repr(include) if include else ''}"
            f"{'; exclude=' + repr(exclude) if exclude else ''})")
    yield from found


def refuse_compressed(model: nn.Module, verb: str, advice: str, what: str = "model",
                      include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                      allow=None) -> None:
    """Raise a clear error when a layer ``verb`` would act on (selected by ``include``/``exclude``)
    is one a slimkit verb already replaced (integer, codebook or sparse storage) and ``allow(layer)``
    (the compressed layers ``verb`` composes with) does not accept. Compressed layers outside the
    selection stay as they are, so per-layer mixes (int4 here, int8 there) are built with one call
    per group. ``advice`` says which order works."""
    from .errors import InvalidParameterError

    for name, m in model.named_modules():
        kind = getattr(type(m), "_slimkit_kind", None)
        if not name or not kind or (include and not matches(name, include)) or matches(name, exclude):
            continue
        if allow is not None and allow(m):
            continue
        state = "sparse integer" if kind.startswith("sparse.int.") else \
            "sparse" if kind.startswith("sparse.") else "quantized"
        raise InvalidParameterError(what, f"<layer {name!r}: {type(m).__name__}>",
                                    f"float layers: {verb} cannot follow a step that stored {name!r} "
                                    f"{state} ({type(m).__name__}); {advice} (or leave it out with include/exclude)")


def unselected_reason(name: str, include: Iterable[str] | None, exclude: Iterable[str] | None) -> str:
    """Why ``named_targets`` left layer ``name`` out (for the "skipped" rows of a report)."""
    if exclude and matches(name, exclude):
        return f"excluded by exclude={list(exclude)!r}"
    if include and not matches(name, include):
        return f"not matched by include={list(include)!r}"
    return "not selected"


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(get_module(model, parent_name), child, new)


def param_count(module: nn.Module) -> int:
    """Weights and biases as the float model holds them. slimkit's quantized and sparse layers
    keep their weight in buffers (int8, packed, CSR...): they count its logical shape, so a
    compressed model and its original compare (int8 does not have "0 parameters")."""
    total = 0
    for m in module.modules():
        shape = getattr(m, "shape", None) if hasattr(type(m), "_slimkit_kind") else None
        if shape:
            total += math.prod(shape)
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor) and not isinstance(bias, nn.Parameter):
                total += bias.numel()
        total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (dtype-aware, no double counting),
    looking inside sparse tensors and tensor subclasses (torchao's int8 weights keep int8
    data plus scales as inner tensors)."""

    def visit(t: torch.Tensor) -> int:
        data = t.data if isinstance(t, nn.Parameter) else t
        if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):
            names, _ = data.__tensor_flatten__()
            return sum(visit(getattr(data, n)) for n in names)
        if data.layout == torch.sparse_coo:
            return visit(data._indices()) + visit(data._values())
        if data.layout == torch.sparse_csr:
            return visit(data.crow_indices()) + visit(data.col_indices()) + visit(data.values())
        return data.numel() * data.element_size()

    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += visit(t)
    return total
