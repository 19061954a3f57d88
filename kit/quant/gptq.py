"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): error-compensating rounding of a Linear layer's weight to the affine formats.

Round-to-nearest rounds each weight alone. GPTQ rounds the input columns of W (out, in) one at a
time and spreads each column's rounding error over the columns not yet rounded, weighted by the
inverse of the layer-input Hessian H = 2 X^T X (X: the layer's calibration inputs), so that the
layer OUTPUT error ||X W^T - X Q^T|| is what is minimised, not the weight error. Done as the paper
does: damping (1% of mean diag(H)), the upper Cholesky factor of H^-1, lazy block updates, and
each group's scale computed when the column loop reaches the group ("static_groups=False").

The result is a plain :class:`~.affine.QTensor` (same codes/scales layout as round-to-nearest),
so the layers, saving, sizes and entropy coding are those of ``method="affine"``. Hessians come
from one pass of the calibration data through the FLOAT model (not layer-by-layer sequential).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..nn import get_module, is_linear_like
from .affine import QTensor, qparams, qrange, stored_scale
from .calibrate import run_batches

DAMP = 0.01  # fraction of mean diag(H) added to the diagonal (the paper's percdamp)
BLOCK = 128  # columns per lazy batch update


def hessians(model: nn.Module, batches: list, names: list[str], progress) -> dict[str, dict]:
    """{name: {"H": 2/n sum x x^T (in, in) float64, "rows": n}} over every input row each Linear
    ``name`` of ``model`` sees when the ``batches`` (:func:`~.calibrate.input_batches`) run through
    it. Raises a slimkit error (naming ``data`` and the batch) on a batch the model refuses, before
    anything is quantized."""
    acc: dict[str, dict] = {}

    def hook(name):
        def pre(_mod, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
                return
            x = x.detach().reshape(-1, x.shape[-1]).double()
            st = acc.setdefault(name, {"H": torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64), "rows": 0})
            st["H"] += x.t() @ x
            st["rows"] += x.shape[0]
        return pre

    layers = {n: get_module(model, n) for n in names}
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        run_batches(model, batches, progress, "calibrate", "data")
    finally:
        for h in handles:
            h.remove()
    for st in acc.values():
        st["H"] *= 2.0 / max(st["rows"], 1)
    return acc


def _inverse_factor(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of (H + damping)^-1. Dead inputs (H_ii = 0: an input always zero on the
    calibration data) get H_ii = 1: their weights are kept and rounded to nearest (no off-diagonal
    terms, so their error reaches no other column) rather than zeroed as the reference code does,
    since other data may use those inputs."""
    H = H.clone()
    diag = torch.diagonal(H)
    diag[diag == 0] = 1.0
    damp = DAMP * diag.mean()
    for scale in (1, 10, 100):  # more damping if rounding makes the matrix indefinite
        try:
            L = torch.linalg.cholesky(H + scale * damp * torch.eye(len(H), dtype=H.dtype))
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        except torch.linalg.LinAlgError:
            continue
    raise torch.linalg.LinAlgError("GPTQ: the input Hessian is not positive definite even with 100x damping")


def gptq_tensor(w: torch.Tensor, H: torch.Tensor, bits: int, scheme: str, granularity: str,
                group_size: int | None, scale_dtype: str = "float32", act_order: bool = False) -> QTensor:
    """GPTQ-round a (out, in) weight with input Hessian ``H`` (in, in) to the affine format
    (bits, scheme, granularity, group_size along the input dimension), returned as the QTensor
    :func:`~.affine.quantize_tensor` would build (scales stored and used in ``scale_dtype``).
    ``act_order``: round the columns by decreasing H_ii (the paper's "desc_act"); each group's scale
    is then taken from the float weight up front ("static_groups"), so the storage stays contiguous
    groups. Zeros of ``w`` (pruned weights) stay exact zeros: their code is the zero point, and the
    difference to the error-updated value is compensated like any rounding error."""
    W = w.detach().float().t().contiguous()  # (in, out): one input column is a contiguous row here
    cols, rows = W.shape
    pruned = W == 0
    grouped = granularity == "per_group"
    qmin, qmax = qrange(bits, scheme)
    if grouped:
        scale = torch.empty(cols // group_size, rows, dtype=stored_scale(torch.ones(1), scale_dtype).dtype)
        zp = torch.empty(cols // group_size, rows, dtype=torch.int32)
        if act_order:  # static groups: every scale from the float weight
            for g in range(cols // group_size):
                sg, zp[g] = qparams(W[g * group_size:(g + 1) * group_size], bits, scheme, "per_channel", 1)
                scale[g] = stored_scale(sg, scale_dtype)
    else:  # one scale per row or per tensor, from the float weight, as round-to-nearest does
        s0, z0 = qparams(W, bits, scheme, granularity, 1)
        s, z = s0.reshape(-1).expand(rows), z0.reshape(-1).expand(rows)
    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else torch.arange(cols)
    W, pruned, H = W[perm], pruned[perm], H[perm][:, perm]
    Hinv = _inverse_factor(H.double()).float()
    Q = torch.zeros(cols, rows, dtype=torch.int8)
    # blocks a multiple of the group size: a group never straddles two blocks
    block = group_size * max(1, BLOCK // group_size) if grouped else BLOCK
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, H1 = W[i1:i2], Hinv[i1:i2, i1:i2]  # W1 is a view: updated in place
        err = torch.zeros(i2 - i1, rows)
        for i in range(i2 - i1):
            c = i1 + i
            if grouped:
                g = int(perm[c]) // group_size
                if not act_order and c % group_size == 0:  # the group's scale, from its error-updated weights
                    sg, zp[g] = qparams(W1[i:i + group_size], bits, scheme, "per_channel", 1)
                    scale[g] = stored_scale(sg, scale_dtype)
                s, z = scale[g].float(), zp[g]
            q = (torch.round(W1[i] / s) + z).clamp_(qmin, qmax)
            q = torch.where(pruned[c], z.to(q.dtype), q)
            Q[c] = q.to(torch.int8)
            err[i] = e = (W1[i] - (q - z) * s) / H1[i, i]
            W1[i:] -= H1[i, i:, None] * e[None, :]
        W[i2:] -= Hinv[i1:i2, i2:].t() @ err
    Q = Q[torch.argsort(perm)].t().contiguous()
    if grouped:
        return QTensor(Q, scale.t().contiguous(), zp.t().contiguous(), bits, scheme, granularity, 0, group_size)
    return QTensor(Q, s0, z0, bits, scheme, granularity, 0, None)


def gptq_names(work, ties: dict) -> list[str]:
    """The layers GPTQ rounds: Linear-likes (nn.Linear, transformers' Conv1D) whose weight is not
    tied to another module (a tied copy is shared with, e.g., an embedding rounded to nearest)."""
    return [n for n, m in work if is_linear_like(m) and n not in ties]


def rtn_reason(layer: nn.Module, name: str, ties: dict) -> str:
    """Why a layer of a method='gptq' call is rounded to nearest instead."""
    if not is_linear_like(layer):
        return f"round-to-nearest: GPTQ covers Linear layers (and transformers' Conv1D), not {type(layer).__name__}"
    if name in ties:
        return "round-to-nearest: its weight is tied to another layer (one shared copy)"
    return "round-to-nearest: GPTQ needs calibration inputs and this layer saw none"
