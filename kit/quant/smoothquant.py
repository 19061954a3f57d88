"""SmoothQuant-style scale migration (Xiao et al., 2023) before static int8 activations.

Per-tensor static activation scales are set by the few input channels with outliers (MiniLM's
LayerNorm outputs have channels ~20x the others), so every other channel gets a handful of int8
steps. Migration divides each input channel j of a Linear by ``s_j`` and multiplies the weight's
column j by ``s_j``: ``(x / s) @ (W * s).T == x @ W.T``, an equivalent float model whose activations
are flatter (easier per-tensor) and whose weights carry the difference (per-channel weight scales
absorb it). ``s_j = max|x_j|**alpha / max|W[:, j]|**(1 - alpha)``.

:func:`smooth` returns that equivalent float model: each chosen ``nn.Linear`` becomes
``nn.Sequential(InputScale(1 / s), Linear(W * s))``, so ``slimkit.quantize(smoothed, bits=8,
activations=data)`` quantizes the inner Linear and calibrates its (already divided) input. The
division is one elementwise multiply per layer input; it is not folded into the producer because
in post-LayerNorm transformers (BERT) the producer's output is also the residual.
``InputScale`` is a plain module (not a registered slimkit layer, so ``quantize`` accepts the
smoothed model); saving a smoothed model as a slimkit artifact is not supported yet.
"""
from __future__ import annotations

import copy
import fnmatch

import torch
from torch import nn

from ..errors import InvalidParameterError, InvalidTypeError, check_module
from ..nn import set_module
from .calibrate import _call, input_batches


class InputScale(nn.Module):
    """``x * scale`` over the last dimension (one factor per input channel)."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.scale.numel()}"


def _input_absmax(model: nn.Module, names: list[str], data) -> dict[str, torch.Tensor]:
    """Per input channel max |x| of each named Linear over the calibration batches."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def pre(_mod, args):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and torch.is_floating_point(x):
                m = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float()
                seen[name] = torch.maximum(seen[name], m) if name in seen else m
        return pre

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for i, batch in enumerate(input_batches(data)):
                _call(model, batch, i)
    finally:
        for h in handles:
            h.remove()
    return seen


def smooth(model: nn.Module, data, *, alpha: float = 0.5, include: list[str] | None = None,
           exclude: list[str] | None = None) -> tuple[nn.Module, dict[str, float]]:
    """An equivalent float copy of ``model`` with SmoothQuant scales migrated into its Linear layers.

    ``data``: calibration batches in any form ``slimkit.quantize(activations=...)`` takes (the
    same data is fine). ``alpha`` in [0, 1]: how much of the activation range moves into the
    weights (0.5 is the paper's default for BERT-size models). ``include``/``exclude``: glob
    patterns of Linear names. Returns ``(smoothed, {layer: max_scale / min_scale})`` (how uneven
    each layer's migration was). The input model is not changed. Layers that never saw a float
    input are left as they were.
    """
    check_module("model", model)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InvalidParameterError("alpha", alpha, "a number in [0, 1]")
    for pname, pats in (("include", include), ("exclude", exclude)):
        if pats is not None and (isinstance(pats, str) or not all(isinstance(p, str) for p in pats)):
            raise InvalidTypeError(pname, pats, "a list of glob patterns (str)")
    out = copy.deepcopy(model).eval()
    names = [n for n, m in out.named_modules() if type(m) is nn.Linear
             and (include is None or any(fnmatch.fnmatchcase(n, p) for p in include))
             and not any(fnmatch.fnmatchcase(n, p) for p in exclude or ())]
    if not names:
        raise InvalidParameterError("include", include, "patterns matching at least one nn.Linear of the model")
    act = _input_absmax(out, names, data)
    spread: dict[str, float] = {}
    for name in names:
        if name not in act:
            continue
        lin = out.get_submodule(name)
        w = lin.weight.detach()
        w_max = w.abs().amax(0).float().clamp(min=1e-5)
        a_max = act[name].clamp(min=1e-5)
        s = (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)
        s = torch.where(act[name] > 0, s, torch.ones_like(s))  # channels never active stay as they are
        with torch.no_grad():
            lin.weight.mul_(s.to(w.dtype))
        set_module(out, name, nn.Sequential(InputScale(1.0 / s), lin))
        spread[name] = float(s.max() / s.min())
    return out, spread


__all__ = ["InputScale", "smooth"]
