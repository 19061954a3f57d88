"""Numbers that judge a compressed model: accuracy, SQNR, agreement with the original."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import batches
from .errors import InvalidParameterError


@torch.no_grad()
def evaluate(model: nn.Module, data, *, reference: nn.Module | None = None) -> dict[str, float]:
    """Classification metrics on ``data``: accuracy, mean cross-entropy loss, sample count.

    With ``reference`` (the original model) also ``agreement``: the share of samples where
    both predict the same class.
    """
    was_training = model.training
    model.eval()
    correct = agree = n = 0
    loss = 0.0
    try:
        for x, y in batches(data, batch_size=512):
            out = model(x)
            pred = out.argmax(-1)
            correct += (pred == y).sum().item()
            loss += F.cross_entropy(out.float(), y, reduction="sum").item()
            if reference is not None:
                agree += (reference(x).argmax(-1) == pred).sum().item()
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
