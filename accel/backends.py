"""Backends: ways to run a model on a device, behind one call.

``prepare(model, example_inputs, backend=..., device=...)`` returns a :class:`Prepared`: a
callable taking the model's inputs, with the one-time costs it took to build (export,
compile, quantize seconds), the size of what it deploys, and backend details. The input
model is never modified (backends work on a copy).

Built in: ``eager``, ``compile`` (torch.compile), ``aoti`` (torch.export + AOTInductor,
compiled ahead of time per input shape), ``onnxruntime`` (torch.onnx export + ONNX Runtime,
optionally its int8 quantization; slimkit's own quantized models go through ``slimkit.export``),
``openvino`` (``slimkit.export`` to an OpenVINO IR, OpenVINO's CPU plugin), ``torchao`` (int8 weight-only, int8 dynamic, fp8 on CUDA
GPUs that have it) and ``sparse24`` (2:4 semi-structured sparsity, CUDA only). Other packages add backends through the entry-point group ``slimkit.backends``;
an entry point names a :class:`Backend` subclass or instance.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from slimkit.devices import resolve_device, synchronize
from slimkit.errors import DeviceUnavailableError, InvalidParameterError, InvalidTypeError, SlimkitError, check_module

from . import inputs as _inputs

log = logging.getLogger("slimkit.accel")

ENTRY_POINT_GROUP = "slimkit.backends"


class BackendError(SlimkitError, RuntimeError):
    """A backend cannot handle this model (unsupported layer or op, failed export, ...)."""


@dataclass
class Prepared:
    """A model made ready by a backend: call it as you would call the model.

    ``setup_seconds``: one-time costs by stage (e.g. ``{"export": 8.1, "quantize": 1.6}``;
    ``"first_call"`` includes a lazy compile). ``size_bytes``: bytes of what is deployed (the
    ONNX file, the slimkit artifact, the quantized weights), None when unknown. ``info``:
    backend details (fused ops, compiled graphs, layers skipped and why).
    """

    fn: Callable[..., Any]
    backend: str
    device: torch.device
    options: dict[str, Any] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    size_bytes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None  # the torch module behind it, when there is one
    input_dtype: torch.dtype | None = None  # floating inputs are cast to this (fp16/bf16 runs)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def run(self, example_inputs: _inputs.Inputs):
        """Call with inputs in any of the three shapes (tensor, tuple, dict)."""
        return _inputs.call(self.fn, example_inputs)

    def move(self, example_inputs: _inputs.Inputs) -> _inputs.Inputs:
        """The inputs placed where this backend wants them (device and float dtype)."""
        return _inputs.to_device(example_inputs, self.device, self.input_dtype)

    @property
    def setup_total_s(self) -> float:
        return float(sum(self.setup_seconds.values()))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (what benchmarks record next to the timings). A runtime that picks its
        kernels at the first call (OpenVINO) adds them here once it has been called."""
        runtime_info = getattr(self.fn, "runtime_info", None)
        info = {**self.info, **runtime_info()} if callable(runtime_info) else self.info
        return {"backend": self.backend, "device": str(self.device), "options": _jsonable(self.options),
                "setup_seconds": dict(self.setup_seconds), "size_bytes": self.size_bytes,
                "info": _jsonable(info)}


def _jsonable(d: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v) for k, v in d.items()}


class Backend:
    """Subclass and implement :meth:`build`. ``options`` maps each accepted option to its
    default; :meth:`check` raises when the backend cannot run on a device here."""

    name: str = ""
    description: str = ""
    device_types: tuple[str, ...] = ("cpu", "cuda")
    options: dict[str, Any] = {}

    def check(self, device: torch.device) -> None:
        """Raise :class:`~slimkit.errors.DeviceUnavailableError` if unusable on ``device``."""
        if device.type not in self.device_types:
            raise DeviceUnavailableError(
                f"backend {self.name!r} runs on {', '.join(self.device_types)}, not {device.type}")

    def availability(self, device: torch.device) -> str | None:
        """None if usable on ``device``, else why not (for menus and listings)."""
        try:
            self.check(device)
        except SlimkitError as e:
            return str(e)
        return None

    def build(self, model: nn.Module, example_inputs: _inputs.Inputs, device: torch.device,
              **options: Any) -> Prepared:
        raise NotImplementedError


_REGISTRY: dict[str, Backend] = {}
_loaded = False


def register_backend(backend: Backend | type[Backend], *, replace: bool = False) -> Backend:
    """Add a backend (an instance or a subclass, which is instantiated). Usable as a class decorator."""
    instance = backend() if isinstance(backend, type) else backend
    if not isinstance(instance, Backend) or not instance.name:
        raise InvalidTypeError("backend", backend, "a slimkit.accel.Backend (subclass) with a name")
    if instance.name in _REGISTRY and not replace:
        raise InvalidParameterError("backend", instance.name, "a name not yet registered (or replace=True)")
    _REGISTRY[instance.name] = instance
    return backend


def _load() -> None:
    """Register the built-ins and whatever installed packages declare (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import aoti_backend, onnx_backend, openvino_backend, torch_backends  # noqa: F401  (they register themselves)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if ep.name not in _REGISTRY:
                register_backend(obj)
        except Exception as e:  # one broken plugin must not take the built-ins down
            log.warning("could not load backend %r from entry point %s: %s", ep.name, ep.value, e)


def list_backends() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    _load()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InvalidParameterError("backend", name, "one of " + ", ".join(repr(n) for n in sorted(_REGISTRY)))
    return _REGISTRY[name]


def backends_info(device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Every backend with its description, options and whether it runs on ``device`` here."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    out = []
    for name in list_backends():
        b = _REGISTRY[name]
        why = b.availability(dev)
        out.append({"name": name, "description": b.description, "options": dict(b.options),
                    "device_types": list(b.device_types), "available": why is None, "why_not": why})
    return out


def prepare(model: nn.Module, example_inputs: _inputs.Inputs, backend: str = "eager",
            device: str | torch.device = "cpu", *, fallback: bool = False, **options: Any) -> Prepared:
    """Make ``model`` ready to run with ``backend`` on ``device``; ``model`` is not modified.

    ``example_inputs`` follow :mod:`slimkit.inputs`: a tensor (``model(x)``), a tuple (positional
    arguments), a dict (keyword arguments, e.g. tokenized text) or ``slimkit.Inputs(args=...,
    kwargs=...)`` (e.g. ``Inputs(args=(batch_dict,))`` for a forward taking one dict), shaped like
    real inputs; call the result the same way (``prepared.run(inputs)``). Backends that trace or
    export use them, and every backend calls the result once on them (so a lazy compile is paid
    here and shows in ``setup_seconds["first_call"]``).
    ``options`` are backend specific (``get_backend(name).options`` lists them with defaults).
    Raises :class:`~slimkit.errors.DeviceUnavailableError` when the device or backend is not
    usable here, :class:`BackendError` when the backend cannot handle the model.
    """
    check_module("model", model)
    example_inputs = _inputs.check_inputs(example_inputs)
    b = get_backend(backend)
    unknown = sorted(set(options) - set(b.options))
    if unknown:
        raise InvalidParameterError(unknown[0], options[unknown[0]],
                                    f"an option of backend {backend!r}: " + (", ".join(sorted(b.options)) or "none"))
    dev = resolve_device(device, fallback=fallback)
    b.check(dev)
    opts = {**b.options, **options}
    prepared = b.build(model, example_inputs, dev, **opts)
    if "first_call" not in prepared.setup_seconds:
        first = prepared.move(example_inputs)
        t0 = time.perf_counter()
        with torch.inference_mode():
            prepared.run(first)
        synchronize(dev)
        prepared.setup_seconds["first_call"] = time.perf_counter() - t0
    return prepared


def some_names(names: list[str], k: int = 3) -> str:
    """The first ``k`` names for a message, with "..." when there are more."""
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def _innermost(error: BaseException) -> BaseException:
    """The root cause: exporters wrap the real error in banners ("Failed to export the model
    with torch.export. This is step 1/3 ..."); follow the explicit causes (then the implicit
    context) to the last exception that has a message."""
    seen, inner = {id(error)}, error
    nxt = error.__cause__ or error.__context__
    while nxt is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        if str(nxt).strip():
            inner = nxt
        nxt = nxt.__cause__ or nxt.__context__
    return inner


def _reason(error: BaseException) -> str:
    """``Type: message`` of the root cause, colour codes stripped, at most 3 lines / 600 characters."""
    inner = _innermost(error)
    lines = [l.strip() for l in re.sub(r"\x1b\[[0-9;]*m", "", str(inner)).strip().splitlines() if l.strip()]
    return f"{type(inner).__name__}: " + (" ".join(lines[:3])[:600] if lines else "(no message)")


def wrap_failure(backend: str, model: nn.Module, stage: str, error: Exception) -> BackendError:
    """A BackendError that says which backend, model and stage failed, and the root cause."""
    return BackendError(f"backend {backend!r} cannot handle {type(model).__name__}: {stage} failed "
                        f"({_reason(error)})")
