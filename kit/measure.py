"""Several compressed models side by side: accuracy, artifact bytes, CPU latency.

Used by ``slimkit demo``, the benchmarks and the notebooks, so that every table of
"original vs compressed" is measured the same way::

    rows = compare(original, {"int8": q, "pruned": p}, digits.test, latency_input=x)
    print(format_table(rows))

Latency is measured side by side in one process: each round times every model, the order
alternating round by round (forward, then reversed), and the median over rounds is reported.
On a shared machine absolute times drift; ratios taken this way stay meaningful. The loop
(:func:`alternate`, with :class:`Timer` and :func:`threads`) is the project's only
side-by-side timer: ``slimkit.accel.time_variants`` and the panel time through it too.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from . import table
from .artifact import size
from .devices import resolve_device, synchronize
from .errors import InvalidParameterError, InvalidTypeError, check_int, check_module
from .metrics import evaluate
from .nn import param_count


@contextmanager
def threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        check_int("threads", n, 1, 1024)
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default ``"linear"`` method)."""
    if not values:
        raise InvalidParameterError("values", values, "at least one value")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 100:
        raise InvalidParameterError("q", q, "a number in [0, 100]")
    xs = sorted(float(v) for v in values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Timer:
    """Seconds per call of a block of ``number`` calls on ``device``, synchronised before and
    after so queued GPU work counts. With ``cuda_events`` a GPU block is timed by CUDA events
    (device time, free of host jitter); otherwise, and off CUDA, by ``time.perf_counter``."""

    def __init__(self, device: torch.device, cuda_events: bool = True):
        self.device = device
        self.cuda = cuda_events and device.type == "cuda"
        self.name = "cuda_event" if self.cuda else "perf_counter"

    def __call__(self, call: Callable[[], Any], number: int = 1) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            start.record()
            for _ in range(number):
                call()
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1e3 / number
        synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(number):
            call()
        synchronize(self.device)
        return (time.perf_counter() - t0) / number


def alternate(calls: Mapping[str, Callable[[], Any]], timers: Mapping[str, Timer], *, rounds: int,
              warmup: int = 0, number: int = 1, per_round: int = 1,
              pause_s: float = 0.0) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The side-by-side timing loop (:func:`latency`, ``slimkit.accel.time_variants``).

    ``warmup`` untimed rounds, then ``rounds`` timed ones. Every round runs every call, in the
    given order on even timed rounds and reversed on odd ones (the warm-up rounds continue the
    alternation), so drifting machine load, caches and thread pools left spinning by one call
    fall evenly on all. A timed round takes ``per_round`` readings of each call (``timers[name]``:
    seconds per call over a block of ``number`` calls), then sleeps ``pause_s``; a warm-up round
    runs one block. Callers fix the threads (:func:`threads`) and the inference mode.
    Returns (wall seconds, process CPU seconds), both ``{name: [per call, one per reading]}``.
    """
    names = list(calls)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(-warmup, rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            if r < 0:
                timers[n](calls[n], number)
                continue
            for _ in range(per_round):
                c0 = time.process_time()
                wall[n].append(timers[n](calls[n], number))
                cpu[n].append((time.process_time() - c0) / number)
            if pause_s:
                time.sleep(pause_s)
    return wall, cpu


def _number_for(run, x, target_s: float = 0.02) -> int:
    """Calls per timed block so that one block lasts about ``target_s`` (timer noise stays small)."""
    t = time.perf_counter()
    run(x)
    once = max(time.perf_counter() - t, 1e-6)
    return max(1, min(1000, round(target_s / once)))


def _ready(models: Mapping[str, nn.Module], x: torch.Tensor, dev: torch.device) -> tuple[dict, dict]:
    """({name: model that ran once on ``dev``}, {name: error}): copies go to other devices than
    the CPU, and kernels that refuse this device or shape fail on the first call."""
    runs, errors = {}, {}
    for n, m in models.items():
        m = m.eval() if dev.type == "cpu" else copy.deepcopy(m).to(dev).eval()
        try:
            m(x)
            runs[n] = m
        except Exception as e:  # noqa: BLE001 - reported per model, the others still run
            errors[n] = f"{type(e).__name__}: {e}"
    return runs, errors


def latency(models: Mapping[str, nn.Module], x: torch.Tensor, *, rounds: int = 7, number: int | None = None,
            warmup: int = 2, num_threads: int | None = 1, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Median milliseconds per forward pass of each model on input ``x``, measured side by side.

    rounds: timed rounds; each round times every model once (``number`` calls in a block),
    in forward order on even rounds and reversed on odd ones. number: calls per block (default:
    about 20 ms worth for the fastest model). warmup: untimed rounds first. num_threads: torch
    threads during the measurement (1 by default: reproducible on a shared machine; None keeps
    the current setting). device: where to run; other than CPU, copies of the models are moved
    there, and a model that cannot run there gets ``nan`` and its error in ``"errors"``.
    Returns ``{"ms": {name: median}, "rounds": {name: [ms, ...]}, "threads": n,
    "number": calls per block, "batch": len(x), "device": str, "errors": {name: str}}``.
    """
    if not isinstance(models, Mapping) or not models:
        raise InvalidTypeError("models", models, "a non-empty dict of name -> torch.nn.Module")
    check_int("rounds", rounds, 1, 10_000)
    check_int("warmup", warmup, 0, 10_000)
    dev = resolve_device(device)
    x = x.to(dev)
    with threads(num_threads) as used, torch.inference_mode():
        runs, errors = _ready(models, x, dev)
        if number is None:
            number = min((_number_for(m, x) for m in runs.values()), default=1)
        check_int("number", number, 1, 10**6)
        clock = Timer(dev, cuda_events=False)  # wall time of the block, host included, as always quoted
        wall, _ = alternate({n: partial(m, x) for n, m in runs.items()}, dict.fromkeys(runs, clock),
                            rounds=rounds, warmup=warmup, number=number)
    times = {n: [1000 * s for s in v] for n, v in wall.items()}
    ms = {n: statistics.median(times[n]) if n in times else math.nan for n in models}
    return {"ms": ms, "rounds": times, "threads": used, "number": number, "batch": int(x.shape[0]),
            "device": str(dev), "errors": errors}


def compare(original: nn.Module, candidates: Mapping[str, nn.Module], data, *,
            latency_input: torch.Tensor | None = None, rounds: int = 7, num_threads: int | None = 1,
            device: str = "cpu", original_name: str = "original") -> list[dict[str, Any]]:
    """One row per model (the original first): accuracy on ``data``, drop in points, artifact
    bytes (``slimkit.size``), size ratio (original / model, higher is smaller), parameters, and
    with ``latency_input`` the median CPU latency and speed-up (original / model, > 1 is faster),
    measured side by side with :func:`latency` on ``device`` (accuracy is always CPU)."""
    check_module("original", original)
    if not isinstance(candidates, Mapping):
        raise InvalidTypeError("candidates", candidates, "a dict of name -> torch.nn.Module")
    if original_name in candidates:
        raise InvalidParameterError("candidates", list(candidates), f"names other than {original_name!r}")
    models = {original_name: original, **candidates}
    for name, m in models.items():
        check_module(f"candidates[{name!r}]", m)
    rows = []
    for name, m in models.items():
        metrics = evaluate(m, data)
        rows.append({"method": name, "accuracy": metrics["accuracy"], "samples": int(metrics["n"]),
                     "size_bytes": size(m), "params": param_count(m)})
    base = rows[0]
    for row in rows:
        row["drop_pts"] = 100 * (base["accuracy"] - row["accuracy"])
        row["size_ratio"] = base["size_bytes"] / row["size_bytes"]
    if latency_input is not None:
        lat = latency(models, latency_input, rounds=rounds, num_threads=num_threads, device=device)
        for row in rows:
            row["latency_ms"] = lat["ms"][row["method"]]
            row["speedup"] = lat["ms"][original_name] / row["latency_ms"]
            row["latency_batch"], row["latency_threads"] = lat["batch"], lat["threads"]
            row["latency_device"] = lat["device"]
            if row["method"] in lat["errors"]:
                row["latency_error"] = lat["errors"][row["method"]]
    return rows


COLUMNS = [("method", "method", "{}"), ("accuracy", "accuracy", "{:.2%}"), ("drop_pts", "drop (pt)", "{:+.2f}"),
            ("size_bytes", "artifact bytes", "{:,}"), ("size_ratio", "size ratio", "{:.2f}x"),
            ("latency_ms", "latency ms", "{:.3f}"), ("speedup", "speed-up", "{:.2f}x")]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[table.Column] | None = None) -> str:
    """A plain-text table of :func:`compare` rows (columns absent from every row are left out).
    ``columns``: (key, heading, format) triples; extra keys such as a "note" may be added."""
    head, cells = table.formatted(rows, columns or COLUMNS)
    return table.text(head, cells, align="l" + "r" * (len(head) - 1))


def pareto_front(points: Sequence[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats in both coordinates (smaller is better)."""
    def beaten(a: tuple[float, float]) -> bool:
        return any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in points)

    return {i for i, p in enumerate(points) if not beaten(p)}
