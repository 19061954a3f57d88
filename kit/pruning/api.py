"""Pruning: zero unimportant weights (unstructured) or remove whole neurons/channels
(structured, the model physically shrinks), optionally in steps with fine-tuning between.

Scores come from :mod:`slimkit.pruning.importance` (magnitude, fisher, obd, random, or your own).
Unstructured pruning returns a dense model with zeros; ``slimkit.sparsify`` stores it sparse.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..pruning import importance
from ..pruning import surgery
from ..data import batches
from ..errors import (InvalidParameterError, InvalidTypeError, SlimkitError, check_choice, check_fraction, check_int,
                     check_module, check_positive)
from ..events import Progress, as_progress
from ..inputs import apply
from ..nn import (WEIGHTED, is_parametrized, is_target, named_targets, param_count, tensor_bytes, unparametrize,
                     unselected_reason)
from ..report import LayerReport, Report, Result
from ..training import cross_entropy, fit

SCOPES = ("layer", "global")
# Weights pruned element-wise besides WEIGHTED: a transposed conv's weight is as prunable as a conv's.
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_FINETUNE_KEYS = ("data", "epochs", "lr", "batch_size", "weight_decay", "val_data")


@dataclass
class _Finetune:
    data: Any
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    val_data: Any = None


def prune(model: nn.Module, sparsity: float, score: str = "magnitude", structured: bool = False,
          data=None, scope: str = "layer", loss_fn=None, include=None, exclude=None, steps: int = 1,
          finetune: dict | None = None, seed: int = 0, callbacks=None, stop=None) -> Result:
    """Prune ``model`` to ``sparsity``; returns ``Result(pruned_copy, report)``.

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
    finetune: ``dict(data=..., epochs=1, lr=1e-3, batch_size=64, weight_decay=0, val_data=None)``;
        ``epochs`` per step. Pruned weights are held at zero while fine-tuning.
    """
    check_module("model", model)
    sparsity = check_fraction("sparsity", sparsity)
    check_choice("score", score, importance.SCORES)
    check_choice("scope", scope, SCOPES)
    if not isinstance(structured, bool):
        raise InvalidTypeError("structured", structured, "a bool")
    check_int("steps", steps, 1, 10_000)
    check_int("seed", seed, 0, 2**63 - 1)
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidTypeError("loss_fn", loss_fn, "None or a callable loss_fn(model, x, y)")
    if importance.needs_data(score) and data is None:
        raise InvalidParameterError(
            "data", None, f"training batches (a DataLoader or (X, y)) for score={score!r}, "
            "which averages squared gradients over data")
    loss_fn = loss_fn or cross_entropy
    if data is not None and importance.needs_data(score):  # bad data: a clear error now, not a traceback later
        importance.check_batch("data", model, data, loss_fn)
    elif data is not None:
        batches(data)  # type check now, not halfway through
    tune = _finetune_args(finetune)
    if tune is not None:
        importance.check_batch("finetune", model, tune.data, loss_fn)
    progress = as_progress(callbacks, stop)
    params = dict(sparsity=sparsity, score=score, structured=structured, scope=scope, steps=steps,
                  finetune=None if tune is None else {"epochs": tune.epochs, "lr": tune.lr}, seed=seed)
    run = _structured if structured else _unstructured
    return run(model, sparsity, score, data, scope, loss_fn, include, exclude, steps, tune, seed, progress, params)


def schedule(sparsity: float, step: int, steps: int) -> float:
    """Target after ``step`` of ``steps``: cubic, pruning fast while much is redundant."""
    return sparsity * (1 - (1 - step / steps) ** 3)


def keep_sparsity(model: nn.Module):
    """An ``after_step`` hook for ``slimkit.training.fit`` that keeps today's zero weights
    at zero, so a pruned model can be fine-tuned further without losing its sparsity."""
    masks = {n: m.weight.detach() != 0 for n, m in model.named_modules() if is_prunable(m)}
    return _mask_hook(masks)


def is_prunable(m: nn.Module) -> bool:
    """A layer whose ``weight`` unstructured pruning zeroes element-wise: Linear, Conv,
    ConvTranspose, Embedding and transformers' Conv1D (GPT-2), which is a Linear stored transposed."""
    return is_target(m, (*WEIGHTED, *_TRANSPOSED))


def plain_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` whose parametrized layers (weight_norm, spectral_norm...) hold
    their effective weight as a plain parameter, and the names of those layers. Compressing the
    stored ``original0/original1`` tensors would leave the computed weight unchanged."""
    work = copy.deepcopy(model)
    names = [n for n, m in work.named_modules() if is_parametrized(m)]
    for n in names:
        unparametrize(work.get_submodule(n))
    return work, names


PARAMETRIZATION_NOTE = "its parametrization (e.g. weight_norm) was removed: the computed weight is stored as is"


def _mask_hook(masks: dict[str, torch.Tensor]):
    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for n, mask in masks.items():
            importance.get_weight(model, n).mul_(mask)

    return hook


def _finetune_args(finetune) -> _Finetune | None:
    if finetune is None:
        return None
    if not isinstance(finetune, dict):
        raise InvalidTypeError("finetune", finetune, "None or a dict like dict(data=train, epochs=2, lr=1e-3)")
    unknown = sorted(set(finetune) - set(_FINETUNE_KEYS))
    if unknown:
        raise InvalidParameterError("finetune", finetune, f"keys among {', '.join(_FINETUNE_KEYS)} "
                                    f"(unknown: {', '.join(map(str, unknown))})")
    if finetune.get("data") is None:
        raise InvalidParameterError("finetune", finetune, "a dict with a 'data' entry (training batches)")
    tune = _Finetune(**finetune)
    check_positive("finetune['epochs']", tune.epochs, integer=True)
    check_positive("finetune['lr']", tune.lr)
    check_positive("finetune['batch_size']", tune.batch_size, integer=True)
    batches(tune.data)
    return tune


def _run_finetune(model, tune: _Finetune, loss_fn, seed, step, progress, after_step=None) -> list[dict]:
    try:
        return fit(model, tune.data, epochs=tune.epochs, lr=tune.lr, batch_size=tune.batch_size,
                   weight_decay=tune.weight_decay, seed=seed + step, loss_fn=loss_fn, val_data=tune.val_data,
                   after_step=after_step, stage="finetune", callbacks=progress)
    except SlimkitError:
        raise
    except Exception as e:  # a later batch the model cannot take (the first one was checked)
        raise InvalidParameterError("finetune", "<a batch of finetune['data']>", "batches the model and loss_fn "
                                    f"accept; fine-tuning raised {type(e).__name__}: {e}") from e


# ---- unstructured ---------------------------------------------------------------------

def _unstructured(model, sparsity, score, data, scope, loss_fn, include, exclude, steps, tune, seed,
                  progress: Progress, params) -> Result:
    work, unparametrized = plain_copy(model)
    chosen = list(named_targets(work, (*WEIGHTED, *_TRANSPOSED), include=include, exclude=exclude, method="prune"))
    chosen += _matrix_params(work, include, exclude)
    names, tied = _owners(chosen)
    masks = {n: torch.ones_like(importance.get_weight(work, n), dtype=torch.bool) for n in names}
    hook = _mask_hook(masks)
    history: list[dict] = []
    progress.emit("start", "prune", 0, steps)
    for step in range(1, steps + 1):
        target = schedule(sparsity, step, steps)
        targets = [(n, _scored(work, n)) for n in names]
        ctx = importance.ScoreContext(work, targets, data, loss_fn, seed + step - 1, progress)
        scores = importance.compute(score, ctx)
        for n in names:  # a weight once pruned stays pruned
            scores[n] = scores[n].masked_fill(~masks[n], -math.inf)
        if scope == "layer":
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
        progress.emit("metrics", "prune", step, steps, sparsity=zeros / total)
        if tune is not None:
            history += _run_finetune(work, tune, loss_fn, seed, step, progress, after_step=hook)
    progress.emit("end", "prune", steps, steps)
    work.eval()

    report = Report("prune", params, _unstructured_rows(work, names, tied, unparametrized, include, exclude))
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
    _add_history(report.summary, history)
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


# Layers whose weight matrices are plain parameters (no ``weight``): each matrix is pruned on its own.
_MATRIX_OWNERS = (nn.RNNBase, nn.MultiheadAttention)


def _matrix_params(model: nn.Module, include, exclude) -> list[tuple[str, _Target]]:
    """(``layer.param``, target) for the weight matrices of LSTM/GRU/RNN and MultiheadAttention's
    input projections; their biases stay."""
    return [(f"{n}.{p}", _Target(w)) for n, m in model.named_modules() if isinstance(m, _MATRIX_OWNERS)
            and unselected_reason(n, include, exclude) == "not selected"
            for p, w in m.named_parameters(recurse=False) if w.dim() >= 2]


def in_model_order(report: Report, model: nn.Module) -> Report:
    """Rows in the order of ``model.named_modules()`` (rows ``Report.cover`` added come last otherwise)."""
    order = {n: i for i, (n, _) in enumerate(model.named_modules(remove_duplicate=False))}
    report.layers.sort(key=lambda l: order.get(l.name, len(order)))
    return report


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


def _unstructured_rows(work, names, tied, unparametrized, include, exclude) -> list[LayerReport]:
    rows = []
    for n, m in work.named_modules():
        if isinstance(m, _MATRIX_OWNERS):
            rows.append(_matrices_row(n, m, names, include, exclude))
        if not is_prunable(m):
            continue
        note = PARAMETRIZATION_NOTE if n in unparametrized else ""
        if n not in names and n not in tied:
            rows.append(LayerReport.same_size(n, m, "skipped", reason=unselected_reason(n, include, exclude)))
            continue
        zeros = int((m.weight == 0).sum())
        if n in tied:
            note = f"shares its weight with {tied[n]!r} (tied): pruned once, with it"
        rows.append(LayerReport.same_size(
            n, m, "pruned", sparsity=zeros / m.weight.numel(), reason=note,
            details={"zeros": zeros, "weights": m.weight.numel(), **({"tied_to": tied[n]} if n in tied else {})}))
    return rows


def _matrices_row(name: str, m: nn.Module, names: list[str], include, exclude) -> LayerReport:
    """One row for an LSTM/GRU/MultiheadAttention: its weight matrices together."""
    pruned = [p for p, _ in m.named_parameters(recurse=False) if f"{name}.{p}" in names]
    if not pruned:
        return LayerReport.same_size(name, m, "skipped", reason=unselected_reason(name, include, exclude))
    weights = [getattr(m, p) for p in pruned]
    zeros, total = sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
    return LayerReport.same_size(name, m, "pruned", sparsity=zeros / total, reason=f"weight matrices pruned "
                                 f"({', '.join(pruned)}); biases kept", details={"zeros": zeros, "weights": total})


def _drop_lowest(mask: torch.Tensor, scores: torch.Tensor, count: int) -> None:
    """Set ``mask`` False at the ``count`` lowest scores (already-False entries score -inf)."""
    flat = mask.view(-1)
    order = torch.argsort(scores.reshape(-1), stable=True)
    flat[order[:count]] = False


def _add_history(summary: dict, history: list[dict]) -> None:
    if history:
        summary["finetune_epochs"] = len(history)
        summary["finetune_final"] = {k: round(v, 6) for k, v in history[-1].items()}


# ---- structured -----------------------------------------------------------------------

def _structured(model, sparsity, score, data, scope, loss_fn, include, exclude, steps, tune, seed,
                progress: Progress, params) -> Result:
    source = data if data is not None else (tune.data if tune is not None else None)
    example = None if source is None else apply(importance.first_batch("data", source)[0], lambda t: t[:2])
    plain, unparametrized = plain_copy(model)
    analysis = surgery.analyse_for("structured pruning", plain, include=include, exclude=exclude, example=example,
                                   instead=STRUCTURED_INSTEAD)
    original = {g.producer: g.units for g in analysis.groups}
    kept = {g.producer: torch.arange(g.units) for g in analysis.groups}  # original indices still there
    touched = {n for g in analysis.groups for n in g.modules}
    work = copy.deepcopy(plain)
    history: list[dict] = []
    progress.emit("start", "prune", 0, steps)
    for step in range(1, steps + 1):
        target = schedule(sparsity, step, steps)
        groups = [g for g in surgery.analyse(work, example=example).groups if g.producer in original]
        targets = [(p, work.get_submodule(p)) for g in groups for p in g.producers]
        ctx = importance.ScoreContext(work, targets, data, loss_fn, seed + step - 1, progress)
        scores = importance.compute(score, ctx)
        units = {g.producer: sum(surgery.unit_scores(scores[p], work.get_submodule(p)) for p in g.producers)
                 for g in groups}
        keep = _choose_units(groups, units, original, target, scope)
        for g in groups:
            if len(keep[g.producer]) < g.units:
                surgery.remove_units(work, g, keep[g.producer])
                kept[g.producer] = kept[g.producer][keep[g.producer]]
        progress.emit("metrics", "prune", step, steps, params=param_count(work))
        if tune is not None:
            history += _run_finetune(work, tune, loss_fn, seed, step, progress)
    progress.emit("end", "prune", steps, steps)
    work.eval()

    producers = {p: g for g in analysis.groups for p in g.producers}
    layers = []
    for name, m in plain.named_modules():
        note = PARAMETRIZATION_NOTE if name in unparametrized else ""
        if name in analysis.skipped and name not in touched:
            layers.append(LayerReport.same_size(name, m, "skipped", reason=analysis.skipped[name]))
        elif isinstance(m, surgery.PRODUCERS) and name not in touched:
            layers.append(LayerReport.same_size(name, m, "skipped", reason=unselected_reason(name, include, exclude)))
        elif name in touched:
            new = work.get_submodule(name)
            details = {"shape_before": list(m.weight.shape) if hasattr(m, "weight") else None,
                       "shape_after": list(new.weight.shape) if hasattr(new, "weight") else None}
            if name in producers:
                g = producers[name]
                removed = sorted(set(range(g.units)) - set(kept[g.producer].tolist()))
                details.update(units_before=g.units, units_after=g.units - len(removed),
                               units_removed=len(removed), removed_units=removed)
                if len(g.producers) > 1:
                    details["tied_across_add"] = [p for p in g.producers if p != name]
            kept_reason = analysis.skipped.get(name, "")  # inputs resized, but its own units kept
            kept_reason = f"inputs resized; units kept: {kept_reason}" if kept_reason else ""
            reason = "; ".join(r for r in (note, kept_reason) if r)
            layers.append(LayerReport(
                name, type(m).__name__, "pruned" if name in producers else "resized",
                param_count(m), param_count(new), tensor_bytes(m), tensor_bytes(new),
                sparsity=1 - param_count(new) / max(param_count(m), 1), reason=reason, details=details))
    p0, p1 = param_count(model), param_count(work)
    summary = {"params_before": p0, "params_after": p1, "params_ratio": p1 / p0,
               "bytes_before": tensor_bytes(model), "bytes_after": tensor_bytes(work)}
    _add_history(summary, history)
    report = Report("prune", params, layers, summary=summary)
    report.cover(model, work, reason="not a Linear/Conv layer whose output units structured pruning removes")
    in_model_order(report, model)
    return Result(work, report)


STRUCTURED_INSTEAD = ("Unstructured pruning (prune(..., structured=False)) or slimkit.sparsify work on any model; "
                      "for a smaller dense model, distill into a smaller architecture")


def _choose_units(groups, units, original, target, scope) -> dict[str, torch.Tensor]:
    """Indices of the units each producer keeps after this step (at least one each)."""
    if scope == "layer":
        keep = {}
        for g in groups:
            n_keep = max(1, original[g.producer] - round(target * original[g.producer]))
            n_keep = min(n_keep, g.units)
            keep[g.producer] = torch.topk(units[g.producer], n_keep).indices.sort().values
        return keep
    # global: scores normalised per layer (raw sums grow with fan-in), lowest removed first
    total = sum(original.values())
    to_remove = round(target * total) - (total - sum(g.units for g in groups))
    ranked = sorted((float(s), i, g.producer) for g in groups
                    for i, s in enumerate(units[g.producer] / units[g.producer].mean().clamp_min(1e-30)))
    left = {g.producer: g.units for g in groups}
    dropped: dict[str, set[int]] = {g.producer: set() for g in groups}
    for _, i, name in ranked:
        if to_remove <= 0:
            break
        if left[name] > 1:
            dropped[name].add(i)
            left[name] -= 1
            to_remove -= 1
    return {g.producer: torch.tensor([i for i in range(g.units) if i not in dropped[g.producer]])
            for g in groups}
