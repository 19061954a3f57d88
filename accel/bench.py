"""Measuring latency, throughput and memory, the way this project quotes them.

- :func:`benchmark` times one callable: warm-up calls first (lazy compiles, allocator and
  cache warm-up), then ``repeat`` timed calls. On CUDA each call is timed with CUDA events
  between synchronisations; elsewhere with ``time.perf_counter``. The thread count is fixed
  for the run and recorded. Peak memory: CUDA max allocated, and on the CPU the process's
  resident-set high-water mark over the timed calls (Linux resets it per run).
- :func:`time_variants` times several variants side by side, alternating their order round by
  round (the core's loop, ``slimkit.measure.alternate``), so that machine noise (other processes,
  a thread pool still spinning) falls on all of them; ratios are against the first variant,
  measured in the same run.
- :func:`throughput` runs :func:`benchmark` over batch sizes.

Every :class:`Measurement` carries the hardware fingerprint (``slimkit.hardware.fingerprint``).
"""
from __future__ import annotations

import gc
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from slimkit.measure import Timer, alternate, percentile  # the core's one side-by-side loop and clock
from slimkit.measure import threads as fixed_threads  # one definition of "run with N threads"
from slimkit.devices import resolve_device, synchronize
from slimkit.errors import InvalidParameterError, InvalidTypeError, check_positive
from slimkit.hardware import fingerprint as _fingerprint  # the name `fingerprint` is a parameter below

from . import inputs as _inputs
from .backends import Prepared


@dataclass
class Measurement:
    """Timings of one callable on one input. Seconds throughout; ``items`` is the batch size
    (what throughput counts)."""

    name: str
    times_s: list[float]
    items: int = 1
    warmup: int = 0
    threads: int = 1
    device: str = "cpu"
    timer: str = "perf_counter"
    peak_cpu_rss_bytes: int | None = None
    rss_before_bytes: int | None = None
    cuda_max_allocated_bytes: int | None = None
    cpu_time_s: list[float] = field(default_factory=list)  # process CPU time per call
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def p90_s(self) -> float:
        return percentile(self.times_s, 90)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times_s)

    @property
    def stdev_s(self) -> float:
        return statistics.stdev(self.times_s) if len(self.times_s) > 1 else 0.0

    @property
    def throughput(self) -> float:
        """Items per second at the median latency."""
        return self.items / self.median_s if self.median_s > 0 else math.inf

    def speedup_vs(self, baseline: "Measurement") -> float:
        """How many times faster than ``baseline`` (ratio of medians; > 1 means faster)."""
        return baseline.median_s / self.median_s

    def summary(self) -> dict[str, Any]:
        """The figures a table shows, in milliseconds / items per second / bytes."""
        out = {"name": self.name, "items": self.items, "median_ms": 1e3 * self.median_s,
               "p90_ms": 1e3 * self.p90_s, "min_ms": 1e3 * self.min_s, "throughput_per_s": self.throughput,
               "runs": len(self.times_s), "warmup": self.warmup, "threads": self.threads, "device": self.device,
               "timer": self.timer, "peak_cpu_rss_bytes": self.peak_cpu_rss_bytes,
               "cuda_max_allocated_bytes": self.cuda_max_allocated_bytes}
        if self.cpu_time_s:
            out["cpu_median_ms"] = 1e3 * statistics.median(self.cpu_time_s)
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(self.summary())
        return d


# --------------------------------------------------------------------------- memory

def _rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    """Resident-set high-water mark: VmHWM on Linux, else ru_maxrss (process lifetime)."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        if m:
            return int(m.group(1)) * 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)
    except (ImportError, OSError):
        return None


# --------------------------------------------------------------------------- timing

def _callable(fn, example_inputs, device):
    """(zero-argument call, device, items) for a Prepared, a module or any callable."""
    if isinstance(fn, Prepared):
        moved = fn.move(example_inputs)
        return (lambda: fn.run(moved)), fn.device, _inputs.batch_size(moved)
    if not callable(fn):
        raise InvalidTypeError("fn", fn, "a callable, an nn.Module or a slimkit.accel.Prepared")
    dev = resolve_device(device) if device is not None else _infer_device(fn, example_inputs)
    moved = _inputs.to_device(example_inputs, dev) if dev.type != "cpu" else example_inputs
    return (lambda: _inputs.call(fn, moved)), dev, _inputs.batch_size(moved)


def _infer_device(fn, example_inputs) -> torch.device:
    if isinstance(fn, torch.nn.Module):
        for t in list(fn.parameters()) + list(fn.buffers()):
            return t.device
    return _inputs.tensors(example_inputs)[0].device


def _check_count(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise InvalidParameterError(name, value, f"an int >= {lo}")


def benchmark(fn, example_inputs: _inputs.Inputs | None = None, *, name: str | None = None, warmup: int = 3,
              repeat: int = 20, min_time_s: float | None = None, threads: int | None = None,
              device: str | torch.device | None = None, memory: bool = True, items: int | None = None,
              fingerprint: bool = True) -> Measurement:
    """Time ``fn`` on ``example_inputs`` (a tensor, tuple or dict; None: ``fn()``).

    ``fn``: a :class:`~slimkit.accel.Prepared` (its inputs are moved where it runs), an
    ``nn.Module`` or any callable. ``warmup`` untimed calls, then ``repeat`` timed calls; with
    ``min_time_s`` more timed calls are made until that much time has been measured.
    ``threads`` fixes ``torch.set_num_threads`` for the run (restored afterwards; recorded).
    ``items``: what one call processes (default: the inputs' batch size) for throughput.
    Calls run under ``torch.inference_mode``.
    """
    _check_count("warmup", warmup, 0)
    _check_count("repeat", repeat, 1)
    if min_time_s is not None:
        check_positive("min_time_s", min_time_s)
    if example_inputs is None:
        if not callable(fn):
            raise InvalidTypeError("fn", fn, "a callable")
        dev = resolve_device(device) if device is not None else torch.device("cpu")
        call, n = fn, 1
    else:
        example_inputs = _inputs.check_inputs(example_inputs)
        call, dev, n = _callable(fn, example_inputs, device)
    if items is not None:
        check_positive("items", items, integer=True)
        n = items
    label = name or getattr(fn, "backend", None) or type(fn).__name__
    timer = Timer(dev)
    with fixed_threads(threads) as nthreads, torch.inference_mode():
        for _ in range(warmup):
            call()
        synchronize(dev)
        gc.collect()
        if dev.type == "cuda" and memory:
            torch.cuda.reset_peak_memory_stats(dev)
        rss_before = _rss_bytes() if memory else None
        peak_ok = memory and _reset_peak_rss()
        times: list[float] = []
        cpu: list[float] = []
        while len(times) < repeat or (min_time_s is not None and sum(times) < min_time_s):
            c0 = time.process_time()
            times.append(timer(call))
            cpu.append(time.process_time() - c0)
        peak = _peak_rss_bytes() if peak_ok else None
        cuda_peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" and memory else None
    return Measurement(label, times, n, warmup, nthreads, str(dev), timer.name, peak, rss_before, cuda_peak, cpu,
                       fingerprint=_fingerprint() if fingerprint else None)


def time_variants(variants: Mapping[str, Any], example_inputs: _inputs.Inputs, *, rounds: int = 10,
                  per_round: int = 1, warmup: int = 2, threads: int | None = None,
                  pause_s: float = 0.0, fingerprint: bool = True) -> dict[str, Measurement]:
    """Time several variants side by side on the same inputs (``slimkit.measure.alternate``).

    Each round calls every variant ``per_round`` times; the order alternates round by round
    (forward, then reversed) so drifting machine load, caches and thread pools left spinning
    by one variant fall evenly on all. ``warmup`` untimed calls of each variant come first
    (alternating too). ``pause_s`` sleeps between variants. Returns
    ``{name: Measurement}`` in the given order; use ``m.speedup_vs(results[first])``.
    No peak memory here: variants sharing one process cannot be told apart; use
    :func:`benchmark` with ``memory=True`` per variant (benchmarks/ measures each in a fresh process).
    """
    if not isinstance(variants, Mapping) or not variants:
        raise InvalidParameterError("variants", variants, "a non-empty {name: callable or Prepared} mapping")
    _check_count("rounds", rounds, 1)
    _check_count("per_round", per_round, 1)
    _check_count("warmup", warmup, 0)
    example_inputs = _inputs.check_inputs(example_inputs)
    calls = {k: _callable(fn, example_inputs, None) for k, fn in variants.items()}
    timers = {k: Timer(dev) for k, (_, dev, _) in calls.items()}
    with fixed_threads(threads) as nthreads, torch.inference_mode():
        times, cpu = alternate({k: c[0] for k, c in calls.items()}, timers, rounds=rounds, warmup=warmup,
                               per_round=per_round, pause_s=pause_s)
    fp = _fingerprint() if fingerprint else None
    return {k: Measurement(k, times[k], calls[k][2], warmup, nthreads, str(calls[k][1]), timers[k].name,
                           cpu_time_s=cpu[k], fingerprint=fp) for k in variants}


def throughput(fn, make_inputs: Callable[[int], _inputs.Inputs], batch_sizes: Sequence[int] = (1, 8, 32), *,
               name: str | None = None, **kwargs) -> list[Measurement]:
    """:func:`benchmark` at each batch size (``make_inputs(batch)`` builds the inputs)."""
    if not callable(make_inputs):
        raise InvalidTypeError("make_inputs", make_inputs, "a callable batch_size -> inputs")
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise InvalidParameterError("batch_sizes", batch_sizes, "a non-empty sequence of positive ints")
    out = []
    for b in sizes:
        m = benchmark(fn, make_inputs(b), name=f"{name or 'batch'}[{b}]", **kwargs)
        m.extra["batch_size"] = b
        out.append(m)
    return out
