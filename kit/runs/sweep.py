"""Grid sweeps: many runs of one notebook, on any ``concurrent.futures.Executor``.

The default is a local process pool; :func:`dask_executors` spreads the same sweep over a Dask
distributed cluster (runs whose ``device`` is CUDA ask for a worker ``GPU`` resource). Every
combination is validated before a single kernel starts. Each run is recorded as ``running``
when submitted and updated when it ends, so a sweep that is interrupted can be started again
and skips the runs that already finished (same notebook, same parameters, same sweep).

A sweep holds a lock file in its folder while it runs, so the same sweep started twice refuses
(or waits) instead of running everything twice; the lock of a dead process is taken over
(:mod:`slimkit.runs.lock`).
SIGTERM stops a sweep like Ctrl-C: nothing new starts, the local pool's workers and their
kernels are killed, unfinished runs are recorded ``interrupted``. Pool workers also die with
the sweep's process if it is killed outright, and resuming marks the ``running`` rows it left
``interrupted`` and reruns them.

A grid file (YAML)::

    params: {epochs: 1, seed: 0}          # fixed for every run
    grid:                                 # the product of these
      sparsity: [0.5, 0.8, 0.9]
      score: [magnitude, fisher]

``grid`` may also be a list of such mappings (their union, as in scikit-learn's ParameterGrid).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, InvalidTypeError, check_positive
from ..events import Status
from ..hardware import usable_cores
from .lock import sweep_lock
from .params import check_plain, load_yaml_file
from .records import Record, RunStore, default_path, varying_keys
from .runner import RunSpec, check_name, execute, new_record, plan_run, slug

DEFAULT_WORKER_TIMEOUT_S = 300.0


def load_grid(grid: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter combinations of a grid file or mapping, in a stable order."""
    if isinstance(grid, (str, Path)):
        grid = load_yaml_file(grid, "grid")
    if not isinstance(grid, dict):
        raise InvalidTypeError("grid", grid, "a mapping with 'grid' (and optionally 'params')")
    unknown = set(grid) - {"grid", "params"}
    if unknown:
        raise InvalidParameterError("grid", sorted(unknown)[0], "top-level keys 'grid' and 'params'")
    fixed = grid.get("params") or {}
    axes = grid.get("grid", {})
    if not isinstance(fixed, dict):
        raise InvalidTypeError("params", fixed, "a mapping of parameter name to value")
    # each value on its own (the notebook's types then decide, e.g. whether inf is allowed)
    fixed = {k: check_plain(f"params.{k}", v, allow_inf=True) for k, v in fixed.items()}
    combos: list[dict[str, Any]] = []
    for part in axes if isinstance(axes, list) else [axes]:
        if not isinstance(part, dict):
            raise InvalidTypeError("grid", part, "a mapping of parameter name to a list of values")
        for name, values in part.items():
            if not isinstance(values, list) or not values:
                raise InvalidTypeError(f"grid.{name}", values, "a non-empty list of values")
        part = {name: [check_plain(f"grid.{name}[{i}]", v, allow_inf=True) for i, v in enumerate(values)]
                for name, values in part.items()}
        names = list(part)
        for values in itertools.product(*(part[n] for n in names)):
            combos.append({**fixed, **dict(zip(names, values))})
    return combos or [dict(fixed)]


def default_workers() -> int:
    return max(1, min(4, usable_cores()))


def local_executor(workers: int | None = None) -> ProcessPoolExecutor:
    # spawn: workers start clean (no inherited torch/thread state from the parent).
    return ProcessPoolExecutor(max_workers=workers or default_workers(),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))


def _worker_init(parent: int) -> None:
    """A pool worker dies with the sweep that started it, and takes its kernel along."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle: it stops the workers
    signal.signal(signal.SIGTERM, _worker_stop)
    if sys.platform.startswith("linux"):
        import ctypes

        # SIGTERM when the parent goes, even by SIGKILL (strictly: when the thread that started this
        # worker ends; the pool starts workers from the thread that submits, which waits for them)
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the sweep died before prctl took hold
        _worker_stop()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_stop(*_: Any) -> None:
    """SIGTERM in a pool worker: kill its kernels (each leads its own session, so the group holds
    whatever the notebook started) and exit at once; the sweep records the run as interrupted."""
    for pid in _children(os.getpid()):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    os._exit(128 + signal.SIGTERM)


def _children(pid: int) -> list[int]:
    """Child pids of ``pid`` (Linux /proc; elsewhere none, and a kernel's parent poller ends it)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.parent.name))
    return found


def _stop_pool(executor: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """Cancel what is queued and stop the running workers (SIGTERM: each kills its kernel)."""
    procs = list((getattr(executor, "_processes", None) or {}).values())  # no public API before 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join(grace_s)


def dask_executors(scheduler: str, gpu_resource: str = "GPU", security: Any = None):
    """(client, cpu executor, gpu executor) for a running Dask scheduler at ``scheduler``.

    CUDA runs go through the gpu executor, which asks for one ``gpu_resource`` per run: start
    GPU workers with ``dask worker ADDRESS --resources GPU=1`` (one run per GPU at a time).
    For a ``tls://`` scheduler pass a ``distributed.security.Security`` as ``security``.
    """
    from distributed import Client

    client = Client(scheduler, security=security)
    return (client, client.get_executor(pure=False),
            client.get_executor(pure=False, resources={gpu_resource: 1}))


def dask_workers_alive(client: Any) -> Callable[[], bool]:
    """For ``run_sweep(workers_alive=...)``: whether the Dask cluster has any worker now."""
    def alive() -> bool:
        try:
            return bool(client.nthreads())
        except Exception:  # the scheduler is unreachable: no worker either
            return False
    return alive


def default_name(notebook: str | Path, grid: str | Path) -> str:
    """A sweep's name (and folder under OUT) when none is given: NOTEBOOK-GRID, file-safe."""
    return slug({Path(notebook).stem: Path(grid).stem if isinstance(grid, (str, Path)) else "grid"})


def plan(notebook: str | Path, combos: list[dict[str, Any]], *, out: str | Path = "runs",
         sweep: str | None = None, device: str | None = None, **options: Any) -> list[RunSpec]:
    """One validated RunSpec per combination (all are checked before any runs)."""
    notebook = Path(notebook)
    sweep = check_name("sweep name", sweep) if sweep is not None else slug({notebook.stem: "sweep"})
    # run folders are named after what varies between the runs (the grid's axes), not the fixed params
    varying = varying_keys(combos)
    specs = []
    for params in combos:
        label = {k: v for k, v in params.items() if k in varying} or params
        spec = plan_run(notebook, params, out=Path(out) / sweep, name=slug(label), sweep=sweep,
                        device=device, **options)
        specs.append(spec)
    dirs = [s.run_dir for s in specs]
    if len(set(dirs)) != len(dirs):
        raise InvalidParameterError("grid", combos, "distinct combinations (two runs share a directory)")
    return specs


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a sweep as Ctrl-C does, unless the program already handles SIGTERM itself."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM while cleaning up, so a second one cannot leave rows ``running``."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


class _NoWorkers(Exception):
    pass


def _as_completed(futures: dict[Future, RunSpec], workers_alive: Callable[[], bool] | None,
                  timeout_s: float) -> Iterator[Future]:
    """The futures as they finish; :class:`_NoWorkers` once ``workers_alive()`` has said no for
    ``timeout_s`` (a cluster whose only worker died would otherwise be waited on forever)."""
    pending = set(futures)
    last_seen = time.monotonic()
    while pending:
        done, pending = wait(pending, timeout=min(1.0, timeout_s / 4) if workers_alive else None,
                             return_when=FIRST_COMPLETED)
        yield from done
        if not pending or workers_alive is None:
            continue
        if workers_alive():
            last_seen = time.monotonic()
        elif time.monotonic() - last_seen > timeout_s:
            raise _NoWorkers(f"no worker was available for {timeout_s:g} s (worker timeout); start workers "
                             f"and rerun the sweep to resume")


def run_sweep(specs: list[RunSpec], store: RunStore, *, executor: Executor | None = None,
              workers: int | None = None, gpu_executor: Executor | None = None, resume: bool = True,
              on_done: Callable[[Record], None] | None = None, wait_lock: bool = False,
              workers_alive: Callable[[], bool] | None = None,
              worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S) -> list[Record]:
    """Execute ``specs`` on ``executor`` (default: a local process pool), recording each run.

    Returns one record per spec, in order; runs skipped because they already finished are
    returned as their earlier record. The sweep's folder is locked meanwhile (see
    :func:`sweep_lock`; ``wait_lock`` waits for another holder). With ``workers_alive`` (e.g.
    :func:`dask_workers_alive`), runs left when it has said "no worker" for ``worker_timeout``
    seconds are recorded ``failed`` instead of being waited on forever.
    """
    check_positive("worker_timeout", worker_timeout)
    with _exclusive(specs, store, wait_lock):
        results, todo = _skip_finished(specs, store, resume)
        own = executor is None and bool(todo)
        if own:
            executor, todo = _local_pool(workers, todo)
        _execute_all(todo, store, results, executor=executor, gpu_executor=gpu_executor, own=own, on_done=on_done,
                     workers_alive=workers_alive, worker_timeout=worker_timeout)
    return [results[s.run_id] for s in specs]


@contextmanager
def _exclusive(specs: list[RunSpec], store: RunStore, wait_lock: bool) -> Iterator[None]:
    """The sweep's folder locked, SIGTERM handled, and the rows a killed earlier start left
    ``running`` marked ``interrupted`` (they are rerun)."""
    with ExitStack() as stack:
        for folder in sorted({str(Path(s.run_dir).parent) for s in specs}):
            stack.enter_context(sweep_lock(folder, wait=wait_lock))
        stack.enter_context(_sigterm_as_interrupt())
        for name in {s.sweep for s in specs}:
            store.reap(sweep=name)
        yield


def _skip_finished(specs: list[RunSpec], store: RunStore, resume: bool) -> tuple[dict[str, Record], list[RunSpec]]:
    """(the earlier records of runs that already finished, by run id; the specs left to run)."""
    results: dict[str, Record] = {}
    todo = []
    for spec in specs:
        done = store.finished(spec.key, sweep=spec.sweep) if resume else None
        if done is not None:
            results[spec.run_id] = done
        else:
            todo.append(spec)
    return results, todo


def _local_pool(workers: int | None, todo: list[RunSpec]) -> tuple[ProcessPoolExecutor, list[RunSpec]]:
    executor = local_executor(workers)
    share = max(1, usable_cores() // (workers or default_workers()))  # the runs share the cores: threads per kernel
    return executor, [s if s.threads else replace(s, threads=share) for s in todo]


def _execute_all(todo: list[RunSpec], store: RunStore, results: dict[str, Record], *, executor: Executor,
                 gpu_executor: Executor | None, own: bool, on_done: Callable[[Record], None] | None,
                 workers_alive: Callable[[], bool] | None, worker_timeout: float) -> None:
    """Submit ``todo``, record each run as it ends (into ``results`` too); on an interrupt or
    when no worker is left, record the rest and stop the pool if it is ours."""
    futures: dict[Future, RunSpec] = {}
    stopped = (Status.INTERRUPTED, "the sweep stopped before this run finished")
    try:
        for spec in todo:
            store.put(new_record(spec))
            use = gpu_executor if gpu_executor is not None and str(spec.params.get("device", "")).startswith("cuda") \
                else executor
            futures[use.submit(execute, spec)] = spec
        try:
            for fut in _as_completed(futures, workers_alive, worker_timeout):
                spec = futures[fut]
                try:
                    record = fut.result()
                except Exception as exc:  # the worker itself died (e.g. BrokenProcessPool)
                    record = new_record(spec)
                    record.status, record.error = Status.FAILED, f"worker failed: {type(exc).__name__}: {exc}"
                store.put(record)
                results[spec.run_id] = record
                if on_done:
                    on_done(record)
        except _NoWorkers as exc:
            stopped = (Status.FAILED, str(exc))
    finally:
        with _signals_deferred():
            unfinished = [s.run_id for s in todo if s.run_id not in results]
            if unfinished:  # these are retried when the sweep is resumed
                for fut in futures:
                    fut.cancel()
                store.mark_unfinished(unfinished, *stopped)
            if own and unfinished:
                _stop_pool(executor)
            elif own:
                executor.shutdown(wait=True)
    for run_id in unfinished:  # only reached when no worker was left (an interrupt raises)
        results[run_id] = store.get(run_id)
        if on_done:
            on_done(results[run_id])


def sweep(notebook: str | Path, grid: str | Path | dict[str, Any], *, out: str | Path = "runs",
          store: RunStore | None = None, sweep_name: str | None = None, device: str | None = None,
          executor: Executor | None = None, gpu_executor: Executor | None = None, workers: int | None = None,
          resume: bool = True, on_done: Callable[[Record], None] | None = None, wait_lock: bool = False,
          **options: Any) -> list[Record]:
    """Run ``notebook`` once per grid combination; see the module docstring for the grid format."""
    if sweep_name is None and isinstance(grid, (str, Path)):
        sweep_name = default_name(notebook, grid)
    specs = plan(notebook, load_grid(grid), out=out, sweep=sweep_name, device=device, **options)
    own = store is None
    store = store or RunStore(default_path(out))
    try:
        return run_sweep(specs, store, executor=executor, gpu_executor=gpu_executor, workers=workers,
                         resume=resume, on_done=on_done, wait_lock=wait_lock)
    finally:
        if own:
            store.close()
