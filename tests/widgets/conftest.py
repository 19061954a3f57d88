"""Fixtures for driving a Panel from Python as a user would (set widgets, click, wait)."""
from __future__ import annotations

import time

import pytest


@pytest.fixture
def make_panel(cnn, digits):
    """``make_panel(live=True, **panel_kwargs)`` on the trained digits CNN; jobs are stopped
    and awaited at teardown so no worker thread outlives its test."""
    from slimkit.widgets import Panel

    made = []

    def make(live: bool = True, model=None, **kwargs):
        panel = Panel(cnn if model is None else model, digits, live=live, interval=0.05, **kwargs)
        made.append(panel)
        return panel

    yield make
    for panel in made:
        panel.stop()
        assert panel.wait(120), "a panel job did not stop"


def _wait_until(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def wait_until():
    """``wait_until(condition, timeout, what)``: poll for background work (a generous
    deadline against hangs, not a timing assertion)."""
    return _wait_until


@pytest.fixture
def click():
    """``click(panel, button)``: click as a user would, then wait for the job it started."""

    def do(panel, button) -> None:
        button.click()
        assert panel.wait(300), "the job did not end"

    return do
