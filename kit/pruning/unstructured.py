"""Unstructured pruning: zero the lowest-scored weights; the model keeps its shape (dense, with
zeros: ``slimkit.sparsify`` stores it sparse)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..nn import WEIGHTED, is_target, named_targets, param_count, unselected_reason
from ..report import Action, LayerReport, Report, Result
from . import importance
from .common import (
    PARAMETRIZATION_NOTE,
    Job,
    add_history,
    in_model_order,
    mask_hook,
    plain_copy,
)

# Weights pruned element-wise besides WEIGHTED: a transposed conv's weight is as prunable as a conv's.
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Layers whose weight matrices are plain parameters (no ``weight``): each matrix is pruned on its own.
_MATRIX_OWNERS = (nn.RNNBase, nn.MultiheadAttention)


def is_prunable(m: nn.Module) -> bool:
    """A layer whose ``weight`` unstructured pruning zeroes element-wise: Linear, Conv,
    ConvTranspose, Embedding and transformers' Conv1D (GPT-2), which is a Linear stored transposed."""
    return is_target(m, (*WEIGHTED, *_TRANSPOSED))


def keep_sparsity(model: nn.Module):
    """An ``after_step`` hook for ``slimkit.training.fit`` that keeps today's zero weights
    at zero, so a pruned model can be fine-tuned further without losing its sparsity."""
    masks = {n: m.weight.detach() != 0 for n, m in model.named_modules() if is_prunable(m)}
    return mask_hook(masks)


def prune_weights(model: nn.Module, job: Job) -> Result:
    config = job.config
    include, exclude = config.include, config.exclude
    work, unparametrized = plain_copy(model)
    chosen = list(named_targets(work, (*WEIGHTED, *_TRANSPOSED), include=include, exclude=exclude, method="prune"))
    chosen += _matrix_params(work, include, exclude)
    names, tied = _owners(chosen)
    masks = {n: torch.ones_like(importance.get_weight(work, n), dtype=torch.bool) for n in names}
    hook = mask_hook(masks)
    history: list[dict] = []
    steps = config.steps
    job.progress.emit("start", "prune", 0, steps)
    for step in range(1, steps + 1):
        target = job.target(step)
        scores = job.scores(work, [(n, _scored(work, n)) for n in names], step)
        for n in names:  # a weight once pruned stays pruned
            scores[n] = scores[n].masked_fill(~masks[n], -math.inf)
        if config.scope == "layer":
            for n in names:
                _drop_lowest(masks[n], scores[n], round(target * masks[n].numel()))
        else:
            flat_mask = torch.cat([masks[n].flatten() for n in names])
            _drop_lowest(flat_mask, torch.cat([scores[n].flatten() for n in names]),
                         round(target * flat_mask.numel()))
            for n, part in zip(names, flat_mask.split([masks[n].numel() for n in names])):
                masks[n].copy_(part.view_as(masks[n]))
        hook(work)
        zeros = sum(int((~masks[n]).sum()) for n in names)
        total = sum(masks[n].numel() for n in names)
        job.progress.emit("metrics", "prune", step, steps, sparsity=zeros / total)
        history += job.finetune(work, step, after_step=hook)
    job.progress.emit("end", "prune", steps, steps)
    work.eval()

    report = Report("prune", job.params, _rows(work, names, tied, unparametrized, include, exclude))
    zeros = sum(int((importance.get_weight(work, n) == 0).sum()) for n in names)
    total = sum(importance.get_weight(work, n).numel() for n in names)
    all_params = list(work.parameters())  # each shared tensor once
    all_zeros = sum(int((p == 0).sum()) for p in all_params)
    report.summary = {
        "params": param_count(work), "pruned_weights": zeros, "prunable_weights": total,
        "sparsity": zeros / total,
        "sparsity_all_params": all_zeros / max(sum(p.numel() for p in all_params), 1),
        "note": "sparsity is over the pruned layers' weights, sparsity_all_params over every parameter; "
                "dense with zeros: slimkit.sparsify stores it sparse"}
    add_history(report.summary, history)
    in_model_order(report.cover(model, work), model)
    return Result(work, report)


class _Target:
    """What a score function sees of a target: its ``weight`` (a layer's, or one weight matrix of
    an LSTM/GRU/MultiheadAttention)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight


def _scored(model: nn.Module, name: str) -> nn.Module | _Target:
    """The target a score function gets: the layer itself, or a matrix parameter's stand-in."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        return _Target(importance.get_weight(model, name))


def _matrix_params(model: nn.Module, include, exclude) -> list[tuple[str, _Target]]:
    """(``layer.param``, target) for the weight matrices of LSTM/GRU/RNN and MultiheadAttention's
    input projections; their biases stay."""
    return [(f"{n}.{p}", _Target(w)) for n, m in model.named_modules() if isinstance(m, _MATRIX_OWNERS)
            and unselected_reason(n, include, exclude) == "not selected"
            for p, w in m.named_parameters(recurse=False) if w.dim() >= 2]


def _owners(chosen: list[tuple[str, nn.Module]]) -> tuple[list[str], dict[str, str]]:
    """The layers whose weights get a mask, one per distinct weight tensor, and for every other
    chosen layer the owner whose weight it shares (a tied embedding/LM head is pruned once)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for n, m in chosen:
        owner = first.setdefault(id(m.weight), n)
        if owner != n:
            tied[n] = owner
    return list(first.values()), tied


def _rows(work, names, tied, unparametrized, include, exclude) -> list[LayerReport]:
    rows = []
    for n, m in work.named_modules():
        if isinstance(m, _MATRIX_OWNERS):
            rows.append(_matrices_row(n, m, names, include, exclude))
        if not is_prunable(m):
            continue
        note = PARAMETRIZATION_NOTE if n in unparametrized else ""
        if n not in names and n not in tied:
            rows.append(LayerReport.same_size(n, m, Action.SKIPPED, reason=unselected_reason(n, include, exclude)))
            continue
        zeros = int((m.weight == 0).sum())
        if n in tied:
            note = f"shares its weight with {tied[n]!r} (tied): pruned once, with it"
        rows.append(LayerReport.same_size(
            n, m, Action.PRUNED, sparsity=zeros / m.weight.numel(), reason=note,
            details={"zeros": zeros, "weights": m.weight.numel(), **({"tied_to": tied[n]} if n in tied else {})}))
    return rows


def _matrices_row(name: str, m: nn.Module, names: list[str], include, exclude) -> LayerReport:
    """One row for an LSTM/GRU/MultiheadAttention: its weight matrices together."""
    pruned = [p for p, _ in m.named_parameters(recurse=False) if f"{name}.{p}" in names]
    if not pruned:
        return LayerReport.same_size(name, m, Action.SKIPPED, reason=unselected_reason(name, include, exclude))
    weights = [getattr(m, p) for p in pruned]
    zeros, total = sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
    return LayerReport.same_size(name, m, Action.PRUNED, sparsity=zeros / total, reason=f"weight matrices pruned "
                                 f"({', '.join(pruned)}); biases kept", details={"zeros": zeros, "weights": total})


def _drop_lowest(mask: torch.Tensor, scores: torch.Tensor, count: int) -> None:
    """Set ``mask`` False at the ``count`` lowest scores (already-False entries score -inf)."""
    flat = mask.view(-1)
    order = torch.argsort(scores.reshape(-1), stable=True)
    flat[order[:count]] = False
