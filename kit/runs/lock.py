"""The lock of a sweep's folder: the same sweep started twice refuses (or waits) instead of
running everything twice. The lock file names its owner (pid, host, start); the lock of a
dead process on this host is taken over.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import SlimkitError
from .records import pid_alive

log = logging.getLogger("slimkit.runs.sweep")  # the sweep's logger: its warnings read as the sweep's
LOCK_FILE = ".sweep.lock"


class SweepLockedError(SlimkitError, RuntimeError):
    """The same sweep is already running (its folder is locked by a live process)."""


@contextmanager
def sweep_lock(folder: str | Path, *, wait: bool = False, poll_s: float = 2.0) -> Iterator[Path]:
    """Hold the lock of the sweep in ``folder`` (a file naming this process's pid, host and start).

    A lock held by a live process raises :class:`SweepLockedError`, or with ``wait`` is waited
    for; one whose process is gone (same host, pid dead) is taken over with a warning.
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time(), "token": uuid.uuid4().hex}
    waiting = False
    while not _create_lock(path, mine):
        owner = _read_lock(path)
        if owner is None:  # released meanwhile
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started_at", 0)))
        who = f"pid {owner.get('pid')} on {owner.get('host')}, started {since}"
        if owner.get("host") == mine["host"] and not pid_alive(int(owner.get("pid") or 0)):
            _remove_stale(path, owner)
            log.warning("taking over the lock of sweep %s: its owner (%s) is gone", folder, who)
        elif not wait:
            raise SweepLockedError(f"sweep {folder} is already running ({who}): wait for it to finish, start "
                                   f"with --wait (wait=True), or, if that process is gone, delete {path}")
        else:
            if not waiting:
                log.warning("waiting for sweep %s to finish (%s)", folder, who)
                waiting = True
            time.sleep(poll_s)
    try:
        yield path
    finally:
        if _read_lock(path) == mine:
            path.unlink(missing_ok=True)


def _create_lock(path: Path, content: dict[str, Any]) -> bool:
    # link() is exclusive like O_EXCL, and the lock appears with its content: never seen half-written
    tmp = path.with_name(f"{path.name}.{content['token']}")
    tmp.write_text(json.dumps(content))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_stale(path: Path, owner: dict[str, Any]) -> None:
    """Delete a dead owner's lock, unless another process has already replaced it with its own."""
    import fcntl

    with open(path.with_name(path.name + ".guard"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # two processes taking over at once: one deletes, one sees the new lock
        if _read_lock(path) == owner:
            path.unlink()
