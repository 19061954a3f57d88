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
    """Calls ``flush`` at most once per ``interval`` seconds, and never drops the last poke.

    A poke inside the interval schedules one trailing flush at the interval's end (further
    pokes until then merge into it), so the front end always ends up showing the newest
    state. ``poke(force=True)`` flushes at once (a job's end, a finished run). The caller
    accumulates the data (e.g. in lists the plots read): ``flush`` pushes all of it.
    """

    def __init__(self, flush: Callable[[], Any], interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        self.flush, self.interval, self.clock = flush, interval, clock
        self._last = -float("inf")
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self.flushes = 0  # how many times flush ran (tests and diagnostics)

    def poke(self, force: bool = False) -> bool:
        """Ask for a refresh; True if it flushed now, False if merged into a later flush."""
        with self._lock:
            wait = self._last + self.interval - self.clock()
            if force or wait <= 0:
                self._flush_now()
                return True
            if self._timer is None:
                self._timer = threading.Timer(wait, self._trailing)
                self._timer.daemon = True
                self._timer.start()
            return False

    def _trailing(self) -> None:
        with self._lock:
            if self._timer is not None:  # not already flushed by a forced poke
                self._flush_now()

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last = self.clock()
        self.flushes += 1
        self.flush()


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
        self._running = False

    @property
    def busy(self) -> bool:
        """True while the job runs; already False when ``on_done`` runs (so it can re-enable
        buttons), though the thread ends only after it."""
        return self._running

    def start(self, job: Callable[[threading.Event], Any],
              on_done: Callable[[str, Any], None] | None = None, *, name: str = "slimkit-panel") -> None:
        if self.busy:
            raise RuntimeError("a job is already running; stop it or wait for it first")
        self.stop_flag = threading.Event()
        self.outcome, self.value, self.traceback = None, None, ""
        stop = self.stop_flag
        self._running = True

        def main():
            try:
                value, outcome = job(stop), "done"
            except Interrupted as e:
                value, outcome = e, "stopped"
            except BaseException as e:  # shown in the panel; the kernel must survive
                value, outcome = e, "error"
                self.traceback = traceback.format_exc()
            self.outcome, self.value = outcome, value
            self._running = False
            if on_done is not None:
                try:
                    on_done(outcome, value)
                except BaseException:
                    self.traceback += traceback.format_exc()

        self._thread = threading.Thread(target=main, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_flag.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; False if ``timeout`` passed first."""
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()
