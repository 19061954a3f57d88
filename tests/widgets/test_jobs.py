"""The worker thread and the throttle that keeps the browser from being flooded."""
from __future__ import annotations

import threading
import time

import pytest

from slimkit.errors import Interrupted
from slimkit.events import Status
from slimkit.widgets.jobs import Throttle, Worker


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_coalesces_a_burst_into_two_flushes(wait_until):
    seen = []
    state = {"value": 0}
    clock = FakeClock()  # frozen: every poke after the first falls inside the interval
    t = Throttle(lambda: seen.append(state["value"]), interval=0.05, clock=clock)
    for i in range(1, 101):
        state["value"] = i
        t.poke()
    assert seen == [1]  # the first poke flushed at once, the other 99 merged
    wait_until(lambda: len(seen) == 2, 30, "the trailing flush")
    assert seen == [1, 100]  # ...into one trailing flush that saw the newest state
    time.sleep(0.2)
    assert t.flushes == 2 and seen == [1, 100]  # and nothing else


def test_throttle_flushes_again_after_the_interval_and_on_force():
    seen = []
    clock = FakeClock()
    t = Throttle(lambda: seen.append(clock.now), interval=10.0, clock=clock)
    assert t.poke() is True
    clock.now = 5.0
    assert t.poke() is False  # merged (a trailing flush is scheduled 5 s later)
    assert t.poke(force=True) is True  # a job's end: flush now, cancel the trailing one
    clock.now = 16.0
    assert t.poke() is True
    assert seen == [0.0, 5.0, 16.0] and t._timer is None


def test_worker_outcomes():
    r = Worker()
    ended = []
    r.start(lambda stop: 42, lambda outcome, value: ended.append((outcome, value, r.busy)))
    assert r.wait(30) and r.outcome == Status.OK and r.value == 42
    assert ended == [(Status.OK, 42, False)]  # busy is already False when on_done re-enables buttons

    def until_stopped(stop):
        while True:
            if stop.is_set():
                raise Interrupted("stopped")
            time.sleep(0.01)

    r.start(until_stopped)
    assert r.busy
    with pytest.raises(RuntimeError, match="already running"):
        r.start(lambda stop: 1)
    r.stop()
    assert r.wait(30) and r.outcome == Status.INTERRUPTED

    r.start(lambda stop: 1 / 0)
    assert r.wait(30) and r.outcome == Status.FAILED and isinstance(r.value, ZeroDivisionError)
    assert "ZeroDivisionError" in r.traceback
    assert r._thread is not threading.current_thread()
