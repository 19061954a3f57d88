"""``slimkit.export``: a slimkit model (quantized, pruned, shrunk, sparse, or plain float) written as
a standard ONNX file (QDQ for slimkit's int8 layers) or an OpenVINO IR with the same quantization,
so the same recipe runs on ONNX Runtime, OpenVINO or anything else that reads them.

How each layer is expressed is in :mod:`.lower`; ``Exported.layers`` lists it per layer.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import inputs as _inputs
from ..errors import InvalidParameterError, InvalidTypeError, SlimkitError, check_choice, check_module
from ..quant.kernels import reference_arithmetic
from .lower import ACTIVATIONS, ExportError, lower
from .onnx import write_onnx

FORMATS = ("onnx", "openvino")


class MissingRuntimeError(SlimkitError, ImportError):
    """An optional package the requested format needs is not installed (the message names the extra)."""


@dataclass
class Exported:
    """What :func:`export` wrote. ``path``: the .onnx file, or the OpenVINO .xml (its .bin beside it).
    ``layers``: how each slimkit layer is expressed. ``size_bytes``: bytes on disk (xml + bin).
    ``max_abs_diff``: the exported graph's largest output difference from the torch model on the
    example inputs (run with ONNX Runtime / OpenVINO), None when that runtime is absent."""

    path: Path
    format: str
    layers: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0
    seconds: float = 0.0
    max_abs_diff: float | None = None


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise MissingRuntimeError(f"format needs the package {module!r}, which is not installed ({e}); "
                                  f"install it with: pip install 'slimkit[{extra}]'") from e


def _target(path, fmt: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError("path", path, "a file path (str or os.PathLike)")
    p = Path(path)
    want = ".onnx" if fmt == "onnx" else ".xml"
    if p.suffix != want:
        raise InvalidParameterError("path", str(path), f"a file name ending in {want} for format={fmt!r}")
    if not p.parent.is_dir():
        raise InvalidParameterError("path", str(path), "a path in an existing folder")
    return p


def export(model: nn.Module, example_inputs: _inputs.ModelInputs, path: str | os.PathLike, format: str = "onnx",
           dequantize: bool = False, *, opset: int | None = None, dynamic: bool = True,
           activations: str = "exact") -> Exported:
    """Write ``model`` to ``path`` (``.onnx`` for format="onnx", ``.xml`` + ``.bin`` for "openvino").

    ``example_inputs`` follow :mod:`slimkit.inputs` (a tensor, a tuple, a dict of tokenized text, or
    ``slimkit.Inputs``); batch and sequence stay dynamic unless ``dynamic=False``. slimkit's int8
    layers keep their integers and scales (see :mod:`slimkit.exporter.lower`); layers whose
    integers are only simulated or packed (int4/int2, per-group) raise :class:`ExportError`
    naming them unless ``dequantize=True`` (then they are exported as float weights). The input
    model is not changed; nothing is written when a check fails. ``activations="runtime"`` leaves
    slimkit's dynamic (per-token) activation quantization out, for a runtime that quantizes
    activations itself (OpenVINO's dynamic quantization); "exact" (default) writes it out.
    """
    check_module("model", model)
    example_inputs = _inputs.check_inputs(example_inputs)
    check_choice("format", format, FORMATS)
    if not isinstance(dequantize, bool):
        raise InvalidTypeError("dequantize", dequantize, "True or False")
    check_choice("activations", activations, ACTIVATIONS)
    target = _target(path, format)
    _require("onnxscript", "accel")  # the dynamo exporter needs it
    ov = _require("openvino", "openvino") if format == "openvino" else None
    t0 = time.perf_counter()
    lowered, how = lower(model, dequantize, activations)
    with torch.inference_mode(), reference_arithmetic():  # what the export writes
        reference = _inputs.call(_eval_copy(model) if model.training else model, example_inputs)
    work = Path(tempfile.mkdtemp(prefix="slimkit-export-"))
    try:
        onnx_path = work / "model.onnx"
        try:
            write_onnx(lowered, example_inputs, onnx_path, dynamic=dynamic, opset=opset)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed on {type(model).__name__}: {_reason(e)}") from e
        # written and checked in the work folder, then moved: a failure leaves the user's path as it was
        try:
            if format == "onnx":
                built = [onnx_path]
                diff = _onnx_diff(onnx_path, lowered, example_inputs, reference)
            else:
                ir = ov.convert_model(str(onnx_path))
                built = [work / "ir" / target.name, work / "ir" / target.with_suffix(".bin").name]
                ov.save_model(ir, str(built[0]), compress_to_fp16=False)  # float parts fp32, int8 stays int8
                diff = _openvino_diff(built[0], lowered, example_inputs, reference)
        except ExportError:
            raise
        except Exception as e:  # the runtime cannot load or run what was written
            raise ExportError(f"the exported {format} model of {type(model).__name__} does not run in "
                              f"{'onnxruntime' if format == 'onnx' else 'OpenVINO'}: {_reason(e)}") from e
        for src, dst in zip(built, (target, target.with_suffix(".bin"))):
            shutil.move(str(src), dst)
        size = sum(p.stat().st_size for p in (target, target.with_suffix(".bin"))[:len(built)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(target, format, how, size, time.perf_counter() - t0, diff)


def _eval_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()


def _reason(error: BaseException) -> str:
    inner = error
    while inner.__cause__ is not None:
        inner = inner.__cause__
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return f"{type(inner).__name__}: " + (" ".join(lines[:3])[:600] if lines else "(no message)")


def _max_diff(got, reference) -> float | None:
    ref = [t for t in torch.utils._pytree.tree_leaves(reference) if isinstance(t, torch.Tensor)]
    if not got or not ref or len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref)):
        return None
    return max(float((g.float() - r.detach().float().cpu()).abs().max()) for g, r in zip(got, ref))


def _feed(names: list[str], model: nn.Module, example) -> dict:
    from .onnx import args_kwargs, feed, forward_names

    args, kwargs = args_kwargs(example)
    given = feed(names, forward_names(model), args, kwargs)
    return {n: given[n].detach().cpu().contiguous().numpy() for n in names if n in given}


def _onnx_diff(path: Path, model: nn.Module, example, reference) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from .onnx import ort_session_options

    session = ort.InferenceSession(str(path), ort_session_options(), providers=["CPUExecutionProvider"])
    outs = session.run(None, _feed([i.get_any_name() if hasattr(i, "get_any_name") else i.name
                                    for i in session.get_inputs()], model, example))
    return _max_diff([torch.from_numpy(o) for o in outs], reference)


def _openvino_diff(path: Path, model: nn.Module, example, reference) -> float | None:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [p.get_any_name() for p in compiled.inputs]
    outs = compiled(_feed(names, model, example))
    return _max_diff([torch.from_numpy(outs[o].copy()) for o in compiled.outputs], reference)


__all__ = ["FORMATS", "ExportError", "Exported", "MissingRuntimeError", "export"]
