"""The run folder: one run owns it while it runs, and reuses it only for the same run.

A run holds an exclusive ``flock`` on ``.slimkit-run.lock`` in its folder (released by the OS
if the process dies, so a killed run leaves no stale claim). A folder is reused only when it is
empty or holds a finished run of the same notebook and parameters whose executed notebook was
not edited since (what rerunning or resuming a sweep does).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError, SlimkitError

if TYPE_CHECKING:  # the runner imports this module
    from .runner import RunSpec

LOCK_FILE = ".slimkit-run.lock"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
NAME_RULE = "a plain folder name: letters, digits, '.', '_' and '-', not starting with a dot, at most 100 characters"


class RunFolderError(SlimkitError, ValueError):
    """The run directory cannot be used: in use by another run, or holding something else."""


def check_name(what: str, name: Any) -> str:
    """``name`` if it is a plain folder name (nothing that leaves the parent folder), else an error."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidParameterError(what, name, NAME_RULE)
    return name


def check_not_source(spec: RunSpec) -> None:
    """The executed notebook must not overwrite its source (symlinks resolved)."""
    if spec.output_notebook.resolve() == Path(spec.notebook).resolve():
        raise RunFolderError(f"run folder {spec.run_dir} is the folder of the notebook {spec.notebook}: the run "
                             f"would overwrite it; choose another --out or --name")


@contextmanager
def claim(spec: RunSpec) -> Iterator[Path]:
    """Own ``spec``'s run directory while the block runs, or raise :class:`RunFolderError`.

    Created if missing; the claim is an exclusive ``flock`` on its lock file, which names the
    run holding it. Once held, the directory must be empty or hold a finished run of the same
    notebook and parameters (see :func:`_check_reusable`).
    """
    import fcntl

    run_dir = Path(spec.run_dir)
    try:
        fd = _open_lock(spec, run_dir)
    except OSError as e:
        raise RunFolderError(f"run folder {run_dir} cannot be used: {e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or "another run"
            raise RunFolderError(f"run folder {run_dir} is in use by {holder}; wait for it to finish or "
                                 f"choose another --name") from None
        _check_reusable(spec, run_dir)  # again: it may have changed before the lock was ours
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run {spec.run_id} (pid {os.getpid()} on {socket.gethostname()})".encode(), 0)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int, wait_s: float = 2.0) -> str:
    """Who holds the lock, as its holder wrote it. The holder writes its name just after taking
    the lock, so a run that lost the race by microseconds waits briefly for the name."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)


def _open_lock(spec: RunSpec, run_dir: Path) -> int:
    """The run directory's lock file, opened (the directory created if missing)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        if not run_dir.is_dir():
            raise RunFolderError(f"run folder {run_dir} exists and is not a folder; choose another --name") from None
        check_not_source(spec)
        _check_reusable(spec, run_dir)  # before a lock file is added to someone else's folder
    return os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)


def _check_reusable(spec: RunSpec, run_dir: Path) -> None:
    """Refuse a directory that holds anything but a finished run of the same notebook and
    parameters, or whose executed notebook was edited after that run."""
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    if not entries:
        return
    status = _read_json(run_dir / "status.json")
    key = status.get("key") or _read_json(run_dir / "record.json").get("key")
    if key != spec.key:
        what = "a run of other parameters or another notebook" if key else \
            "files that are not a slimkit run (" + ", ".join(entries[:4]) + ("...)" if len(entries) > 4 else ")")
        raise RunFolderError(f"run folder {run_dir} already holds {what}; choose another --name or "
                             f"remove the folder")
    output = spec.output_notebook
    if status.get("output_sha256") and output.exists() and sha256_file(output) != status["output_sha256"]:
        raise RunFolderError(f"{output} was changed after its run; rerunning would overwrite it: move it "
                             f"or choose another --name")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
