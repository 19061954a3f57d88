"""One training loop for fine-tuning, distillation and the bundled models."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import inputs as _inputs
from .data import batch_errors, batches
from .errors import Interrupted, check_positive
from .events import as_progress
from .metrics import evaluate, flat, logits

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(model: nn.Module, x, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the model's logits (a tensor or transformers' ``.logits``) against class
    targets, per sample or per token; ``x`` is called by :mod:`slimkit.inputs`' rule."""
    return F.cross_entropy(*flat(logits(_inputs.call(model, x)), y))


def fit(model: nn.Module, data, *, epochs: int = 10, lr: float = 1e-3, weight_decay: float = 0.0,
        batch_size: int = 64, seed: int = 0, loss_fn: LossFn = cross_entropy, val_data=None,
        after_step: Callable[[nn.Module], None] | None = None, stage: str = "train",
        callbacks=None, stop=None) -> list[dict[str, float]]:
    """Train ``model`` in place with Adam and a cosine schedule; returns per-epoch metrics.

    ``data``: see :mod:`slimkit.data`; a batch the model or the loss rejects raises
    InvalidParameterError naming ``data`` and the batch index. ``after_step`` runs after every
    optimizer step (pruning uses it to keep pruned weights at zero). Emits "metrics" events per
    epoch with loss and, given ``val_data``, accuracy.
    """
    check_positive("epochs", epochs, integer=True)
    check_positive("lr", lr)
    check_positive("batch_size", batch_size, integer=True)
    progress = as_progress(callbacks, stop)
    with torch.random.fork_rng(devices=[]):  # seeded (dropout, ...) without touching the caller's RNG
        torch.manual_seed(seed)
        loader = batches(data, batch_size=batch_size, shuffle=True, seed=seed)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        history = []
        progress.emit("start", stage, 0, epochs)
        ends: list[dict] = []  # the weights as the last finished epoch left them
        try:
            _epochs(model, loader, opt, sched, epochs, loss_fn, val_data, after_step, stage, progress, history, ends)
        except Interrupted as e:  # the finished epochs travel with the error: a caller may keep them
            if ends:  # the model as its last finished epoch (and its metrics) left it, not mid-epoch
                model.load_state_dict(ends[-1])
            model.eval()
            e.history = history
            raise
        model.eval()
        progress.emit("end", stage, epochs, epochs)
        return history


def _epochs(model, loader, opt, sched, epochs, loss_fn, val_data, after_step, stage, progress, history,
            ends) -> None:
    """The epoch loop of :func:`fit`; appends each finished epoch's metrics to ``history`` and keeps
    that epoch's weights in ``ends`` (one copy, replaced each epoch)."""
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for i, (x, y) in enumerate(loader):
            progress.check()
            opt.zero_grad(set_to_none=True)
            with batch_errors(i):
                loss = loss_fn(model, x, y)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(y)
            n += len(y)
        sched.step()
        row = {"epoch": epoch, "loss": total / max(n, 1)}
        if val_data is not None:
            row["val_accuracy"] = evaluate(model, val_data)["accuracy"]
        history.append(row)
        if epoch < epochs:
            ends[:] = [{k: v.detach().clone() for k, v in model.state_dict().items()}]
        progress.emit("metrics", stage, epoch, epochs, **row)
