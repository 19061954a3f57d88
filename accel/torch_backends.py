"""Backends that stay in torch: eager, torch.compile, torchao quantization, 2:4 sparsity."""
from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any

import torch
import torch.nn as nn

from slimkit.devices import synchronize
from slimkit.errors import DeviceUnavailableError, InvalidParameterError, check_choice
from slimkit.nn import tensor_bytes
from slimkit.quant.layers import int8_kernel_layers

from . import inputs as _inputs
from .backends import Backend, BackendError, Prepared, register_backend, some_names, wrap_failure

log = logging.getLogger("slimkit.accel")

DTYPES = {None: None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Compiled copies of one ``forward`` share dynamo's per-code recompile budget (default 8).
# Past it dynamo silently runs eager; compiled calls raise that limit and fail loudly instead.
RECOMPILE_LIMIT = 64


def _dtype(value: Any) -> torch.dtype | None:
    return DTYPES[check_choice("dtype", value, DTYPES)]


def _copy_to(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> nn.Module:
    m = copy.deepcopy(model).eval()
    m = m.to(device)
    if dtype is not None:
        m = m.to(dtype)
    return m


class _NoGrad:
    """Calls ``fn`` under inference mode: deployment runs need no autograd bookkeeping."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        with torch.inference_mode():
            return self.fn(*args, **kwargs)


class _Compiled:
    """A torch.compile'd callable that raises rather than silently falling back to eager.

    ``inductor``: inductor config applied to every call, since a new input shape compiles
    again inside a later call (``freezing=True``: weights become constants, so what is derived
    from them, e.g. int8 kernels' column sums, is folded at compile time)."""

    def __init__(self, fn, inductor: dict | None = None):
        self.fn = fn
        self.inductor = dict(inductor or {})

    def __call__(self, *args, **kwargs):
        import torch._dynamo
        import torch._inductor.config

        limit = max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
        with torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True), \
                torch._inductor.config.patch(self.inductor), torch.inference_mode():
            return self.fn(*args, **kwargs)


def slow_int8_warning(module: nn.Module, device: torch.device, backend_name: str) -> str | None:
    """A warning, logged, when compiled int8 layers will run ``torch._int_mm`` on a CPU without
    VNNI/AMX: eager uses fbgemm there, whose packed weights cannot be traced, and ``_int_mm``
    has no fast path (MiniLM int8 compiled on a Zen 3: ~20x slower than eager int8)."""
    from slimkit.hardware import x86_without_int8_dot

    if device.type != "cpu" or not x86_without_int8_dot():
        return None
    layers = int8_kernel_layers(module)
    if not layers:
        return None
    note = (f"{backend_name}: {len(layers)} int8 layers ({some_names(layers)}) will run torch._int_mm, which has "
            "no fast path on this CPU (no VNNI/AMX): expect it to be many times slower than backend 'eager' "
            "(fbgemm) or 'onnxruntime' for this model")
    log.warning(note)
    return note


def _dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


# Inductor inlines a pointwise producer into each of its readers up to this many ops (default
# 30). A per-token int8 quantizer reads its input twice (range, then rounding), so an inlined
# GELU computed its erf twice; below GELU's op count the producer is computed once and stored.
# Measured on MiniLM int8, 1x128, 2 threads: ~7% faster compiled (benchmarks/RESULTS.md).
QUANT_REALIZE_OPCOUNT = 8


def inductor_settings(module: nn.Module, freezing: bool, inductor: dict | None,
                      cache_dir: str | None) -> dict[str, Any]:
    """The inductor config for compiling ``module``: slimkit's defaults for its int8 layers,
    then the caller's ``inductor`` dict (checked against torch's setting names) on top.
    ``cache_dir`` sets ``TORCHINDUCTOR_CACHE_DIR`` (inductor's default is a shared temp folder)."""
    if not isinstance(freezing, bool):
        raise InvalidParameterError("freezing", freezing, "True or False")
    if not isinstance(inductor, (dict, type(None))):
        raise InvalidParameterError("inductor", inductor, "None or a dict of torch._inductor.config settings")
    import torch._inductor.config as inductor_config

    known = inductor_config.get_config_copy()
    unknown = sorted(k for k in (inductor or {}) if k not in known)
    if unknown:
        raise InvalidParameterError("inductor", unknown[0], "a torch._inductor.config setting name")
    settings: dict[str, Any] = {}
    if int8_kernel_layers(module, "dynamic"):
        settings["realize_opcount_threshold"] = QUANT_REALIZE_OPCOUNT
    settings.update(inductor or {})
    if freezing:
        settings["freezing"] = True
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(str(cache_dir))
    return settings


def compile_module(module: nn.Module, example_inputs, device: torch.device, *, mode: str | None = None,
                   dynamic: bool | None = None, fullgraph: bool = False, cache_dir: str | None = None,
                   freezing: bool = False, inductor: dict | None = None,
                   backend_name: str = "compile") -> tuple[_Compiled, float, dict[str, Any]]:
    """``torch.compile`` plus the first call that really compiles; returns (callable, seconds, info).

    ``freezing``: inductor's inference freezing (weights as constants; the module must not be
    trained or have its weights changed afterwards). ``inductor``: further inductor settings
    for this model's compiles (``torch._inductor.config`` names), e.g. ``{"realize_opcount_threshold": 16}``;
    ``cache_dir``: see :func:`inductor_settings`.
    """
    check_choice("mode", mode, COMPILE_MODES)
    settings = inductor_settings(module, freezing, inductor, cache_dir)
    warning = slow_int8_warning(module, device, backend_name)
    fn = _Compiled(torch.compile(module, mode=mode, dynamic=dynamic, fullgraph=fullgraph), settings)
    graphs0, breaks0 = _dynamo_counts()
    t0 = time.perf_counter()
    try:
        _inputs.call(fn, example_inputs)
        synchronize(device)
    except Exception as e:
        raise wrap_failure(backend_name, module, "torch.compile", e) from e
    seconds = time.perf_counter() - t0
    graphs1, breaks1 = _dynamo_counts()
    info = {"compiled_graphs": graphs1 - graphs0, "graph_breaks": breaks1 - breaks0, "inductor": settings,
            "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default temp folder)")}
    if warning:
        info["warning"] = warning
    if info["graph_breaks"]:
        log.warning("torch.compile split %s into %d graphs (%d graph breaks): parts run eagerly",
                    type(module).__name__, info["compiled_graphs"], info["graph_breaks"])
    return fn, seconds, info


@register_backend
class EagerBackend(Backend):
    name = "eager"
    description = "plain PyTorch (the baseline); dtype casts weights and float inputs"
    device_types = ("cpu", "cuda", "mps")
    options = {"dtype": None}

    def build(self, model, example_inputs, device, *, dtype=None):
        dt = _dtype(dtype)
        t0 = time.perf_counter()
        m = _copy_to(model, device, dt)
        return Prepared(_NoGrad(m), self.name, device, {"dtype": dtype}, {"copy": time.perf_counter() - t0},
                        tensor_bytes(m), {}, m, dt)


@register_backend
class CompileBackend(Backend):
    name = "compile"
    description = "torch.compile (inductor); the first call compiles (tens of seconds on a small CPU)"
    device_types = ("cpu", "cuda")
    options = {"dtype": None, "mode": None, "dynamic": None, "fullgraph": False, "cache_dir": None,
               "freezing": False, "inductor": None}

    def build(self, model, example_inputs, device, *, dtype=None, mode=None, dynamic=None,
              fullgraph=False, cache_dir=None, freezing=False, inductor=None):
        dt = _dtype(dtype)
        m = _copy_to(model, device, dt)
        ex = _inputs.to_device(example_inputs, device, dt)
        fn, seconds, info = compile_module(m, ex, device, mode=mode, dynamic=dynamic, fullgraph=fullgraph,
                                           cache_dir=cache_dir, freezing=freezing, inductor=inductor)
        opts = {"dtype": dtype, "mode": mode, "dynamic": dynamic, "fullgraph": fullgraph, "freezing": freezing,
                "inductor": inductor}
        return Prepared(fn, self.name, device, opts, {"compile": seconds, "first_call": seconds},
                        tensor_bytes(m), info, m, dt)


def _has_float8(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


@register_backend
class TorchaoBackend(Backend):
    name = "torchao"
    description = ("torchao quantization of every nn.Linear: int8 weight-only, int8 dynamic "
                   "(int8 activations too), fp8 on GPUs with compute capability >= 8.9; compile=True "
                   "adds torch.compile (torchao's int8 is slower than fp32 eager on CPU uncompiled)")
    device_types = ("cpu", "cuda")
    CONFIGS = ("int8_weight_only", "int8_dynamic", "fp8", "fp8_weight_only")
    options = {"config": "int8_dynamic", "compile": False, "dtype": None, "mode": None, "dynamic": None,
               "cache_dir": None, "freezing": False}

    def check(self, device):
        super().check(device)
        try:
            import torchao  # noqa: F401
        except ImportError as e:
            raise DeviceUnavailableError(f"backend 'torchao' needs the torchao package ({e})") from e

    def _config(self, name: str, device: torch.device):
        import torchao.quantization as q

        check_choice("config", name, self.CONFIGS)
        if name.startswith("fp8") and not _has_float8(device):
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            raise DeviceUnavailableError(f"torchao {name!r} needs a CUDA GPU with compute capability >= 8.9 "
                                         f"(fp8 tensor cores); this run is on {where}")
        return {"int8_weight_only": q.Int8WeightOnlyConfig, "int8_dynamic": q.Int8DynamicActivationInt8WeightConfig,
                "fp8": q.Float8DynamicActivationFloat8WeightConfig, "fp8_weight_only": q.Float8WeightOnlyConfig}[name]()

    def build(self, model, example_inputs, device, *, config="int8_dynamic", compile=False, dtype=None,
              mode=None, dynamic=None, cache_dir=None, freezing=False):
        from torchao.quantization import quantize_

        cfg = self._config(config, device)
        dt = _dtype(dtype)
        linears = [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)]
        if not linears:
            raise BackendError(f"backend 'torchao' cannot handle {type(model).__name__}: it quantizes nn.Linear "
                               "layers and the model has none")
        m = _copy_to(model, device, dt)
        t0 = time.perf_counter()
        try:
            quantize_(m, cfg)
        except Exception as e:
            raise wrap_failure(self.name, model, f"torchao quantize_({type(cfg).__name__})", e) from e
        setup = {"quantize": time.perf_counter() - t0}
        info: dict[str, Any] = {"quantized_linears": len(linears), "torchao_config": type(cfg).__name__}
        opts = {"config": config, "compile": compile, "dtype": dtype}
        fn: Any = _NoGrad(m)
        if compile:
            ex = _inputs.to_device(example_inputs, device, dt)
            fn, seconds, cinfo = compile_module(m, ex, device, mode=mode, dynamic=dynamic, cache_dir=cache_dir,
                                                freezing=freezing, backend_name=self.name)
            setup["compile"] = seconds
            setup["first_call"] = seconds
            info.update(cinfo)
        return Prepared(fn, self.name, device, opts, setup, tensor_bytes(m), info, m, dt)


def mask_2to4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights of every 4 consecutive inputs (per output row)."""
    out_f, in_f = weight.shape
    groups = weight.detach().abs().reshape(out_f, in_f // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(out_f, in_f)


def is_2to4(weight: torch.Tensor) -> bool:
    out_f, in_f = weight.shape
    return in_f % 4 == 0 and bool(((weight.reshape(out_f, in_f // 4, 4) != 0).sum(-1) <= 2).all())


@register_backend
class Sparse24Backend(Backend):
    name = "sparse24"
    description = ("2:4 semi-structured sparse nn.Linear weights on CUDA sparse tensor cores (fp16/bf16); "
                   "prune='magnitude' first zeroes 2 of every 4 weights, which changes outputs - measure fidelity")
    device_types = ("cuda",)
    options = {"dtype": "float16", "prune": "magnitude", "compile": False, "cache_dir": None}
    # CUTLASS kernels need both weight dims to be multiples of these (fp16/bf16).
    MIN_ROWS, MIN_COLS = 32, 64

    def check(self, device):
        if device.type != "cuda":
            raise DeviceUnavailableError(
                "backend 'sparse24' needs a CUDA GPU (compute capability >= 8.0): PyTorch's 2:4 semi-structured "
                f"kernels do not exist for {device.type} (to_sparse_semi_structured raises there)")
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise DeviceUnavailableError(f"backend 'sparse24' needs compute capability >= 8.0; "
                                         f"{torch.cuda.get_device_name(device)} has "
                                         f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}")

    def build(self, model, example_inputs, device, *, dtype="float16", prune="magnitude", compile=False,
              cache_dir=None):
        from torch.sparse import to_sparse_semi_structured

        if dtype not in ("float16", "bfloat16"):
            raise InvalidParameterError("dtype", dtype, "'float16' or 'bfloat16' (the 2:4 kernels' dtypes)")
        if prune not in ("magnitude", None):
            raise InvalidParameterError("prune", prune, "'magnitude' or None (weights must already be 2:4)")
        dt = DTYPES[dtype]
        m = _copy_to(model, device, dt)
        t0 = time.perf_counter()
        done, skipped = [], {}
        for name, lin in m.named_modules():
            if not isinstance(lin, nn.Linear):
                continue
            out_f, in_f = lin.weight.shape
            if out_f % self.MIN_ROWS or in_f % self.MIN_COLS:
                skipped[name] = f"shape {out_f}x{in_f} is not a multiple of {self.MIN_ROWS}x{self.MIN_COLS}"
                continue
            w = lin.weight.detach()
            if prune == "magnitude":
                w = w * mask_2to4(w)
            elif not is_2to4(w):
                skipped[name] = "weight is not 2:4 sparse (pass prune='magnitude')"
                continue
            try:
                lin.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
            except Exception as e:
                raise wrap_failure(self.name, model, f"to_sparse_semi_structured({name})", e) from e
            done.append(name)
        if not done:
            raise BackendError(f"backend 'sparse24' cannot handle {type(model).__name__}: no nn.Linear fits the "
                               f"2:4 kernels ({skipped or 'the model has no nn.Linear'})")
        setup = {"sparsify": time.perf_counter() - t0}
        info = {"sparse_linears": done, "skipped": skipped, "pruned_2to4": prune == "magnitude"}
        fn: Any = _NoGrad(m)
        if compile:
            ex = _inputs.to_device(example_inputs, device, dt)
            fn, seconds, cinfo = compile_module(m, ex, device, cache_dir=cache_dir, backend_name=self.name)
            setup.update(compile=seconds, first_call=seconds)
            info.update(cinfo)
        return Prepared(fn, self.name, device, {"dtype": dtype, "prune": prune, "compile": compile}, setup,
                        tensor_bytes(m), info, m, dt)
