"""Knowledge distillation: a small student learns from a large teacher's soft targets.

The loss is Hinton's: ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, y)``
where ``p^T = softmax(logits / T)``. With ``noise > 0`` the teacher's targets are the article's
expectation over weight noise: ``E_eps[softmax(teacher_{w + eps}(x) / T)]``, estimated with
``noise_samples`` draws per batch, ``eps ~ N(0, (noise * rms(W))^2)`` for each weight tensor W.

:func:`shrink` makes students: a narrower, freshly initialised copy of any traceable model.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import inputs as _inputs
from .config import Config, integer, number, signature
from .data import batch_errors, batches, first_inputs
from .errors import (
    IncompatibleModelsError,
    Interrupted,
    InvalidParameterError,
    check_fraction,
    check_int,
    check_module,
)
from .events import as_progress
from .inputs import Inputs
from .metrics import OutputSelector, check_output, evaluate, flat, logits
from .nn import param_count, param_modules, refuse_compressed
from .pruning import surgery
from .pruning.common import plain_copy
from .pruning.unstructured import keep_sparsity
from .report import Action, LayerReport, Report, Result
from .report import history as history_of
from .training import fit


@dataclass(frozen=True)
class DistillConfig(Config):
    """How to distill: ``distill(teacher, student, data, temperature=2)`` is
    ``distill(teacher, student, data, DistillConfig(temperature=2))``."""

    verb = "distill"
    first = "temperature"

    temperature: float = number(4.0, 0, float("inf"), "softens both distributions", low_open=True,
                                wording="a finite positive number")
    alpha: float = number(0.7, 0, 1, "weight of the soft-target term (0: labels only, 1: teacher only)")
    noise: float = number(0.0, 0, float("inf"), "relative std of the teacher's weight noise (0: plain teacher)",
                          wording="a finite number >= 0")
    noise_samples: int = integer(4, 1, 1000, "noisy teachers averaged per batch")
    epochs: int = integer(20, 1, 100_000, "training epochs")
    lr: float = number(2e-3, 0, float("inf"), "learning rate", low_open=True, wording="a positive number")
    batch_size: int = integer(64, 1, 2**31 - 1, "batch size when data is (X, y)")
    weight_decay: float = number(0.0, 0, float("inf"), "AdamW weight decay")
    seed: int = integer(0, 0, 2**63 - 1, "random seed")

    def code(self, model: str = "teacher, student, data", extra=None) -> str:
        """The Python call that reproduces this config: ``slimkit.distill(teacher, student, data, ...)``."""
        return super().code(model, extra)


def distill(teacher: nn.Module, student: nn.Module, data, config: DistillConfig | float | None = None, *,
            val_data=None, output: OutputSelector = None, callbacks=None, stop=None, **settings) -> Result:
    """Train a copy of ``student`` on ``data`` against ``teacher``; returns ``Result(student, report)``.

    config: a :class:`DistillConfig`, or its first setting ``temperature``; keyword settings override it.
    data: ``(inputs, targets)`` batches or a pair ``(X, y)`` (see :mod:`slimkit.data`); inputs
    follow :mod:`slimkit.inputs`: a tensor, a dict of keyword tensors (tokenized text) or
    ``slimkit.Inputs(args=..., kwargs=...)`` (``Inputs(args=(batch_dict,))`` for a forward that
    takes one dict). Targets are class indices per sample, or per token for (B, T, C) logits.
    output: where the logits are in both models' outputs: None (a tensor, or the ``logits`` of a
    transformers ``ModelOutput`` / a mapping), a key or attribute name, or a callable output -> tensor.
    temperature: softens both distributions (> 0). alpha: weight of the soft-target term in
    [0, 1] (0 = labels only, 1 = teacher only). noise: relative std of the teacher's weight
    noise (0 = the plain teacher). Neither input model is modified. Emits a "metrics" event
    per epoch (loss, and val_accuracy given ``val_data``); setting ``stop`` interrupts. A batch
    either model or the loss rejects raises InvalidParameterError naming ``data`` and the batch.
    """
    for name, m in (("teacher", teacher), ("student", student)):
        check_module(name, m)
    refuse_compressed(student, "distill", "distill into the float student, then compress it (a compressed "
                      "teacher is fine)", what="student")
    c = DistillConfig.build(config, settings)
    check_output(output)
    batches(data)  # type check before any work
    progress = as_progress(callbacks, stop)

    teacher = copy.deepcopy(teacher).eval()  # a private copy: noise never touches the user's teacher
    for p in teacher.parameters():
        p.requires_grad_(False)
    work = copy.deepcopy(student)
    _check_pair(teacher, work.eval(), first_inputs(data), output)

    soft_targets = _NoisyTeacher(teacher, c.temperature, c.noise, c.noise_samples, c.seed, output)
    T, alpha = c.temperature, c.alpha

    def kd_loss(model: nn.Module, x, y: torch.Tensor) -> torch.Tensor:
        s_logits, y = flat(logits(_inputs.call(model, x), output, "the student"), y)
        # alpha=0 never runs the teacher: labels-only training is exactly plain cross-entropy
        t_probs = soft_targets(x).reshape(s_logits.shape) if alpha > 0 else None
        return hinton_loss(s_logits, t_probs, y, T, alpha)

    # a pruned student keeps its zeros while it learns (prune -> distill -> quantize composes)
    pruned = any(step.startswith("prune") for steps in history_of(student).values() for step in steps)
    try:
        history = fit(work, data, epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, weight_decay=c.weight_decay,
                      seed=c.seed, loss_fn=kd_loss, val_data=val_data, stage="distill", callbacks=progress,
                      after_step=keep_sparsity(work) if pruned else None)
    except Interrupted as e:  # a stop keeps the finished epochs' student (e.result), marked stopped
        done = getattr(e, "history", [])
        if done:
            e.result = _result(teacher, student, work, done, c, val_data, output, stopped=True)
        raise
    return _result(teacher, student, work, history, c, val_data, output)


def _result(teacher, student, work, history, c: DistillConfig, val_data, output, stopped: bool = False) -> Result:
    pt, ps = param_count(teacher), param_count(work)
    summary = {"teacher_params": pt, "student_params": ps, "params_ratio": ps / pt,
               "final_loss": history[-1]["loss"]}
    if stopped:
        summary["stopped_after_epochs"] = len(history)
    if val_data is not None:
        summary["val_accuracy"] = history[-1]["val_accuracy"]
        summary["teacher_val_accuracy"] = evaluate(teacher, val_data, output=output)["accuracy"]
    params = dict(temperature=c.temperature, alpha=c.alpha, noise=c.noise, noise_samples=c.noise_samples,
                  epochs=c.epochs, lr=c.lr, seed=c.seed)
    report = Report("distill", params, [_trained_row(n, m) for n, m in param_modules(work)], summary=summary)
    return Result(work, report.cover(student, work).chain(student, work, "distill"))


signature(distill, DistillConfig)


def _check_pair(teacher: nn.Module, student: nn.Module, x0, output: OutputSelector) -> None:
    """Both models run on the first batch and give logits of one shape (else a clear error now,
    not a broadcasting error mid-training)."""
    with torch.no_grad(), batch_errors(0):
        t_out = logits(_inputs.call(teacher, x0), output, "the teacher")
        s_out = logits(_inputs.call(student, x0), output, "the student")
    if t_out.shape != s_out.shape:
        raise IncompatibleModelsError(
            f"teacher and student must produce logits of the same shape; on the first batch the teacher "
            f"gave {tuple(t_out.shape)} and the student {tuple(s_out.shape)}")


def _trained_row(name: str, module: nn.Module) -> LayerReport:
    """Distillation trains every parameter that requires grad; frozen ones are reported skipped."""
    own = list(module.parameters(recurse=False))
    n, b = sum(p.numel() for p in own), sum(p.numel() * p.element_size() for p in own)
    trained = any(p.requires_grad for p in own)
    return LayerReport(name, type(module).__name__, Action.DISTILLED if trained else Action.SKIPPED, n, n, b, b,
                       reason="" if trained else "parameters frozen (requires_grad=False)")


def hinton_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor | None, targets: torch.Tensor,
                temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_probs || softmax(student_logits / T)) + (1 - alpha) * CE(student_logits, y)``.

    ``teacher_probs`` are the teacher's softened probabilities ``softmax(teacher_logits / T)``
    (or their average over weight noise); ``T^2`` keeps the soft term's gradients on the scale
    of the hard term's as ``T`` changes (Hinton et al., 2015). KL is averaged over the batch.
    """
    T = float(temperature)
    loss = torch.zeros((), dtype=student_logits.dtype, device=student_logits.device)
    if alpha > 0:
        log_p = F.log_softmax(student_logits / T, -1)
        loss = loss + alpha * T * T * F.kl_div(log_p, teacher_probs, reduction="batchmean")
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


class _NoisyTeacher:
    """Teacher soft targets, averaged over Gaussian weight noise when ``noise > 0``.

    Each draw adds noise in place and the saved weights are copied back exactly afterwards
    (copy_, not subtraction, so no rounding error accumulates).
    """

    def __init__(self, teacher: nn.Module, temperature: float, noise: float, samples: int, seed: int,
                 output: OutputSelector = None):
        self.teacher, self.T, self.noise, self.samples, self.output = teacher, temperature, noise, samples, output
        self.weights = [p for n, p in teacher.named_parameters() if p.dim() > 1 or n.endswith("weight")]
        self.scales = [p.detach().pow(2).mean().sqrt().item() for p in self.weights]
        self.gen = torch.Generator().manual_seed(seed + 1)

    def _probs(self, x) -> torch.Tensor:
        return F.softmax(logits(_inputs.call(self.teacher, x), self.output, "the teacher") / self.T, -1)

    @torch.no_grad()
    def __call__(self, x) -> torch.Tensor:
        if self.noise == 0:
            return self._probs(x)
        saved = [p.detach().clone() for p in self.weights]
        total = None
        try:
            for _ in range(self.samples):
                for p, w, s in zip(self.weights, saved, self.scales):
                    p.copy_(w + torch.randn(w.shape, generator=self.gen, dtype=w.dtype) * (self.noise * s))
                probs = self._probs(x)
                total = probs if total is None else total + probs
        finally:
            for p, w in zip(self.weights, saved):
                p.copy_(w)
        return total / self.samples


SHRINK_INSTEAD = "For a model torch.fx cannot resize, build the student yourself (e.g. from a smaller config)"


def shrink(model: nn.Module, width: float = 0.5, seed: int = 0, *, example: torch.Tensor | None = None,
           include=None, exclude=None) -> nn.Module:
    """A fresh, re-initialised, narrower copy of ``model`` (a distillation student).

    Every hidden Linear/Conv whose units can be removed (see ``slimkit.pruning.surgery``) keeps
    ``ceil(width * units)`` of them; layers feeding the model output keep theirs. ``example``
    (an input batch) is needed only for models whose forward branches on input shapes.
    Parametrizations (weight_norm...) are not carried over: the student's layers are plain.
    """
    check_module("model", model)
    width = check_fraction("width", width, allow_one=True)
    if width == 0:
        raise InvalidParameterError("width", width, "a float in (0, 1]")
    check_int("seed", seed, 0, 2**63 - 1)
    if example is not None and not isinstance(example, (torch.Tensor, Mapping, Inputs)):
        example = first_inputs(example)
    student, _ = plain_copy(model)  # weight_norm & co. removed: the student's layers are plain
    analysis = surgery.analyse_for("shrink", student, include=include, exclude=exclude, example=example,
                                   hint=" (pass example= for shape-dependent forwards)", instead=SHRINK_INSTEAD)
    for g in analysis.groups:
        surgery.remove_units(student, g, torch.arange(max(1, math.ceil(width * g.units))))
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        for m in student.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
    return student.train()
