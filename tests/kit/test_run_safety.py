"""`slimkit run` probed as an attacker and an impatient user would: parameter values that
papermill would write into the notebook as code, oversized values and bad -f files."""
import base64
import math

import pytest
import yaml
from notebook_factory import PARAMS, make_notebook

from slimkit.cli import main
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
    from slimkit.sweep import load_grid, plan

    marker = tmp_path / "pwned"
    grid = tmp_path / "g.yaml"
    payload = binary(marker, '"}')
    grid.write_text(f"grid:\n  cfg: [{{k: {payload}}}]\n")
    with pytest.raises(InvalidTypeError, match="plain JSON data"):
        plan(nb, load_grid(grid), out=tmp_path / "runs")
    assert kernel == [] and not marker.exists()


def test_the_python_api_refuses_values_papermill_cannot_write(nb, tmp_path, kernel):
    from slimkit.runner import run

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
    from slimkit.params import check_plain

    value = {"a": [1, 2.5, None, True, "s", (3, 4)], "b": {"c": [[[]]]}}
    assert check_plain("p", value) == {"a": [1, 2.5, None, True, "s", [3, 4]], "b": {"c": [[[]]]}}
    with pytest.raises(InvalidParameterError, match=r"p=\[\[0, 1, 2, .*characters\) is not allowed.*at most 10,000 items"):
        check_plain("p", [list(range(5000)), list(range(5000))])
    assert math.isinf(check_plain("p", float("inf"), allow_inf=True))  # papermill writes float('inf')
    with pytest.raises(InvalidParameterError, match="finite floats"):
        check_plain("p", [float("inf")], allow_inf=True)
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
