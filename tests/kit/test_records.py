"""The run-record database: one row per run, filters, and concurrent writers losing nothing."""
import math
import multiprocessing
import time

import pytest

from slimkit.errors import InvalidParameterError
from slimkit.records import Record, RunStore, jsonable, table


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
    assert head.split() == ["id", "status", "notebook", "bits", "accuracy", "seconds", "error"]
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
