"""The run-record database: one row per run, filters, and concurrent writers losing nothing."""
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from slimkit.errors import ArtifactError, InvalidParameterError
from slimkit.runs.records import SCHEMA_VERSION, Record, RunStore, jsonable, pid_alive, table


def _record(i: int, **kw) -> Record:
    base = dict(id=f"r{i:04d}", key=f"k{i}", notebook="/nb/prune.ipynb", params={"sparsity": 0.5, "bits": 8},
                status="ok", seed=0, device="cpu", metrics={"accuracy": 0.9}, started_at=1000.0 + i)
    base.update(kw)
    return Record(**base)


def test_a_record_round_trips_with_its_json_fields(tmp_path):
    with RunStore(tmp_path / "r.sqlite") as store:
        rec = _record(1, hardware={"cpu_model": "x", "gpus": []}, versions={"torch": "2.13.0"},
                      metrics={"accuracy": 0.97, "loss": float("nan"), "curve": [1.0, float("inf")]})
        store.put(rec)
        back = store.get("r0001")
    assert back.params == rec.params and back.hardware == rec.hardware and back.versions == rec.versions
    assert back.metrics == {"accuracy": 0.97, "loss": None, "curve": [1.0, None]}  # NaN/inf are stored as null
    assert store.get  # closed store object still exists
    with RunStore(tmp_path / "r.sqlite") as again:
        assert again.get("missing") is None and again.count() == 1


def test_jsonable_turns_numpy_and_torch_scalars_into_numbers():
    import numpy as np
    import torch

    assert jsonable({"a": np.float32(0.5), "b": torch.tensor(2), "c": (1, np.int64(3)), 4: math.nan}) == {
        "a": 0.5, "b": 2, "c": [1, 3], "4": None}


def test_query_filters_by_status_notebook_sweep_and_parameter_values(tmp_path):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.put(_record(1, params={"bits": 8, "per_channel": True, "grid": [1, 2]}))
        store.put(_record(2, params={"bits": 4, "per_channel": False, "grid": [1, 2]}, status="failed", error="boom"))
        store.put(_record(3, params={"bits": 4, "per_channel": True}, sweep="s1", notebook="/nb/quantize.ipynb"))
        ids = lambda **q: [r.id for r in store.query(**q)]  # noqa: E731
        assert ids() == ["r0003", "r0002", "r0001"]  # newest first
        assert ids(status="failed") == ["r0002"]
        assert ids(notebook="quantize") == ["r0003"] and ids(sweep="s1") == ["r0003"]
        assert ids(where={"bits": 4}) == ["r0003", "r0002"]
        assert ids(where={"per_channel": True}) == ["r0003", "r0001"]  # JSON booleans match Python bools
        assert ids(where={"grid": [1, 2]}) == ["r0002", "r0001"]
        assert ids(limit=1) == ["r0003"]
        with pytest.raises(InvalidParameterError, match="status='done'"):
            store.query(status="done")


def test_finished_finds_only_ok_runs_of_the_same_key_and_sweep(tmp_path):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.put(_record(1, key="same", sweep="s", status="failed"))
        assert store.finished("same", sweep="s") is None
        store.put(_record(2, key="same", sweep="s", status="ok", finished_at=5.0))
        assert store.finished("same", sweep="s").id == "r0002"
        assert store.finished("same", sweep="other") is None and store.finished("same") is None


def test_mark_unfinished_touches_only_running_rows(tmp_path):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.put(_record(1, status="running"))
        store.put(_record(2, status="ok"))
        store.mark_unfinished(["r0001", "r0002"], "interrupted", "stopped")
        assert store.get("r0001").status == "interrupted" and store.get("r0001").error == "stopped"
        assert store.get("r0002").status == "ok"


def test_table_lists_the_parameters_that_differ_and_numeric_metrics():
    text = table([_record(1, params={"bits": 8, "seed": 0}, metrics={"accuracy": 0.98, "pick": "int8", "seed": 0,
                                                                      "simulated": False}),
                  _record(2, params={"bits": 4, "seed": 0}, metrics={"accuracy": 0.97}, status="failed",
                         error="cell 3 raised RuntimeError: boom\nTraceback...")])
    head, rule, *rows = text.splitlines()
    assert head.split() == ["id", "name", "status", "notebook", "bits", "accuracy", "seconds", "error"]
    assert "0.98" in rows[0] and "prune.ipynb" in rows[0]
    assert rows[1].endswith("cell 3 raised RuntimeError: boom")


def _writer(path: str, prefix: str, n: int) -> None:
    with RunStore(path) as store:
        for i in range(n):
            store.put(_record(i, id=f"{prefix}{i:04d}", status="running"))
            store.put(_record(i, id=f"{prefix}{i:04d}", status="ok", finished_at=time.time()))


def test_two_writers_in_separate_processes_lose_no_rows(tmp_path):
    """Two sweeps in two processes write one database at once (WAL, BEGIN IMMEDIATE, busy
    timeout): every insert and update lands."""
    path = str(tmp_path / "shared.sqlite")
    RunStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p, 150)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with RunStore(path) as store:
        assert store.count() == 300
        assert len(store.query(status="ok")) == 300


def _opener(path: str, go) -> None:
    go.wait(30)
    for _ in range(5):
        with RunStore(path) as store:
            store.count()


def test_processes_creating_one_new_database_at_once_all_open_it(tmp_path):
    """Creating the database and switching it to WAL takes locks SQLite does not wait for on
    busy_timeout; several processes opening a fresh file at the same moment must all get in."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(20):
        path, go = str(tmp_path / f"new{attempt}.sqlite"), ctx.Event()
        procs = [ctx.Process(target=_opener, args=(path, go)) for _ in range(6)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 6, f"attempt {attempt}"


# --- schema versions, bad files, owners ---------------------------------------------------

_V1_SCHEMA = """CREATE TABLE runs (id TEXT PRIMARY KEY, key TEXT NOT NULL, sweep TEXT, notebook TEXT NOT NULL,
    notebook_sha256 TEXT, params TEXT NOT NULL, seed INTEGER, device TEXT, status TEXT NOT NULL, error TEXT,
    metrics TEXT, started_at REAL, finished_at REAL, duration_s REAL, output_dir TEXT, git_commit TEXT,
    versions TEXT, hardware TEXT, host TEXT)"""


def _runs_cli(db, capsys):
    from slimkit.runs.cli import main

    rc = main(["runs", "--records", str(db)])
    return rc, capsys.readouterr().err


def test_a_database_from_before_schema_versions_is_migrated(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:  # what slimkit wrote before it stored a schema version
        con.execute(_V1_SCHEMA)
        con.execute("INSERT INTO runs (id, key, notebook, params, status, metrics, versions, hardware) "
                    "VALUES ('old1', 'k', '/nb/a.ipynb', '{\"x\": 1}', 'ok', '{}', '{}', '{}')")
    con.close()
    with RunStore(db) as store:
        assert store.get("old1").params == {"x": 1} and store.get("old1").owner_pid is None
        store.put(_record(2))
        assert store.get("r0002").owner_pid == os.getpid()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_a_database_from_a_newer_slimkit_is_refused_clearly(tmp_path, capsys):
    import sqlite3

    db = tmp_path / "new.sqlite"
    with RunStore(db) as store:
        store.put(_record(1))
    with sqlite3.connect(db) as con:  # a later schema: one more column, a higher version
        con.execute("ALTER TABLE runs ADD COLUMN gpu_hours REAL")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(ArtifactError, match=f"{db}.*schema version {SCHEMA_VERSION + 1}, newer"):
        RunStore(db)
    rc, err = _runs_cli(db, capsys)
    assert rc == 2 and "newer than this slimkit reads" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"not a database at all\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_or_foreign_file_is_refused_clearly(tmp_path, capsys, content):
    db = tmp_path / "bad.sqlite"
    db.write_bytes(content)
    with pytest.raises(ArtifactError, match=f"{db}.*not a slimkit run-record database"):
        RunStore(db)
    rc, err = _runs_cli(db, capsys)
    assert rc == 2 and str(db) in err and "Traceback" not in err


def test_someone_elses_runs_table_is_refused(tmp_path):
    import sqlite3

    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, mileage REAL)")
    con.close()
    with pytest.raises(ArtifactError, match="not a slimkit run-record database"):
        RunStore(db)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_reap_marks_running_rows_of_dead_owners_interrupted(tmp_path):
    host = socket.gethostname()
    dead = _dead_pid()
    with RunStore(tmp_path / "r.sqlite") as store:
        store.put(_record(1, status="running", owner_pid=dead, owner_host=host, sweep="s"))
        store.put(_record(2, status="running", sweep="s"))  # owned by this (live) process
        store.put(_record(3, status="running", owner_pid=dead, owner_host="elsewhere", sweep="s"))
        store.put(_record(4, status="ok", owner_pid=dead, owner_host=host, sweep="s"))
        assert store.reap() == 1
        assert [store.get(i).status for i in ("r0001", "r0002", "r0003", "r0004")] == \
            ["interrupted", "running", "running", "ok"]
        assert f"pid {dead} on {host}" in store.get("r0001").error
    assert not pid_alive(dead) and pid_alive(os.getpid())


def test_slimkit_runs_shows_a_dead_sweeps_runs_as_interrupted(tmp_path, capsys):
    from slimkit.runs.cli import main

    db = tmp_path / "r.sqlite"
    with RunStore(db) as store:
        store.put(_record(1, status="running", owner_pid=_dead_pid(), owner_host=socket.gethostname()))
    assert main(["runs", "--records", str(db), "--json"]) == 0
    assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["interrupted"]
