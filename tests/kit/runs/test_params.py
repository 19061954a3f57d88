"""A notebook's parameters cell as a typed signature: parsing, validation, command-line typing,
and the conventions every notebook in notebooks/ keeps (checked without starting a kernel)."""
import json

import pytest
from notebook_factory import NOTEBOOK_DIR, PARAMS, make_notebook, repo_notebooks

from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.runs.params import NotebookParameterError, parse_cell, parse_value, read_signature



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


def test_optional_and_untyped_parameters():
    sig = parse_cell('t: float | None = None  # a threshold, in [0, 1]\nu = None  # anything\nv = 3  # inferred int')
    assert sig.validate({"t": None, "u": "x"}) == {"t": None, "u": "x"}
    assert sig.validate({"t": 0.5}) == {"t": 0.5}
    with pytest.raises(InvalidParameterError, match=r"t=1.5 .*\[0, 1\]"):
        sig.validate({"t": 1.5})
    with pytest.raises(InvalidTypeError, match="v must be an int"):
        sig.validate({"v": "3"})
    assert sig.coerce("t", "None") is None and sig.coerce("t", "0.25") == 0.25
    with pytest.raises(InvalidTypeError, match="v must be an int"):
        sig.validate({"v": None})


def test_command_line_values_parse_as_yaml_scalars_and_lists():
    assert parse_value("[8, 4]") == [8, 4] and parse_value("true") is True and parse_value("1e-3") == 0.001
    assert parse_value("0.001") == 0.001 and parse_value("magnitude") == "magnitude"
    assert parse_value("[unclosed") == "[unclosed"  # not YAML: taken as a string, then type-checked


def test_a_parameters_cell_that_is_not_python_is_a_clear_error(tmp_path):
    nb = make_notebook(tmp_path / "broken.ipynb", "x: float = = 0.5")
    with pytest.raises(NotebookParameterError, match="not valid Python"):
        read_signature(nb)
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(NotebookParameterError, match="not a readable notebook"):
        read_signature(bad)


# --- the repository's notebooks keep the conventions ------------------------------------------

def test_the_tutorial_notebooks_are_all_there():
    names = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert names >= {"flagship", "quantize", "prune", "distill", "sparsify", "minilm", "which_method"}


@pytest.mark.parametrize("notebook", repo_notebooks())
def test_notebook_parameters_are_typed_documented_and_valid(notebook):
    nb = json.loads(notebook.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    sig = read_signature(notebook)
    assert {"seed", "device"} <= set(sig.parameters)
    assert sig.parameters["seed"].type == "int" and sig.parameters["device"].type == "str"
    for p in sig.parameters.values():
        assert p.type != "any" or p.optional, f"{p.name} has no type annotation"
        assert p.help, f"{p.name} has no help comment"
    assert sig.validate(sig.defaults()) == sig.defaults()  # the defaults obey their own constraints
    assert nb["metadata"]["kernelspec"]["name"] == "slimkit"


@pytest.mark.parametrize("notebook", repo_notebooks())
def test_papermill_documents_the_same_parameters(notebook):
    import papermill

    ours = read_signature(notebook).parameters
    theirs = papermill.inspect_notebook(str(notebook))  # what `papermill --help-notebook` prints
    assert list(theirs) == list(ours)
    for name, p in theirs.items():
        assert p["help"] == ours[name].help
        assert parse_value(p["default"]) == ours[name].default or (p["default"] == "None" and ours[name].default is None)


def test_papermill_help_notebook_prints_the_parameters():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOK_DIR / "prune.ipynb")],
                         capture_output=True, text=True, timeout=120).stdout
    assert "sparsity: float (default 0.8)" in out and "fraction of weights" in out and "seed: int" in out


@pytest.mark.parametrize("notebook", repo_notebooks())
def test_stored_outputs_are_small_text_and_sanitizable(notebook):
    """What nbval compares is stored as text; cells tagged nbval-ignore-output (plots, timings)
    keep only static displays (tables, SVG, plotly JSON), so an opened notebook shows them while
    the files stay small and carry no plotly.js, HTML, widget state, stderr or errors."""
    nb = json.loads(notebook.read_text())
    assert notebook.stat().st_size < 1_000_000  # the budget for outputs is 2 MB
    assert "widgets" not in nb["metadata"]
    static = {"text/markdown", "image/svg+xml", "image/png", "application/vnd.plotly.v1+json", "text/plain"}
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error" and out.get("name") != "stderr"
            if "nbval-ignore-output" in tags:
                assert out["output_type"] == "display_data" and set(out["data"]) <= static, set(out["data"])
            else:
                assert "application/vnd.plotly.v1+json" not in out.get("data", {})
            assert "plotly.min.js" not in json.dumps(out) and "<script" not in json.dumps(out)
