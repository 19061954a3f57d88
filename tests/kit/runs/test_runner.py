"""Headless runs: parameter checking before any kernel, run directories, faults recorded as failed."""
import base64
import json
import re
import sys

import pytest
import yaml
from notebook_factory import PARAMS, make_notebook

from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.runs.records import RunStore
from slimkit.runs.runner import plan_run, run


@pytest.fixture
def tiny(tmp_path):
    return make_notebook(tmp_path / "tiny.ipynb")


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "records.sqlite") as s:
        yield s


def test_bad_parameters_fail_before_any_kernel_and_leave_nothing(tiny, tmp_path, store, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    for params in ({"x": 2.0}, {"typo": 1}):
        with pytest.raises(InvalidParameterError):
            run(tiny, params, out=tmp_path / "runs", store=store)
    with pytest.raises(InvalidParameterError, match="device"):
        plan_run(make_notebook(tmp_path / "nodev.ipynb", "x: float = 0.5"), out=tmp_path, device="cpu")
    assert not (tmp_path / "runs").exists() and store.count() == 0


# --- runs -----------------------------------------------------------------------------------

def test_a_run_writes_its_directory_and_record(tiny, tmp_path, store):
    record = run(tiny, {"x": 0.25, "name": "b"}, out=tmp_path / "runs", name="one", store=store)
    d = tmp_path / "runs" / "one"
    assert record.status == "ok" and record.error is None
    assert {p.name for p in d.iterdir()} >= {"tiny.ipynb", "params.yaml", "metrics.json", "status.json", "record.json"}
    assert yaml.safe_load((d / "params.yaml").read_text()) == {
        "x": 0.25, "name": "b", "seed": 0, "device": "cpu", "fail": False, "sleep": 0.0}
    assert json.loads((d / "status.json").read_text())["status"] == "ok"
    assert record.metrics["y"] == 0.5 and record.metrics["name"] == "b"
    assert record.metrics["python"] == sys.executable  # the project kernel runs this interpreter
    saved = store.get(record.id)
    assert saved.status == "ok" and saved.metrics == record.metrics and saved.seed == 0 and saved.device == "cpu"
    assert saved.hardware["cpu_model"] and "torch" in saved.versions and saved.output_dir == str(d)
    assert saved.duration_s > 0 and saved.notebook_sha256


def test_a_failing_cell_is_recorded_failed_with_its_error_and_notebook_kept(tiny, tmp_path, store):
    record = run(tiny, {"fail": True}, out=tmp_path, name="bad", store=store)
    assert record.status == "failed" and "RuntimeError: boom from the notebook" in record.error
    assert store.get(record.id).status == "failed"
    out = json.loads((tmp_path / "bad" / "tiny.ipynb").read_text())
    assert any("boom" in json.dumps(c.get("outputs", [])) for c in out["cells"])
    assert json.loads((tmp_path / "bad" / "status.json").read_text())["error"] == record.error


def test_a_cell_timeout_is_a_failure_although_papermill_marks_cells_completed(tmp_path, store):
    nb = make_notebook(tmp_path / "slow.ipynb", PARAMS, "import time\ntime.sleep(60)", "print('never')")
    record = run(nb, out=tmp_path, name="slow", store=store, cell_timeout=2)
    assert record.status == "failed" and "CellTimeoutError" in record.error
    out = json.loads((tmp_path / "slow" / "slow.ipynb").read_text())
    # the trap: every cell's papermill status says "completed", the last one never ran
    assert {c["metadata"]["papermill"]["status"] for c in out["cells"]} == {"completed"}
    assert store.get(record.id).status == "failed"


def test_a_dead_kernel_is_a_failure_with_the_notebook_kept(tmp_path, store):
    nb = make_notebook(tmp_path / "dies.ipynb", PARAMS, "import os\nos._exit(3)", "print('never')")
    record = run(nb, out=tmp_path, name="dies", store=store)
    assert record.status == "failed" and "DeadKernelError" in record.error
    assert (tmp_path / "dies" / "dies.ipynb").exists()
    assert store.get(record.id).error == record.error


def test_project_kernel_wins_over_a_user_kernelspec_of_the_same_name(tiny, tmp_path, store, monkeypatch):
    user = tmp_path / "userdata"
    spec = user / "kernels" / "slimkit"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "impostor", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(user))
    monkeypatch.delenv("JUPYTER_PREFER_ENV_PATH", raising=False)
    record = run(tiny, out=tmp_path, name="k", store=store)
    assert record.status == "ok", record.error
    assert record.metrics["python"] == sys.executable


def test_html_report_shows_plotly_figures_offline_and_small(tmp_path, store):
    nb = make_notebook(tmp_path / "plot.ipynb", "seed: int = 0  # seed", (
        "import plotly.graph_objects as go, plotly.io as pio\n"
        "pio.renderers.default = 'plotly_mimetype'\n"
        "go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name='only-in-the-plot')).show()"))
    record = run(nb, out=tmp_path, name="p", store=store, html=True)
    assert record.status == "ok", record.error
    html = (tmp_path / "p" / "plot.html").read_text()
    assert not re.findall(r'<script[^>]*src="https?://', html)  # nothing from a CDN (require.js, MathJax...)
    # the figure as a static SVG image, with its legend; no plotly.js (~4.8 MB)
    svgs = [base64.b64decode(m).decode() for m in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html)]
    assert any("only-in-the-plot" in s for s in svgs) and "Plotly.newPlot" not in html and len(html) < 1_000_000
    assert "slimkit run report" in html and f"{record.id} (p)</td>" in html  # the summary header opens it


# --- the notebook's side: setup and metrics ------------------------------------------------

@pytest.fixture
def restore_torch_flags():
    import torch

    flag = torch.are_deterministic_algorithms_enabled()
    state = torch.random.get_rng_state()
    yield
    torch.use_deterministic_algorithms(flag)
    torch.random.set_rng_state(state)


def test_notebook_setup_seeds_and_turns_on_deterministic_algorithms(restore_torch_flags):
    import torch

    from slimkit.runs.runner import notebook_setup

    torch.use_deterministic_algorithms(False)
    assert notebook_setup(3, "cpu") == torch.device("cpu")
    assert torch.are_deterministic_algorithms_enabled()
    a = torch.rand(3)
    notebook_setup(3, "cpu")
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize("seed, device, error, words", [
    (0, "gpu", InvalidParameterError, "device='gpu'"),
    (0, "meta", InvalidParameterError, "'cpu', 'cuda' or 'cuda:N'"),
    (0, 1, InvalidTypeError, "device must be a torch device name"),
    (-1, "cpu", InvalidParameterError, "seed=-1"),
    (True, "cpu", InvalidTypeError, "seed must be an int"),
])
def test_notebook_setup_rejects_bad_seeds_and_devices(seed, device, error, words, restore_torch_flags):
    from slimkit.runs.runner import notebook_setup

    with pytest.raises(error, match=re.escape(words)):
        notebook_setup(seed, device)


def test_notebook_setup_refuses_an_absent_gpu(restore_torch_flags):
    import torch

    from slimkit.errors import DeviceUnavailableError
    from slimkit.runs.runner import notebook_setup

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceUnavailableError, match=f"has {count} CUDA device"):
        notebook_setup(0, f"cuda:{count}")


def test_save_metrics_writes_what_the_runner_reads(tmp_path):
    import numpy as np

    from slimkit.runs.runner import METRICS_FILE, _read_metrics, save_metrics

    path = save_metrics({"accuracy": np.float32(0.5), "loss": float("nan"), "pick": "int8", "tried": [{"a": 1}]},
                        tmp_path / METRICS_FILE)
    assert _read_metrics(tmp_path) == {"accuracy": 0.5, "loss": None, "pick": "int8", "tried": [{"a": 1}]}
    assert json.loads(path.read_text())["loss"] is None  # valid JSON: no bare NaN
    with pytest.raises(InvalidTypeError, match="metrics must be a dict"):
        save_metrics([1, 2], tmp_path / "m.json")
    with pytest.raises(InvalidTypeError, match="JSON-serialisable"):
        save_metrics({"model": object()}, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_a_real_kernel_uses_ipc_and_gets_the_run_id(tmp_path, store):
    """The kernel starts race-free (ipc: no TCP port to lose between picking and binding it) and
    its metrics carry the run id the runner gave it (metrics of another run are not credited)."""
    nb = make_notebook(tmp_path / "ipc.ipynb", PARAMS, (
        "import json, os\nfrom ipykernel import get_connection_info\n"
        "transport = json.loads(get_connection_info())['transport']\n"
        "json.dump({'transport': transport, '_run_id': os.environ['SLIMKIT_RUN_ID']}, open('metrics.json', 'w'))"))
    record = run(nb, out=tmp_path, name="ipc", store=store)
    assert record.status == "ok", record.error
    assert record.metrics == {"transport": "ipc" if sys.platform.startswith("linux") else "tcp"}
