"""Run records: one SQLite row per notebook run (parameters, versions, hardware, metrics, status).

The database is an embedded file (``$SLIMKIT_RECORDS``, else ``runs/records.sqlite``). It runs
in WAL mode with a busy timeout and every write is a short ``BEGIN IMMEDIATE`` transaction, so
several sweeps (separate processes) can write one database at once without losing rows.
A run is inserted as ``running`` when it is submitted and updated when it ends. Every row names
its owner (the pid and host of the process that wrote it), so a ``running`` row whose owner died
(a killed sweep) can be told apart from a live one: :meth:`RunStore.reap` marks it ``interrupted``.

The schema version is stored in ``PRAGMA user_version``: older databases are migrated when
opened, a newer one (from a later slimkit) or a file that is not SQLite is refused with an
:class:`~slimkit.errors.ArtifactError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, check_choice
from ..events import Status
from ..table import plain, text

STATUSES = tuple(s.value for s in Status)  # stored as these words
DEFAULT_PATH = Path("runs") / "records.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,            -- notebook + parameters: what resuming a sweep matches on
    sweep TEXT,
    notebook TEXT NOT NULL,
    notebook_sha256 TEXT,
    params TEXT NOT NULL,         -- JSON
    seed INTEGER,
    device TEXT,
    status TEXT NOT NULL,
    error TEXT,
    metrics TEXT,                 -- JSON
    started_at REAL,
    finished_at REAL,
    duration_s REAL,
    output_dir TEXT,
    git_commit TEXT,
    versions TEXT,                -- JSON: package versions
    hardware TEXT,                -- JSON: slimkit.hardware.fingerprint() of the machine that ran it
    host TEXT,                    -- the machine that ran it
    owner_pid INTEGER,            -- the process that recorded it (a sweep, `slimkit run`)
    owner_host TEXT
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (key, status);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep);
"""
_JSON = ("params", "metrics", "versions", "hardware")
SCHEMA_VERSION = 2
# what turns version N-1 into N; version 1 is the schema before owners (user_version was left 0)
_MIGRATIONS = {2: ("ALTER TABLE runs ADD COLUMN owner_pid INTEGER", "ALTER TABLE runs ADD COLUMN owner_host TEXT")}


def default_path(out: str | Path = DEFAULT_PATH.parent) -> Path:
    """Where run records go: ``$SLIMKIT_RECORDS``, else ``records.sqlite`` in the runs folder ``out``."""
    return Path(os.environ.get("SLIMKIT_RECORDS") or Path(out) / DEFAULT_PATH.name)


@dataclass
class Record:
    id: str
    key: str
    notebook: str
    params: dict[str, Any]
    status: str = Status.RUNNING  # a Status; a plain str when read back from the database
    sweep: str | None = None
    notebook_sha256: str | None = None
    seed: int | None = None
    device: str | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    output_dir: str | None = None
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    host: str | None = None
    owner_pid: int | None = None
    owner_host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: NaN/inf become null (SQLite's JSON and most readers reject
    bare NaN), NumPy/torch scalars become Python numbers, tuples become lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # NumPy/torch scalars and arrays
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def varying_keys(dicts: Iterable[dict[str, Any]]) -> list[str]:
    """The keys, sorted, whose values differ between ``dicts`` (a missing key counts as None):
    what tells runs apart in a listing, a comparison or a sweep's folder names."""
    dicts = list(dicts)
    names = sorted({k for d in dicts for k in d})
    return [n for n in names if len({json.dumps(d.get(n), sort_keys=True, default=str) for d in dicts}) > 1]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:  # no /proc (not Linux): kill(0) is all there is
        return True


def _retry_locked(fn, timeout_s: float) -> None:
    """Call ``fn`` until it no longer fails with "database is locked" (some lock waits in SQLite,
    such as two processes creating one database, bypass busy_timeout), for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class RunStore:
    """The run-record database. Cheap to open; one per process (connections are not shared)."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 60.0):
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        try:
            self._con.row_factory = sqlite3.Row
            self._con.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            _retry_locked(self._open, timeout_s)
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed", unreadable
            self._con.close()
            raise ArtifactError(f"run-record database {self.path} cannot be used: {e} "
                                f"(not a slimkit run-record database, or damaged)") from None
        except ArtifactError:
            self._con.close()
            raise
        self.owner = (os.getpid(), socket.gethostname())

    def _open(self) -> None:
        # WAL is a property of the file: switch only once, since the switch needs a lock
        # for which SQLite returns "locked" at once instead of waiting on busy_timeout.
        if self._con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = NORMAL")
        with self._write() as con:
            self._upgrade(con)

    def _upgrade(self, con: sqlite3.Connection) -> None:
        """Create the schema, or migrate an older one to :data:`SCHEMA_VERSION`; refuse a newer one."""
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ArtifactError(f"run-record database {self.path} has schema version {version}, newer than "
                                f"this slimkit reads ({SCHEMA_VERSION}): upgrade slimkit, or use another "
                                f"database (--records / $SLIMKIT_RECORDS)")
        if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
            for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    con.execute(statement)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                con.execute(statement)
        if version != SCHEMA_VERSION:
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
        # instead of one failing with "database is locked" on lock upgrade.
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def put(self, record: Record) -> None:
        """Insert or replace the row for ``record.id``; a record without an owner is owned by
        this process (the one that submitted the run and waits for it)."""
        row = record.to_dict()
        if row["owner_pid"] is None:
            row["owner_pid"], row["owner_host"] = self.owner
        for k in _JSON:
            row[k] = json.dumps(jsonable(row[k]), sort_keys=True, default=str)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._write() as con:
            con.execute(f"INSERT OR REPLACE INTO runs ({cols}) VALUES ({marks})", row)

    def get(self, run_id: str) -> Record | None:
        row = self._con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(row) if row else None

    def finished(self, key: str, sweep: str | None = None) -> Record | None:
        """The latest successful run with this key (in this sweep), if any: what resuming skips."""
        row = self._con.execute("SELECT * FROM runs WHERE key = ? AND status = ? AND sweep IS ? "
                                "ORDER BY finished_at DESC LIMIT 1", (key, Status.OK, sweep)).fetchone()
        return _record(row) if row else None

    def mark_unfinished(self, ids: list[str], status: Status = Status.INTERRUPTED, error: str = "") -> None:
        """Runs still ``running`` among ``ids`` become ``status`` (a sweep stopped under them)."""
        with self._write() as con:
            for run_id in ids:
                con.execute("UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = ?",
                            (status, error, time.time(), run_id, Status.RUNNING))

    def reap(self, sweep: str | None = None) -> int:
        """Mark ``running`` rows whose owner is gone as ``interrupted``; returns how many.

        A row's owner is gone when it ran on this host and its pid no longer exists (a sweep
        killed with SIGKILL, a crashed machine). Rows of other hosts are left alone: nothing
        here can tell whether their owner lives. With ``sweep``, that sweep's rows without an
        owner (written before owners were recorded) count as gone too: the caller holds the
        sweep's lock, so nothing else can be running them.
        """
        rows = self._con.execute("SELECT id, owner_pid, owner_host FROM runs WHERE status = ?"
                                 + (" AND sweep IS ?" if sweep is not None else ""),
                                 (Status.RUNNING, sweep) if sweep is not None else (Status.RUNNING,)).fetchall()
        host = socket.gethostname()
        gone = [r for r in rows if (r["owner_pid"] is None and sweep is not None)
                or (r["owner_host"] == host and r["owner_pid"] is not None and not pid_alive(r["owner_pid"]))]
        for r in gone:
            who = f"pid {r['owner_pid']} on {r['owner_host']}" if r["owner_pid"] else "an earlier slimkit"
            self.mark_unfinished([r["id"]], Status.INTERRUPTED, f"the process that ran it ({who}) is gone")
        return len(gone)

    def query(self, *, status: str | None = None, notebook: str | None = None, sweep: str | None = None,
              where: dict[str, Any] | None = None, limit: int | None = None) -> list[Record]:
        """Records, newest first, filtered by status, notebook name (substring), sweep and
        parameter values (``where={"bits": 4}``)."""
        if status is not None:
            check_choice("status", status, STATUSES)
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if status:
            sql += " AND status = ?"
            args.append(status)
        if notebook:
            sql += " AND notebook LIKE ?"
            args.append(f"%{notebook}%")
        if sweep:
            sql += " AND sweep = ?"
            args.append(sweep)
        for name, value in (where or {}).items():
            sql += " AND json_extract(params, ?) = ?"
            if isinstance(value, bool):  # JSON true/false come back from json_extract as 1/0
                value = int(value)
            elif isinstance(value, (list, dict)):
                value = json.dumps(value, separators=(",", ":"))
            args += [f'$."{name}"', value]
        sql += " ORDER BY started_at DESC, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_record(r) for r in self._con.execute(sql, args).fetchall()]

    def count(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def _record(row: sqlite3.Row) -> Record:
    data = dict(row)
    for k in _JSON:
        data[k] = json.loads(data[k]) if data[k] else {}
    return Record(**data)


def table(records: list[Record], metrics: list[str] | None = None, params: list[str] | None = None) -> str:
    """A plain-text listing (``slimkit runs``): id, name (the run directory: ``--name``), status,
    notebook, the parameters that differ and metrics."""
    if params is None:  # the parameters that differ between the listed runs
        params = varying_keys(r.params for r in records)
    if metrics is None:  # numeric metrics, not echoes of a parameter (a notebook may record its seed)
        metrics = sorted({k for r in records for k, v in r.metrics.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in r.params})[:6]
    head = ["id", "name", "status", "notebook", *params, *metrics, "seconds", "error"]
    rows = [[r.id, Path(r.output_dir).name if r.output_dir else "", r.status, Path(r.notebook).name,
             *(plain(r.params.get(p)) for p in params), *(plain(r.metrics.get(m)) for m in metrics),
             plain(r.duration_s), (r.error or "").splitlines()[0][:60] if r.error else ""] for r in records]
    return text(head, rows)
