"""Sweeps that survive concurrency, signals and lost workers: the sweep lock, SIGTERM/SIGKILL of
a sweep (no orphan workers or kernels, no rows left ``running``), and the worker timeout."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Executor, Future

import pytest
import yaml
from conftest import wait_for
from notebook_factory import make_notebook

from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.runs.records import Record, RunStore, pid_alive
from slimkit.runs.lock import LOCK_FILE, SweepLockedError, sweep_lock
from slimkit.runs.sweep import load_grid, plan, run_sweep

# a run that holds until the test removes its `hold` file (so the test decides when runs end)
HOLD_PARAMS = '''x: float = 0.5  # in [0, 1)
hold: str = ""  # while this file exists the run waits'''
HOLD_BODY = '''import json, os, time
end = time.time() + 300
while hold and os.path.exists(hold) and time.time() < end:
    time.sleep(0.1)
json.dump({"y": x * 2, "pid": os.getpid()}, open("metrics.json", "w"))'''


@pytest.fixture
def tiny(tmp_path):
    return make_notebook(tmp_path / "tiny.ipynb")


class _Sent(Executor):
    """Runs nothing: counts submissions; its futures finish when the test says so (or never)."""

    def __init__(self, finish: bool = True):
        self.finish, self.sent = finish, []

    def submit(self, fn, spec):
        self.sent.append(spec)
        fut = Future()
        if self.finish:
            fut.set_result(Record(id=spec.run_id, key=spec.key, notebook=spec.notebook, params=spec.params,
                                  status="ok", sweep=spec.sweep))
        return fut


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "started_at": time.time(), "token": "t"}))


# --- the sweep lock -------------------------------------------------------------------------

def test_the_same_sweep_started_twice_refuses_while_the_first_runs(tiny, tmp_path):
    specs = plan(tiny, [{"x": 0.1}], out=tmp_path, sweep="s")
    with sweep_lock(tmp_path / "s"):  # the first start, still running
        with RunStore(tmp_path / "r.sqlite") as store, pytest.raises(SweepLockedError) as err:
            run_sweep(specs, store, executor=(second := _Sent()))
    assert f"pid {os.getpid()} on {socket.gethostname()}" in str(err.value) and "--wait" in str(err.value)
    assert second.sent == []  # nothing ran twice
    assert not (tmp_path / "s" / LOCK_FILE).exists()  # released by its holder


def test_a_live_lock_of_another_process_refuses_and_the_cli_exits_2(tiny, tmp_path, capsys):
    from slimkit.runs.cli import main

    owner = _sleeper()
    try:
        grid = tmp_path / "g.yaml"
        grid.write_text(yaml.safe_dump({"grid": {"x": [0.1]}}))
        _write_lock(tmp_path / "runs" / "tiny-g", owner.pid)
        assert main(["sweep", str(tiny), "--grid", str(grid), "--out", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert "already running" in err and f"pid {owner.pid}" in err and "Traceback" not in err
    finally:
        owner.kill()
        owner.wait()


def test_a_dead_owners_lock_is_taken_over_with_a_message(tiny, tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path / "s", dead.pid)
    specs = plan(tiny, [{"x": 0.1}, {"x": 0.2}], out=tmp_path, sweep="s")
    with RunStore(tmp_path / "r.sqlite") as store, caplog.at_level(logging.WARNING, "slimkit.runs.sweep"):
        records = run_sweep(specs, store, executor=_Sent())
    assert [r.status for r in records] == ["ok", "ok"]
    assert f"pid {dead.pid}" in caplog.text and "is gone" in caplog.text
    assert not (tmp_path / "s" / LOCK_FILE).exists()


def test_a_lock_on_another_host_is_never_taken_over(tmp_path):
    _write_lock(tmp_path / "s", 1, host="another-machine")
    with pytest.raises(SweepLockedError, match="on another-machine"):
        with sweep_lock(tmp_path / "s"):
            pass


def test_wait_lock_waits_for_the_running_sweep(tiny, tmp_path):
    owner = _sleeper()
    _write_lock(tmp_path / "s", owner.pid)
    threading.Timer(0.5, owner.kill).start()  # the first sweep ends (its lock is then stale)
    specs = plan(tiny, [{"x": 0.1}], out=tmp_path, sweep="s")
    try:
        with RunStore(tmp_path / "r.sqlite") as store:
            records = run_sweep(specs, store, executor=_Sent(), wait_lock=True)
        assert records[0].status == "ok"
    finally:
        owner.kill()
        owner.wait()


# --- grid values ----------------------------------------------------------------------------

def test_grid_values_must_be_plain_data(tmp_path):
    import datetime

    with pytest.raises(InvalidTypeError, match=r"grid.day\[0\]"):
        load_grid({"grid": {"day": [datetime.date(2026, 1, 1)]}})  # YAML's dates are not JSON
    with pytest.raises(InvalidTypeError, match=r"params\.when"):
        load_grid({"params": {"when": datetime.date(2026, 1, 1)}, "grid": {"x": [1]}})


def test_grid_files_and_sweep_names_are_checked_like_run_parameters(tiny, tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text("grid:\n  x: [" + "9" * 5000 + "]\n")
    with pytest.raises(InvalidParameterError, match="grid"):
        load_grid(huge)  # a 5000-digit int: a parameter error, not a ValueError traceback
    with pytest.raises(InvalidParameterError, match="grid"):
        load_grid(tmp_path / "missing.yaml")
    for bad in ("../../x", "/tmp/abs", ".hidden"):
        with pytest.raises(InvalidParameterError, match="sweep name"):
            plan(tiny, [{"x": 0.1}], out=tmp_path, sweep=bad)
    assert not (tmp_path.parent / "x").exists()
    grid = {"grid": {"x": [0.1, 0.2]}}
    load_grid(grid)
    assert grid == {"grid": {"x": [0.1, 0.2]}}  # the caller's mapping is not rewritten


# --- lost workers ---------------------------------------------------------------------------

def test_runs_fail_with_a_clear_reason_when_no_worker_is_left(tiny, tmp_path):
    specs = plan(tiny, [{"x": 0.1}, {"x": 0.2}], out=tmp_path, sweep="s")
    seen = []
    with RunStore(tmp_path / "r.sqlite") as store:
        records = run_sweep(specs, store, executor=_Sent(finish=False), workers_alive=lambda: False,
                            worker_timeout=0.3, on_done=seen.append)
        assert [r.status for r in records] == ["failed", "failed"]
        assert all("no worker was available for 0.3 s" in r.error for r in records)
        assert {r.status for r in store.query(sweep="s")} == {"failed"} and len(seen) == 2


def test_a_slow_run_on_a_live_worker_is_not_timed_out(tiny, tmp_path):
    class Slow(_Sent):
        def submit(self, fn, spec):
            fut = Future()
            done = Record(id=spec.run_id, key=spec.key, notebook=spec.notebook, params=spec.params, status="ok")
            threading.Timer(0.8, fut.set_result, (done,)).start()
            return fut

    specs = plan(tiny, [{"x": 0.1}], out=tmp_path, sweep="s")
    with RunStore(tmp_path / "r.sqlite") as store:
        records = run_sweep(specs, store, executor=Slow(), workers_alive=lambda: True, worker_timeout=0.1)
    assert records[0].status == "ok"


@pytest.mark.slow
def test_a_dask_cluster_without_workers_times_out(tiny, tmp_path):
    from distributed import Client, LocalCluster

    from slimkit.runs.sweep import dask_workers_alive

    specs = plan(tiny, [{"x": 0.1}], out=tmp_path, sweep="s")
    # in-process (inproc:// transport, no dashboard): nothing listens on the network
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        alive = dask_workers_alive(client)
        assert alive()
        cluster.scale(0)  # the only worker goes away
        assert wait_for(lambda: not alive(), 30)
        with RunStore(tmp_path / "r.sqlite") as store:
            records = run_sweep(specs, store, executor=client.get_executor(pure=False), workers_alive=alive,
                                worker_timeout=0.5)
    assert records[0].status == "failed" and "no worker was available" in records[0].error


# --- signals --------------------------------------------------------------------------------

def _descendants(pid):
    from slimkit.runs.sweep import _children

    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _kernels(pid):
    return [p for p in _descendants(pid) if "ipykernel" in _cmdline(p)]


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def _start_held_sweep(tmp_path, xs, workers):
    nb = make_notebook(tmp_path / "held.ipynb", HOLD_PARAMS, HOLD_BODY)
    hold = tmp_path / "hold"
    hold.touch()
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"params": {"hold": str(hold)}, "grid": {"x": xs}}))
    cmd = [sys.executable, "-m", "slimkit.runs.cli", "sweep", str(nb), "--grid", str(grid), "--workers", str(workers),
           "--out", str(tmp_path / "runs")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, cmd, hold, tmp_path / "runs" / "records.sqlite"


def _statuses(db):
    with RunStore(db) as store:
        return sorted((r.params["x"], r.status) for r in store.query())


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_a_sweep_its_workers_and_kernels_and_records_interrupted(tmp_path):
    proc, _, hold, db = _start_held_sweep(tmp_path, [0.1, 0.2, 0.3], workers=2)
    try:
        assert wait_for(lambda: len(_kernels(proc.pid)) == 2), "two kernels never started"
        started = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        hold.unlink()
    assert proc.returncode == 130, out + err
    assert wait_for(lambda: not [p for p in started if pid_alive(p)], 10), "workers or kernels outlived the sweep"
    assert _statuses(db) == [(0.1, "interrupted"), (0.2, "interrupted"), (0.3, "interrupted")]
    queued = tmp_path / "runs" / "held-grid" / "x-0.3" / "held.ipynb"
    assert not queued.exists()  # the queued run never started
    assert not (tmp_path / "runs" / "held-grid" / LOCK_FILE).exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_after_sigkill_workers_die_and_a_resume_reruns_the_stale_rows(tmp_path):
    proc, cmd, hold, db = _start_held_sweep(tmp_path, [0.1], workers=1)
    try:
        assert wait_for(lambda: len(_kernels(proc.pid)) == 1), "the kernel never started"
        started = _descendants(proc.pid)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_for(lambda: not [p for p in started if pid_alive(p)], 15), "workers or kernels outlived the sweep"
    assert _statuses(db) == [(0.1, "running")]  # nothing could record it: its owner is dead
    hold.unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "taking over the lock" in again.stderr
    with RunStore(db) as store:
        rows = store.query()
    assert sorted((r.status, r.error and "is gone" in r.error) for r in rows) == [("interrupted", True), ("ok", None)]


def test_the_worker_timeout_must_be_positive(tiny, tmp_path, capsys):
    from slimkit.runs.cli import main
    from slimkit.errors import InvalidParameterError

    specs = plan(tiny, [{"x": 0.1}], out=tmp_path, sweep="s")
    with RunStore(tmp_path / "r.sqlite") as store, pytest.raises(InvalidParameterError, match="worker_timeout"):
        run_sweep(specs, store, executor=_Sent(), worker_timeout=0)
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"grid": {"x": [0.1]}}))
    assert main(["sweep", str(tiny), "--grid", str(grid), "--out", str(tmp_path), "--worker-timeout", "-1"]) == 2
    assert "worker_timeout" in capsys.readouterr().err
