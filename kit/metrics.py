"""Numbers that judge a compressed model: accuracy, SQNR, agreement with the original."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import inputs as _inputs
from .data import batch_errors, batches
from .errors import IncompatibleModelsError, InvalidParameterError, InvalidTypeError

# How to find the logits in a model's output: None (a tensor, or transformers' ``.logits``),
# a key or attribute name, or a callable output -> tensor.
OutputSelector = Union[None, str, Callable[[Any], torch.Tensor]]


def check_output(output: OutputSelector) -> OutputSelector:
    if output is not None and not isinstance(output, str) and not callable(output):
        raise InvalidTypeError("output", output, "None, a key/attribute name of the model output, or a callable "
                               "output -> logits tensor")
    return output


def logits(out: Any, output: OutputSelector = None, who: str = "the model") -> torch.Tensor:
    """The logits tensor in a model's output: the output itself if it is a tensor, else its
    ``logits`` (a transformers ``ModelOutput`` or a mapping), or what ``output`` selects."""
    if callable(output):
        found = output(out)
    elif output is not None or not isinstance(out, torch.Tensor):
        key = output or "logits"
        found = out[key] if isinstance(out, Mapping) and key in out else getattr(out, key, None)
    else:
        found = out
    if not isinstance(found, torch.Tensor):
        hint = "" if output is not None else " (pass output=: a key/attribute name or a callable output -> logits)"
        raise IncompatibleModelsError(f"{who} gave {type(out).__name__}, not logits: expected a tensor or an output "
                                      f"with 'logits'{hint}")
    return found


def flat(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, classes) logits and (N,) targets: per-token targets (B, T) with logits (B, T, C) become rows."""
    return out.reshape(-1, out.shape[-1]), y.reshape(-1)


@torch.no_grad()
def evaluate(model: nn.Module, data, *, reference: nn.Module | None = None,
             output: OutputSelector = None) -> dict[str, float]:
    """Classification metrics on ``data``: accuracy, mean cross-entropy loss, sample count.

    ``data`` follows :mod:`slimkit.data` (inputs by :mod:`slimkit.inputs`' rule; per-token
    targets count each token). ``output`` selects the logits in the model's output (default: the
    tensor itself or its ``.logits``). With ``reference`` (the original model) also ``agreement``:
    the share of samples where both predict the same class. A batch the model or the loss
    rejects raises InvalidParameterError naming ``data`` and the batch index.
    """
    check_output(output)
    was_training = model.training
    model.eval()
    correct = agree = n = 0
    loss = 0.0
    try:
        for i, (x, y) in enumerate(batches(data, batch_size=512)):
            with batch_errors(i):
                out, y = flat(logits(_inputs.call(model, x), output), y)
                pred = out.argmax(-1)
                loss += F.cross_entropy(out.float(), y, reduction="sum").item()
                if reference is not None:
                    ref = logits(_inputs.call(reference, x), output, "the reference")
                    agree += (ref.reshape(-1, ref.shape[-1]).argmax(-1) == pred).sum().item()
            correct += (pred == y).sum().item()
            n += len(y)
    finally:  # a failing batch (bad data, a stop) leaves the model in the mode it came in
        model.train(was_training)
    if n == 0:
        raise InvalidParameterError("data", data, "at least one (inputs, targets) sample")
    metrics = {"accuracy": correct / n, "loss": loss / n, "n": float(n)}
    if reference is not None:
        metrics["agreement"] = agree / n
    return metrics


def sqnr(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (torchao's numeric check); inf if exact."""
    reference, approx = reference.detach().float(), approx.detach().float()
    noise = (reference - approx).pow(2).sum().item()
    signal = reference.pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)
