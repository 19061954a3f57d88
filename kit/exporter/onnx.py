"""Writing a (lowered) model to ONNX with torch.onnx's dynamo exporter, and checking the file.

The dynamo exporter is the one that maps ``quantized_decomposed`` ops to QuantizeLinear /
DequantizeLinear. Batch (dim 0) of every input is dynamic, and so is the sequence (dim 1) of
integer inputs (token ids, masks); the file is self-contained (no ``.onnx.data`` side file).
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import inputs as _inputs

# ONNX Runtime session settings for slimkit's QDQ graphs. Its DQMatMulToMatMulNBits fusion turns
# DequantizeLinear(int8 weight) + MatMul into MatMulNBits, whose default accuracy level (4) quantizes
# the activations to int8 *again* (per block): measured on MiniLM, mean cosine 0.99755 instead of
# torch's 0.9987. Level 1 keeps the int8 weights in the fused kernel and computes in fp32, exactly
# what the graph says. The thread pool does not spin after a call (it slows what runs next).
ORT_SESSION_CONFIG = {"session.qdq_matmulnbits_accuracy_level": "1", "session.intra_op.allow_spinning": "0"}


def ort_session_options():
    """``onnxruntime.SessionOptions`` with :data:`ORT_SESSION_CONFIG` applied (every slimkit session)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    for k, v in ORT_SESSION_CONFIG.items():
        so.add_session_config_entry(k, v)
    return so


def forward_names(model: nn.Module) -> list[str]:
    """Names of ``model.forward``'s positional parameters (the ONNX input names)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def args_kwargs(example: _inputs.ModelInputs) -> tuple[tuple, dict]:
    """The (args, kwargs) a model is called with under slimkit.inputs' rule."""
    if isinstance(example, _inputs.Inputs):
        return example.args, example.kwargs
    if isinstance(example, dict):
        return (), dict(example)
    return tuple(_inputs.tensors(example)), {}


def _dims(t: torch.Tensor) -> dict[int, Any]:
    from torch.export import Dim

    d = {0: Dim.AUTO} if t.dim() >= 1 else {}
    if t.dim() >= 2 and not t.is_floating_point():
        d[1] = Dim.AUTO
    return d


def dynamic_shapes(model: nn.Module, example: _inputs.ModelInputs):
    """Dynamic dims for every tensor, keyed by forward's parameter names (so nested inputs get a
    matching nested spec); None if forward cannot be bound. Dim.AUTO keeps a dim static when the
    model needs it."""
    args, kwargs = args_kwargs(example)
    try:
        sig = inspect.signature(model.forward)
        bound = sig.bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values() if p.name in bound):
        return None
    tree_map = torch.utils._pytree.tree_map
    return {k: tree_map(lambda t: _dims(t) if isinstance(t, torch.Tensor) else None, v) for k, v in bound.items()}


def write_onnx(model: nn.Module, example: _inputs.ModelInputs, path: Path, *, dynamic: bool = True,
               opset: int | None = None) -> None:
    """torch.onnx.export (dynamo) of ``model`` on ``example`` into the single file ``path``."""
    kwargs: dict[str, Any] = {"dynamo": True, "external_data": False, "optimize": True, "verbose": False}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic:
        kwargs["dynamic_shapes"] = dynamic_shapes(model, example)
    args, kwargs["kwargs"] = args_kwargs(example)
    if args and isinstance(args[-1], dict) and not kwargs["kwargs"]:
        args += ({},)  # torch.onnx.export reads a trailing dict as keyword inputs; this one is an argument
    # verbose=False silences its progress prints (no process-wide stdout redirect: another thread's
    # output would be swallowed while it runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), **kwargs)


def feed(session_inputs: list[str], positional: list[str], args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """The ONNX inputs by name from a call's args/kwargs (positional by forward's names; nested
    inputs, e.g. one dict argument, by the flattened tensor order the exporter uses)."""
    given = dict(zip(positional, args))
    given.update(kwargs)
    if len(args) > len(positional):  # models without a usable signature: ONNX input order
        given.update(zip(session_inputs, args))
    if not all(isinstance(given.get(n), torch.Tensor) for n in session_inputs):
        leaves = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if len(leaves) == len(session_inputs):
            given = dict(zip(session_inputs, leaves))
    return given
