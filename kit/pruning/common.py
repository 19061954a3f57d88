"""What unstructured and structured pruning share (and sparsify and shrink reuse): the checked
call (:class:`Job`), the step schedule, fine-tuning between steps, plain copies of
parametrized models and report ordering."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import InvalidParameterError, SlimkitError
from ..events import Progress
from ..nn import is_parametrized, unparametrize
from ..report import Report
from ..training import fit
from . import importance
from .config import Finetune, PruneConfig

PARAMETRIZATION_NOTE = "its parametrization (e.g. weight_norm) was removed: the computed weight is stored as is"


@dataclass
class Job:
    """One checked ``prune`` call: its settings and everything that is not a setting."""

    config: PruneConfig
    data: Any
    loss_fn: Callable
    tune: Finetune | None
    progress: Progress
    params: dict  # what the report's ``params`` say

    def target(self, step: int) -> float:
        return schedule(self.config.sparsity, step, self.config.steps)

    def scores(self, model: nn.Module, targets: list[tuple[str, Any]], step: int) -> dict[str, torch.Tensor]:
        """The configured score of every target, for pruning step ``step`` (1-based)."""
        ctx = importance.ScoreContext(model, targets, self.data, self.loss_fn, self.config.seed + step - 1,
                                      self.progress)
        return importance.compute(self.config.score, ctx)

    def finetune(self, model: nn.Module, step: int, after_step=None) -> list[dict]:
        """Fine-tune after step ``step`` when asked (else nothing); the per-epoch history."""
        if self.tune is None:
            return []
        return finetune_fit(model, self.tune, self.loss_fn, self.progress, self.config.seed + step, after_step)


def finetune_fit(model: nn.Module, tune: Finetune, loss_fn: Callable, progress: Progress, seed: int,
                 after_step=None) -> list[dict]:
    """``fit`` with ``tune``'s settings (stage "finetune"): what pruning's and quantization's
    fine-tuning run. A batch that fails past the first (checked up front) is a slimkit error."""
    try:
        return fit(model, tune.data, epochs=tune.epochs, lr=tune.lr, batch_size=tune.batch_size,
                   weight_decay=tune.weight_decay, seed=seed, loss_fn=loss_fn, val_data=tune.val_data,
                   after_step=after_step, stage="finetune", callbacks=progress)
    except SlimkitError:
        raise
    except Exception as e:  # a later batch the model cannot take (the first one was checked)
        raise InvalidParameterError("finetune", "<a batch of finetune['data']>", "batches the model and "
                                    f"loss_fn accept; fine-tuning raised {type(e).__name__}: {e}") from e


def schedule(sparsity: float, step: int, steps: int) -> float:
    """Target after ``step`` of ``steps``: cubic, pruning fast while much is redundant."""
    return sparsity * (1 - (1 - step / steps) ** 3)


def mask_hook(masks: dict[str, torch.Tensor]):
    """An ``after_step`` hook that multiplies each named weight by its mask (pruned weights stay 0)."""
    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for n, mask in masks.items():
            importance.get_weight(model, n).mul_(mask)

    return hook


def add_history(summary: dict, history: list[dict]) -> None:
    if history:
        summary["finetune_epochs"] = len(history)
        summary["finetune_final"] = {k: round(v, 6) for k, v in history[-1].items()}


def plain_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` whose parametrized layers (weight_norm, spectral_norm...) hold
    their effective weight as a plain parameter, and the names of those layers. Compressing the
    stored ``original0/original1`` tensors would leave the computed weight unchanged."""
    work = copy.deepcopy(model)
    names = [n for n, m in work.named_modules() if is_parametrized(m)]
    for n in names:
        unparametrize(work.get_submodule(n))
    return work, names


def in_model_order(report: Report, model: nn.Module) -> Report:
    """Rows in the order of ``model.named_modules()`` (rows ``Report.cover`` added come last otherwise)."""
    order = {n: i for i, (n, _) in enumerate(model.named_modules(remove_duplicate=False))}
    report.layers.sort(key=lambda l: order.get(l.name, len(order)))
    return report
