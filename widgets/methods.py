"""What the panel runs: one compression step from its configs, and what only the panel needs
around it (its data forms, the devices and backends it offers, checks that need the model,
latency). No widget code here, so the same steps run from buttons, ``Panel.run()`` and tests.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

import slimkit
from slimkit.config import Config
from slimkit.data import Split, subset
from slimkit.devices import available_devices, resolve_device
from slimkit.errors import InvalidParameterError, InvalidTypeError


def splits(data) -> tuple[Any, Any]:
    """(train, test) from a Digits-like object, a dict, a pair of splits, or one split for both."""
    if hasattr(data, "train") and hasattr(data, "test"):
        return data.train, data.test
    if isinstance(data, dict) and {"train", "test"} <= set(data):
        return data["train"], data["test"]
    if isinstance(data, Split):
        return data, data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if all(hasattr(d, "dtype") for d in data):  # one (X, y) pair of tensors
            return tuple(data), tuple(data)
        return data[0], data[1]
    raise InvalidTypeError("data", data, "a Digits object (train/test), {'train': ..., 'test': ...}, "
                                         "a pair (train, test) or one (X, y) split")


def group_size_problem(model: nn.Module, config: slimkit.QuantConfig) -> str | None:
    """Why ``config`` cannot quantize ``model`` (e.g. a group size that does not divide a layer),
    asked of quantize's own planning before anything runs; None when it can."""
    from slimkit.quant.plan import layouts

    try:
        layouts(model, config)
    except slimkit.SlimkitError as e:
        return str(e)
    return None


def devices() -> list[str]:
    """Devices this machine has, as the device dropdown lists them."""
    found = available_devices()
    return found[:1] + (["cuda"] if "cuda:0" in found else []) + found[1:]  # "cuda": the current GPU


def backends() -> list[str]:
    """Execution backends latency can be measured with: eager PyTorch, plus ``slimkit.accel``'s."""
    try:
        from slimkit.accel.backends import list_backends
    except ImportError:
        return ["eager"]
    return ["eager"] + [n for n in list_backends() if n != "eager"]


def backend_problem(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot run on ``device`` here (None when it can)."""
    if backend == "eager":
        return None
    try:
        from slimkit.accel.backends import backends_info
    except ImportError:
        return f"backend {backend!r} needs slimkit.accel (pip install slimkit[accel])"
    info = {b["name"]: b for b in backends_info(resolve_device(device))}
    if backend not in info:
        return f"backend {backend!r} is not installed (have: {', '.join(sorted(info))})"
    return info[backend]["why_not"]


def apply(method: str, model: nn.Module, configs: dict[str, Config], train, test, *, callbacks=None, stop=None,
          include: list[str] | None = None, device="cpu", backend="eager") -> slimkit.Result:
    """Run one method on ``model`` with its ``configs`` (see ``Controls.step``); the input is
    never changed. ``include`` limits quantize/prune/sparsify to some layers (per-layer
    sensitivity); prune then skips fine-tuning, which would move every layer. ``device`` and
    ``backend`` (see :func:`autotune_backend`): where autotune times its trials."""
    run = {"callbacks": callbacks, "stop": stop}
    only = {} if include is None else {"include": include}
    if method == "quantize":
        panel = configs["quantize_panel"]
        calibrate = train if panel.activations else None  # quantize uses <= 512 rows
        # codebook centroids trained on the training data (quantize refuses it for affine, and says so)
        tune = {"finetune": {"data": train, "epochs": panel.centroid_epochs}} if panel.centroid_epochs else {}
        gptq = {"data": train} if configs["quantize"].method == "gptq" else {}  # GPTQ's calibration pass
        return slimkit.quantize(model, configs["quantize"], activations=calibrate, **tune, **gptq, **only, **run)
    if method == "prune":
        finetune = configs.get("finetune") if include is None else None
        return slimkit.prune(model, configs["prune"], data=train, finetune=finetune, **only, **run)
    if method == "sparsify":
        return slimkit.sparsify(model, configs["sparsify"], **only, **run)
    if method == "distill":
        panel = configs["distill_panel"]
        student = slimkit.shrink(model, panel.width)
        data = train if panel.fraction >= 1 else subset(train, panel.fraction)
        return slimkit.distill(model, student, data, configs["distill"], val_data=test, **run)
    if method == "auto":
        from .controls import auto_kwargs

        a = configs["auto"]
        return slimkit.autotune(model, test, train=train if a.epochs else None, device=device, backend=backend,
                                **auto_kwargs(a), **run)
    raise InvalidParameterError("method", method, "one of quantize, prune, distill, sparsify, auto")


def autotune_problem(auto) -> tuple[str | None, set[str]]:
    """Why ``slimkit.autotune`` would refuse the auto tab's methods (its own check, asked before
    anything runs; the rest it checks when it starts), and the controls to outline."""
    from slimkit.tuning import check_methods

    try:
        check_methods(auto.methods, auto.objective, "train" if auto.epochs else None)
    except slimkit.SlimkitError as e:
        names = {"methods": {f"auto_{m}" for m in ("quantize", "prune", "sparsify", "structured", "distill")},
                 "train": {"auto_epochs"}}.get(getattr(e, "name", ""), set())
        return str(e), names
    return None, set()


def autotune_backend(backend: str, x: torch.Tensor, device: str):
    """What ``slimkit.autotune`` takes as ``backend``: "eager", or a callable preparing each model
    with ``slimkit.accel`` on the panel's latency batch (named after the backend, for its records)."""
    if backend == "eager":
        return "eager"
    from slimkit.accel import prepare

    dev = resolve_device(device)

    def run(m: nn.Module):
        return prepare(m, x, backend=backend, device=dev)

    run.__name__ = backend
    return run


def sensitivity(model: nn.Module, test, config: slimkit.QuantConfig, *, callbacks=None, stop=None) -> list[dict]:
    """The core's per-layer quantization sensitivity with the settings changed in ``config``
    (the rest, e.g. its fast simulated mode, stay the core's defaults)."""
    from slimkit.quant.sensitivity import sensitivity as core

    return core(model, test, **config.changed(), callbacks=callbacks, stop=stop)


def core_sensitivity():
    """``slimkit.sensitivity`` (one layer at a time, every method) where this slimkit has it."""
    found = getattr(slimkit, "sensitivity", None)
    return found if callable(found) else None


def latencies(models: list[nn.Module], x: torch.Tensor, device: str = "cpu",
              backend: str = "eager") -> tuple[list[float], str]:
    """Median wall time (ms) of one forward pass on batch ``x`` for each model, timed side by
    side (order alternating round by round, so a busy machine slows all alike and their ratio
    stays meaningful), and why timing failed ("" when it did not; the times are then nan).

    Eager runs through ``slimkit.measure.latency`` (on CPU the models themselves, no copy);
    other backends compile copies with ``slimkit.accel.prepare``, which raises when the
    backend cannot handle a model, and ``accel.time_variants`` times them.
    """
    from slimkit.measure import latency

    why = f"latency with {backend} on {device} failed: "
    try:
        if backend == "eager":
            timed = latency({str(i): m for i, m in enumerate(models)}, x, device=device, num_threads=None)
            errors = list(timed["errors"].values())
            return list(timed["ms"].values()), (why + errors[0] if errors else "")
        from slimkit.accel import prepare, time_variants

        dev = resolve_device(device)
        runs = {str(i): prepare(m, x, backend=backend, device=dev) for i, m in enumerate(models)}
        timed = time_variants(runs, x, rounds=15, fingerprint=False)
        return [1000 * timed[k].median_s for k in runs], ""
    except Exception as e:  # the compressed model stands; say why it has no latency
        return [math.nan] * len(models), f"{why}{type(e).__name__}: {e}"


def weights(module: nn.Module) -> torch.Tensor | None:
    """A layer's weight as float, whatever slimkit turned it into (quantized, sparse, wrapped)."""
    for attr in ("dequantized_weight", "dense_weight"):  # slimkit's quantized / sparse layers
        if callable(getattr(module, attr, None)):
            return getattr(module, attr)().detach().float()
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor):
        return (w if w.layout == torch.strided else w.to_dense()).detach().float()
    inner = getattr(module, "inner", None)  # FakeQuantInput wraps the layer it simulates
    return weights(inner) if isinstance(inner, nn.Module) else None
