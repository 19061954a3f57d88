"""slimkit.accel: run a model on a chosen device and backend, and measure it.

::

    from slimkit import accel
    accel.available_devices()                     # ["cpu"] or ["cpu", "cuda:0", ...]
    dev = accel.resolve_device("cuda", fallback=True)   # absent -> logged fallback, or an error
    run = accel.prepare(model, example_inputs, backend="onnxruntime", quantize="int8")
    m = accel.benchmark(run, example_inputs, threads=2)  # median / p90 latency, memory, fingerprint
    accel.time_variants({"fp32": model, "int8": run}, example_inputs)   # side by side, alternating

Backends (``accel.list_backends()``): eager, compile, aoti, onnxruntime, openvino, torchao, sparse24; packages
add more through the entry-point group ``slimkit.backends``. The core (``slimkit``) never
imports this package.
"""
from __future__ import annotations

from slimkit.devices import available_devices, resolve_device, synchronize
from slimkit.errors import DeviceUnavailableError
from slimkit.hardware import fingerprint, summary as fingerprint_summary

from .backends import (ENTRY_POINT_GROUP, Backend, BackendError, Prepared, backends_info, get_backend,
                       list_backends, prepare, register_backend)
from .bench import Measurement, benchmark, fixed_threads, percentile, throughput, time_variants

__all__ = [
    "available_devices", "resolve_device", "synchronize",
    "prepare", "Prepared", "Backend", "BackendError", "register_backend", "get_backend", "list_backends",
    "backends_info", "ENTRY_POINT_GROUP",
    "benchmark", "time_variants", "throughput", "Measurement", "percentile", "fixed_threads",
    "fingerprint", "fingerprint_summary", "DeviceUnavailableError",
]
