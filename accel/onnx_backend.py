"""The ``onnxruntime`` backend: export with torch.onnx (dynamo exporter), optionally apply ONNX
Runtime's transformer graph fusions and its dynamic int8 quantization, run an InferenceSession.

What the defaults encode (each measured here, see the measuring notes):
- the ONNX file is self-contained (``external_data=False``), so its size is the deployed size;
- the session does not spin its thread pool after a call (``session.intra_op.allow_spinning=0``):
  a spinning pool slows whatever torch runs next by ~2x on a small CPU;
- slimkit's QDQ int8 MatMuls run at ``session.qdq_matmulnbits_accuracy_level=1`` (fp32 compute on
  the int8 weights): ORT's default (4) re-quantizes activations inside the fused MatMulNBits and
  cost MiniLM 0.0012 mean cosine (see ``slimkit.exporter.onnx.ORT_SESSION_CONFIG``);
- int8 is per-channel (per-tensor costs fidelity), and quantizing a fused graph needs
  ``DefaultTensorType=FLOAT`` because the fused ops carry no type information;
- transformers models are exported with keyword inputs; the fusions only recognise attention
  written as plain matmuls (load such models with ``attn_implementation="eager"``);
- ``exporter="auto"`` tries the TorchScript exporter first for transformer models ONNX Runtime's
  optimizer knows: on MiniLM its graph fuses into EmbedLayerNormalization, 6 Attention and 12
  SkipLayerNormalization nodes (and exports in ~2 s), while the dynamo exporter's graph only
  gets LayerNormalization/BiasGelu fused (and takes ~25 s). Other models try the dynamo exporter
  first. Whichever comes first must export *and* reproduce the torch outputs on the example
  inputs, else the other one is used: on transformers 5.x, tracing GPT-2 fails (``aten::diff``
  in its mask code) or bakes ``logits_to_keep`` in (last-token logits only), and BERT-style
  models can fail with "multiple values for argument 'use_cache'"; the dynamo exporter handles
  both. ``info["exporter_fallback"]`` says why the first choice was dropped.
- inputs follow :mod:`slimkit.inputs`; a ``slimkit.Inputs`` with nested structure (a forward
  taking one dict) is exported by the dynamo exporter and fed by the flattened tensor order.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slimkit.errors import DeviceUnavailableError, InvalidParameterError, check_choice
from slimkit.exporter.lower import ExportError, lower
from slimkit.exporter.onnx import forward_names as _forward_names
from slimkit.exporter.onnx import ort_session_options, write_onnx
from slimkit.quant.kernels import reference_arithmetic
from slimkit.quant.layers import QWeight

from . import inputs as _inputs
from .backends import Backend, BackendError, Prepared, _jsonable, _reason, register_backend, wrap_failure
from .prepared_cache import (load_or_build, load_output_structure, output_structure, runtime_spec,
                             save_output_structure)
from .runtime_call import RuntimeCall, check_saturation, check_threads

log = logging.getLogger("slimkit.accel")

QUANTIZE = (None, "int8")
EXPORTERS = ("auto", "dynamo", "torchscript")


def _transformer_config(model: nn.Module):
    """The config of the first transformers model inside ``model`` whose type ONNX Runtime's
    optimizer knows, or None."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and getattr(cfg, "model_type", None) in MODEL_TYPES:
            return cfg
    return None


def _exporters(exporter: str, model: nn.Module, optimize) -> list[str]:
    """Exporters to try in order (see the module notes)."""
    if exporter != "auto":
        return [exporter]
    if optimize is not None and _transformer_config(model) is not None:
        return ["torchscript", "dynamo"]
    return ["dynamo", "torchscript"]


def _mismatch(path: Path, model: nn.Module, example, reference: list[torch.Tensor], loose: bool = False) -> str | None:
    """None if the exported graph gives ``reference`` (the torch outputs) on ``example``, else how it differs.
    ``loose`` (slimkit's int8 layers, where a value on a rounding tie may land one integer step
    apart): outputs need a cosine >= 0.998 to the reference instead of allclose."""
    import onnxruntime as ort

    try:
        quiet = ort_session_options()
        quiet.log_severity_level = 4  # the failure is reported below, not logged in colour to stderr
        session = ort.InferenceSession(str(path), quiet, providers=["CPUExecutionProvider"])
        fn = _Session(session, _forward_names(model) or [i.name for i in session.get_inputs()], None,
                      torch.device("cpu"))
        got = _inputs.call(fn, example)
    except Exception as e:  # a graph that does not even run on its own example inputs
        return f"running it failed: {_reason(e)}"
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    if len(got) != len(reference):
        return f"{len(got)} outputs instead of {len(reference)}"
    for i, (g, r) in enumerate(zip(got, reference)):
        if g.shape != r.shape:
            return f"output {i} has shape {tuple(g.shape)} instead of {tuple(r.shape)}"
        r = r.detach().float().cpu()
        if loose and r.numel():
            cos = float(torch.nn.functional.cosine_similarity(g.float().flatten(), r.flatten(), dim=0))
            if cos < 0.998:  # MiniLM int8 on random tokens: 0.9989 even for the lowered model in torch
                return f"output {i} has cosine {cos:.5f} to the torch output"
            continue
        if not torch.allclose(g.float(), r, rtol=1e-3, atol=1e-4 * max(1.0, float(r.abs().max()))):
            return f"output {i} differs by up to {float((g.float() - r).abs().max()):.3g}"
    return None


class _Session(RuntimeCall):
    """Calls an InferenceSession like the torch model: tensors in, the model's output structure out."""

    runtime = "ONNX"

    def __init__(self, session, positional: list[str], out_spec, device: torch.device):
        super().__init__(positional, out_spec, device)
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def _run(self, feed: dict) -> list:
        return self.session.run(None, feed)


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = ("export with torch.onnx and run with ONNX Runtime; quantize='int8' adds its dynamic int8 "
                   "quantization (per-channel by default), optimize='auto' its transformer graph fusions")
    device_types = ("cpu", "cuda")
    options = {"quantize": None, "per_channel": True, "reduce_range": False, "optimize": "auto",
               "dynamic": True, "threads": None, "workdir": None, "opset": None, "exporter": "auto",
               "prepared_cache": None}

    def check(self, device):
        super().check(device)
        try:
            import onnx  # noqa: F401
            import onnxruntime as ort
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ImportError as e:
            raise DeviceUnavailableError(f"backend 'onnxruntime' needs onnx, onnxscript and onnxruntime ({e})") from e
        if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceUnavailableError("backend 'onnxruntime' on CUDA needs onnxruntime-gpu; installed providers: "
                                         + ", ".join(ort.get_available_providers()))

    def build(self, model, example_inputs, device, *, quantize=None, per_channel=True, reduce_range=False,
              optimize="auto", dynamic=True, threads=None, workdir=None, opset=None, exporter="auto",
              prepared_cache=None):
        import onnxruntime as ort

        check_choice("exporter", exporter, EXPORTERS)
        if quantize not in QUANTIZE:
            raise InvalidParameterError("quantize", quantize, "None or 'int8' (ONNX Runtime dynamic quantization)")
        check_threads(threads)
        check_saturation(model, device, self.name, "ONNX Runtime")
        model = copy.deepcopy(model).eval()  # export must not flip the caller's train/eval flags
        try:  # slimkit's own layers (int8, sparse, fake-quant) in ops ONNX expresses: slimkit.export's lowering
            lowered, how = lower(model)
        except ExportError as e:
            raise BackendError(f"backend {self.name!r} cannot run {type(model).__name__}: {e}") from e
        if how and quantize is not None and any(isinstance(m, QWeight) for m in model.modules()):
            raise InvalidParameterError("quantize", quantize, "None for a model slimkit already quantized "
                                        "(its own int8 layers are exported as QDQ)")
        setup: dict[str, float] = {}
        info: dict[str, Any] = {"slimkit_layers": how} if how else {}

        reference: list = []  # the torch outputs, computed when needed: not on a prepared-cache hit

        def torch_outputs():
            if not reference:
                with torch.inference_mode():
                    reference.append(_inputs.call(model, example_inputs))
            return reference[0]

        def make(out: Path) -> None:
            """Export (+ fusions, + ORT int8) into ``out``/model.onnx, recording times and details."""
            path = out / "model.onnx"
            # the export is checked against what it writes: slimkit's int8 layers in their reference
            # arithmetic (torch._int_mm; slow without VNNI, so only here, not on a prepared-cache hit)
            with torch.inference_mode(), reference_arithmetic():
                exact = [x for x in torch.utils._pytree.tree_flatten(_inputs.call(model, example_inputs))[0]
                         if isinstance(x, torch.Tensor)]
            exporters = ["dynamo"] if how else _exporters(exporter, model, optimize)  # QDQ ops: dynamo only
            t0 = time.perf_counter()
            info["exporter"] = self._export_first_that_works(lowered if how else model, example_inputs, path,
                                                             dynamic, opset, exporters, exact, info,
                                                             loose=bool(how))
            setup["export"] = time.perf_counter() - t0
            if optimize is not None:
                t0 = time.perf_counter()
                path = self._optimize(model, path, optimize, info)
                if "fused_ops" in info:
                    setup["optimize"] = time.perf_counter() - t0
            if quantize == "int8":
                t0 = time.perf_counter()
                path = self._quantize(model, path, per_channel, reduce_range)
                setup["quantize"] = time.perf_counter() - t0
            if path != out / "model.onnx":
                os.replace(path, out / "model.onnx")
            (out / "info.json").write_text(json.dumps(_jsonable(info)))
            save_output_structure(out, output_structure(torch_outputs()))

        options = {"quantize": quantize, "per_channel": per_channel, "reduce_range": reduce_range,
                   "optimize": optimize, "dynamic": dynamic, "opset": opset, "exporter": exporter}
        if prepared_cache is not None:
            folder = load_or_build(prepared_cache, model, example_inputs, self.name, options, device, make, info,
                                   setup)
        else:  # a temporary folder only when nothing else holds the files (no empty folder per cached build)
            folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="slimkit-onnx-"))
            folder.mkdir(parents=True, exist_ok=True)
            make(folder)
        path = folder / "model.onnx"

        so = ort_session_options()  # no spinning; slimkit's int8 MatMuls computed as written
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        t0 = time.perf_counter()
        try:
            session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            raise wrap_failure(self.name, model, "creating the ONNX Runtime session", e) from e
        setup["session"] = time.perf_counter() - t0

        structure = load_output_structure(folder) or output_structure(torch_outputs())
        out_spec = runtime_spec(structure, len(session.get_outputs()))
        positional = _forward_names(model) or [i.name for i in session.get_inputs()]
        fn = _Session(session, positional, out_spec, device)
        info.update(onnx_path=str(path), intra_op_threads=so.intra_op_num_threads,
                    inputs={i.name: i.shape for i in session.get_inputs()},
                    providers=session.get_providers())
        if device.type == "cuda":
            info["note"] = "inputs and outputs pass through host memory (numpy), included in timings"
        if reference:  # how far the deployed graph is from the torch model (built here, not a cache hit)
            got = [x for x in torch.utils._pytree.tree_flatten(_inputs.call(fn, example_inputs))[0]
                   if isinstance(x, torch.Tensor)]
            want = [x for x in torch.utils._pytree.tree_flatten(reference[0])[0] if isinstance(x, torch.Tensor)]
            if got and want and got[0].shape == want[0].shape:
                info["max_abs_diff_vs_torch"] = float((got[0].float().cpu() - want[0].float().cpu()).abs().max())

        prepared = Prepared(fn, self.name, device, {**options, "threads": so.intra_op_num_threads,
                                                    "exporter": info.get("exporter", exporter)},
                            setup, os.path.getsize(path), info, None, None)
        if workdir is None and prepared_cache is None:  # the temporary folder lives as long as the session wrapper
            weakref.finalize(fn, shutil.rmtree, str(folder), True)
        return prepared

    def _export_first_that_works(self, model, example, path: Path, dynamic: bool, opset, exporters: list[str],
                                 reference: list[torch.Tensor], info: dict, loose: bool = False) -> str:
        """Export with each exporter in turn until one gives a graph that reproduces ``reference``
        on the example inputs; returns its name. Raises the last exporter's error (or mismatch)."""
        export = {"dynamo": self._export, "torchscript": self._export_torchscript}
        failures = []
        for name in exporters:
            try:
                export[name](model, example, path, dynamic, opset)
                why = _mismatch(path, model, example, reference, loose)
                if why is None:
                    info["exporter"] = name
                    if failures:
                        info["exporter_fallback"] = "; ".join(failures)
                    return name
                error = BackendError(f"backend {self.name!r} cannot handle {type(model).__name__}: the {name} "
                                     f"exporter's graph does not reproduce the model ({why})")
            except BackendError as e:
                error = e
            failures.append(f"{name}: {error}")
            log.info("onnxruntime: %s exporter dropped for %s: %s", name, type(model).__name__, error)
        if len(failures) > 1:
            raise BackendError(" | ".join(failures)) from error
        raise error

    def _export(self, model, example, path: Path, dynamic: bool, opset) -> None:
        try:
            write_onnx(model, example, path, dynamic=dynamic, opset=opset)
        except Exception as e:
            raise wrap_failure(self.name, model, "torch.onnx.export", e) from e

    def _export_torchscript(self, model, example, path: Path, dynamic: bool, opset) -> None:
        """The TorchScript (tracing) exporter: inputs passed positionally in ``forward``'s order,
        batch (and the sequence of integer inputs) marked dynamic."""
        import warnings

        if isinstance(example, _inputs.Inputs):
            if example.kwargs or not all(isinstance(a, torch.Tensor) for a in example.args):
                raise BackendError(f"exporter='torchscript' takes tensors passed positionally; {type(model).__name__} "
                                   "gets nested or keyword inputs: use exporter='dynamo'")
            example = tuple(example.args)
        if isinstance(example, dict):
            order = [n for n in _forward_names(model) if n in example]
            if sorted(order) != sorted(example):
                raise BackendError(f"exporter='torchscript' passes inputs positionally; {type(model).__name__}.forward "
                                   f"does not name all of {sorted(example)}: use exporter='dynamo'")
            names, args = order, tuple(example[n] for n in order)
        else:
            args = tuple(_inputs.tensors(example))
            names = _forward_names(model)[:len(args)] or [f"input_{i}" for i in range(len(args))]
        axes = None
        if dynamic:
            axes = {n: ({0: "batch", 1: "sequence"} if t.dim() >= 2 and not t.is_floating_point() else {0: "batch"})
                    for n, t in zip(names, args) if t.dim() >= 1}
            axes["output_0"] = {0: "batch"}
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")  # deprecation notice and tracer warnings
                torch.onnx.export(model, args, str(path), dynamo=False, input_names=names, output_names=["output_0"],
                                  dynamic_axes=axes, opset_version=opset or 17)
        except Exception as e:
            raise wrap_failure(self.name, model, "torch.onnx.export (TorchScript exporter)", e) from e

    def _optimize(self, model, path: Path, optimize: str, info: dict) -> Path:
        from onnxruntime.transformers import optimizer

        cfg = _transformer_config(model)
        if optimize == "auto":
            if cfg is None:
                return path  # not a transformer: the session's own graph optimizations apply
            model_type = cfg.model_type
        elif optimize in optimizer.MODEL_TYPES:
            model_type = optimize
        else:
            raise InvalidParameterError("optimize", optimize, "'auto', None or an ONNX Runtime model type: "
                                        + ", ".join(sorted(optimizer.MODEL_TYPES)))
        heads = getattr(cfg, "num_attention_heads", 0) if cfg is not None else 0
        hidden = getattr(cfg, "hidden_size", 0) if cfg is not None else 0
        try:
            with _quiet("root"), _quiet("fusion_skiplayernorm"), _quiet("onnx_model"):
                opt = optimizer.optimize_model(str(path), model_type=model_type, num_heads=heads,
                                               hidden_size=hidden)
        except Exception as e:
            error = wrap_failure(self.name, model, f"ONNX Runtime's {model_type!r} graph fusions", e)
            if optimize != "auto":
                raise error from e
            info["fusion_note"] = f"graph left unfused: {error}"  # fusions are an extra, not a must
            return path
        info["fused_ops"] = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        if cfg is not None and getattr(cfg, "_attn_implementation", "eager") != "eager":
            info["fusion_note"] = ("attention is not fused unless the model is loaded with "
                                   "attn_implementation='eager'")
        out = path.with_name("model.opt.onnx")
        opt.save_model_to_file(str(out), use_external_data_format=False)
        return out

    def _quantize(self, model, path: Path, per_channel: bool, reduce_range: bool) -> Path:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = path.with_name("model.int8.onnx")
        try:
            with _quiet("root"):  # it logs a generic "consider pre-processing" warning every time
                quantize_dynamic(str(path), str(out), per_channel=per_channel, reduce_range=reduce_range,
                                 weight_type=QuantType.QInt8,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        except Exception as e:
            raise wrap_failure(self.name, model, "ONNX Runtime quantize_dynamic", e) from e
        return out


@contextlib.contextmanager
def _quiet(name: str):
    logger = logging.getLogger() if name == "root" else logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
