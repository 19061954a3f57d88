"""Trained centroids (Deep Compression's trained quantization): fine-tune only the codebooks of a
codebook-quantized model. The indices stay fixed; a weight is ``codebook[index]``, so autograd
sums the gradients of all the weights sharing a centroid into that centroid. A reserved zero
centroid (pruned weights) is held at exactly 0."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..events import Progress
from ..pruning.common import finetune_fit
from ..pruning.config import Finetune
from .codebook_layers import CodebookWeight


def train_centroids(model: nn.Module, tune: Finetune, loss_fn, progress: Progress, seed: int = 0) -> list[dict]:
    """Fine-tune the codebooks of ``model``'s codebook layers in place; the per-epoch history.
    Every other parameter is frozen meanwhile (the float layers left are not retrained)."""
    layers = [m for m in model.modules() if isinstance(m, CodebookWeight)]
    frozen = [p for p in model.parameters() if p.requires_grad]
    params: dict[int, tuple] = {}  # tied layers share one codebook: one Parameter (the buffer kept alive)
    for m in layers:
        cb = m._buffers.pop("codebook")
        m.codebook = params.setdefault(id(cb), (nn.Parameter(cb.detach().clone()), cb))[0]
    zeros = [m.codebook for m in layers if m.reserved_zero]

    @torch.no_grad()
    def hold_zero(_model):
        for cb in zeros:
            cb[0] = 0

    for p in frozen:
        p.requires_grad_(False)
    try:
        return finetune_fit(model, tune, loss_fn, progress, seed, after_step=hold_zero)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        done: dict[int, torch.Tensor] = {}
        for m in layers:  # back to buffers: the saved layout does not change
            cb = m._parameters.pop("codebook")
            m.register_buffer("codebook", done.setdefault(id(cb), cb.detach().clone()))
