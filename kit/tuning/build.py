"""One candidate of the search, built with the public verbs: per-layer settings in, model out.

A layer's setting is an :class:`Option`: structured share of units removed, unstructured
sparsity, and weight bits (None: float). A candidate is built in the order the methods compose:
structured pruning, unstructured pruning, fine-tuning (plain, or distilled from the original),
quantization, then sparse storage of the zeros. Codebook quantization and sparse storage of
quantized weights are used where this slimkit has them (:data:`CAN`), else affine int
quantization and float sparse storage; the sizes the search optimises are always measured.
"""
from __future__ import annotations

import copy
import glob
import inspect
from collections import defaultdict
from typing import NamedTuple

import torch
from torch import nn

from ..artifact import size as artifact_size
from ..distillation import hinton_loss
from ..errors import NothingToCompressError
from ..inputs import call
from ..metrics import logits
from ..pruning.api import prune
from ..pruning.unstructured import keep_sparsity
from ..quant.api import quantize
from ..quant.config import QuantConfig
from ..sparse.api import sparsify
from ..training import cross_entropy, fit


class Option(NamedTuple):
    """One layer's setting: ``structured`` share of units removed, ``sparsity`` of weights zeroed,
    ``bits`` of the weights (None: float)."""

    structured: float = 0.0
    sparsity: float = 0.0
    bits: int | None = None

    @property
    def is_base(self) -> bool:
        return self == BASE

    def label(self) -> str:
        parts = [f"ch-{self.structured:.0%}" if self.structured else "", f"sp{self.sparsity:.0%}" if self.sparsity
                 else "", f"{self.bits}b" if self.bits else ""]
        return "+".join(p for p in parts if p) or "float"


BASE = Option()


def _has_codebook() -> bool:
    s = QuantConfig.settings().get("method")
    return bool(s) and "codebook" in s[0].options()


CAN = {
    "codebook": _has_codebook(),  # quantize(method="codebook") (weight sharing)
    "entropy": "entropy" in inspect.signature(artifact_size).parameters,  # size(model, entropy=True)
}


def size(model: nn.Module) -> int:
    """Artifact bytes as the search counts them: entropy-coded where this slimkit can."""
    return artifact_size(model, entropy=True) if CAN["entropy"] else artifact_size(model)


def _names(names) -> tuple[str, ...]:
    return tuple(glob.escape(n) for n in sorted(names))


def _by(settings: dict[str, Option], field: str) -> dict:
    groups = defaultdict(list)
    for name, opt in settings.items():
        value = getattr(opt, field)
        if value:
            groups[value].append(name)
    return groups


def prune_global(model: nn.Module, sparsity: float, *, train=None, epochs: int = 0, seed: int = 0,
                 progress=None) -> nn.Module:
    """The known-good start of a size search (Deep Compression's first stage): all weights ranked
    together to ``sparsity``, in 3 steps fine-tuned in between when ``train`` is given."""
    tune = {"data": train, "epochs": epochs} if train is not None and epochs > 0 else None
    steps = 3 if tune else 1
    return prune(model, sparsity, scope="global", steps=steps, seed=seed, finetune=tune, callbacks=progress).model


def build(model: nn.Module, settings: dict[str, Option], *, train=None, epochs: int = 0, teacher_distill=False,
          seed: int = 0, progress=None) -> nn.Module:
    """The model with each named layer set to its option (unnamed layers stay as they are).
    With ``train``: fine-tuned after pruning, and codebook centroids trained after quantizing."""
    out = model
    for share, names in sorted(_by(settings, "structured").items()):
        out = prune(out, share, structured=True, include=_names(names), seed=seed, callbacks=progress).model
    for share, names in sorted(_by(settings, "sparsity").items()):
        out = prune(out, share, include=_names(names), seed=seed, callbacks=progress).model
    changed = any(o.structured or o.sparsity for o in settings.values())
    if changed and train is not None and epochs > 0:
        out = _finetune(model, out, train, epochs, teacher_distill, seed, progress)
    groups = sorted(_by(settings, "bits").items(), reverse=True)
    last_codebook = next((b for b, _ in reversed(groups) if CAN["codebook"] and b < 8), None)
    for bits, names in groups:
        kw = {"method": "codebook"} if CAN["codebook"] and bits < 8 else {}
        if bits == last_codebook and train is not None and epochs > 0:
            kw["finetune"] = {"data": train, "epochs": epochs}  # trains every codebook's centroids so far
        out = quantize(out, bits=bits, include=_names(names), callbacks=progress, **kw).model
    # float layers with zeros are stored sparse; quantized ones keep their zeros in the integers
    # (exact zeros, which entropy coding shrinks), since sparse integer storage is not built yet
    sparse = [n for n, o in settings.items() if o.sparsity and not _compressed(out, n)]
    if sparse:
        try:
            out = sparsify(out, format="auto", include=_names(sparse), callbacks=progress).model
        except NothingToCompressError:
            pass  # sparse storage is not smaller for these layers
    return out


def _compressed(model: nn.Module, name: str) -> bool:
    """A verb already replaced this layer (integer, codebook or sparse storage)."""
    return hasattr(type(model.get_submodule(name)), "_slimkit_kind")


def _finetune(original, pruned, train, epochs, teacher_distill, seed, progress) -> nn.Module:
    """Recover accuracy after pruning, zeros held at zero: on labels, or (``distill`` among the
    methods) on the original model's soft targets (Hinton's loss, T=4, alpha=0.7)."""
    out = copy.deepcopy(pruned)
    loss_fn = cross_entropy
    if teacher_distill:
        teacher = copy.deepcopy(original).eval()

        def loss_fn(model, x, y):
            s_logits = logits(call(model, x))
            with torch.no_grad():
                t_probs = torch.softmax(logits(call(teacher, x)) / 4.0, -1)
            return hinton_loss(s_logits, t_probs, y, 4.0, 0.7)
    fit(out, train, epochs=epochs, seed=seed, loss_fn=loss_fn, after_step=keep_sparsity(out), stage="finetune",
        callbacks=progress)
    return out.eval()
