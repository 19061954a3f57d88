"""Activation calibration: run data through a model and record each target layer's input range
(static int8 scales) and a sample of its inputs (the output SQNR each report row shows)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .. import inputs as _inputs
from ..data import batch_errors
from ..errors import InvalidParameterError, InvalidTypeError
from ..inputs import Inputs
from ..nn import get_module


def calibrate(model: nn.Module, data, names: list[str], progress, max_rows: int = 512) -> dict[str, dict]:
    """Run ``data`` through ``model``, recording each target's input range and a sample of inputs."""
    stats: dict[str, dict] = {n: {"lo": math.inf, "hi": -math.inf, "sample": []} for n in names}

    def hook(name):
        def pre(_mod, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
                return
            st = stats[name]
            st["lo"] = min(st["lo"], x.min().item())
            st["hi"] = max(st["hi"], x.max().item())
            if sum(len(s) for s in st["sample"]) < max_rows:
                st["sample"].append(x.detach()[: max(1, max_rows // 8)].clone())
        return pre

    handles = [get_module(model, n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        run_batches(model, input_batches(data), progress)
    finally:
        for h in handles:
            h.remove()
    for st in stats.values():
        st["sample"] = st["sample"] and [torch.cat(st["sample"])]
    return stats


def input_range(stats: dict | None, layer: nn.Module) -> tuple[float, float] | None:
    """A layer's calibrated input range; None when it saw no float input or takes none (Embedding)."""
    if not stats or not math.isfinite(stats["lo"]) or isinstance(layer, nn.Embedding):
        return None
    return stats["lo"], stats["hi"]


def _chunks(x: torch.Tensor, n: int = 128) -> list[torch.Tensor]:
    return [x[i:i + n] for i in range(0, len(x), n)]


def run_batches(model: nn.Module, batches: list, progress, stage: str = "calibrate", name: str = "activations"):
    """Run each batch through ``model`` in eval mode without gradients (hooks record what they need)."""
    progress.emit("start", stage, 0, len(batches))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, x in enumerate(batches):
                _call(model, x, i, name)
                progress.emit("progress", stage, i + 1, len(batches))
    finally:
        model.train(was)
    progress.emit("end", stage, len(batches), len(batches))


def input_batches(data, name: str = "activations") -> list:
    """Model inputs from a calibration argument (the forms in :func:`quantize`'s docstring);
    ``name`` is the argument errors name."""
    if isinstance(data, torch.Tensor):
        return _chunks(data)
    if isinstance(data, (Inputs, Mapping)):
        return [_inputs.check_inputs(data, name)]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return _chunks(data[0])  # (X, y)
    if hasattr(data, "X") and isinstance(getattr(data, "X"), torch.Tensor):  # slimkit.data.Split
        return _chunks(data.X)
    if isinstance(data, DataLoader):  # batches of (inputs, targets), or of inputs
        out = [b[0] if isinstance(b, (tuple, list)) else b for b in data]
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        out = list(data)  # each element is one batch, called by slimkit.inputs' rule
    else:
        raise InvalidTypeError(name, data, "calibration data: a tensor, (X, y), a Split, a DataLoader, "
                               "or an iterable of batches (tensor, tuple, dict or slimkit.Inputs)")
    if not out:
        raise InvalidParameterError(name, data, "calibration data with at least one batch")
    return [_inputs.check_inputs(b, f"{name}[{i}]") for i, b in enumerate(out)]


def _call(model, x, i: int, name: str = "activations"):
    """model(batch) by slimkit.inputs' rule; a batch the model refuses is the caller's error."""
    with batch_errors(i, name, x, "batches the model accepts"):
        return _inputs.call(model, x)
