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

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import surgery
from .data import batches, first_inputs
from .errors import (IncompatibleModelsError, InvalidParameterError, check_fraction, check_int, check_module,
                     check_nonnegative, check_positive)
from .events import as_progress
from .layers import WEIGHTED, param_count
from .inputs import Inputs
from .metrics import evaluate
from .pruning import plain_copy
from .report import LayerReport, Report, Result
from .training import fit


def distill(teacher: nn.Module, student: nn.Module, data, temperature: float = 4.0, alpha: float = 0.7,
            noise: float = 0.0, noise_samples: int = 4, epochs: int = 20, lr: float = 2e-3,
            batch_size: int = 64, weight_decay: float = 0.0, val_data=None, seed: int = 0,
            callbacks=None, stop=None) -> Result:
    """Train a copy of ``student`` on ``data`` against ``teacher``; returns ``Result(student, report)``.

    temperature: softens both distributions (> 0). alpha: weight of the soft-target term in
    [0, 1] (0 = labels only, 1 = teacher only). noise: relative std of the teacher's weight
    noise (0 = the plain teacher). Neither input model is modified. Emits a "metrics" event
    per epoch (loss, and val_accuracy given ``val_data``); setting ``stop`` interrupts.
    """
    for name, m in (("teacher", teacher), ("student", student)):
        check_module(name, m)
    check_positive("temperature", temperature)
    if math.isinf(temperature):
        raise InvalidParameterError("temperature", temperature, "a finite positive number")
    alpha = check_fraction("alpha", alpha, allow_one=True)
    noise = check_nonnegative("noise", noise)
    check_int("noise_samples", noise_samples, 1, 1000)
    check_positive("epochs", epochs, integer=True)
    check_positive("lr", lr)
    check_int("seed", seed, 0, 2**63 - 1)
    batches(data)  # type check before any work
    progress = as_progress(callbacks, stop)

    teacher = copy.deepcopy(teacher).eval()  # a private copy: noise never touches the user's teacher
    for p in teacher.parameters():
        p.requires_grad_(False)
    work = copy.deepcopy(student)
    x0 = first_inputs(data)
    with torch.no_grad():
        t_out, s_out = teacher(x0), work.eval()(x0)
    if not (isinstance(t_out, torch.Tensor) and isinstance(s_out, torch.Tensor)) or t_out.shape != s_out.shape:
        shape = lambda o: tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__  # noqa: E731
        raise IncompatibleModelsError(
            f"teacher and student must produce outputs of the same shape; on the first batch the teacher "
            f"gave {shape(t_out)} and the student {shape(s_out)}")

    soft_targets = _NoisyTeacher(teacher, temperature, noise, noise_samples, seed)
    T = float(temperature)

    def kd_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # alpha=0 never runs the teacher: labels-only training is exactly plain cross-entropy
        return hinton_loss(model(x), soft_targets(x) if alpha > 0 else None, y, T, alpha)

    history = fit(work, data, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                  loss_fn=kd_loss, val_data=val_data, stage="distill", callbacks=progress)

    layers = [LayerReport.same_size(n, m, "distilled") for n, m in work.named_modules() if isinstance(m, WEIGHTED)]
    pt, ps = param_count(teacher), param_count(work)
    summary = {"teacher_params": pt, "student_params": ps, "params_ratio": ps / pt,
               "final_loss": history[-1]["loss"]}
    if val_data is not None:
        summary["val_accuracy"] = history[-1]["val_accuracy"]
        summary["teacher_val_accuracy"] = evaluate(teacher, val_data)["accuracy"]
    params = dict(temperature=T, alpha=alpha, noise=float(noise), noise_samples=noise_samples, epochs=epochs,
                  lr=lr, seed=seed)
    return Result(work, Report("distill", params, layers, summary=summary))


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

    def __init__(self, teacher: nn.Module, temperature: float, noise: float, samples: int, seed: int):
        self.teacher, self.T, self.noise, self.samples = teacher, temperature, noise, samples
        self.weights = [p for n, p in teacher.named_parameters() if p.dim() > 1 or n.endswith("weight")]
        self.scales = [p.detach().pow(2).mean().sqrt().item() for p in self.weights]
        self.gen = torch.Generator().manual_seed(seed + 1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise == 0:
            return F.softmax(self.teacher(x) / self.T, -1)
        saved = [p.detach().clone() for p in self.weights]
        total = None
        try:
            for _ in range(self.samples):
                for p, w, s in zip(self.weights, saved, self.scales):
                    p.copy_(w + torch.randn(w.shape, generator=self.gen, dtype=w.dtype) * (self.noise * s))
                probs = F.softmax(self.teacher(x) / self.T, -1)
                total = probs if total is None else total + probs
        finally:
            for p, w in zip(self.weights, saved):
                p.copy_(w)
        return total / self.samples


SHRINK_INSTEAD = "For a model torch.fx cannot resize, build the student yourself (e.g. from a smaller config)"


def shrink(model: nn.Module, width: float = 0.5, seed: int = 0, *, example: torch.Tensor | None = None,
           include=None, exclude=None) -> nn.Module:
    """A fresh, re-initialised, narrower copy of ``model`` (a distillation student).

    Every hidden Linear/Conv whose units can be removed (see ``slimkit.surgery``) keeps
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
