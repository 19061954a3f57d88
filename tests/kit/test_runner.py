"""Headless runs: parameter checking before any kernel, run directories, faults recorded as failed."""
import json
import re
import sys

import pytest
import yaml
from notebook_factory import PARAMS, make_notebook

from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.params import NotebookParameterError, parse_cell, read_signature
from slimkit.records import RunStore
from slimkit.runner import prepare, run


@pytest.fixture
def tiny(tmp_path):
    return make_notebook(tmp_path / "tiny.ipynb")


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "records.sqlite") as s:
        yield s


# --- the parameters cell ------------------------------------------------------------------------

def test_parameters_cell_gives_types_defaults_help_and_constraints():
    sig = parse_cell(PARAMS + '\nout: str | None = None  # where\nsizes = [1, 2]  # a list\nk: "int" = 3')
    p = sig.parameters
    assert list(p) == ["x", "name", "seed", "device", "fail", "sleep", "out", "sizes", "k"]
    assert (p["x"].type, p["x"].default, p["x"].help) == ("float", 0.5, "in [0, 1)")
    assert (p["x"].low, p["x"].high, p["x"].low_open, p["x"].high_open) == (0, 1, False, True)
    assert p["name"].choices == ("a", "b")
    assert p["out"].optional and p["out"].type == "str"
    assert p["sizes"].type == "list" and p["k"].type == "int"
    assert sig.defaults()["fail"] is False


@pytest.mark.parametrize("values, error, words", [
    ({"x": 1.0}, InvalidParameterError, "[0, 1)"),         # open upper bound
    ({"x": -0.1}, InvalidParameterError, "x=-0.1"),
    ({"x": float("nan")}, InvalidParameterError, "x=nan"),
    ({"x": "0.5"}, InvalidTypeError, "x must be a float"),  # a string is not a float
    ({"x": True}, InvalidTypeError, "got bool"),            # nor is a bool
    ({"seed": 1.5}, InvalidTypeError, "seed must be an int"),
    ({"name": "c"}, InvalidParameterError, "one of 'a', 'b'"),
    ({"fail": 1}, InvalidTypeError, "fail must be a bool"),
    ({"sparsity": 0.5}, InvalidParameterError, "one of x, name, seed"),  # unknown name
])
def test_bad_values_are_errors_naming_the_parameter(values, error, words):
    with pytest.raises(error) as e:
        parse_cell(PARAMS).validate(values)
    assert words in str(e.value)


def test_ints_are_accepted_as_floats_and_converted():
    assert parse_cell(PARAMS).validate({"x": 0, "seed": 3}) == {"x": 0.0, "seed": 3}


def test_command_line_strings_are_typed_by_the_cell():
    sig = parse_cell(PARAMS)
    assert sig.coerce("x", "0.25") == 0.25
    assert sig.coerce("name", "b") == "b"
    assert sig.coerce("fail", "true") is True
    assert sig.coerce("seed", "7") == 7
    with pytest.raises(InvalidTypeError):
        sig.coerce("fail", "maybe")
    with pytest.raises(InvalidParameterError, match="nope"):
        sig.coerce("nope", "1")


def test_notebook_without_parameters_cell_or_file_is_an_error(tmp_path):
    import nbformat as nbf

    plain = tmp_path / "plain.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell("x = 1")]), plain)
    with pytest.raises(NotebookParameterError, match="tagged 'parameters'"):
        read_signature(plain)
    with pytest.raises(NotebookParameterError, match="does not exist"):
        read_signature(tmp_path / "missing.ipynb")


def test_bad_parameters_fail_before_any_kernel_and_leave_nothing(tiny, tmp_path, store, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    for params in ({"x": 2.0}, {"typo": 1}):
        with pytest.raises(InvalidParameterError):
            run(tiny, params, out=tmp_path / "runs", store=store)
    with pytest.raises(InvalidParameterError, match="device"):
        prepare(make_notebook(tmp_path / "nodev.ipynb", "x: float = 0.5"), out=tmp_path, device="cpu")
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


def test_html_report_shows_plotly_figures_offline(tmp_path, store):
    nb = make_notebook(tmp_path / "plot.ipynb", "seed: int = 0  # seed", (
        "import plotly.graph_objects as go, plotly.io as pio\n"
        "pio.renderers.default = 'plotly_mimetype'\n"
        "go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name='only-in-the-plot')).show()"))
    record = run(nb, out=tmp_path, name="p", store=store, html=True)
    assert record.status == "ok", record.error
    html = (tmp_path / "p" / "plot.html").read_text()
    assert "only-in-the-plot" in html and "Plotly.newPlot" in html
    assert not re.findall(r'<script[^>]*src="https?://[^"]*plotly', html)  # nothing from a CDN
    assert len(html) > 1_000_000  # plotly.js is inlined
