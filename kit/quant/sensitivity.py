"""How much each layer alone costs when quantized (:func:`sensitivity`), and ``keep="auto"``: the
fewest most-sensitive layers to keep float so the whole model stays within a metric budget."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn as nn

from ..config import signature
from ..data import batches
from ..errors import InvalidTypeError, NothingToCompressError, check_module
from ..events import as_progress
from ..metrics import evaluate, sqnr
from ..nn import set_module
from .build import copy_module, quantize_layer
from .calibrate import calibrate, input_range
from .config import QuantConfig
from .plan import layouts as plan_layouts
from .plan import plan_layer


def metric_fn(metric) -> tuple[Callable[[nn.Module], float], object]:
    """A score function (higher is better) and, for data, the inputs used for output SQNR."""
    if callable(metric) and not isinstance(metric, nn.Module):
        return metric, None
    try:
        batches(metric)
    except Exception:
        raise InvalidTypeError("metric", metric, "a callable model -> score (higher is better) or (X, y) data")
    return (lambda m: 100.0 * evaluate(m, metric)["accuracy"]), metric


def sensitivity(model: nn.Module, data_or_metric_fn, config: QuantConfig | None = None, *, activations=None,
                callbacks=None, stop=None, **settings) -> list[dict]:
    """Quantize one layer at a time and score the model: how much each layer alone costs.

    ``data_or_metric_fn``: (X, y) data (score = accuracy in points; also the output SQNR of the
    model's logits vs the original) or a callable ``model -> score`` (higher is better).
    ``config`` / settings: as :func:`slimkit.quantize` takes them (``sensitivity(m, data, bits=4)``),
    except that ``mode`` defaults to "simulated" (fast, same weight numerics); "auto"/"real" build
    the layers quantize() would. A :class:`QuantConfig` passed whole is used as it is.
    Returns one dict per layer in model order: name, kind, score, baseline (the unquantized
    model's score), drop (baseline - score; larger = more sensitive), weight_sqnr_db,
    output_sqnr_db (data only). The input model is not changed.
    """
    check_module("model", model)
    if not isinstance(config, QuantConfig):
        settings.setdefault("mode", "simulated")
    config = QuantConfig.build(config, settings)
    note = None
    if config.method == "gptq":  # GPTQ's rounding needs the whole model's calibration pass per layer
        config = dataclasses.replace(config, method="affine", act_order=False)
        note = "ranked with round-to-nearest: GPTQ rounding needs calibration data (quantize's data=)"
    score_fn, data = metric_fn(data_or_metric_fn)
    progress = as_progress(callbacks, stop)
    base_model = copy_module(model).eval()
    targets, layouts = plan_layouts(base_model, config)
    base = float(score_fn(base_model))
    ref_out = _outputs(base_model, data) if data is not None else None
    act_stats = calibrate(base_model, activations, [n for n, _ in targets], progress) if activations is not None else {}
    out = []
    progress.emit("start", "sensitivity", 0, len(targets), baseline=base)
    for i, (name, layer) in enumerate(targets):
        progress.check()
        plan = plan_layer(name, layer, config, layouts[name], activations is not None)
        plan = dataclasses.replace(plan, act_range=input_range(act_stats.get(name), layer))
        new, w_sqnr, _ = quantize_layer(layer, plan, config)
        set_module(base_model, name, new)  # swap one layer in, then put the original back
        try:
            score = float(score_fn(base_model))
            row = {"name": name, "kind": type(layer).__name__, "score": score, "baseline": base,
                   "drop": base - score, "weight_sqnr_db": w_sqnr}
            if ref_out is not None:
                row["output_sqnr_db"] = sqnr(ref_out, _outputs(base_model, data))
            if note:
                row["note"] = note
        finally:
            set_module(base_model, name, layer)
        out.append(row)
        progress.emit("progress", "sensitivity", i + 1, len(targets), drop=row["drop"])
    progress.emit("end", "sensitivity", len(targets), len(targets))
    return out


signature(sensitivity, QuantConfig)
sensitivity.__signature__ = sensitivity.__signature__.replace(parameters=[  # its own default mode
    p.replace(default="simulated") if p.name == "mode" else p for p in sensitivity.__signature__.parameters.values()])


@torch.no_grad()
def _outputs(model, data):
    return torch.cat([model(x).float() for x, _ in batches(data, batch_size=512)])


def auto_keep(model: nn.Module, names: list[str], metric, config: QuantConfig, progress,
              build: Callable[[QuantConfig], nn.Module]) -> tuple[list[dict], list[str]]:
    """Rank the layers ``names`` by sensitivity, then find the fewest most-sensitive ones to keep
    in fp32 so that the whole quantized model's score drops by at most ``config.max_drop``
    (binary search). ``build(config)`` quantizes ``model`` with a config (quantize itself, passed
    in so this module does not import the verb that calls it)."""
    score_fn, _ = metric_fn(metric)
    only = dataclasses.replace(config, include=tuple(names), exclude=None, keep=None)
    ranking = sensitivity(model, metric, dataclasses.replace(only, mode="simulated"), callbacks=progress)
    order = sorted(ranking, key=lambda r: (-r["drop"], r.get("output_sqnr_db", 0.0), r["weight_sqnr_db"]))
    ranked = [r["name"] for r in order]
    base = ranking[0]["baseline"]  # sensitivity scored the unquantized model already

    def drop_with(k: int) -> float:
        if k == len(ranked):
            return 0.0
        return base - float(score_fn(build(dataclasses.replace(only, keep=tuple(ranked[:k]) or None))))

    lo, hi = 0, len(ranked)  # invariant: keeping ranked[:hi] satisfies the budget
    if drop_with(0) <= config.max_drop:
        return ranking, []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        progress.emit("progress", "auto_keep", mid, len(ranked))
        if drop_with(mid) <= config.max_drop:
            hi = mid
        else:
            lo = mid
    if hi == len(ranked):
        least = min(ranking, key=lambda r: r["drop"])
        raise NothingToCompressError(
            f"keep='auto': no layer can be quantized to {config.bits} bits within max_drop={config.max_drop}; even "
            f"the least sensitive layer alone ({least['name']!r}) costs {least['drop']:.3g}. Raise max_drop or bits")
    return ranking, ranked[:hi]
