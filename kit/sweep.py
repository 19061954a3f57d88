"""Grid sweeps: many runs of one notebook, on any ``concurrent.futures.Executor``.

The default is a local process pool; :func:`dask_executors` spreads the same sweep over a Dask
distributed cluster (runs whose ``device`` is CUDA ask for a worker ``GPU`` resource). Every
combination is validated before a single kernel starts. Each run is recorded as ``running``
when submitted and updated when it ends, so a sweep that is interrupted can be started again
and skips the runs that already finished (same notebook, same parameters, same sweep).

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
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import InvalidParameterError, InvalidTypeError
from .hardware import usable_cores
from .records import Record, RunStore, default_path, varying_keys
from .runner import RunSpec, execute, new_record, prepare, slug


def load_grid(grid: str | Path | dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter combinations of a grid file or mapping, in a stable order."""
    if isinstance(grid, (str, Path)):
        import yaml

        try:
            grid = yaml.safe_load(Path(grid).read_text())
        except FileNotFoundError:
            raise InvalidParameterError("grid", str(grid), "an existing YAML file") from None
    if not isinstance(grid, dict):
        raise InvalidTypeError("grid", grid, "a mapping with 'grid' (and optionally 'params')")
    unknown = set(grid) - {"grid", "params"}
    if unknown:
        raise InvalidParameterError("grid", sorted(unknown)[0], "top-level keys 'grid' and 'params'")
    fixed = grid.get("params") or {}
    axes = grid.get("grid", {})
    if not isinstance(fixed, dict):
        raise InvalidTypeError("params", fixed, "a mapping of parameter name to value")
    combos: list[dict[str, Any]] = []
    for part in axes if isinstance(axes, list) else [axes]:
        if not isinstance(part, dict):
            raise InvalidTypeError("grid", part, "a mapping of parameter name to a list of values")
        for name, values in part.items():
            if not isinstance(values, list) or not values:
                raise InvalidTypeError(f"grid.{name}", values, "a non-empty list of values")
        names = list(part)
        for values in itertools.product(*(part[n] for n in names)):
            combos.append({**fixed, **dict(zip(names, values))})
    return combos or [dict(fixed)]


def default_workers() -> int:
    return max(1, min(4, usable_cores()))


def local_executor(workers: int | None = None) -> ProcessPoolExecutor:
    # spawn: workers start clean (no inherited torch/thread state from the parent).
    return ProcessPoolExecutor(max_workers=workers or default_workers(),
                               mp_context=multiprocessing.get_context("spawn"))


def dask_executors(scheduler: str, gpu_resource: str = "GPU"):
    """(client, cpu executor, gpu executor) for a running Dask scheduler at ``scheduler``.

    CUDA runs go through the gpu executor, which asks for one ``gpu_resource`` per run: start
    GPU workers with ``dask worker ADDRESS --resources GPU=1`` (one run per GPU at a time).
    """
    from distributed import Client

    client = Client(scheduler)
    return (client, client.get_executor(pure=False),
            client.get_executor(pure=False, resources={gpu_resource: 1}))


def default_name(notebook: str | Path, grid: str | Path) -> str:
    """A sweep's name (and folder under OUT) when none is given: NOTEBOOK-GRID."""
    return f"{Path(notebook).stem}-{Path(grid).stem}"


def plan(notebook: str | Path, combos: list[dict[str, Any]], *, out: str | Path = "runs",
         sweep: str | None = None, device: str | None = None, **options: Any) -> list[RunSpec]:
    """One validated RunSpec per combination (all are checked before any runs)."""
    notebook = Path(notebook)
    sweep = sweep or notebook.stem + "-sweep"
    # run folders are named after what varies between the runs (the grid's axes), not the fixed params
    varying = varying_keys(combos)
    specs = []
    for params in combos:
        label = {k: v for k, v in params.items() if k in varying} or params
        spec = prepare(notebook, params, out=Path(out) / sweep, name=slug(label), sweep=sweep,
                       device=device, **options)
        specs.append(spec)
    dirs = [s.run_dir for s in specs]
    if len(set(dirs)) != len(dirs):
        raise InvalidParameterError("grid", combos, "distinct combinations (two runs share a directory)")
    return specs


def run_sweep(specs: list[RunSpec], store: RunStore, *, executor: Executor | None = None,
              workers: int | None = None, gpu_executor: Executor | None = None, resume: bool = True,
              on_done: Callable[[Record], None] | None = None) -> list[Record]:
    """Execute ``specs`` on ``executor`` (default: a local process pool), recording each run.

    Returns one record per spec, in order; runs skipped because they already finished are
    returned as their earlier record.
    """
    results: dict[str, Record] = {}
    todo = []
    for spec in specs:
        done = store.finished(spec.key, sweep=spec.sweep) if resume else None
        if done is not None:
            results[spec.run_id] = done
        else:
            todo.append(spec)
    own = executor is None and bool(todo)
    if own:
        executor = local_executor(workers)
        if workers is None:
            workers = default_workers()
        share = max(1, usable_cores() // workers)  # the runs share the cores: threads per kernel
        todo = [s if s.threads else replace(s, threads=share) for s in todo]
    futures: dict[Future, RunSpec] = {}
    try:
        for spec in todo:
            store.put(new_record(spec))
            use = gpu_executor if gpu_executor is not None and str(spec.params.get("device", "")).startswith("cuda") \
                else executor
            futures[use.submit(execute, spec)] = spec
        for fut in as_completed(futures):
            spec = futures[fut]
            try:
                record = fut.result()
            except Exception as exc:  # the worker itself died (e.g. BrokenProcessPool)
                record = new_record(spec)
                record.status, record.error = "failed", f"worker failed: {type(exc).__name__}: {exc}"
            store.put(record)
            results[spec.run_id] = record
            if on_done:
                on_done(record)
    finally:
        unfinished = [s.run_id for s in todo if s.run_id not in results]
        if unfinished:  # interrupted: these are retried when the sweep is resumed
            for fut in futures:
                fut.cancel()
            store.mark_unfinished(unfinished, "interrupted", "the sweep stopped before this run finished")
        if own:
            executor.shutdown(wait=not unfinished, cancel_futures=True)
    return [results[s.run_id] for s in specs]


def sweep(notebook: str | Path, grid: str | Path | dict[str, Any], *, out: str | Path = "runs",
          store: RunStore | None = None, sweep_name: str | None = None, device: str | None = None,
          executor: Executor | None = None, gpu_executor: Executor | None = None, workers: int | None = None,
          resume: bool = True, on_done: Callable[[Record], None] | None = None, **options: Any) -> list[Record]:
    """Run ``notebook`` once per grid combination; see the module docstring for the grid format."""
    if sweep_name is None and isinstance(grid, (str, Path)):
        sweep_name = default_name(notebook, grid)
    specs = plan(notebook, load_grid(grid), out=out, sweep=sweep_name, device=device, **options)
    own = store is None
    store = store or RunStore(default_path(out))
    try:
        return run_sweep(specs, store, executor=executor, gpu_executor=gpu_executor, workers=workers,
                         resume=resume, on_done=on_done)
    finally:
        if own:
            store.close()
