"""Work off the kernel's main thread: one job at a time, a stop flag, throttled UI updates.

The kernel must stay usable while a model is compressed, so the panel runs each job in a
daemon thread. The core reports progress through callbacks (``slimkit.events``) from that
thread; sending every event to the browser would flood the websocket, so UI refreshes go
through :class:`Throttle`, which coalesces them to at most one per ``interval`` seconds.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from slimkit.errors import Interrupted


class Throttle:
    """Calls ``flush`` at most once per ``interval`` seconds; ``poke(force=True)`` always does.

    Updates are accumulated by the caller (e.g. in lists the plots read); ``flush`` pushes
    everything pending at once, so skipped pokes lose nothing, they only merge.
    """

    def __init__(self, flush: Callable[[], Any], interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        self.flush, self.interval, self.clock = flush, interval, clock
        self._last = -float("inf")
        self._lock = threading.Lock()
        self.flushes = 0

    def poke(self, force: bool = False) -> bool:
        with self._lock:
            now = self.clock()
            if not force and now - self._last < self.interval:
                return False
            self._last = now
            self.flushes += 1
            self.flush()
            return True


class Runner:
    """Runs one job at a time in a daemon thread and remembers how it ended.

    ``job(stop)`` receives the stop flag (a ``threading.Event``); slimkit operations take it
    as ``stop=`` and raise :class:`~slimkit.errors.Interrupted` at their next step once set.
    ``on_done(outcome, value)`` runs in the worker thread with outcome ``"done"`` (value: the
    job's return), ``"stopped"`` (the Interrupted) or ``"error"`` (the exception).
    """

    def __init__(self):
        self.stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self.outcome: str | None = None
        self.value: Any = None
        self.traceback: str = ""

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Callable[[threading.Event], Any],
              on_done: Callable[[str, Any], None] | None = None, *, name: str = "slimkit-panel") -> None:
        if self.busy:
            raise RuntimeError("a job is already running; stop it or wait for it first")
        self.stop_flag = threading.Event()
        self.outcome, self.value, self.traceback = None, None, ""
        stop = self.stop_flag

        def main():
            try:
                value, outcome = job(stop), "done"
            except Interrupted as e:
                value, outcome = e, "stopped"
            except BaseException as e:  # noqa: BLE001 - shown in the panel; the kernel must survive
                value, outcome = e, "error"
                self.traceback = traceback.format_exc()
            self.outcome, self.value = outcome, value
            if on_done is not None:
                try:
                    on_done(outcome, value)
                except BaseException:  # noqa: BLE001
                    self.traceback += traceback.format_exc()

        self._thread = threading.Thread(target=main, name=name, daemon=True)
        self._thread.start()

    def run_here(self, job: Callable[[threading.Event], Any],
                 on_done: Callable[[str, Any], None] | None = None) -> None:
        """Same contract as :meth:`start`, but in the calling thread (headless runs)."""
        self.start(job, on_done)
        self.wait()

    def stop(self) -> None:
        self.stop_flag.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; False if ``timeout`` passed first."""
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()
