"""`slimkit run` probed as an attacker and an impatient user would: parameter values that
papermill would write into the notebook as code, oversized values and bad -f files; run folders
that escape --out, overwrite what is there or are shared by two runs at once; metrics credited
to the wrong run; kernels that die before any cell ran."""
import base64
import json
import math
import threading

import pytest
import yaml
from notebook_factory import PARAMS, make_notebook

from slimkit.runs.cli import main
from slimkit.errors import InvalidParameterError, InvalidTypeError, SlimkitError

EXTRA = '''
bits: list = [8]  # bit widths
cfg: dict = {}  # options
anything = None  # untyped'''


@pytest.fixture
def nb(tmp_path):
    return make_notebook(tmp_path / "nb.ipynb", PARAMS + EXTRA)


@pytest.fixture
def kernel(monkeypatch):
    """papermill stand-in: writes the parameters as papermill does and executes that code, as
    the kernel would (so an injection creates its marker file), without starting a kernel."""
    import papermill
    from papermill.translators import PythonTranslator

    calls = []

    def execute_notebook(input_path, output_path, parameters=None, **kwargs):
        calls.append(parameters)
        exec(PythonTranslator.codify(parameters or {}), {})  # noqa: S102 - the point of the test

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def binary(marker, close: str = '"]') -> str:
    """YAML bytes whose str() ``close``s papermill's string (and list, dict) and runs code creating
    ``marker``: papermill writes ``["b'"]; open("marker", "w")  #'"]``."""
    code = f'{close}; open("{marker}", "w")  #'
    return "!!binary " + base64.b64encode(code.encode()).decode()


def test_the_payload_is_code_when_papermill_formats_it(tmp_path):
    """The premise of the tests below: papermill writes bytes unescaped, and that runs."""
    from papermill.translators import PythonTranslator

    marker = tmp_path / "pwned"
    exec(PythonTranslator.codify({"bits": yaml.safe_load(f"[{binary(marker)}]")}), {})  # noqa: S102
    assert marker.exists()


@pytest.mark.parametrize("name, text, close", [
    ("bits", "[{payload}]", '"]'),          # inside a list
    ("cfg", "{{k: {payload}}}", '"}}'),     # inside a dict
    ("anything", "{payload}", '"'),         # an untyped parameter
])
def test_injection_via_p_never_reaches_papermill(nb, tmp_path, kernel, capsys, name, text, close):
    marker = tmp_path / "pwned"
    out = tmp_path / "runs"
    payload = binary(marker, close.replace("}}", "}"))
    assert main(["run", str(nb), "-p", name, text.format(payload=payload), "--out", str(out)]) == 2
    assert "plain JSON data" in capsys.readouterr().err
    assert kernel == [] and not marker.exists() and not out.exists()


def test_injection_via_a_params_file_never_reaches_papermill(nb, tmp_path, kernel, capsys):
    marker = tmp_path / "pwned"
    file = tmp_path / "p.yaml"
    payload = binary(marker, '"]}')
    file.write_text(f"cfg:\n  k: [{payload}]\n")
    assert main(["run", str(nb), "-f", str(file), "--out", str(tmp_path / "runs")]) == 2
    assert "cfg['k'][0] must be plain JSON data" in capsys.readouterr().err
    assert kernel == [] and not marker.exists()


def test_injection_inside_a_grid_is_refused_before_any_run(nb, tmp_path, kernel):
    from slimkit.runs.sweep import load_grid, plan

    marker = tmp_path / "pwned"
    grid = tmp_path / "g.yaml"
    payload = binary(marker, '"}')
    grid.write_text(f"grid:\n  cfg: [{{k: {payload}}}]\n")
    with pytest.raises(InvalidTypeError, match="plain JSON data"):
        plan(nb, load_grid(grid), out=tmp_path / "runs")
    assert kernel == [] and not marker.exists()


def test_the_python_api_refuses_values_papermill_cannot_write(nb, tmp_path, kernel):
    from slimkit.runs.runner import run

    for value in (b"x", {1, 2}, object(), {"k": (1, b"x")}, {1: "int key"}):
        with pytest.raises(SlimkitError, match="plain JSON data"):
            run(nb, {"anything": value}, out=tmp_path / "runs")
    assert kernel == []


@pytest.mark.parametrize("name, text, words", [
    ("seed", "1" * 5000, "ints within 64 bits"),
    ("seed", str(2**63), "ints within 64 bits"),
    ("bits", "[" * 9 + "1" + "]" * 9, "nesting at most 8 deep"),
    ("bits", "[" * 1100 + "]" * 1100, "nesting at most 8 deep"),  # too deep for the YAML parser
    ("cfg", "{k: " + "x" * 10_001 + "}", "strings of at most 10,000 characters"),
    ("anything", ".inf", "finite floats"),
    ("bits", "[.nan]", "finite floats"),
])
def test_oversized_values_are_parameter_errors_naming_the_limit(nb, tmp_path, kernel, capsys, name, text, words):
    assert main(["run", str(nb), "-p", name, text, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slimkit run: {name}") and words in err and len(err) < 2000  # the value is cut short
    assert kernel == []


def test_plain_values_pass_and_tuples_become_lists():
    from slimkit.runs.params import check_plain

    value = {"a": [1, 2.5, None, True, "s", (3, 4)], "b": {"c": [[[]]]}}
    assert check_plain("p", value) == {"a": [1, 2.5, None, True, "s", [3, 4]], "b": {"c": [[[]]]}}
    with pytest.raises(InvalidParameterError, match=r"p=\[\[0, 1, 2, .*characters\) is not allowed.*at most 10,000 items"):
        check_plain("p", [list(range(5000)), list(range(5000))])
    assert math.isinf(check_plain("p", float("inf"), allow_inf=True))  # papermill writes float('inf')
    with pytest.raises(InvalidParameterError, match="finite floats"):
        check_plain("p", [float("inf")], allow_inf=True)
    with pytest.raises(InvalidTypeError, match=r"p\['k'\] key must be plain JSON data.*got int \(1\)"):
        check_plain("p", {"k": {1: "an int key"}})
    with pytest.raises(InvalidTypeError, match=r"p\[0\] must be plain JSON data.*got int64"):
        import numpy as np

        check_plain("p", [np.int64(1)])


@pytest.mark.parametrize("content, words", [
    (None, "expected an existing YAML file"),
    ("a: [1, 2\n", "expected valid YAML"),
    ("- 1\n- 2\n", "expected a YAML mapping"),
    (b"\xff\xfe\x00", "expected a readable UTF-8 YAML file"),
    ("dir", "expected a readable UTF-8 YAML file"),
    ("seed: " + "1" * 5000 + "\n", "ints within 64 bits"),
    ("x: [" + "1, " * 400_000 + "]\n", "at most 1,000,000 bytes"),
])
def test_bad_params_files_are_parameter_errors(nb, tmp_path, kernel, capsys, content, words):
    file = tmp_path / "p.yaml"
    if content == "dir":
        file.mkdir()
    elif isinstance(content, bytes):
        file.write_bytes(content)
    elif content is not None:
        file.write_text(content)
    assert main(["run", str(nb), "-f", str(file), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slimkit run: -f='{file}' is not allowed") and words in err
    assert kernel == []


# --- run folders ------------------------------------------------------------------------------

@pytest.fixture
def fake_papermill(monkeypatch):
    """papermill stand-in for the runner: ``behaviour(kwargs)`` plays the kernel (default: the
    notebook writes metrics through save_metrics, as in the run's kernel environment)."""
    import shutil

    import papermill

    def execute_notebook(input_path, output_path, parameters=None, cwd=None, **kwargs):
        calls.append(kwargs)
        shutil.copy(input_path, output_path)
        calls.behaviour(cwd, kwargs)

    def write_metrics(cwd, kwargs):
        env = kwargs["config"]["RunKernelManager"]["extra_env"]
        with monkeypatch.context() as m:
            m.setenv("SLIMKIT_RUN_ID", env["SLIMKIT_RUN_ID"])
            from slimkit.runs.runner import save_metrics

            save_metrics({"y": 1.0}, f"{cwd}/metrics.json")

    calls = type("Calls", (list,), {})()  # the kwargs of each call, and the behaviour to play
    calls.behaviour = write_metrics
    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


@pytest.fixture
def store(tmp_path):
    from slimkit.runs.records import RunStore

    with RunStore(tmp_path / "records.sqlite") as s:
        yield s


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "..", ".hidden", "a/b", "", "x" * 101, "a b", "a\nb"])
def test_a_run_name_must_be_a_plain_folder_name(nb, tmp_path, name):
    from slimkit.runs.runner import plan_run

    with pytest.raises(InvalidParameterError, match="a plain folder name: letters, digits"):
        plan_run(nb, out=tmp_path / "runs", name=name)


def test_cli_name_cannot_escape_out(nb, tmp_path, fake_papermill, capsys):
    out = tmp_path / "a" / "b" / "runs"
    assert main(["run", str(nb), "--out", str(out), "--name", "../../escaped"]) == 2
    assert "name='../../escaped' is not allowed: expected a plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "a" / "escaped").exists() and fake_papermill == []


def test_a_run_never_overwrites_its_source_notebook(tmp_path, fake_papermill, store):
    from slimkit.runs.runner import run

    src = make_notebook(tmp_path / "src" / "nb.ipynb", PARAMS)
    before = src.read_bytes()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "src")  # a symlinked folder is the same folder
    for out, name in ((tmp_path, "src"), (tmp_path / "runs", "link")):
        with pytest.raises(SlimkitError, match="would overwrite it"):
            run(src, out=out, name=name, store=store)
    assert src.read_bytes() == before and fake_papermill == [] and store.count() == 0


def test_a_folder_holding_other_files_is_refused_and_left_alone(nb, tmp_path, fake_papermill, store):
    from slimkit.runs.runner import run

    mine = tmp_path / "runs" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(SlimkitError, match=r"already holds files that are not a slimkit run \(notes.txt\)"):
        run(nb, out=tmp_path / "runs", name="mine", store=store)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and fake_papermill == [] and store.count() == 0


def test_a_finished_run_is_replaced_only_by_the_same_parameters_and_never_when_edited(nb, tmp_path, fake_papermill,
                                                                                    store):
    from slimkit.runs.runner import run

    out = tmp_path / "runs"
    first = run(nb, {"x": 0.1}, out=out, name="r", store=store)
    assert first.status == "ok" and first.metrics == {"y": 1.0}
    with pytest.raises(SlimkitError, match="already holds a run of other parameters"):
        run(nb, {"x": 0.2}, out=out, name="r", store=store)
    again = run(nb, {"x": 0.1}, out=out, name="r", store=store)  # a rerun (sweep --no-resume, resume)
    assert again.status == "ok" and json.loads((out / "r" / "status.json").read_text())["run_id"] == again.id
    edited = out / "r" / "nb.ipynb"
    edited.write_text(edited.read_text().replace("0.5", "0.7"))  # the user works in the run's notebook
    with pytest.raises(SlimkitError, match="was changed after its run"):
        run(nb, {"x": 0.1}, out=out, name="r", store=store)
    assert "0.7" in edited.read_text() and len(fake_papermill) == 2


def test_two_runs_claiming_one_folder_at_once_one_wins(nb, tmp_path):
    from slimkit.runs.folders import claim
    from slimkit.runs.runner import plan_run

    specs = [plan_run(nb, out=tmp_path, name="same") for _ in range(2)]
    ready, release = threading.Barrier(2), threading.Event()
    outcome = {}

    def contend(spec):
        ready.wait()
        try:
            with claim(spec):
                outcome[spec.run_id] = "won"
                release.wait(10)
        except SlimkitError as e:
            outcome[spec.run_id] = str(e)
            release.set()

    threads = [threading.Thread(target=contend, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(outcome.values())[-1] == "won"
    lost = sorted(outcome.values())[0]
    winner = next(i for i, v in outcome.items() if v == "won")
    assert f"is in use by run {winner} (pid" in lost and "choose another --name" in lost


def test_a_run_into_a_folder_in_use_is_refused_before_it_is_recorded(nb, tmp_path, fake_papermill, store):
    from slimkit.runs.folders import claim
    from slimkit.runs.runner import plan_run, run_spec

    with claim(plan_run(nb, out=tmp_path, name="busy")):
        with pytest.raises(SlimkitError, match="is in use by run"):
            run_spec(plan_run(nb, out=tmp_path, name="busy"), store)
    assert store.count() == 0 and fake_papermill == []


def test_metrics_written_by_another_run_are_not_credited(nb, tmp_path, fake_papermill, store):
    from slimkit.runs.runner import run

    def other_run_writes(cwd, kwargs):  # a concurrent run of the same name, in the same folder
        (tmp_path / "runs" / "r" / "metrics.json").write_text(json.dumps({"y": 9.0, "_run_id": "someone-else"}))

    fake_papermill.behaviour = other_run_writes
    record = run(nb, out=tmp_path / "runs", name="r", store=store)
    assert record.status == "failed" and "written by run 'someone-else'" in record.error
    assert "y" not in record.metrics and "y" not in store.get(record.id).metrics


def test_save_metrics_names_the_run_it_belongs_to(tmp_path, monkeypatch):
    from slimkit.runs.runner import _read_metrics, save_metrics

    monkeypatch.setenv("SLIMKIT_RUN_ID", "run-1")
    save_metrics({"y": 1}, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"y": 1, "_run_id": "run-1"}
    assert _read_metrics(tmp_path, "run-1") == {"y": 1}
    assert "not credited" in _read_metrics(tmp_path, "run-2")["_error"]


# --- kernel start -----------------------------------------------------------------------------

def test_a_kernel_that_dies_before_any_cell_is_started_once_more(nb, tmp_path, fake_papermill, store):
    from slimkit.runs.runner import run

    def dies_first(cwd, kwargs):
        if len(fake_papermill) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        (tmp_path / "runs" / "r" / "metrics.json").write_text('{"y": 2}')

    fake_papermill.behaviour = dies_first
    record = run(nb, out=tmp_path / "runs", name="r", store=store)
    assert record.status == "ok" and record.metrics == {"y": 2} and len(fake_papermill) == 2


def test_a_kernel_that_never_starts_is_reported_after_the_retry(nb, tmp_path, fake_papermill, store):
    from slimkit.runs.runner import run

    def never(cwd, kwargs):
        raise RuntimeError("Kernel died before replying to kernel_info")

    fake_papermill.behaviour = never
    record = run(nb, out=tmp_path / "runs", name="r", store=store)
    assert record.status == "failed" and len(fake_papermill) == 2
    assert record.error == ("KernelDidNotStart: the kernel failed before any cell ran, 2 times: "
                            "RuntimeError: Kernel died before replying to kernel_info")


def test_a_failure_after_a_cell_started_is_not_retried(nb, tmp_path, fake_papermill, store):
    from nbformat.v4 import new_code_cell

    from slimkit.runs.runner import run

    def dies_in_a_cell(cwd, kwargs):
        kwargs["on_cell_start"](cell=new_code_cell("x = 1"), cell_index=0)
        raise RuntimeError("Kernel died")

    fake_papermill.behaviour = dies_in_a_cell
    record = run(nb, out=tmp_path / "runs", name="r", store=store)
    assert record.status == "failed" and record.error == "RuntimeError: Kernel died" and len(fake_papermill) == 1


def test_kernels_use_ipc_with_a_private_connection_folder_on_linux(nb, tmp_path):
    import os
    import stat
    import sys

    from slimkit.runs.kernel import kernel_options
    from slimkit.runs.runner import plan_run

    if not sys.platform.startswith("linux"):
        pytest.skip("ipc transport is used on Linux")
    spec = plan_run(nb, out=tmp_path, name="r", threads=2)
    with kernel_options(spec) as options:
        manager = options["config"]["RunKernelManager"]
        folder = os.path.dirname(manager["connection_file"])
        assert manager["transport"] == "ipc" and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert manager["extra_env"] == {"SLIMKIT_RUN_ID": spec.run_id, "OMP_NUM_THREADS": "2",
                                        "MKL_NUM_THREADS": "2"}
    assert not os.path.exists(folder)  # removed with the kernel


def test_a_default_that_is_an_expression_is_written_to_params_yaml_as_text(tmp_path, fake_papermill, store):
    from slimkit.runs.runner import run

    nb = make_notebook(tmp_path / "expr.ipynb", "import os\nworkers: int = os.cpu_count()  # workers")
    fake_papermill.behaviour = lambda cwd, kwargs: None
    record = run(nb, out=tmp_path / "runs", name="r", store=store)
    assert record.status == "ok", record.error
    assert yaml.safe_load((tmp_path / "runs" / "r" / "params.yaml").read_text()) == {"workers": "os.cpu_count()"}
