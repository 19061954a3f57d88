"""What the panel runs: one compression step from a dict of settings, and the numbers that
judge its result (accuracy, artifact size, latency). No widget code here, so the same steps
run from buttons, from ``Panel.run()`` and from tests.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

import slimkit
from slimkit.data import subset
from slimkit.devices import available_devices, resolve_device
from slimkit.errors import (InvalidParameterError, SlimkitError, check_choice, check_fraction, check_int,
                            check_nonnegative, check_positive)

METHODS = ("quantize", "prune", "distill", "sparsify")
PIPELINE_ORDER = ("distill", "prune", "quantize", "sparsify")
GRANULARITIES = ("per_channel", "per_tensor", "per_group")
SCHEMES = ("symmetric", "asymmetric")
SCORES = ("magnitude", "fisher", "obd", "random")
FORMATS = ("auto", "csr", "bitmask", "2:4")

# the settings each method reads (results table rows and run records show them)
SETTING_KEYS = {"quantize": ("bits", "granularity", "scheme", "activations"),
                "prune": ("sparsity", "score", "structured", "finetune_epochs"),
                "distill": ("width", "temperature", "alpha", "noise", "epochs", "fraction"),
                "sparsify": ("sparsify_mode", "sparsify_sparsity", "threshold", "format")}

# what a sweep varies for each method, and how to read its values
SWEEP_PARAM = {"quantize": "bits", "prune": "sparsity", "distill": "temperature", "sparsify": "sparsify_sparsity"}

DEFAULTS: dict[str, Any] = dict(
    bits=8, granularity="per_channel", group_size=32, scheme="symmetric", activations=False,
    sparsity=0.5, score="magnitude", structured=False, finetune_epochs=2,
    width=0.5, temperature=4.0, alpha=0.7, noise=0.0, epochs=5, fraction=1.0,
    sparsify_mode="sparsity", sparsify_sparsity=0.9, threshold=0.01, format="auto",
    pipeline=("prune", "quantize"), device="cpu", backend="eager",
    quantize_sweep="8, 6, 4, 3, 2", prune_sweep="0.5, 0.7, 0.8, 0.9, 0.95",
    distill_sweep="1, 2, 4, 8", sparsify_sweep="0.5, 0.8, 0.9, 0.95",
)


def parse_values(text: str, name: str) -> list[float]:
    """"8, 6, 4" -> [8, 6, 4], each checked like the parameter it sweeps."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InvalidParameterError(f"sweep values for {name}", part, "numbers separated by commas") from None
        out.append(int(value) if value.is_integer() and name == "bits" else value)
    if not out:
        raise InvalidParameterError(f"sweep values for {name}", text, "at least one number")
    for v in out:
        check_setting(name, v)
    return out


def check_setting(name: str, value: Any) -> None:
    """One parameter on its own (the core checks again; this lets the panel say it first)."""
    if name == "bits":
        check_int("bits", value, 2, 8)
    elif name in ("sparsity", "sparsify_sparsity"):
        check_fraction(name, value)
    elif name == "alpha":
        check_fraction("alpha", value, allow_one=True)
    elif name in ("temperature", "width"):
        check_positive(name, value)
        if name == "width" and value > 1:
            raise InvalidParameterError("width", value, "a student width factor in (0, 1]")
    elif name == "fraction":
        check_positive("fraction", value)
        check_fraction("fraction", value, allow_one=True)
    elif name in ("epochs", "group_size"):
        check_positive(name, value, integer=True)
    elif name == "finetune_epochs":
        check_int(name, value, 0, 10_000)
    elif name in ("noise", "threshold"):
        check_nonnegative(name, value)
    elif name == "granularity":
        check_choice(name, value, GRANULARITIES)
    elif name == "scheme":
        check_choice(name, value, SCHEMES)
    elif name == "score":
        check_choice(name, value, SCORES)
    elif name == "format":
        check_choice(name, value, FORMATS)
    elif name == "sparsify_mode":
        check_choice(name, value, ("sparsity", "threshold"))


def settings_of(method: str, s: dict[str, Any]) -> tuple[str, ...]:
    """The settings ``method`` reads given the others: group size only per group, and one of
    sparsity / threshold."""
    unused = "threshold" if s["sparsify_mode"] == "sparsity" else "sparsify_sparsity"
    keys = tuple(k for k in SETTING_KEYS[method] if k != unused)
    return keys + (("group_size",) if method == "quantize" and s["granularity"] == "per_group" else ())


def problems(settings: dict[str, Any], methods: tuple[str, ...], model: nn.Module) -> list[str]:
    """Everything wrong with ``settings`` for running ``methods`` on ``model``, as messages."""
    s = settings
    out = [] if methods else ["pipeline: choose at least one step"]
    if {"quantize", "sparsify"} <= set(methods):
        out.append("pipeline: quantize and sparsify both replace the layers, so neither can follow the other; "
                   "choose one (prune then quantize keeps the pruned zeros)")
    for method in methods:
        for name in settings_of(method, s):
            try:
                check_setting(name, s[name])
            except SlimkitError as e:
                out.append(f"{method}: {e}")
    if "quantize" in methods and s["granularity"] == "per_group" and not any("group_size" in m for m in out):
        bad = [f"{n} ({k} values per channel)" for n, k in values_per_channel(model) if k % s["group_size"]]
        if bad:
            out.append(f"quantize: group_size={s['group_size']} must divide the values per output channel "
                       f"of every layer; it does not for " + ", ".join(bad[:4]) + (" ..." if len(bad) > 4 else ""))
    if "sparsify" in methods and s["format"] == "2:4" and s["sparsify_mode"] == "sparsity" \
            and s["sparsify_sparsity"] != 0.5:
        out.append("sparsify: format='2:4' keeps 2 of every 4 weights: set sparsity to 0.5 (or zero by threshold)")
    try:
        resolve_device(s["device"])
        why = backend_problem(s["backend"], s["device"])
        if why:
            out.append(f"backend: {why}")
    except SlimkitError as e:
        out.append(f"device: {e}")
    return out


def values_per_channel(model: nn.Module) -> list[tuple[str, int]]:
    from slimkit.nn import WEIGHTED

    return [(n, m.weight[0].numel()) for n, m in model.named_modules()
            if isinstance(m, WEIGHTED) and not isinstance(m, nn.Embedding)]


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


def apply(method: str, model: nn.Module, s: dict[str, Any], train, test, *, callbacks=None, stop=None,
          include: list[str] | None = None) -> slimkit.Result:
    """Run one method on ``model`` with panel settings ``s``; the input is never changed.

    ``include`` limits quantize/prune/sparsify to some layers (per-layer sensitivity); prune
    then skips fine-tuning, which would move every layer.
    """
    extra = {"callbacks": callbacks, "stop": stop} | ({} if include is None else {"include": include})
    if method == "quantize":
        kw = dict(bits=s["bits"], granularity=s["granularity"], scheme=s["scheme"],
                  activations=(train if s["activations"] else None))  # quantize calibrates on <= 512 rows
        if s["granularity"] == "per_group":
            kw["group_size"] = s["group_size"]
        return slimkit.quantize(model, **kw, **extra)
    if method == "prune":
        finetune = (dict(data=train, epochs=s["finetune_epochs"], val_data=test)
                    if s["finetune_epochs"] and include is None else None)
        return slimkit.prune(model, s["sparsity"], score=s["score"], structured=s["structured"], data=train,
                             finetune=finetune, **extra)
    if method == "sparsify":
        target = ({"sparsity": s["sparsify_sparsity"]} if s["sparsify_mode"] == "sparsity"
                  else {"threshold": s["threshold"]})
        return slimkit.sparsify(model, format=s["format"], **target, **extra)
    if method == "distill":
        student = slimkit.shrink(model, s["width"])
        data = train if s["fraction"] >= 1 else subset(train, s["fraction"])
        return slimkit.distill(model, student, data, temperature=s["temperature"], alpha=s["alpha"],
                               noise=s["noise"], epochs=s["epochs"], val_data=test, callbacks=callbacks, stop=stop)
    raise InvalidParameterError("method", method, "one of " + ", ".join(METHODS))


def latencies(models: list[nn.Module], x: torch.Tensor, device: str = "cpu", backend: str = "eager",
              reps: int = 15) -> list[float]:
    """Median wall time (ms) of one forward pass on batch ``x`` for each model, with ``backend``
    on ``device``, timed side by side by ``slimkit.accel.compare`` (order alternating round by
    round, so a busy machine slows all alike and their ratio stays meaningful).

    Eager CPU runs the models themselves (no copy); other devices/backends go through
    ``slimkit.accel.prepare``, which works on a copy and raises when the backend cannot
    handle a model.
    """
    from slimkit.accel import compare, prepare

    dev = resolve_device(device)
    if backend == "eager" and dev.type == "cpu":
        runs = {str(i): m.eval() for i, m in enumerate(models)}
    else:
        runs = {str(i): prepare(m, x, backend=backend, device=dev) for i, m in enumerate(models)}
    timed = compare(runs, x, rounds=reps, fingerprint=False)
    return [1000 * timed[k].median_s for k in runs]


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
