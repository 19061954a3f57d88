"""One grid cell: one zoo model through one operation, judged the same way by the tests and by
``python -m benchmarks.zoo``.

A cell either works (the result runs on the example inputs, is faithful to an independent
reference, shrinks where the operation promises it, reports every parameter-holding module, and
leaves the input model untouched) or is refused with a ``slimkit.SlimkitError``. Anything else is a
defect: ``WRONG`` (an AssertionError from a check) or ``CRASH`` (any other exception).
"""
from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

import slimkit
from slimkit import inputs as _inputs
from slimkit.nn import is_hf_conv1d, param_count, param_modules, unparametrize
from slimkit.metrics import logits

from .models import ZooModel, build

OPS = ["int8", "int8_static", "int4", "prune50", "structured30", "sparse90", "save_load", "compile", "onnxruntime",
       "distill"]
# Minimum cosine between the result's logits and the reference's (see each operation).
MIN_COSINE = {"int8": 0.99, "int8_static": 0.95, "int4": 0.99, "prune50": 0.99, "sparse90": 0.99,
              "compile": 0.999, "onnxruntime": 0.999}


class NotApplicable(Exception):
    """The operation does not apply to this model (distill without labels): no cell, not a refusal."""


@dataclass
class Cell:
    model: str
    op: str
    status: str  # ok / refused / WRONG / CRASH / n/a
    detail: str = ""
    cosine: float | None = None
    size_ratio: float | None = None
    seconds: float = 0.0


def out(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return logits(_inputs.call(model, inputs)).detach().float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"output shape {tuple(a.shape)} instead of {tuple(b.shape)}"
    assert torch.isfinite(a).all(), "non-finite outputs"
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def covers_every_module(report, model: nn.Module) -> None:
    """A row for every module holding parameters, or for a module around it (a row for 'conv'
    covers 'conv.parametrizations.weight'), as Report.cover counts."""
    names = {l.name for l in report.layers}
    within = lambda n: "" in names or any(n == r or n.startswith(r + ".") for r in names)  # noqa: E731
    missing = [n for n, _ in param_modules(model) if not within(n)]
    assert not missing, f"report has no row for {missing[:5]}"


# --- independent references: the float model with the operation applied by hand -------------

def _out_axis(m: nn.Module) -> int:
    """The output-channel axis of a layer's stored weight."""
    return 1 if is_hf_conv1d(m) or isinstance(m, nn.modules.conv._ConvTransposeNd) else 0


Edit = Callable[[nn.Module, torch.Tensor, object, "torch.Tensor | None"], torch.Tensor]


def _matrices(m: nn.Module) -> list[str]:
    """The weights a verb compresses in ``m``: ``weight``, or an RNN's ``weight_ih_l0``... and
    MultiheadAttention's ``in_proj_weight`` (modules with several matrices and no ``weight``)."""
    if isinstance(getattr(m, "weight", None), torch.Tensor):
        return ["weight"]
    return [n for n, p in m.named_parameters(recurse=False) if p.dim() >= 2]


def _counterpart(orig: nn.Module, got: nn.Module, name: str, w: torch.Tensor) -> torch.Tensor:
    """The result's version of weight ``name``, in the original layout (a sparse layer made from
    GPT-2's Conv1D stores the transposed weight)."""
    t = getattr(got, name).detach()
    if is_hf_conv1d(orig) and not is_hf_conv1d(got):
        t = t.t()
    return t.reshape(w.shape)


def _edit_weights(model: nn.Module, report, action: str, edit: Edit, result: nn.Module | None = None) -> nn.Module:
    """A float copy with ``edit(module, weight, row, result_weight)`` applied to every weight matrix
    of every layer the report says got ``action``."""
    ref = copy.deepcopy(model)
    for row in report.layers:
        if row.action != action:
            continue
        m = ref.get_submodule(row.name)
        if parametrize.is_parametrized(m, "weight"):
            unparametrize(m)
        got = result.get_submodule(row.name) if result is not None else None
        with torch.no_grad():
            for name in _matrices(m):
                w = getattr(m, name)
                w.copy_(edit(m, w.detach(), row, None if got is None else _counterpart(m, got, name, w)))
    return ref


def fake_quant(m: nn.Module, w: torch.Tensor, row, got=None) -> torch.Tensor:
    """Symmetric round-to-nearest on the reported bits and granularity (what quantize promises)."""
    bits, gran = row.details["bits"], row.details.get("granularity", "per_channel")
    qmax = 2 ** (bits - 1) - 1
    wf = w.float()
    if gran == "per_tensor":
        scale = wf.abs().max().clamp_min(1e-12) / qmax
    else:
        axis = _out_axis(m)
        dims = [d for d in range(wf.dim()) if d != axis]
        scale = wf.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / qmax
    return (torch.clamp(torch.round(wf / scale), -qmax, qmax) * scale).to(w.dtype)


def magnitude_zeroed(m: nn.Module, w: torch.Tensor, row, got: torch.Tensor) -> torch.Tensor:
    """The original weight with the result's zeros, once the result is checked to be a magnitude
    selection: kept values unchanged, and no zeroed weight larger than a kept one. (Which of
    several equal magnitudes goes is the verb's choice: bf16 weights tie often.)"""
    keep = got != 0
    assert torch.equal(got[keep], w[keep].to(got.dtype)), f"{row.name}: kept weights changed"
    mag = w.abs().float()
    if keep.any() and (~keep).any():
        assert mag[~keep].max() <= mag[keep].min(), f"{row.name}: a larger weight was zeroed than one kept"
    return torch.where(keep, w, torch.zeros_like(w))


def _zeros_fraction(result: nn.Module, report, action: str) -> None:
    """Each layer holds the zeros its row reports."""
    for row in report.layers:
        if row.action == action and row.sparsity is not None:
            got = result.get_submodule(row.name)
            ws = [getattr(got, n).detach() for n in _matrices(got)] if not hasattr(got, "dense_weight") \
                else [got.dense_weight()]
            frac = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
            assert abs(frac - row.sparsity) < 1e-3, f"{row.name}: {frac:.3f} zeros, the report says {row.sparsity:.3f}"


# --- the operations ---------------------------------------------------------------------------

def _calibration(z: ZooModel) -> list:
    return [x for x, _ in z.data] if z.data else [z.inputs]


def _compressed(z: ZooModel, cell: Cell, result, reference: nn.Module | None, promise_smaller: bool) -> None:
    model, report = result
    op = cell.op
    got = out(model, z.inputs)
    if reference is not None:
        cell.cosine = cosine(got, out(reference, z.inputs))
        assert cell.cosine >= MIN_COSINE[op], f"cosine {cell.cosine:.4f} < {MIN_COSINE[op]} against the reference"
    else:
        assert got.shape == out(z.model, z.inputs).shape and torch.isfinite(got).all(), "bad outputs"
    cell.size_ratio = slimkit.size(model) / slimkit.size(z.model)
    if promise_smaller:
        assert cell.size_ratio < 1, f"size ratio {cell.size_ratio:.3f}: not smaller"
    covers_every_module(report, z.model)


def _layer_sqnr(z: ZooModel, result, min_db: float = 20.0) -> None:
    """Each quantized layer, fed the float model's own inputs to that layer, stays within
    ``min_db`` of the float layer (per-tensor int8 inputs measure 24-45 dB on the zoo; a wrong
    scale or zero point falls far below): measured here, not read from the report."""
    from slimkit.metrics import sqnr

    rows = [r.name for r in result.report.layers if r.action == "quantized"]
    seen: dict[str, tuple] = {}
    hooks = [z.model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, kwargs, n=n: seen.setdefault(n, (args, kwargs)), with_kwargs=True) for n in rows]
    try:
        out(z.model, z.inputs)
    finally:
        for h in hooks:
            h.remove()
    for n, (args, kwargs) in seen.items():
        with torch.no_grad():
            a = z.model.get_submodule(n)(*args, **kwargs)
            b = result.model.get_submodule(n)(*args, **kwargs)
        a, b = (logits(t[0] if isinstance(t, tuple) else t).float() for t in (a, b))  # an RNN: (output, state)
        assert sqnr(a, b) >= min_db, f"{n}: output SQNR {sqnr(a, b):.1f} dB < {min_db} dB"


def _quantize(z, cell):
    op = cell.op
    kw = {"int8": dict(bits=8), "int4": dict(bits=4), "int8_static": dict(bits=8, activations=_calibration(z))}[op]
    result = slimkit.quantize(z.model, **kw)
    if op == "int8_static":
        # activations are quantized too: each layer is checked on its own, and the whole model against
        # the float model, unless the model is chaotic (random-init deep nets: a 1% input change moves
        # MobileNet's logits to cosine 0.93), where end to end says nothing about slimkit
        _layer_sqnr(z, result)
        base = out(z.model, z.inputs)
        noisy = out(z.model, _inputs.apply(z.inputs, lambda t: t + 1e-2 * t.float().std().to(t.dtype)
                                           * torch.randn_like(t) if t.is_floating_point() else t))
        ref = z.model if cosine(noisy, base) >= 0.99 else None
    else:
        ref = _edit_weights(z.model, result.report, "quantized", fake_quant)
    _compressed(z, cell, result, ref, promise_smaller=True)


def _prune(z, cell):
    result = slimkit.prune(z.model, 0.5)
    _zeros_fraction(result.model, result.report, "pruned")
    ref = _edit_weights(z.model, result.report, "pruned", magnitude_zeroed, result.model)
    _compressed(z, cell, result, ref, False)


def _structured(z, cell):
    model, report = result = slimkit.prune(z.model, 0.3, structured=True)
    _compressed(z, cell, result, None, promise_smaller=False)
    assert report.summary["model_params_after"] == param_count(model), "report's params_after is not the model's"


def _sparsify(z, cell):
    result = slimkit.sparsify(z.model, sparsity=0.9)
    action = _changed_action(result.report)
    _zeros_fraction(result.model, result.report, action)
    ref = _edit_weights(z.model, result.report, action, magnitude_zeroed, result.model)
    _compressed(z, cell, result, ref, promise_smaller=True)


def _changed_action(report) -> str:
    actions = {l.action for l in report.layers} - {"skipped"}
    assert len(actions) == 1, f"expected one action besides 'skipped', got {actions}"
    return actions.pop()


def _save_load(z, cell):
    q, _ = slimkit.quantize(z.model, bits=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = slimkit.save(q, Path(tmp) / "m.slim")
        loaded = slimkit.load(path, model=z.model)
        size = path.stat().st_size
    a, b = out(q, z.inputs), out(loaded, z.inputs)
    cell.size_ratio = size / slimkit.size(z.model)
    assert torch.equal(a, b), f"loaded model differs by {float((a - b).abs().max()):.3g}"
    cell.cosine = 1.0


def _accel(z, cell):
    from slimkit import accel

    run = accel.prepare(z.model, z.inputs, backend=cell.op)
    if run.size_bytes:
        cell.size_ratio = run.size_bytes / slimkit.size(z.model)
    got = logits(run.run(z.inputs)).detach().float()
    cell.cosine = cosine(got, out(z.model, z.inputs))
    assert cell.cosine >= MIN_COSINE[cell.op], f"cosine {cell.cosine:.5f} < {MIN_COSINE[cell.op]} against eager"


def _distill(z, cell):
    if not z.data:
        raise NotApplicable(f"{z.name} has no labelled data in the zoo (its output is per pixel)")
    student = build(z.name, seed=1).model
    before = {k: v.clone() for k, v in student.state_dict().items()}
    model, report = slimkit.distill(z.model, student, z.data, epochs=1, batch_size=4)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items()), "the student was modified"
    covers_every_module(report, student)
    got = out(model, z.inputs)
    assert got.shape == out(z.model, z.inputs).shape and torch.isfinite(got).all(), "bad student outputs"
    assert report.summary["final_loss"] == report.summary["final_loss"], "NaN loss"
    cell.size_ratio = param_count(model) / param_count(z.model)


RUN = {"int8": _quantize, "int8_static": _quantize, "int4": _quantize, "prune50": _prune,
       "structured30": _structured, "sparse90": _sparsify, "save_load": _save_load, "compile": _accel,
       "onnxruntime": _accel, "distill": _distill}


def run_cell(z: ZooModel, op: str) -> Cell:
    """Run one cell; never raises (the status says what happened; figures measured before a
    failing check are kept). The input model must come back unchanged whatever happened."""
    snapshot = {k: v.detach().clone() for k, v in z.model.state_dict().items()}
    cell = Cell(z.name, op, "ok")
    t0 = time.perf_counter()
    try:
        RUN[op](z, cell)
    except NotApplicable as e:
        cell.status, cell.detail = "n/a", str(e)
    except slimkit.SlimkitError as e:
        cell.status, cell.detail = "refused", f"{type(e).__name__}: {e}"
    except AssertionError as e:
        cell.status, cell.detail = "WRONG", str(e)
    except Exception as e:  # noqa: BLE001  any other exception is what the grid exists to find
        cell.status, cell.detail = "CRASH", f"{type(e).__name__}: {e}"
    cell.seconds = time.perf_counter() - t0
    now = z.model.state_dict()
    changed = [k for k, v in snapshot.items() if k not in now or not torch.equal(now[k], v)]
    if changed:
        cell.status, cell.detail = "WRONG", f"the input model was modified ({changed[:3]}); " + cell.detail
    return cell
