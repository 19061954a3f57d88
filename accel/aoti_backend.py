"""AOTInductor: ``torch.export`` the model, compile the graph ahead of time into a shared
library (one package per input shape), load it back and call it without dynamo.

Why beside ``compile``: a torch.compile'd module evaluates dynamo's guards on every call
(each parameter and buffer is checked: ~0.7 ms of a 10 ms MiniLM call at batch 1 here); an
AOTInductor package runs the generated code directly. The price: shapes are static, so the
first call at a new shape exports and compiles again (tens of seconds on a small CPU), and
the model must export whole (no graph breaks).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slimkit.devices import synchronize
from slimkit.errors import check_choice
from slimkit.nn import tensor_bytes

from . import inputs as _inputs
from .backends import Backend, Prepared, register_backend, wrap_failure
from .prepared_cache import PreparedCache, make_key
from .torch_backends import COMPILE_MODES, _copy_to, _dtype, inductor_settings, slow_int8_warning


def _signature(args: tuple, kwargs: dict) -> tuple:
    """What a compiled package is specialised to: every input's name, shape and dtype."""
    named = [(str(i), a) for i, a in enumerate(args)] + sorted(kwargs.items())
    return tuple((n, tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else (n, repr(t)) for n, t in named)


class _PackagePerShape:
    """Calls the AOTInductor package built for the inputs' shapes, building it on first use."""

    def __init__(self, module: nn.Module, device: torch.device, settings: dict[str, Any], workdir: Path | None,
                 backend_name: str, prepared_cache=None, options: dict | None = None):
        self.module, self.device, self.settings, self.backend_name = module, device, settings, backend_name
        # compile once: packages stored per key (versions, CPU, options, shape, model) and reloaded
        self.cache = PreparedCache(prepared_cache) if prepared_cache is not None else None
        self.options = {**(options or {}), "inductor": {k: repr(v) for k, v in sorted(settings.items())
                                                        if k != "fx_graph_cache"}}
        self.cache_hits: list[bool] = []
        # Without a workdir the packages (tens of MB each) live in a temporary folder that goes with this object.
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="slimkit-aoti-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.packages: dict[tuple, Any] = {}
        self.paths: list[str] = []
        self.seconds: dict[str, float] = {}

    def __call__(self, *args, **kwargs):
        key = _signature(args, kwargs)
        run = self.packages.get(key)
        if run is None:
            run = self.packages[key] = self._build(args, kwargs)
        with torch.inference_mode():
            return run(*args, **kwargs)

    def _build(self, args: tuple, kwargs: dict):
        from torch._inductor import aoti_load_package

        n = len(self.paths)
        suffix = "" if n == 0 else f"_{n}"
        key = None
        if self.cache is not None:
            t0 = time.perf_counter()
            key = make_key(self.module, _inputs.Inputs(args=args, kwargs=kwargs), self.backend_name, self.options,
                           self.device)
            folder = self.cache.lookup(key)
            if folder is not None:
                path = str(folder / "model.pt2")
                run = aoti_load_package(path, device_index=self.device.index if self.device.index is not None else -1)
                self.seconds[f"cache_load{suffix}"] = time.perf_counter() - t0
                self.paths.append(path)
                self.cache_hits.append(True)
                return run
        return self._compile(args, kwargs, n, suffix, key)

    def _compile(self, args: tuple, kwargs: dict, n: int, suffix: str, key: dict | None):
        from torch._inductor import aoti_compile_and_package, aoti_load_package

        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                exported = torch.export.export(self.module, args, kwargs)
        except Exception as e:
            raise wrap_failure(self.backend_name, self.module, "torch.export", e) from e
        t1 = time.perf_counter()
        try:
            if key is not None:
                folder = self.cache.store(key, lambda f: aoti_compile_and_package(
                    exported, package_path=str(f / "model.pt2"), inductor_configs=self.settings))
                path = str(folder / "model.pt2")
                self.cache_hits.append(False)
            else:
                path = str(self.workdir / f"model-{n}.pt2")
                aoti_compile_and_package(exported, package_path=path, inductor_configs=self.settings)
            run = aoti_load_package(path, device_index=self.device.index if self.device.index is not None else -1)
        except Exception as e:
            raise wrap_failure(self.backend_name, self.module, "AOTInductor compile", e) from e
        t2 = time.perf_counter()
        self.seconds.update({f"export{suffix}": t1 - t0, f"compile{suffix}": t2 - t1})
        self.paths.append(path)
        return run


@register_backend
class AotiBackend(Backend):
    name = "aoti"
    description = ("torch.export + AOTInductor: compiled ahead of time into a shared library per input shape "
                   "and called without dynamo's per-call guard checks (the lowest overhead torch path at "
                   "small batches); a new shape compiles again on its first call")
    device_types = ("cpu", "cuda")
    options = {"dtype": None, "mode": None, "freezing": True, "inductor": None, "cache_dir": None, "workdir": None,
               "prepared_cache": None}

    def build(self, model, example_inputs, device, *, dtype=None, mode=None, freezing=True, inductor=None,
              cache_dir=None, workdir=None, prepared_cache=None):
        check_choice("mode", mode, COMPILE_MODES)
        dt = _dtype(dtype)
        m = _copy_to(model, device, dt)
        modes = torch._inductor.list_mode_options(mode) if mode else {}  # (None lists every mode)
        settings = {k: v for k, v in modes.items() if not k.startswith("triton.")}  # no CUDA graphs here
        settings.update(inductor_settings(m, freezing, inductor, cache_dir))
        warning = slow_int8_warning(m, device, self.name)
        opts = {"dtype": dtype, "mode": mode, "freezing": freezing, "inductor": inductor}
        fn = _PackagePerShape(m, device, settings, workdir, self.name, prepared_cache, opts)
        ex = _inputs.to_device(example_inputs, device, dt)
        t0 = time.perf_counter()
        _inputs.call(fn, ex)
        synchronize(device)
        setup = {**fn.seconds, "first_call": time.perf_counter() - t0}
        info = {"inductor": settings, "packages": fn.paths, "package_bytes": Path(fn.paths[0]).stat().st_size}
        if warning:
            info["warning"] = warning
        if fn.cache is not None:
            info["prepared_cache"] = "hit" if fn.cache_hits[0] else "miss"
        return Prepared(fn, self.name, device, opts, setup, tensor_bytes(m), info, m, dt)
