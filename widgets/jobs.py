"""Work off the kernel's main thread: one job at a time, a stop flag, throttled UI updates,
and the panel's jobs themselves (run, sweep, sensitivity), which run in that thread.

The kernel must stay usable while a model is compressed, so the panel runs each job in a
daemon thread. The core reports progress through callbacks (``slimkit.events``) from that
thread; sending every event to the browser would flood the websocket, so UI refreshes go
through :class:`Throttle`, which coalesces them to at most one per ``interval`` seconds.
"""
from __future__ import annotations

import html
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch.nn as nn

import slimkit
from slimkit.errors import Interrupted
from slimkit.events import Event, Status

from . import methods as M
from .controls import Step
from .results import Run
from .step_order import ARROW


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


class Worker:
    """Runs one job at a time in a daemon thread and remembers how it ended.

    ``job(stop)`` receives the stop flag (a ``threading.Event``); slimkit operations take it
    as ``stop=`` and raise :class:`~slimkit.errors.Interrupted` at their next step once set.
    ``on_done(outcome, value)`` runs in the worker thread with outcome ``Status.OK`` (value:
    the job's return), ``Status.INTERRUPTED`` (the Interrupted) or ``Status.FAILED`` (the
    exception): the run records' vocabulary.
    """

    def __init__(self):
        self.stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self.outcome: Status | None = None
        self.value: Any = None
        self.traceback: str = ""
        self._running = False

    @property
    def busy(self) -> bool:
        """True while the job runs; already False when ``on_done`` runs (so it can re-enable
        buttons), though the thread ends only after it."""
        return self._running

    def start(self, job: Callable[[threading.Event], Any],
              on_done: Callable[[Status, Any], None] | None = None, *, name: str = "slimkit-panel") -> None:
        if self.busy:
            raise RuntimeError("a job is already running; stop it or wait for it first")
        self.stop_flag = threading.Event()
        self.outcome, self.value, self.traceback = None, None, ""
        stop = self.stop_flag
        self._running = True

        def main():
            try:
                value, outcome = job(stop), Status.OK
            except Interrupted as e:
                value, outcome = e, Status.INTERRUPTED
            except BaseException as e:  # shown in the panel; the kernel must survive
                value, outcome = e, Status.FAILED
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


def _status(reports: list) -> str:
    """How a run ended by its reports: an autotune search may end early or miss its budget."""
    summary = reports[-1].summary if reports else {}
    if summary.get("budget_met") is False:
        return "budget not met: " + ("the closest trial" if summary.get("trials") else "no trial finished (unchanged)")
    if summary.get("stopped"):
        return f"search ended early ({summary['stopped']}): the best so far"
    return "done"


class Jobs:
    """The panel's work, run in the worker thread (mixed into :class:`~.panel.Panel`, whose
    state it updates: results, model, plots, progress). Each run starts from the original."""

    def _events(self, prefix: str = ""):
        """A core callback: progress bar and curve points, pushed out through the throttle."""

        def on_event(ev: Event) -> None:
            if ev.stage != self._stage:  # a step has stages we cannot count: each fills half of what is left
                lo, hi = self._span
                cur = max(self._progress_high, lo)
                self._stage, self._sub = ev.stage, (cur, cur + (hi - cur) / 2)
            if ev.total:  # within the stage's share of the job's bar, never backwards
                lo, hi = self._sub
                done = lo + (hi - lo) * min(1.0, ev.step / ev.total)
                self._progress = self._progress_high = max(self._progress_high, done)
            self._progress_text = f"{prefix}{ev.stage} {ev.step}/{ev.total or '?'}"
            if ev.kind == "metrics" and ev.stage == "autotune" and "drop" in ev.metrics:  # one trial
                self.plots.add_trial(ev.metrics, ev.message)
            elif ev.kind == "metrics" and ("loss" in ev.metrics or "val_accuracy" in ev.metrics):
                self._epoch += 1
                self.plots.add_epoch(self._epoch, ev.metrics)
            self.throttle.poke(force=ev.kind == "end")

        return on_event

    def _refresh(self) -> None:
        """Everything the throttle pushes to the front end at once."""
        if self._progress is not None:
            self.progress.value, self._progress = self._progress, None
        if self.worker.busy and self._progress_text:
            self.status.value = html.escape(self._progress_text)
        self.plots.flush()

    def _set_span(self, lo: float, hi: float) -> None:
        """The share of the job's progress bar the next step's events fill."""
        self._span, self._stage = (lo, hi), None

    def _measure(self, steps: tuple[Step, ...], model: nn.Module, reports: list, where: dict, t0: float,
                 status: str = "done") -> Run:
        """Accuracy, size and latency of ``model``; latency is timed alternating with the
        original's on the same device and backend, so "x faster" compares like with like. A
        latency that could not be measured makes the run "failed: latency" (the model stands)."""
        timed, note = M.latencies([model] if model is self.base else [model, self.base], self._latency_x,
                                  where["device"], where["backend"])
        if note:
            status = "failed: latency" if status == "done" else f"{status}; failed: latency"
        settings = {k: v for s in steps for k, v in s.settings.items()}
        if len(steps) > 1:  # a pipeline: the order it ran in, as it reads
            settings = {"order": ARROW.join(s.method for s in steps), **settings}
        with self._lock:
            rid, self._next_id = self._next_id, self._next_id + 1
        return Run(rid, "+".join(s.method for s in steps) or "original", {**settings, **where},
                   slimkit.evaluate(model, self.test)["accuracy"], slimkit.size(model), timed[0], timed[-1],
                   status, time.time() - t0, any(r.simulated for r in reports), note, model, list(reports),
                   tuple(steps), slimkit.size(model, entropy=True))

    def _baseline(self, where: dict) -> Run:
        if not self.results:
            self._record(self._measure((), self.base, [], where, time.time()), latest=False)
        return self.results[0]

    def _record(self, run: Run, latest: bool = True) -> Run:
        with self._lock:
            self.results.append(run)
            self.job_runs.append(run)
            if latest:
                self.model = run.model
        self._show_results()
        self.throttle.poke(force=True)
        return run

    def _run_steps(self, steps: tuple[Step, ...], where: dict, stop, prefix: str = "") -> Run:
        """Apply ``steps`` in order; a stop keeps the last finished step of a pipeline as a row."""
        self._baseline(where)
        t0 = time.time()
        model, reports, finished = self.base, [], []
        lo, hi = self._span
        if any(s.method == "distill" or "finetune" in s.configs for s in steps):  # else keep the last curves
            self._epoch = 0
            self.plots.reset_curves(f"Training curves: run #{self._next_id} {' > '.join(s.label for s in steps)}")
        try:
            for i, step in enumerate(steps):
                self._set_span(lo + (hi - lo) * i / len(steps), lo + (hi - lo) * (i + 1) / len(steps))
                timed = {}  # autotune times its trials where the panel times runs
                if step.method == "auto":
                    self.plots.start_auto(step.configs["auto"].objective, f"run #{self._next_id} {step.label}")
                    timed = {"device": where["device"],
                             "backend": M.autotune_backend(where["backend"], self._latency_x, where["device"])}
                result = M.apply(step.method, model, step.configs, self.train, self.test,
                                 callbacks=self._events(prefix), stop=stop, **timed)
                model, finished = result.model, finished + [step]
                reports.append(result.report)
                if step.method == "auto":
                    self.plots.set_auto_pick(result.report.summary.get("pick_trial"), result.report.pareto)
        except slimkit.Interrupted as e:
            partial = getattr(e, "result", None)  # the finished epochs of a step, when the core kept them
            if isinstance(partial, slimkit.Result):
                step = steps[len(finished)]
                self._record(self._measure((*finished, step), partial.model, [*reports, partial.report], where, t0,
                                           status=f"stopped in {step.method}: {e}"))
            elif finished:  # the pipeline's finished part is a result
                self._record(self._measure(tuple(finished), model, reports, where, t0,
                                           status=f"stopped after {finished[-1].method}"))
            raise
        except slimkit.SlimkitError as e:  # the library refused a step (e.g. a chain it does not take)
            if finished:  # its message says which order works; the finished steps stay a result
                self._record(self._measure(tuple(finished), model, reports, where, t0,
                                           status=f"failed: {steps[len(finished)].method} refused after "
                                                  f"{ARROW.join(s.method for s in finished)}: {e}"))
            raise
        run = self._record(self._measure(steps, model, reports, where, t0, status=_status(reports)))
        self._update_histogram()
        return run

    def _job_run(self, steps: tuple[Step, ...], where: dict, stop) -> Run:
        return self._run_steps(steps, where, stop)

    def _job_sweep(self, sweep: list[tuple[float, Step]], where: dict, stop, title: str) -> list[Run]:
        self._baseline(where)
        self.plots.start_sweep(title)
        runs = []
        for i, (v, step) in enumerate(sweep):
            self._set_span(i / len(sweep), (i + 1) / len(sweep))  # each value its share of one bar
            run = self._run_steps((step,), where, stop, prefix=f"sweep {i + 1}/{len(sweep)}: ")
            runs.append(run)
            self.plots.add_sweep_point(v, run.accuracy)
            self._progress = self._progress_high = (i + 1) / len(sweep)
            self.throttle.poke(force=True)
        return runs

    def _job_sensitivity(self, step: Step, where: dict, stop) -> list[dict]:
        """Accuracy drop (points) with one layer alone compressed; quantize adds SQNR (the core's
        ``quant.sensitivity``, which swaps one fake-quantized layer in at a time)."""
        base = 100 * self._baseline(where).accuracy
        method = step.method
        if method == "quantize":
            config = step.configs["quantize"]
            rows = M.sensitivity(self.base, self.test, config, callbacks=self._events(), stop=stop)
            hover = [f"weight SQNR {r['weight_sqnr_db']:.1f} dB, output SQNR {r['output_sqnr_db']:.1f} dB"
                     for r in rows]
            self.plots.set_sensitivity([r["name"] for r in rows], [r["drop"] for r in rows],
                                       f"quantize {config.bits}-bit, one layer at a time", hover)
        elif M.core_sensitivity() is not None:  # slimkit.sensitivity: the same rows from the core
            args = {"width": step.configs["distill_panel"].width} if method == "distill" else \
                {"config": step.configs[method]}
            rows = M.core_sensitivity()(self.base, self.test, method, callbacks=self._events(), stop=stop, **args)
            self.plots.set_sensitivity([r["name"] for r in rows], [r["drop"] for r in rows],
                                       f"{step.label}, one layer at a time")
        else:
            rows = []
            for i, name in enumerate(self._layers):
                self._progress_text = f"sensitivity {name} ({i + 1}/{len(self._layers)})"
                result = M.apply(method, self.base, step.configs, self.train, self.test, stop=stop, include=[name])
                score = 100 * slimkit.evaluate(result.model, self.test)["accuracy"]
                rows.append({"name": name, "score": score, "drop": base - score})
                self._progress = self._progress_high = (i + 1) / len(self._layers)
                self.plots.set_sensitivity([r["name"] for r in rows], [r["drop"] for r in rows],
                                           f"{method}, one layer at a time")
                self.throttle.poke()
        self.sensitivity_rows = rows
        return rows
