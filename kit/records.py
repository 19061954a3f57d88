"""Run records: one SQLite row per notebook run (parameters, versions, hardware, metrics, status).

The database is an embedded file (``$SLIMKIT_RECORDS``, else ``runs/records.sqlite``). It runs
in WAL mode with a busy timeout and every write is a short ``BEGIN IMMEDIATE`` transaction, so
several sweeps (separate processes) can write one database at once without losing rows.
A run is inserted as ``running`` when it is submitted and updated when it ends; a sweep that
dies leaves ``running`` rows behind, which resuming treats as unfinished.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import check_choice

STATUSES = ("running", "ok", "failed", "interrupted")
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
    host TEXT
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (key, status);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep);
"""
_JSON = ("params", "metrics", "versions", "hardware")


def default_path(out: str | Path = DEFAULT_PATH.parent) -> Path:
    """Where run records go: ``$SLIMKIT_RECORDS``, else ``records.sqlite`` in the runs folder ``out``."""
    return Path(os.environ.get("SLIMKIT_RECORDS") or Path(out) / DEFAULT_PATH.name)


@dataclass
class Record:
    id: str
    key: str
    notebook: str
    params: dict[str, Any]
    status: str = "running"
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


class RunStore:
    """The run-record database. Cheap to open; one per process (connections are not shared)."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 60.0):
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self._con.row_factory = sqlite3.Row
        self._con.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = NORMAL")
        with self._write() as con:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)

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
        """Insert or replace the row for ``record.id``."""
        row = record.to_dict()
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
        row = self._con.execute("SELECT * FROM runs WHERE key = ? AND status = 'ok' AND sweep IS ? "
                                "ORDER BY finished_at DESC LIMIT 1", (key, sweep)).fetchone()
        return _record(row) if row else None

    def mark_unfinished(self, ids: list[str], status: str = "interrupted", error: str = "") -> None:
        """Runs still ``running`` among ``ids`` become ``status`` (a sweep stopped under them)."""
        with self._write() as con:
            for run_id in ids:
                con.execute("UPDATE runs SET status = ?, error = ?, finished_at = ? "
                            "WHERE id = ? AND status = 'running'", (status, error, time.time(), run_id))

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
    """A plain-text listing (``slimkit runs``): id, status, notebook, chosen params and metrics."""
    if params is None:  # the parameters that differ between the listed runs
        params = varying_keys(r.params for r in records)
    if metrics is None:  # numeric metrics, not echoes of a parameter (a notebook may record its seed)
        metrics = sorted({k for r in records for k, v in r.metrics.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in r.params})[:6]
    head = ["id", "status", "notebook", *params, *metrics, "seconds", "error"]
    rows = [head]
    for r in records:
        rows.append([r.id, r.status, Path(r.notebook).name,
                     *(_fmt(r.params.get(p)) for p in params), *(_fmt(r.metrics.get(m)) for m in metrics),
                     _fmt(r.duration_s), (r.error or "").splitlines()[0][:60] if r.error else ""])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
