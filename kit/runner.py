"""Headless notebook runs: papermill underneath, one directory and one record per run.

``prepare`` checks the parameters against the notebook's ``parameters`` cell (no kernel yet);
``execute`` runs it and returns the run's :class:`~slimkit.records.Record` (it is the function a
sweep ships to worker processes or Dask workers, so it takes and returns plain picklable data
and never touches the database); ``run`` does both and writes the record.

A run directory holds the executed notebook, ``params.yaml``, ``metrics.json`` (written by the
notebook, which runs with the run directory as its working directory), ``status.json`` and
``record.json``, and optionally an HTML report. Success means papermill returned normally:
a failing cell, a cell timeout, a dead kernel or a kernel that never started are failures,
whatever the notebook's metadata says, and the partly executed notebook is kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidParameterError, InvalidTypeError, check_int, check_positive
from .params import read_signature
from .records import Record, RunStore, default_path, jsonable

KERNEL_NAME = "slimkit"
METRICS_FILE = "metrics.json"


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
    text = re.sub(r"[^A-Za-z0-9._=-]+", "", text.replace(" ", ""))
    if len(text) > max_len:
        text = text[: max_len - 9] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return text


def prepare(notebook: str | Path, params: dict[str, Any] | None = None, *, out: str | Path = "runs",
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
        name = f"{notebook.stem}-{run_id}"
    run_dir = (Path(out) / name).resolve()
    return RunSpec(str(notebook), full, overrides, str(run_dir), run_id, key, sweep, kernel_name,
                   cell_timeout, html=html, threads=threads)


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Install a kernelspec ``name`` for this interpreter into ``sys.prefix`` if it is missing.

    Installed with ``--sys-prefix`` semantics, and looked up with the environment's path
    preferred (``JUPYTER_PREFER_ENV_PATH``), so a user-level kernelspec of the same name that
    points at another Python cannot win.
    """
    os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if spec.argv and os.path.realpath(spec.argv[0]) == os.path.realpath(sys.executable):
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


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


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _describe(exc: BaseException) -> str:
    """One readable error for the record: the cell's exception, or what killed the run."""
    ename = getattr(exc, "ename", None)
    if ename:  # PapermillExecutionError: the notebook's own exception
        return f"cell {getattr(exc, 'exec_count', '?')} raised {ename}: {getattr(exc, 'evalue', '')}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def new_record(spec: RunSpec) -> Record:
    return Record(id=spec.run_id, key=spec.key, notebook=spec.notebook, params=spec.params, sweep=spec.sweep,
                  seed=spec.params.get("seed"), device=spec.params.get("device"), status="running",
                  started_at=time.time(), output_dir=spec.run_dir)


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader sees the old content or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def execute(spec: RunSpec) -> Record:
    """Run one prepared notebook (in this process, or a pool/Dask worker) and describe it."""
    import yaml

    from .hardware import fingerprint

    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (METRICS_FILE, "status.json", "record.json"):  # a rerun into the same directory
        (run_dir / stale).unlink(missing_ok=True)
    record = new_record(spec)
    record.notebook_sha256 = _sha256(spec.notebook)
    record.git_commit = _git_commit(Path(spec.notebook))
    record.hardware = fingerprint()
    record.versions = dict(record.hardware["packages"])  # the fingerprint has just read them
    if spec.threads:  # the kernel's torch reads OMP_NUM_THREADS (set below) at import
        record.hardware["torch_threads"] = spec.threads
    record.host = socket.gethostname()
    (run_dir / "params.yaml").write_text(yaml.safe_dump(spec.params, sort_keys=False))
    _write_json(run_dir / "status.json", {"status": "running", "run_id": spec.run_id, "started_at": record.started_at})
    if spec.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(spec.threads)
    t0 = time.perf_counter()
    try:
        import papermill as pm

        kernel = ensure_kernel(spec.kernel_name)
        pm.execute_notebook(
            spec.notebook, str(spec.output_notebook), parameters=spec.overrides, kernel_name=kernel,
            cwd=str(run_dir), progress_bar=False, execution_timeout=spec.cell_timeout,
            start_timeout=spec.start_timeout, store_widget_state=False)
        record.status = "ok"
    except KeyboardInterrupt:
        record.status, record.error = "interrupted", "KeyboardInterrupt"
        raise
    except Exception as exc:  # a failed run is a result, recorded; never a crash of the sweep
        record.status, record.error = "failed", _describe(exc)
    finally:
        record.finished_at = time.time()
        record.duration_s = time.perf_counter() - t0
        record.metrics = _read_metrics(run_dir)
        if record.status == "ok" and "_error" in record.metrics:
            record.status, record.error = "failed", record.metrics["_error"]
        _finish(spec, record)
    return record


# --- the notebook's side of a run ---------------------------------------------------------------

def notebook_setup(seed: int = 0, device: str = "cpu"):
    """The first call of every slimkit notebook: seed Python's, NumPy's and torch's RNGs, turn on
    torch's deterministic algorithms (same parameters and seed -> same metrics) and check that
    ``device`` exists here. Returns the ``torch.device``."""
    import random

    import numpy as np
    import torch

    from .devices import resolve_device

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
    working directory, which is the run directory under ``slimkit run``. NaN/inf become null."""
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise InvalidTypeError("metrics", metrics, "a dict with str keys")
    try:
        text = json.dumps(jsonable(metrics), indent=2, allow_nan=False)  # in the notebook's order
    except TypeError as e:
        raise InvalidTypeError("metrics", metrics, f"JSON-serialisable values ({e})") from None
    path = Path(path)
    _write_atomic(path, text)
    return path


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        return {"_error": f"{METRICS_FILE} is not valid JSON: {e}"}
    return data if isinstance(data, dict) else {"_error": f"{METRICS_FILE} does not hold a JSON object"}


def _finish(spec: RunSpec, record: Record) -> None:
    run_dir = Path(spec.run_dir)
    if spec.html and spec.output_notebook.exists():
        try:
            from .reporting import export_html

            export_html(spec.output_notebook, spec.output_notebook.with_suffix(".html"))
        except Exception as exc:  # the report is a convenience; the run's status stands
            record.metrics.setdefault("_html_error", str(exc))
    _write_json(run_dir / "status.json", {
        "status": record.status, "error": record.error, "run_id": record.id, "notebook": record.notebook,
        "output_notebook": str(spec.output_notebook), "started_at": record.started_at,
        "finished_at": record.finished_at, "duration_s": record.duration_s})
    _write_json(run_dir / "record.json", record.to_dict())


def run(notebook: str | Path, params: dict[str, Any] | None = None, *, store: RunStore | None = None,
        **options: Any) -> Record:
    """Validate, execute and record one run; returns its record (status "ok" or "failed")."""
    return run_spec(prepare(notebook, params, **options), store)


def run_spec(spec: RunSpec, store: RunStore | None = None) -> Record:
    """Execute a prepared run and record it (in ``store``, default: OUT/records.sqlite or
    ``$SLIMKIT_RECORDS``): inserted as running first, so a killed run leaves a trace."""
    own = store is None
    store = store or RunStore(default_path(Path(spec.run_dir).parent))
    try:
        store.put(new_record(spec))
        try:
            record = execute(spec)
        except KeyboardInterrupt:
            store.mark_unfinished([spec.run_id], "interrupted", "KeyboardInterrupt")
            raise
        store.put(record)
        return record
    finally:
        if own:
            store.close()


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    return asdict(spec)
