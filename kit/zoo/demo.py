"""``slimkit demo``: compress the digits CNN with each method and print one comparison table.

Each recipe below is the public API called with the settings that meet issue 2's targets;
``benchmarks/digits_study.py`` measures the same recipes in more depth, and the notebooks
call the same functions, so there is one definition of "int8", "pruned 90% + fine-tune", ...
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from .. import measure as _compare
from ..data import Split, load_digits, subset
from ..devices import resolve_device
from ..distillation import distill, shrink
from ..pruning.api import prune
from ..quant.api import quantize
from ..sparse.api import sparsify


@dataclass(frozen=True)
class Settings:
    """Training budgets of the recipes. ``quick()`` is a smoke-test version (seconds, worse numbers)."""

    prune_steps: int = 3          # iterative schedule for 90% unstructured
    prune_epochs: int = 2         # fine-tune epochs after each pruning step
    structured_epochs: int = 4    # fine-tune epochs after structured 50%
    student_width: float = 0.45   # shrink factor: <= 1/4 of the CNN's parameters
    distill_epochs: int = 40
    train_fraction: float = 1.0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(prune_steps=1, prune_epochs=1, structured_epochs=1, distill_epochs=2, train_fraction=0.3)


Recipe = Callable[[nn.Module, Split, int, Settings], tuple[nn.Module, str]]


def int8(model, train, seed, s):
    """8-bit symmetric per-channel weights; Linear layers run torch._int_mm with int8 activations."""
    q, report = quantize(model, bits=8, granularity="per_channel")
    return q, f"{report.summary['integer_kernel_layers']} layers on int8 kernels"


def int4(model, train, seed, s):
    """4-bit per-channel weights packed two per byte (dequantized per call: storage win only)."""
    q, _ = quantize(model, bits=4, granularity="per_channel")
    return q, "int4 packed storage, fp32 compute"


def pruned_sparse(model, train, seed, s):
    """90% of weights removed (global magnitude, cubic schedule, fine-tune between steps), stored sparse."""
    p, _ = prune(model, 0.9, score="magnitude", scope="global", steps=s.prune_steps, seed=seed,
                 finetune=dict(data=train, epochs=s.prune_epochs))
    sp, report = sparsify(p, format="auto")
    formats = ", ".join(f"{k} {v}" for k, v in report.summary["formats"].items() if v)
    return sp, f"90% sparse; {formats}"


def structured(model, train, seed, s):
    """Half the channels/neurons of every hidden layer removed (L1 norm), then fine-tuned."""
    p, report = prune(model, 0.5, structured=True, seed=seed, finetune=dict(data=train, epochs=s.structured_epochs))
    return p, f"params x{report.summary['params_ratio']:.2f}"


def distilled(model, train, seed, s):
    """A student of ``student_width`` (<= 1/4 of the parameters) trained on the teacher's soft targets."""
    student = shrink(model, s.student_width, seed=seed)
    out, report = distill(model, student, train, temperature=4.0, alpha=0.7, epochs=s.distill_epochs, seed=seed)
    return out, f"student params x{report.summary['params_ratio']:.2f}"


RECIPES: dict[str, Recipe] = {
    "int8 per-channel": int8,
    "int4 per-channel": int4,
    "prune 90% + FT, sparse": pruned_sparse,
    "structured 50% + FT": structured,
    "distilled student": distilled,
}


def run(seed: int = 0, device: str = "cpu", *, quick: bool = False, batch: int = 256, num_threads: int = 1,
        callbacks=None, log=print) -> list[dict]:
    """Compress the digits CNN with every recipe; rows as in :func:`slimkit.measure.compare`
    plus ``note`` and ``seconds`` (time to compress).

    num_threads: torch threads for the whole run. One by default: these models are too small
    for intra-op parallelism to pay, and on a busy machine extra threads make training crawl.
    """
    resolve_device(device)  # fail before any work if the device is missing
    with _compare.threads(num_threads):
        return _run(seed, device, quick, batch, num_threads, callbacks, log)


def _run(seed, device, quick, batch, num_threads, callbacks, log) -> list[dict]:
    from .models import pretrained_digits

    settings = Settings.quick() if quick else Settings()
    digits = load_digits(seed=0)
    train = digits.train if settings.train_fraction >= 1 else subset(digits.train, settings.train_fraction, seed)
    log(f"digits CNN (seed {seed}): training or loading from cache ...")
    cnn = pretrained_digits("cnn", seed=seed, callbacks=callbacks)
    models, notes, seconds = {}, {}, {}
    for name, recipe in RECIPES.items():
        t = time.perf_counter()
        models[name], notes[name] = recipe(cnn, train, seed, settings)
        seconds[name] = time.perf_counter() - t
        log(f"  {name}: done in {seconds[name]:.1f} s")
    x = digits.test.X[:batch].repeat(max(1, -(-batch // len(digits.test))), 1, 1, 1)[:batch]
    rows = _compare.compare(cnn, models, digits.test, latency_input=x, device=device, num_threads=num_threads,
                            original_name="original fp32")
    for row in rows:
        row["note"] = notes.get(row["method"], "")
        row["seconds"] = seconds.get(row["method"], 0.0)
    return rows


def main(seed: int = 0, device: str = "cpu", quick: bool = False) -> int:
    from ..hardware import summary

    t = time.perf_counter()
    rows = run(seed, device, quick=quick)
    r0 = rows[0]
    print()
    print(f"slimkit demo: digits CNN, seed {seed}, {r0['samples']} test images; latency on {r0['latency_device']}, "
          f"batch {r0['latency_batch']}, {r0['latency_threads']} thread(s), median of alternating rounds")
    print(_compare.format_table(rows, [*_compare.COLUMNS, ("note", "note", "{}")]))
    print(f"\n{summary()}\ntotal {time.perf_counter() - t:.0f} s")
    return 0
