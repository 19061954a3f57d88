"""The ``openvino`` backend: ``slimkit.export(format="openvino")`` (slimkit's own int8 weights and
activation scales, see :mod:`slimkit.exporter.lower`), compiled by OpenVINO's CPU plugin.

Recorded, because it changes the numbers: OpenVINO's CPU plugin computes float parts in bf16 by
default on CPUs with AVX-512 BF16 (``precision=None`` keeps its default; "f32" or "bf16" set
``INFERENCE_PRECISION_HINT``); ``info["precision"]`` is what the compiled model reports. The IR keeps
float weights fp32 (not OpenVINO's default fp16 compression) and int8 weights int8.

``dynamic_quantization=N`` (a group size) exports slimkit's int8 Linear layers with float
activations and sets the CPU plugin's ``DYNAMIC_QUANTIZATION_GROUP_SIZE``: OpenVINO then quantizes
activations itself where its kernels for the CPU do (its numbers, not slimkit's per-token ones). On
an AVX2 CPU without VNNI they do not: the plugin decompresses the int8 weights and computes in f32,
at any group size (measured on a Zen 3: every MiniLM Linear ran ``brgemm_avx2_f32``). Which kernels
ran is in ``describe()["info"]["matmul_kernels"]`` after the first call. None (default) runs
slimkit's exact per-token arithmetic and sets the hint to 0 (off), so the graph is what slimkit wrote.

Static (calibrated) int8 layers with full-range 8-bit weights are refused on CPUs without VNNI
(:func:`~.runtime_call.check_saturation`; measured: one static Linear off by 31% of its output
range on a Zen 3). Weights quantized to 7 bits (NNCF's "overflow fix") run exactly.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from slimkit.errors import DeviceUnavailableError, InvalidParameterError
from slimkit.exporter import export
from slimkit.exporter.lower import ExportError
from slimkit.exporter.onnx import forward_names

from . import inputs as _inputs
from .backends import Backend, BackendError, Prepared, register_backend, wrap_failure
from .prepared_cache import (load_or_build, load_output_structure, output_structure, runtime_spec,
                             save_output_structure)
from .runtime_call import RuntimeCall, check_saturation, check_threads

PRECISIONS = (None, "f32", "bf16")
MATMULS = ("FullyConnected", "MatMul", "Convolution", "GroupConvolution")


class _Compiled(RuntimeCall):
    """Calls a compiled OpenVINO model like the torch model: tensors in, the model's output structure out."""

    runtime = "OpenVINO"

    def __init__(self, compiled, positional: list[str], out_spec):
        super().__init__(positional, out_spec)
        self.compiled = compiled
        self.input_names = [p.get_any_name() for p in compiled.inputs]
        self.request = compiled.create_infer_request()

    def _run(self, feed: dict) -> list:
        res = self.request.infer(feed)
        return [res[o].copy() for o in self.compiled.outputs]

    def runtime_info(self) -> dict[str, Any]:
        """The kernels OpenVINO runs the model's matrix products with, and the precisions they compute
        in: int8 weights can run an int8 kernel or be decompressed into a float one (what the CPU
        plugin does on AVX2 CPUs, dynamic quantization or not). Known after the first call."""
        kernels: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            layer, kernel = rt["layerType"].astype(str), rt["primitiveType"].astype(str)
            if layer.startswith(MATMULS) and not kernel.startswith("undef"):
                name = f"{layer} [{kernel}]"
                kernels[name] = kernels.get(name, 0) + 1
        if not kernels:
            return {}
        compute = sorted({k.rsplit("_", 1)[-1].rstrip("]").lower() for k in kernels})
        return {"matmul_kernels": kernels, "matmul_compute": compute}


def _type_name(t) -> str:
    return t.get_type_name() if hasattr(t, "get_type_name") else str(t)


def wrap_compiled(compiled, model: torch.nn.Module, backend: str = "openvino", *, out_spec=None,
                  options: dict[str, Any] | None = None, setup_seconds: dict[str, float] | None = None,
                  size_bytes: int | None = None, info: dict[str, Any] | None = None) -> Prepared:
    """A compiled OpenVINO model (``openvino.Core().compile_model``, e.g. of an IR that NNCF
    quantized) as a :class:`Prepared` called like ``model`` (its forward's argument names map
    positional inputs). ``out_spec``: the pytree structure of ``model``'s output (None: a list of
    tensors). ``info`` gains the precision the compiled model reports and the OpenVINO version."""
    import openvino as ov

    info = {**(info or {}), "precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "openvino": ov.__version__}
    return Prepared(_Compiled(compiled, forward_names(model), out_spec), backend, torch.device("cpu"),
                    dict(options or {}), dict(setup_seconds or {}), size_bytes, info)


@register_backend
class OpenVinoBackend(Backend):
    name = "openvino"
    description = ("slimkit.export to an OpenVINO IR (slimkit's int8 weights and activation scales kept) and "
                   "OpenVINO's CPU plugin; precision=None keeps its default (bf16 where the CPU has AVX-512 BF16)")
    device_types = ("cpu",)
    options = {"precision": None, "threads": None, "dequantize": False, "workdir": None, "prepared_cache": None,
               "hint": "LATENCY", "dynamic_quantization": None}

    def check(self, device):
        super().check(device)
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            raise DeviceUnavailableError(f"backend 'openvino' needs the openvino package ({e}); install it with "
                                         "pip install 'slimkit[openvino]'") from e

    def build(self, model, example_inputs, device, *, precision=None, threads=None, dequantize=False,
              workdir=None, prepared_cache=None, hint="LATENCY", dynamic_quantization=None):
        import openvino as ov

        if precision not in PRECISIONS:
            raise InvalidParameterError("precision", precision, "None (OpenVINO's default), 'f32' or 'bf16'")
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise InvalidParameterError("hint", hint, "'LATENCY' or 'THROUGHPUT' (OpenVINO's PERFORMANCE_HINT)")
        check_threads(threads)
        dq = dynamic_quantization
        if dq is not None and (isinstance(dq, bool) or not isinstance(dq, int) or dq < 1):
            raise InvalidParameterError("dynamic_quantization", dq, "None or a group size (positive int; "
                                        "large, e.g. 2**20, means one scale per token)")
        activations = "exact" if dq is None else "runtime"
        check_saturation(model, device, self.name, "OpenVINO")
        model = copy.deepcopy(model).eval()  # export must not flip the caller's train/eval flags
        setup: dict[str, float] = {}
        info: dict[str, Any] = {}

        def torch_structure():  # the outputs' structure (slimkit.export checks the values itself)
            with torch.inference_mode():
                return output_structure(_inputs.call(model, example_inputs))

        def make(out: Path) -> None:
            t0 = time.perf_counter()
            try:
                ex = export(model, example_inputs, out / "model.xml", format="openvino", dequantize=dequantize,
                            activations=activations)
            except ExportError as e:
                raise BackendError(f"backend {self.name!r} cannot run {type(model).__name__}: {e}") from e
            setup["export"] = time.perf_counter() - t0
            info.update(slimkit_layers=ex.layers, export_max_abs_diff=ex.max_abs_diff)

            # a prepared-cache hit reads this back: the same details as a fresh build
            (out / "info.json").write_text(json.dumps({"slimkit_layers": ex.layers,
                                                       "export_max_abs_diff": ex.max_abs_diff}))
            save_output_structure(out, torch_structure())

        if prepared_cache is not None:
            folder = load_or_build(prepared_cache, model, example_inputs, self.name,
                                   {"dequantize": dequantize, "activations": activations},
                                   device, make, info, setup)
        else:
            folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="slimkit-ov-"))
            folder.mkdir(parents=True, exist_ok=True)
            make(folder)
        xml = folder / "model.xml"
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                  "DYNAMIC_QUANTIZATION_GROUP_SIZE": dq or 0}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        t0 = time.perf_counter()
        try:
            compiled = ov.Core().compile_model(str(xml), "CPU", config)
        except Exception as e:
            raise wrap_failure(self.name, model, "OpenVINO compile_model", e) from e
        setup["compile"] = time.perf_counter() - t0
        info.update(ir_path=str(xml), threads=compiled.get_property("INFERENCE_NUM_THREADS"))
        structure = load_output_structure(folder) or torch_structure()
        prepared = wrap_compiled(
            compiled, model, self.name,
            out_spec=runtime_spec(structure, len(compiled.outputs)),
            options={"precision": precision, "threads": config["INFERENCE_NUM_THREADS"], "dequantize": dequantize,
                     "hint": hint, "dynamic_quantization": dq},
            setup_seconds=setup, size_bytes=xml.stat().st_size + xml.with_suffix(".bin").stat().st_size, info=info)
        if workdir is None and prepared_cache is None:
            weakref.finalize(prepared.fn, shutil.rmtree, str(folder), True)
        return prepared
