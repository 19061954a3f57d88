"""Pruning: zero unimportant weights (unstructured) or remove whole neurons/channels
(structured, the model physically shrinks), optionally in steps with fine-tuning between.

Scores come from :mod:`slimkit.pruning.importance` (magnitude, fisher, obd, random, or your own).
Unstructured pruning returns a dense model with zeros; ``slimkit.sparsify`` stores it sparse.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..config import signature
from ..data import batches
from ..errors import Interrupted, InvalidParameterError, InvalidTypeError, check_module
from ..events import Progress, as_progress
from ..nn import refuse_compressed
from ..report import Result
from ..training import cross_entropy
from . import importance

# PARAMETRIZATION_NOTE, in_model_order, plain_copy, schedule, is_prunable, keep_sparsity: still
# importable from here, where they used to live
from .common import PARAMETRIZATION_NOTE, Job, in_model_order, plain_copy, schedule  # noqa: F401
from .config import Finetune, PruneConfig
from .structured import prune_units
from .unstructured import is_prunable, keep_sparsity, prune_weights  # noqa: F401


def prune(model: nn.Module, config: PruneConfig | float | None = None, *, data=None, loss_fn=None,
          finetune: Finetune | dict | None = None, callbacks=None, stop=None, **settings) -> Result:
    """Prune ``model`` to ``sparsity``; returns ``Result(pruned_copy, report)``.

    config: a :class:`PruneConfig`, or its first setting ``sparsity`` (``prune(model, 0.5)``);
    keyword settings override it.
    sparsity: fraction of weights zeroed (unstructured) or of output units removed from each
        prunable layer (structured), in [0, 1).
    score: "magnitude", "fisher" (``E[(dL/dw)^2]`` over ``data``), "obd" (fisher * w^2),
        "random", or a name added with ``slimkit.pruning.importance.register_score``.
    structured: remove whole neurons/channels and resize the layers that read them. Layers whose
        outputs meet in a residual add lose the same channels; layers whose outputs reach a
        concatenation, a reshape, an unknown op or the model output are skipped (the report says
        why). Models torch.fx cannot trace (most transformers) are refused: use unstructured pruning.
    Every Linear, Conv, ConvTranspose, Embedding and transformers Conv1D (GPT-2) layer is pruned
    (weight-normed ones on their effective weight, a weight shared by two layers once); the report
    has a row for every module holding parameters, skipped ones with the reason.
    scope: "layer" prunes each layer to ``sparsity``; "global" ranks all weights (or units,
        scores normalised per layer) together.
    data: ``(inputs, labels)`` batches or a pair of tensors ``(X, y)``; inputs follow
        :mod:`slimkit.inputs` (a tuple is positional, a dict keyword inputs, or ``slimkit.Inputs``).
    loss_fn: ``loss_fn(model, x, y) -> loss`` for fisher/obd and fine-tuning (default
        cross-entropy of the model called on ``x`` by that rule).
    steps: prune in this many steps on a cubic schedule (Zhu & Gupta), re-scoring each time
        and fine-tuning in between when ``finetune`` is given.
    finetune: ``Finetune(data, epochs=1, lr=1e-3, batch_size=64, weight_decay=0, val_data=None)``
        or the same as a dict; ``epochs`` per step. Pruned weights are held at zero while fine-tuning.
    """
    check_module("model", model)
    config = PruneConfig.build(config, settings)
    refuse_compressed(model, "prune", "prune the float model first: prune then quantize keeps the zeros exact, "
                      "prune then sparsify stores them sparse",
                      include=config.include, exclude=config.exclude)
    job = _job(model, config, data, loss_fn, Finetune.of(finetune), callbacks, stop)
    result = (prune_units if config.structured else prune_weights)(model, job)
    how = f"{'structured ' if config.structured else ''}{config.score}"
    result.report.chain(model, result.model, lambda row: f"prune {_share(row, config)} {how}")
    if job.stopped is not None:  # stopped while fine-tuning: the finished epochs are kept, as distill does
        step, e = job.stopped
        result.report.summary.update(stopped_at_step=step, stopped_after_epochs=len(job.epochs))
        e.result, e.history = result, job.epochs
        raise e
    return result


def _share(row, config: PruneConfig) -> str:
    """The fraction a row lost: its own sparsity (unstructured), else the units removed."""
    if row.sparsity is not None:
        return f"{row.sparsity:.0%}"
    if row.params_before:
        return f"{1 - row.params_after / row.params_before:.0%}"
    return f"{config.sparsity:.0%}"


signature(prune, PruneConfig)


def _job(model: nn.Module, config: PruneConfig, data, loss_fn, tune: Finetune | None, callbacks, stop) -> Job:
    """Check what is not a setting (data, loss_fn, fine-tuning batches) before any work starts."""
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidTypeError("loss_fn", loss_fn, "None or a callable loss_fn(model, x, y)")
    needs_data = importance.needs_data(config.score)
    if needs_data and data is None:
        raise InvalidParameterError(
            "data", None, f"training batches (a DataLoader or (X, y)) for score={config.score!r}, "
            "which averages squared gradients over data")
    loss_fn = loss_fn or cross_entropy
    if data is not None and needs_data:  # bad data: a clear error now, not a traceback later
        importance.check_batch("data", model, data, loss_fn)
    elif data is not None:
        batches(data)  # type check now, not halfway through
    if tune is not None:
        importance.check_batch("finetune", model, tune.data, loss_fn)
    params = dict(sparsity=config.sparsity, score=config.score, structured=config.structured, scope=config.scope,
                  steps=config.steps, finetune=None if tune is None else {"epochs": tune.epochs, "lr": tune.lr},
                  seed=config.seed)
    return _StoppableJob(config, data, loss_fn, tune, as_progress(callbacks, stop), params)


@dataclass
class _StoppableJob(Job):
    """A Job whose fine-tuning may be stopped: the model keeps its last finished epoch (or, when
    none of this step's finished, this step's pruned weights), later steps prune nothing more, and
    ``prune`` re-raises the stop with that result. A stop outside fine-tuning stops as before."""

    def __post_init__(self):
        self.stopped: tuple[int, Interrupted] | None = None
        self.epochs: list[dict] = []  # every finished fine-tuning epoch, all steps

    def finetune(self, model: nn.Module, step: int, after_step=None) -> list[dict]:
        if self.stopped is not None:
            return []
        before = {k: v.detach().clone() for k, v in model.state_dict().items()} if self.tune else None
        try:
            history = super().finetune(model, step, after_step)
        except Interrupted as e:
            history = getattr(e, "history", [])
            if not history:  # fit restores a finished epoch only: undo the partial one
                model.load_state_dict(before)
            self.stopped = (step, e)
            self.progress = Progress(self.progress.callbacks)  # the remaining steps run, doing nothing
        self.epochs += history
        return history

    def target(self, step: int) -> float:
        return super().target(self.stopped[0] if self.stopped else step)

    def scores(self, model, targets, step):
        if self.stopped is None:
            return super().scores(model, targets, step)
        # any score keeps the masks as they are at the stopped step's target: the cheapest one
        ctx = importance.ScoreContext(model, targets, None, self.loss_fn, self.config.seed, self.progress)
        return importance.compute("magnitude", ctx)
