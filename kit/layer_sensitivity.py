"""``slimkit.sensitivity``: how much each layer alone costs under one method.

One call for every method, so the panel's sensitivity plot and :func:`slimkit.autotune` ask
the same question the same way: change one layer, score the whole model, put it back.
``quantize`` delegates to :func:`slimkit.quant.sensitivity.sensitivity`; the others run the
public verb on a single layer (``include=[that layer]``) of the untouched input model.
"""
from __future__ import annotations

import glob
from collections.abc import Callable

import torch.nn as nn

from .errors import (
    InvalidParameterError,
    InvalidTypeError,
    NothingToCompressError,
    check_choice,
    check_module,
)
from .events import as_progress
from .nn import matches, param_count
from .pruning import surgery
from .pruning.api import prune
from .pruning.config import PruneConfig
from .pruning.unstructured import is_prunable
from .quant import sensitivity as quant_sensitivity
from .quant.config import QuantConfig
from .quant.plan import weight_count
from .sparse.api import sparsify
from .sparse.config import SparsifyConfig

METHODS = ("quantize", "prune", "sparsify", "structured", "distill")


def sensitivity(model: nn.Module, data_or_metric, method: str = "quantize", config=None, *, layers=None,
                callbacks=None, stop=None, **settings) -> list[dict]:
    """Apply ``method`` to one layer at a time and score the whole model: how much each layer
    alone costs. Returns one dict per layer in model order with at least ``name``, ``kind``,
    ``params`` (the layer's weight count), ``score``, ``baseline`` (the unchanged model's score)
    and ``drop`` (baseline - score; larger = more sensitive). The input model is not changed.

    data_or_metric: (X, y) data (score = accuracy in points) or a callable ``model -> score``
    (higher is better).
    method / config / settings (a config of the verb, or its keywords):
      "quantize": :func:`slimkit.quant.sensitivity.sensitivity` (``QuantConfig``; mode defaults
        to "simulated"); rows add weight/output SQNR.
      "prune": unstructured pruning of that layer alone (``PruneConfig``: ``sparsity``, ``score``
        ...; fisher/obd scores use ``data_or_metric`` as data). Rows add ``sparsity``.
      "sparsify": that layer stored sparse (``SparsifyConfig``; default ``sparsity=0.5``). Rows
        add ``bytes_before``/``bytes_after`` of the layer.
      "structured": that layer's output channels/neurons removed (``PruneConfig`` with
        ``structured=True``; the layers reading it shrink too). Rows add ``params_after``.
      "distill": there is no per-layer distillation; a distilled student is a narrower model,
        so its sensitivity is the structured shrink sensitivity: each layer's units cut to
        ``width`` (default 0.5) without retraining, i.e. "structured" at sparsity 1 - width.
    layers: name globs restricting the layers measured (None: every layer the method acts on).
    callbacks / stop: progress events (stage "sensitivity") and a stop flag (raises Interrupted).
    Errors (a bad method, setting, metric or data, no layer selected) come before any work.
    """
    check_module("model", model)
    check_choice("method", method, METHODS)
    layers = _check_layers(layers)
    if method == "quantize":
        return _quantize_rows(model, data_or_metric, config, layers, callbacks, stop, settings)
    score_fn, data = quant_sensitivity.metric_fn(data_or_metric)
    apply, targets = _plan(model, method, config, settings, data, layers)
    progress = as_progress(callbacks, stop)
    base = float(score_fn(model))
    progress.emit("start", "sensitivity", 0, len(targets), baseline=base)
    out = []
    for i, (name, layer) in enumerate(targets):
        progress.check()
        row = {"name": name, "kind": type(layer).__name__, "params": weight_count(layer)}
        try:
            changed, extra = apply(name)
        except NothingToCompressError as e:  # the verb leaves this layer alone (its report says why)
            row.update(score=base, baseline=base, drop=0.0, skipped=str(e))
        else:
            score = float(score_fn(changed))
            row.update(score=score, baseline=base, drop=base - score, **extra)
        out.append(row)
        progress.emit("progress", "sensitivity", i + 1, len(targets), drop=row["drop"])
    progress.emit("end", "sensitivity", len(targets), len(targets))
    return out


def _check_layers(layers):
    if layers is None:
        return None
    if isinstance(layers, str):
        return (layers,)
    if isinstance(layers, (bytes, dict)) or not hasattr(layers, "__iter__"):
        raise InvalidTypeError("layers", layers, "None or layer names/glob patterns")
    layers = tuple(layers)
    if not layers or not all(isinstance(n, str) for n in layers):
        raise InvalidTypeError("layers", layers, "None or a non-empty list of layer names/glob patterns")
    return layers


def _quantize_rows(model, metric, config, layers, callbacks, stop, settings) -> list[dict]:
    if layers is not None:
        settings = {**settings, "include": layers}
    if config is not None and not isinstance(config, QuantConfig):
        raise InvalidTypeError("config", config, "None or a QuantConfig for method='quantize'")
    rows = quant_sensitivity.sensitivity(model, metric, config, callbacks=callbacks, stop=stop, **settings)
    for r in rows:
        r["params"] = weight_count(model.get_submodule(r["name"]))
    return rows


def _one(name: str) -> tuple[str]:
    return (glob.escape(name),)  # a literal name, even with glob characters in it


def _plan(model, method, config, settings, data, layers) -> tuple[Callable, list[tuple[str, nn.Module]]]:
    """``apply(name) -> (changed model, extra row fields)`` for the method, and the layers to
    measure; every setting checked here, before any layer is touched."""
    prune_kw = {"data": data} if data is not None else {}
    if method in ("prune", "structured", "distill"):
        if method == "distill":
            width = settings.pop("width", 0.5)
            if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
                raise InvalidParameterError("width", width, "a number in (0, 1] (the share of units kept)")
            settings = {**settings, "sparsity": 1 - width}
        if method != "prune":
            settings = {**settings, "structured": True}
        cfg = PruneConfig.build(config, settings)
        if cfg.structured != (method != "prune"):
            raise InvalidParameterError("structured", cfg.structured, f"{method != 'prune'} with method={method!r}")
        if cfg.structured:
            targets = _structured_targets(model, layers)

            def apply(name):
                out = prune(model, cfg, include=_one(name), **prune_kw).model
                return out, {"params_after": param_count(out), "sparsity": cfg.sparsity}
        else:
            targets = _targets(model, is_prunable, layers, "prune")

            def apply(name):
                return prune(model, cfg, include=_one(name), **prune_kw).model, {"sparsity": cfg.sparsity}
        if data is None and cfg.score in ("fisher", "obd"):
            raise InvalidParameterError("data_or_metric", "a callable",
                                        f"(X, y) data for score={cfg.score!r}, which averages gradients over data")
        return apply, targets
    if config is None and not {"threshold", "sparsity"} & set(settings):
        settings = {**settings, "sparsity": 0.5}
    cfg = SparsifyConfig.build(config, settings)
    targets = _targets(model, is_prunable, layers, "sparsify")

    def apply(name):
        out, report = sparsify(model, cfg, include=_one(name))
        row = next(r for r in report.layers if r.name == name)
        return out, {"sparsity": row.sparsity, "bytes_before": row.bytes_before, "bytes_after": row.bytes_after}
    return apply, targets


def _targets(model, accept, layers, method) -> list[tuple[str, nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if accept(m) and (layers is None or matches(n, layers))]
    if not found:
        raise NothingToCompressError(f"sensitivity: {type(model).__name__} has no layer {method} acts on"
                                     + (f" matching layers={list(layers)!r}" if layers else ""))
    return found


def _structured_targets(model, layers) -> list[tuple[str, nn.Module]]:
    """The layers whose units structured pruning can remove (one row per group's first producer)."""
    analysis = surgery.analyse_for("structured sensitivity", model, include=layers)
    return [(g.producer, model.get_submodule(g.producer)) for g in analysis.groups]
