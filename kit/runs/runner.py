"""Headless notebook runs: papermill underneath, one directory and one record per run.

``plan_run`` checks the parameters against the notebook's ``parameters`` cell (no kernel yet);
``execute`` runs it and returns the run's :class:`~slimkit.runs.records.Record` (it is the function a
sweep ships to worker processes or Dask workers, so it takes and returns plain picklable data
and never touches the database); ``run`` does both and writes the record.

A run directory holds the executed notebook, ``params.yaml``, ``metrics.json`` (written by the
notebook, which runs with the run directory as its working directory), ``status.json`` and
``record.json``, and optionally an HTML report. Success means papermill returned normally:
a failing cell, a cell timeout, a dead kernel or a kernel that never started are failures,
whatever the notebook's metadata says, and the partly executed notebook is kept.

A run owns its directory while it runs (:mod:`slimkit.runs.folders`). Its kernel
(:mod:`slimkit.runs.kernel`) gets the run id in ``$SLIMKIT_RUN_ID``; :func:`save_metrics` writes
it into ``metrics.json`` and metrics of another run are never credited to this one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, InvalidTypeError, check_int, check_positive
from ..events import Status
from .folders import check_name, check_not_source, claim, sha256_file
from .kernel import (
    KERNEL_NAME,
    KERNEL_START_ATTEMPTS,
    RUN_ID_ENV,
    KernelDidNotStart,
    describe_error,
    ensure_kernel,
    kernel_options,
)
from .params import read_signature
from .records import Record, RunStore, default_path, jsonable

METRICS_FILE = "metrics.json"
# told as each code cell starts: (cell i, of n, seconds since the run started, the cell's source)
CellProgress = Callable[[int, int, float, str], None]


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run (picklable, JSON-able)."""

    notebook: str            # absolute path
    params: dict[str, Any]   # the full effective parameters (defaults + overrides), validated
    overrides: dict[str, Any]  # only what the user set (what papermill injects)
    run_dir: str
    run_id: str
    key: str
    sweep: str | None = None
    kernel_name: str = KERNEL_NAME
    cell_timeout: float | None = None
    start_timeout: float = 120.0
    html: bool = False
    threads: int | None = None  # OMP/torch threads for the kernel (None: leave as is)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output_notebook(self) -> Path:
        return Path(self.run_dir) / Path(self.notebook).name


def run_key(notebook: str | Path, params: dict[str, Any]) -> str:
    """What identifies a run for resuming: the notebook file and its full parameters."""
    blob = json.dumps({"notebook": str(Path(notebook).resolve()), "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def slug(params: dict[str, Any], max_len: int = 80) -> str:
    """A readable, file-safe directory name from parameter values (hash-suffixed if long)."""
    text = "_".join(f"{k}-{v}" for k, v in params.items()) or "defaults"
    text = re.sub(r"[^A-Za-z0-9._-]+", "", text.replace(" ", "").replace("=", "-"))
    if len(text) > max_len:
        text = text[: max_len - 9] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return text


def plan_run(notebook: str | Path, params: dict[str, Any] | None = None, *, out: str | Path = "runs",
             name: str | None = None, sweep: str | None = None, device: str | None = None,
             cell_timeout: float | None = None, html: bool = False, kernel_name: str = KERNEL_NAME,
             threads: int | None = None) -> RunSpec:
    """Validate ``params`` against the notebook's parameters cell and plan the run directory.

    Unknown names, wrong types and out-of-range values raise here, before any kernel starts.
    ``device`` is shorthand for the notebook's ``device`` parameter.
    """
    notebook = Path(notebook).resolve()
    sig = read_signature(notebook)
    overrides = dict(params or {})
    if device is not None:
        if "device" not in sig.parameters:
            raise InvalidParameterError("device", device, f"only for notebooks with a 'device' parameter; "
                                        f"{notebook.name} has: " + ", ".join(sig.parameters))
        overrides["device"] = device
    overrides = sig.validate(overrides)
    if cell_timeout is not None:
        check_positive("cell_timeout", cell_timeout)
    full = {**sig.defaults(), **overrides}
    key = run_key(notebook, full)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if name is None:
        name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', notebook.stem).lstrip('.')[:60]}-{run_id}"
    check_name("name", name)
    run_dir = (Path(out) / name).resolve()
    spec = RunSpec(notebook=str(notebook), params=full, overrides=overrides, run_dir=str(run_dir), run_id=run_id,
                   key=key, sweep=sweep, kernel_name=kernel_name, cell_timeout=cell_timeout, html=html,
                   threads=threads)
    check_not_source(spec)
    return spec


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path.parent), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def new_record(spec: RunSpec) -> Record:
    return Record(id=spec.run_id, key=spec.key, notebook=spec.notebook, params=spec.params, sweep=spec.sweep,
                  seed=spec.params.get("seed"), device=spec.params.get("device"), status=Status.RUNNING,
                  started_at=time.time(), output_dir=spec.run_dir)


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader sees the old content or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def execute(spec: RunSpec) -> Record:
    """Run one planned notebook (in this process, or a pool/Dask worker) and describe it.
    Raises :class:`RunFolderError`, before anything runs, if the run directory cannot be claimed."""
    with claim(spec):
        return _execute(spec)


def _execute(spec: RunSpec, progress: CellProgress | None = None) -> Record:
    """:func:`execute` once the run directory is claimed."""
    import yaml

    from ..hardware import fingerprint

    run_dir = Path(spec.run_dir)
    for stale in (METRICS_FILE, "status.json", "record.json"):  # a rerun into the same directory
        (run_dir / stale).unlink(missing_ok=True)
    record = new_record(spec)
    record.notebook_sha256 = sha256_file(spec.notebook)
    record.git_commit = _git_commit(Path(spec.notebook))
    record.hardware = fingerprint()
    record.versions = dict(record.hardware["packages"])  # the fingerprint has just read them
    if spec.threads:  # set in the kernel's environment (kernel.py)
        record.hardware["torch_threads"] = spec.threads
    record.host = socket.gethostname()
    # through JSON: a default that is an expression (params._Unevaluated, a str subclass) is its text
    plain = json.loads(json.dumps(spec.params, default=str))
    (run_dir / "params.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    _write_json(run_dir / "status.json", {"status": Status.RUNNING, "run_id": spec.run_id, "key": spec.key,
                                          "started_at": record.started_at})
    t0 = time.perf_counter()
    try:
        _papermill(spec, progress)
        record.status = Status.OK
    except KeyboardInterrupt:
        record.status, record.error = Status.INTERRUPTED, "KeyboardInterrupt"
        raise
    except Exception as exc:  # a failed run is a result, recorded; never a crash of the sweep
        record.status, record.error = Status.FAILED, describe_error(exc)
    finally:
        record.finished_at = time.time()
        record.duration_s = time.perf_counter() - t0
        record.metrics = _read_metrics(run_dir, spec.run_id)
        if record.status == Status.OK and "_error" in record.metrics:
            record.status, record.error = Status.FAILED, record.metrics["_error"]
        _finish(spec, record)
    return record


def _code_cells(spec: RunSpec) -> int:
    """Code cells papermill will run: the notebook's, plus its injected-parameters cell."""
    import nbformat

    nb = nbformat.read(spec.notebook, as_version=4)
    return sum(c.cell_type == "code" for c in nb.cells) + bool(spec.overrides)


def _papermill(spec: RunSpec, progress: CellProgress | None = None) -> None:
    """Execute the notebook with papermill; a kernel that fails before any cell ran (e.g. it died
    before replying to kernel_info) is started once more, as no cell can have had an effect."""
    import papermill as pm

    kernel = ensure_kernel(spec.kernel_name)
    total, t0 = (_code_cells(spec) if progress else 0), time.perf_counter()

    def started(cell, cell_index) -> None:
        if cell.cell_type == "code":
            cells.append(cell_index)
            if progress:
                progress(len(cells), max(total, len(cells)), time.perf_counter() - t0, cell.source)

    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        cells: list[int] = []
        with kernel_options(spec) as options:
            try:
                pm.execute_notebook(
                    spec.notebook, str(spec.output_notebook), parameters=spec.overrides, kernel_name=kernel,
                    cwd=spec.run_dir, progress_bar=False, execution_timeout=spec.cell_timeout,
                    start_timeout=spec.start_timeout, store_widget_state=False,
                    on_cell_start=started,
                    **options)
                return
            except Exception as exc:
                if cells:
                    raise
                if attempt == KERNEL_START_ATTEMPTS:
                    raise KernelDidNotStart(f"the kernel failed before any cell ran, {attempt} times: "
                                            f"{describe_error(exc)}") from exc


# --- the notebook's side of a run ---------------------------------------------------------------

def notebook_setup(seed: int = 0, device: str = "cpu"):
    """The first call of every slimkit notebook: seed Python's, NumPy's and torch's RNGs, turn on
    torch's deterministic algorithms (same parameters and seed -> same metrics) and check that
    ``device`` exists here. Returns the ``torch.device``."""
    import random

    import numpy as np
    import torch

    from ..devices import resolve_device

    check_int("seed", seed, 0, 2**32 - 1)
    if not isinstance(device, str):
        raise InvalidTypeError("device", device, "a torch device name such as 'cpu', 'cuda' or 'cuda:1'")
    if device.partition(":")[0].strip().lower() not in ("cpu", "cuda"):  # what the notebooks support
        raise InvalidParameterError("device", device, "'cpu', 'cuda' or 'cuda:N'")
    dev = resolve_device(device)  # an absent GPU is an error naming the devices that exist
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at CUDA init)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return dev


def save_metrics(metrics: dict[str, Any], path: str | Path = METRICS_FILE) -> Path:
    """Write a notebook's metrics as JSON where the runner reads them: ``metrics.json`` in the
    working directory, which is the run directory under ``slimkit run``. NaN/inf become null.
    Under ``slimkit run`` the file names the run (``_run_id``), so no other run is credited with it."""
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise InvalidTypeError("metrics", metrics, "a dict with str keys")
    run_id = os.environ.get(RUN_ID_ENV)
    data = {**metrics, "_run_id": run_id} if run_id else metrics
    try:
        text = json.dumps(jsonable(data), indent=2, allow_nan=False)  # in the notebook's order
    except TypeError as e:
        raise InvalidTypeError("metrics", metrics, f"JSON-serialisable values ({e})") from None
    path = Path(path)
    _write_atomic(path, text)
    return path


def _read_metrics(run_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """The run's metrics; an ``_error`` (which fails the run) if they are unreadable or were
    written by another run (a ``_run_id`` that is not ``run_id``)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        return {"_error": f"{METRICS_FILE} is not valid JSON: {e}"}
    if not isinstance(data, dict):
        return {"_error": f"{METRICS_FILE} does not hold a JSON object"}
    writer = data.pop("_run_id", None)
    if writer is not None and writer != run_id:
        return {"_error": f"{METRICS_FILE} was written by run {writer!r}, not by this run ({run_id}): not credited"}
    return data


def _finish(spec: RunSpec, record: Record) -> None:
    run_dir = Path(spec.run_dir)
    if spec.html and spec.output_notebook.exists():
        try:
            from .html import export_html

            export_html(spec.output_notebook, spec.output_notebook.with_suffix(".html"), record=record)
        except Exception as exc:  # the report is a convenience; the run's status stands
            record.metrics.setdefault("_html_error", str(exc))
    output = spec.output_notebook
    _write_json(run_dir / "status.json", {
        "status": record.status, "error": record.error, "run_id": record.id, "key": spec.key,
        "notebook": record.notebook, "output_notebook": str(output),
        "output_sha256": sha256_file(output) if output.exists() else None,  # an edit after the run shows
        "started_at": record.started_at, "finished_at": record.finished_at, "duration_s": record.duration_s})
    _write_json(run_dir / "record.json", record.to_dict())


def run(notebook: str | Path, params: dict[str, Any] | None = None, *, store: RunStore | None = None,
        **options: Any) -> Record:
    """Validate, execute and record one run; returns its record (status ok or failed)."""
    return run_spec(plan_run(notebook, params, **options), store)


def run_spec(spec: RunSpec, store: RunStore | None = None, progress: CellProgress | None = None) -> Record:
    """Execute a planned run and record it (in ``store``, default: OUT/records.sqlite or
    ``$SLIMKIT_RECORDS``): inserted as running first, so a killed run leaves a trace.
    ``progress`` is called as each code cell starts (``slimkit run`` prints it)."""
    own = store is None
    with claim(spec):  # a refused directory leaves no record
        store = store or RunStore(default_path(Path(spec.run_dir).parent))
        try:
            store.put(new_record(spec))
            try:
                record = _execute(spec, progress)
            except KeyboardInterrupt:
                store.mark_unfinished([spec.run_id], Status.INTERRUPTED, "KeyboardInterrupt")
                raise
            store.put(record)
            return record
        finally:
            if own:
                store.close()


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    return asdict(spec)
