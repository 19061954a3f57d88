"""Progress events: how long operations talk to widgets, tqdm and logs.

The core never imports a notebook library. A long operation takes ``callbacks`` (one
callable or a list) and ``stop`` (anything with ``is_set()``, e.g. ``threading.Event``).
Each callback receives :class:`Event` objects; setting ``stop`` makes the operation raise
:class:`~slimkit.errors.Interrupted` at its next step, leaving the input model untouched
(methods work on a copy).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Word
from .errors import Interrupted

log = logging.getLogger("slimkit")

Callback = Callable[["Event"], Any]


class Status(Word):
    """How a run, a sweep's run or a panel job ended (or that it still runs). One vocabulary for
    the run records, the CLI and the panel; a str, so it is stored and compared as the word."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Event:
    """One report from a running operation.

    kind: "start", "progress", "metrics" (a finished epoch/step with numbers) or "end".
    stage: what is running, e.g. "calibrate", "fisher", "finetune", "distill".
    """

    kind: str
    stage: str
    step: int = 0
    total: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    time: float = field(default_factory=time.time)


class Progress:
    """Fan-out of events to callbacks, plus the stop check. Cheap when nobody listens."""

    def __init__(self, callbacks: Callback | Iterable[Callback] | None = None,
                 stop: StopFlag | None = None):
        if callbacks is None:
            self.callbacks: list[Callback] = []
        elif callable(callbacks):
            self.callbacks = [callbacks]
        else:
            self.callbacks = list(callbacks)
        self.stop = stop

    def emit(self, kind: str, stage: str, step: int = 0, total: int | None = None,
             message: str = "", **metrics: float) -> None:
        self.check()
        if self.callbacks:
            event = Event(kind, stage, step, total, {k: float(v) for k, v in metrics.items()}, message)
            for cb in self.callbacks:
                cb(event)

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Interrupted("stopped on request; the input model was not changed")


class _EitherStop:
    """Set when any of its flags is set (a caller's Progress and a stop passed beside it)."""

    def __init__(self, *flags: StopFlag):
        self.flags = flags

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


def as_progress(callbacks=None, stop=None) -> Progress:
    """``callbacks`` and ``stop`` as one :class:`Progress`; a Progress passed in is reused, and a
    ``stop`` given beside it is honoured too, not dropped."""
    if not isinstance(callbacks, Progress):
        return Progress(callbacks, stop)
    if stop is None or stop is callbacks.stop:
        return callbacks
    return Progress(callbacks.callbacks, stop if callbacks.stop is None else _EitherStop(callbacks.stop, stop))


class LogCallback:
    """Writes events to the ``slimkit`` logger (the CLI's default listener)."""

    def __init__(self, level: int = logging.INFO):
        self.level = level

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            return
        nums = " ".join(f"{k}={v:.4g}" for k, v in event.metrics.items())
        total = f"/{event.total}" if event.total else ""
        log.log(self.level, "%s %s %d%s %s %s", event.stage, event.kind, event.step, total, nums, event.message)


class TqdmCallback:
    """A tqdm bar per stage (tqdm imported lazily; it is an optional dependency)."""

    def __init__(self, **tqdm_kwargs: Any):
        self.kwargs = tqdm_kwargs
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        from tqdm.auto import tqdm

        if event.kind == "start":
            self.bars[event.stage] = tqdm(total=event.total, desc=event.stage, **self.kwargs)
        bar = self.bars.get(event.stage)
        if bar is None:
            return
        if event.kind in ("progress", "metrics"):
            bar.n = event.step
            if event.metrics:
                bar.set_postfix(event.metrics, refresh=False)
            bar.refresh()
        elif event.kind == "end":
            bar.close()
            self.bars.pop(event.stage, None)
