"""Sweeps: grids, validation before any kernel, the local pool, a real Dask cluster, resuming
after an interruption, and two sweeps sharing one run-record database."""
import os
import signal
import subprocess
import sys
from concurrent.futures import Executor, Future

import pytest
import yaml
from conftest import wait_for
from notebook_factory import make_notebook

from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.runs.records import Record, RunStore
from slimkit.runs.sweep import load_grid, plan, run_sweep, sweep


@pytest.fixture
def tiny(tmp_path):
    return make_notebook(tmp_path / "tiny.ipynb")


def _grid(path, grid, params=None):
    path.write_text(yaml.safe_dump({"params": params or {}, "grid": grid}, sort_keys=False))
    return path


# --- grids and planning -------------------------------------------------------------------

def test_a_grid_is_the_product_of_its_axes_plus_fixed_params(tmp_path):
    combos = load_grid(_grid(tmp_path / "g.yaml", {"x": [0.1, 0.2], "name": ["a", "b"]}, {"seed": 3}))
    assert combos == [{"seed": 3, "x": 0.1, "name": "a"}, {"seed": 3, "x": 0.1, "name": "b"},
                      {"seed": 3, "x": 0.2, "name": "a"}, {"seed": 3, "x": 0.2, "name": "b"}]
    union = load_grid({"grid": [{"x": [0.1]}, {"name": ["b"], "x": [0.3]}]})
    assert union == [{"x": 0.1}, {"name": "b", "x": 0.3}]
    assert load_grid({"params": {"x": 0.5}}) == [{"x": 0.5}]  # no axes: one run


@pytest.mark.parametrize("grid, error, words", [
    ({"grid": {"x": 0.5}}, InvalidTypeError, "grid.x must be a non-empty list"),
    ({"grid": {"x": []}}, InvalidTypeError, "grid.x must be a non-empty list"),
    ({"grids": {"x": [1]}}, InvalidParameterError, "top-level keys"),
    ({"params": [1]}, InvalidTypeError, "params must be a mapping"),
    ([1, 2], InvalidTypeError, "grid must be a mapping"),
])
def test_bad_grids_are_clear_errors(grid, error, words):
    with pytest.raises(error, match=words):
        load_grid(grid)


def test_a_missing_grid_file_is_an_error(tmp_path):
    with pytest.raises(InvalidParameterError, match="an existing YAML file"):
        load_grid(tmp_path / "nope.yaml")


def test_every_combination_is_validated_before_any_run(tiny, tmp_path, monkeypatch):
    import slimkit.runs.sweep as sw

    monkeypatch.setattr(sw, "execute", lambda spec: pytest.fail("a run started"))
    with pytest.raises(InvalidParameterError, match=r"x=1.5"):
        sweep(tiny, {"grid": {"x": [0.1, 1.5]}}, out=tmp_path / "runs")
    with pytest.raises(InvalidParameterError, match="typo"):
        sweep(tiny, {"grid": {"typo": [1]}}, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_run_directories_are_named_after_the_parameters(tiny, tmp_path):
    specs = plan(tiny, [{"x": 0.1, "name": "a"}, {"x": 0.2, "name": "a"}], out=tmp_path, sweep="s")
    assert [os.path.basename(s.run_dir) for s in specs] == ["x-0.1", "x-0.2"]  # what varies names the folder
    assert os.path.basename(plan(tiny, [{"name": "b"}], out=tmp_path, sweep="t")[0].run_dir) == "name-b"
    assert all(os.path.dirname(s.run_dir) == str(tmp_path / "s") for s in specs)
    assert specs[0].key != specs[1].key and specs[0].params["seed"] == 0  # full params: defaults included


class _Recording(Executor):
    """Runs nothing: records which runs were sent to it and answers with an 'ok' record."""

    def __init__(self):
        self.sent = []

    def submit(self, fn, spec):
        self.sent.append(spec.params["device"])
        fut = Future()
        fut.set_result(Record(id=spec.run_id, key=spec.key, notebook=spec.notebook, params=spec.params,
                              status="ok", sweep=spec.sweep))
        return fut


def test_cuda_runs_go_to_the_gpu_executor(tiny, tmp_path):
    specs = plan(tiny, [{"device": "cpu"}, {"device": "cuda"}, {"device": "cuda:1"}], out=tmp_path, sweep="s")
    cpu, gpu = _Recording(), _Recording()
    with RunStore(tmp_path / "r.sqlite") as store:
        records = run_sweep(specs, store, executor=cpu, gpu_executor=gpu)
        assert cpu.sent == ["cpu"] and gpu.sent == ["cuda", "cuda:1"]
        assert [r.status for r in records] == ["ok"] * 3 and store.count() == 3
        # the same sweep again: everything finished, nothing is submitted
        again = run_sweep(plan(tiny, [{"device": "cpu"}], out=tmp_path, sweep="s"), store, executor=cpu)
        assert cpu.sent == ["cpu"] and again[0].id == records[0].id


# --- real sweeps --------------------------------------------------------------------------

@pytest.mark.slow
def test_local_pool_sweep_records_every_run_and_a_failure_does_not_stop_it(tiny, tmp_path):
    seen = []
    with RunStore(tmp_path / "r.sqlite") as store:
        records = sweep(tiny, {"grid": [{"x": [0.1, 0.2]}, {"fail": [True]}]}, out=tmp_path, store=store,
                        sweep_name="s", workers=2, on_done=seen.append)
        assert [r.status for r in records] == ["ok", "ok", "failed"]
        assert [r.metrics.get("y") for r in records[:2]] == [0.2, 0.4]
        assert "boom" in records[2].error and len(seen) == 3
        assert {r.status for r in store.query(sweep="s")} == {"ok", "failed"} and store.count() == 3
        assert all(r.hardware["cpu_model"] and r.versions["torch"] for r in store.query(sweep="s"))


def _cli(*args):
    return [sys.executable, "-m", "slimkit.runs.cli", *map(str, args)]


def _ok_count(db):
    if not db.exists():
        return 0
    with RunStore(db) as store:
        return len(store.query(status="ok"))


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_skips_the_runs_that_finished(tiny, tmp_path):
    grid = _grid(tmp_path / "grid.yaml", {"x": [0.1, 0.2, 0.3]}, {"sleep": 1.5})
    db = tmp_path / "runs" / "records.sqlite"
    cmd = _cli("sweep", tiny, "--grid", grid, "--workers", 1, "--out", tmp_path / "runs")
    # its own session, like a terminal's foreground job: Ctrl-C reaches the CLI, its pool and kernels.
    # SIGINT at its default, as a terminal gives it: a test run started in the background (`cmd &` in a
    # script) ignores SIGINT, children inherit that, and the CLI would never see this Ctrl-C
    first = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_for(lambda: _ok_count(db) >= 1), "no run finished"
        os.killpg(first.pid, signal.SIGINT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, out + err
    assert "rerun the same command to resume" in err
    with RunStore(db) as store:
        before = store.query()
    done_first = {r.key: r.id for r in before if r.status == "ok"}
    assert 1 <= len(done_first) < 3
    assert not [r for r in before if r.status == "running"]  # nothing is left looking alive

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    with RunStore(db) as store:
        ok = store.query(status="ok")
    assert sorted(r.params["x"] for r in ok) == [0.1, 0.2, 0.3]  # each run finished exactly once
    assert {r.key: r.id for r in ok if r.key in done_first} == done_first  # the finished ones were not rerun


@pytest.mark.slow
def test_two_sweeps_writing_one_database_lose_no_rows(tiny, tmp_path):
    db = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen(_cli("sweep", tiny, "--grid", _grid(tmp_path / f"{n}.yaml", {"x": xs}),
                                   "--name", n, "--workers", 1, "--out", tmp_path / "runs", "--records", db),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, xs in (("a", [0.1, 0.2]), ("b", [0.3, 0.4]))]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
    with RunStore(db) as store:
        assert store.count() == 4 and len(store.query(status="ok")) == 4
        assert len(store.query(sweep="a")) == len(store.query(sweep="b")) == 2


@pytest.mark.slow
def test_a_sweep_on_a_real_dask_cluster_with_two_workers(tiny, tmp_path, capsys):
    from distributed import Client, LocalCluster

    from slimkit.runs.cli import main

    grid = _grid(tmp_path / "grid.yaml", {"x": [0.1, 0.2]})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster.scheduler_address) as client:
            worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2
        rc = main(["sweep", str(tiny), "--grid", str(grid), "--engine", "dask", "--scheduler",
                   cluster.scheduler_address, "--out", str(tmp_path / "runs")])
    assert rc == 0, capsys.readouterr()
    with RunStore(tmp_path / "runs" / "records.sqlite") as store:
        ok = store.query(status="ok")
    assert sorted(r.metrics["y"] for r in ok) == [0.2, 0.4]
    assert {r.metrics["ppid"] for r in ok} <= worker_pids  # every kernel was started by a Dask worker


def test_dask_engine_needs_a_scheduler_and_the_scheduler_needs_dask(tiny, tmp_path, capsys):
    from slimkit.runs.cli import main

    grid = _grid(tmp_path / "grid.yaml", {"x": [0.1]})
    assert main(["sweep", str(tiny), "--grid", str(grid), "--engine", "dask", "--out", str(tmp_path)]) == 2
    assert "--scheduler" in capsys.readouterr().err
    assert main(["sweep", str(tiny), "--grid", str(grid), "--scheduler", "tcp://x:1", "--out", str(tmp_path)]) == 2
    assert "only with --engine dask" in capsys.readouterr().err
