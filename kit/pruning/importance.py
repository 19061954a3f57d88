"""Importance scores for pruning: a registry of functions scoring every weight.

A score function takes a :class:`ScoreContext` and returns, for each target layer name, a
tensor shaped like that layer's weight; higher means more important. Add your own with
:func:`register_score` (as Torch-Pruning lets you plug in an importance)::

    register_score("taylor", lambda ctx: {n: (ctx.grad_squares()[n].sqrt() * m.weight).abs()
                                           for n, m in ctx.targets}, needs_data=True)

Built in:
- ``magnitude``: ``|w|``.
- ``fisher``: the article's ``R(w) = E[(dL/dw)^2]``, per-sample squared gradients averaged
  over a data loader (the empirical Fisher diagonal).
- ``obd``: ``E[(dL/dw)^2] * w^2``, Optimal Brain Damage's second-order saliency with the
  Fisher diagonal standing in for the Hessian diagonal (the loss rise from zeroing ``w``).
- ``random``: a seeded uniform baseline.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..data import batch_errors, batches, describe_batch
from ..errors import InvalidParameterError, InvalidTypeError, check_choice
from ..events import Progress
from ..inputs import Inputs, apply
from ..training import LossFn, cross_entropy

ScoreFn = Callable[["ScoreContext"], dict[str, torch.Tensor]]


_BATCHES = ("(inputs, labels) batches: inputs a tensor, a tuple (positional), a dict (keyword) or "
            "slimkit.Inputs, as the model takes them; labels what loss_fn expects (class indices "
            "in [0, classes) for the default cross-entropy)")


def first_batch(name: str, data):
    """The first (inputs, labels) batch of ``data``, checked for its structure."""
    batch = next(iter(batches(data)), None)
    if batch is None:
        raise InvalidParameterError(name, data, "at least one " + _BATCHES)
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor)):
        raise InvalidParameterError(name, f"batch 1 {describe_batch(batch)}", _BATCHES)
    return batch


def check_batch(name: str, model: nn.Module, data, loss_fn: LossFn) -> None:
    """Run ``loss_fn`` on the first batch (eval mode, no grad), so bad data is a slimkit error
    naming ``name`` before any work starts, not a torch traceback halfway through."""
    x, y = first_batch(name, data)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), batch_errors(1, name, (x, y), _BATCHES):
            loss_fn(model, x, y)
    finally:
        model.train(was_training)


@dataclass
class _Entry:
    fn: ScoreFn
    needs_data: bool


SCORES: dict[str, _Entry] = {}


def register_score(name: str, fn: ScoreFn, *, needs_data: bool = False) -> None:
    """Make ``prune(..., score=name)`` use ``fn``; ``needs_data`` makes a missing ``data``
    a clear error before any work starts."""
    if not isinstance(name, str) or not name:
        raise InvalidTypeError("name", name, "a non-empty str")
    if not callable(fn):
        raise InvalidTypeError("fn", fn, "a callable taking a ScoreContext")
    SCORES[name] = _Entry(fn, needs_data)


def needs_data(name: str) -> bool:
    return SCORES[name].needs_data


@dataclass
class ScoreContext:
    """What a score function may use. ``grad_squares()`` is computed once and cached, so
    scores built on the Fisher diagonal share one pass over the data."""

    model: nn.Module
    targets: list[tuple[str, nn.Module]]
    data: object = None
    loss_fn: LossFn = cross_entropy
    seed: int = 0
    progress: Progress = field(default_factory=Progress)
    _fisher: dict[str, torch.Tensor] | None = None

    def grad_squares(self) -> dict[str, torch.Tensor]:
        if self._fisher is None:
            self._fisher = fisher_diagonal(self.model, self.targets, self.data, self.loss_fn, self.progress)
        return self._fisher


def compute(name: str, ctx: ScoreContext) -> dict[str, torch.Tensor]:
    check_choice("score", name, SCORES)
    scores = SCORES[name].fn(ctx)
    for n, m in ctx.targets:
        s = scores.get(n)
        if s is None or s.shape != m.weight.shape:
            raise InvalidParameterError(
                "score", name, f"a score function returning a tensor shaped {tuple(m.weight.shape)} for {n!r}")
    return {n: s.detach().float() for n, s in scores.items()}


class _LossModule(nn.Module):
    """Wraps ``loss_fn(model, x, y)`` as a module so torch.func can swap in parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x, y):
        return self.loss_fn(self.model, x, y)


def fisher_diagonal(model: nn.Module, targets: list[tuple[str, nn.Module]], data, loss_fn: LossFn,
                    progress: Progress, chunk: int = 64) -> dict[str, torch.Tensor]:
    """``E[(dL_i/dw)^2]`` over the samples i of ``data``, for each target's weight.

    Per-sample gradients (torch.func.vmap): the square of a batch-mean gradient would
    understate the Fisher by about the batch size and mix samples' signs. Models that
    vmap cannot handle fall back to one backward pass per sample.
    """
    from torch.func import functional_call, grad, vmap

    wrapper = _LossModule(model, loss_fn)
    was_training = model.training
    model.eval()  # scores describe the deployed model: no dropout, BatchNorm running stats
    keys = {f"model.{weight_path(model, n)}": n for n, _ in targets}
    params = {k: get_weight(model, n).detach() for k, n in keys.items()}
    sums = {n: torch.zeros_like(p) for n, p in zip(keys.values(), params.values())}

    def sample_loss(p, x, y):
        return functional_call(wrapper, p, (apply(x, lambda t: t.unsqueeze(0)), y.unsqueeze(0)))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    loader = batches(data, batch_size=chunk)
    total = len(loader) if hasattr(loader, "__len__") else None
    progress.emit("start", "fisher", 0, total)
    count, use_vmap = 0, True
    try:
        for step, batch in enumerate(loader, 1):
            progress.check()
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise InvalidParameterError("data", f"batch {step} {describe_batch(batch)}", _BATCHES)
            x, y = batch
            for start in range(0, len(y), chunk):
                xs, ys = apply(x, lambda t: t[start:start + chunk]), y[start:start + chunk]
                if use_vmap and not isinstance(xs, Inputs):  # vmap maps tensors, tuples and dicts
                    try:
                        # outer no_grad: the other parameters (biases, norms) still require grad,
                        # so without it every batch's gradients would keep an autograd graph alive
                        with torch.no_grad():
                            grads = per_sample(params, xs, ys)
                    except Exception:  # e.g. data-dependent Python control flow or in-place ops
                        use_vmap = False
                if not use_vmap or isinstance(xs, Inputs):
                    with batch_errors(step, "data", (x, y), _BATCHES):  # the batch itself is wrong
                        grads = _loop_grads(wrapper, keys, xs, ys)
                for k, n in keys.items():
                    sums[n] += grads[k].detach().pow(2).sum(0)
                count += len(ys)
            progress.emit("progress", "fisher", step, total, samples=count)
    finally:
        model.train(was_training)
    if count == 0:
        raise InvalidParameterError("data", data, "at least one (inputs, targets) batch")
    progress.emit("end", "fisher", total or 0, total)
    return {n: s / count for n, s in sums.items()}


def _loop_grads(wrapper: _LossModule, keys: dict[str, str], x, y) -> dict[str, torch.Tensor]:
    weights = {k: get_weight(wrapper.model, n) for k, n in keys.items()}
    out = {k: [] for k in keys}
    for i in range(len(y)):
        loss = wrapper(apply(x, lambda t: t[i:i + 1]), y[i:i + 1])
        gs = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
        for k, g, w in zip(keys, gs, weights.values()):
            out[k].append(torch.zeros_like(w) if g is None else g)
    return {k: torch.stack(v) for k, v in out.items()}


def weight_path(model: nn.Module, name: str) -> str:
    """The parameter a target name stands for: a layer's ``weight``, or the parameter itself
    (an LSTM's ``rnn.weight_ih_l0``, MultiheadAttention's ``attn.in_proj_weight``)."""
    try:
        model.get_submodule(name)
    except AttributeError:
        return name
    return f"{name}.weight"


def get_weight(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(weight_path(model, name))


def _magnitude(ctx: ScoreContext) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().abs() for n, m in ctx.targets}


def _fisher(ctx: ScoreContext) -> dict[str, torch.Tensor]:
    return ctx.grad_squares()


def _obd(ctx: ScoreContext) -> dict[str, torch.Tensor]:
    fisher = ctx.grad_squares()
    return {n: fisher[n] * m.weight.detach().pow(2) for n, m in ctx.targets}


def _random(ctx: ScoreContext) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(ctx.seed)
    return {n: torch.rand(m.weight.shape, generator=g) for n, m in ctx.targets}


register_score("magnitude", _magnitude)
register_score("fisher", _fisher, needs_data=True)
register_score("obd", _obd, needs_data=True)
register_score("random", _random)
