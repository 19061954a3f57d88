"""Structured pruning: remove the lowest-scored whole neurons/channels with
:mod:`slimkit.pruning.surgery`; the model physically shrinks."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..inputs import apply
from ..nn import param_count, tensor_bytes, unselected_reason
from ..report import Action, LayerReport, Report, Result
from . import importance, surgery
from .common import PARAMETRIZATION_NOTE, Job, add_history, in_model_order, plain_copy

STRUCTURED_INSTEAD = ("Unstructured pruning (prune(..., structured=False)) or slimkit.sparsify work on any model; "
                      "for a smaller dense model, distill into a smaller architecture")


def prune_units(model: nn.Module, job: Job) -> Result:
    config = job.config
    source = job.data if job.data is not None else (job.tune.data if job.tune is not None else None)
    example = None if source is None else apply(importance.first_batch("data", source)[0], lambda t: t[:2])
    plain, unparametrized = plain_copy(model)
    analysis = surgery.analyse_for("structured pruning", plain, include=config.include, exclude=config.exclude,
                                   example=example, instead=STRUCTURED_INSTEAD)
    original = {g.producer: g.units for g in analysis.groups}
    kept = {g.producer: torch.arange(g.units) for g in analysis.groups}  # original indices still there
    work = copy.deepcopy(plain)
    history: list[dict] = []
    steps = config.steps
    job.progress.emit("start", "prune", 0, steps)
    for step in range(1, steps + 1):
        groups = [g for g in surgery.analyse(work, example=example).groups if g.producer in original]
        scores = job.scores(work, [(p, work.get_submodule(p)) for g in groups for p in g.producers], step)
        units = {g.producer: sum(surgery.unit_scores(scores[p], work.get_submodule(p)) for p in g.producers)
                 for g in groups}
        keep = _choose_units(groups, units, original, job.target(step), config.scope)
        for g in groups:
            if len(keep[g.producer]) < g.units:
                surgery.remove_units(work, g, keep[g.producer])
                kept[g.producer] = kept[g.producer][keep[g.producer]]
        job.progress.emit("metrics", "prune", step, steps, params=param_count(work))
        history += job.finetune(work, step)
    job.progress.emit("end", "prune", steps, steps)
    work.eval()

    layers = _rows(plain, work, analysis, kept, unparametrized, config.include, config.exclude)
    p0, p1 = param_count(model), param_count(work)
    summary = {"params_before": p0, "params_after": p1, "params_ratio": p1 / p0,
               "bytes_before": tensor_bytes(model), "bytes_after": tensor_bytes(work)}
    add_history(summary, history)
    report = Report("prune", job.params, layers, summary=summary)
    report.cover(model, work, reason="not a Linear/Conv layer whose output units structured pruning removes")
    in_model_order(report, model)
    return Result(work, report)


def _rows(plain: nn.Module, work: nn.Module, analysis: surgery.Analysis, kept: dict[str, torch.Tensor],
          unparametrized: list[str], include, exclude) -> list[LayerReport]:
    """A row per layer structured pruning considered: pruned producers, resized readers, skipped ones."""
    touched = {n for g in analysis.groups for n in g.modules}
    producers = {p: g for g in analysis.groups for p in g.producers}
    layers = []
    for name, m in plain.named_modules():
        if name in analysis.skipped and name not in touched:
            layers.append(LayerReport.same_size(name, m, Action.SKIPPED, reason=analysis.skipped[name]))
        elif isinstance(m, surgery.PRODUCERS) and name not in touched:
            layers.append(LayerReport.same_size(name, m, Action.SKIPPED,
                                                reason=unselected_reason(name, include, exclude)))
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
            note = PARAMETRIZATION_NOTE if name in unparametrized else ""
            kept_reason = analysis.skipped.get(name, "")  # inputs resized, but its own units kept
            kept_reason = f"inputs resized; units kept: {kept_reason}" if kept_reason else ""
            reason = "; ".join(r for r in (note, kept_reason) if r)
            layers.append(LayerReport(
                name, type(m).__name__, Action.PRUNED if name in producers else Action.RESIZED,
                param_count(m), param_count(new), tensor_bytes(m), tensor_bytes(new),
                sparsity=1 - param_count(new) / max(param_count(m), 1), reason=reason, details=details))
    return layers


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
