"""The `slimkit` command end to end: params, run, runs, compare (sweep: tests/kit/test_sweep.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from notebook_factory import make_notebook

from slimkit.runs.cli import main


@pytest.fixture
def tiny(tmp_path):
    return make_notebook(tmp_path / "tiny.ipynb")


def test_params_prints_names_types_defaults_and_help(tiny, capsys):
    assert main(["params", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "x: float = 0.5  # in [0, 1)" and 'name: str = \'a\'  # one of a, b' in out


@pytest.mark.parametrize("args, words", [
    (["-p", "x", "2"], "x=2.0 is not allowed: expected a float in [0, 1)"),
    (["-p", "x", "half"], "x must be a float in [0, 1), got str"),
    (["-p", "typo", "1"], "typo='1' is not allowed: expected a parameter of tiny.ipynb"),
    (["-p", "fail", "maybe"], "fail must be a bool"),
])
def test_bad_parameters_exit_2_before_any_kernel(tiny, tmp_path, capsys, args, words):
    assert main(["run", str(tiny), *args, "--out", str(tmp_path / "runs")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_params_file_that_is_not_a_mapping_is_an_error(tiny, tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("- 1\n- 2\n")
    assert main(["run", str(tiny), "-f", str(bad), "--out", str(tmp_path)]) == 2
    assert "a YAML mapping" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_refused_before_any_kernel(tiny, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", str(tiny), "--device", "cuda", "--out", str(tmp_path / "runs")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_runs_compare_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"x": 0.1, "name": "b"}))
    # -f file, then -p wins; the run is recorded in OUT/records.sqlite
    assert main(["run", str(tiny), "-f", str(params), "-p", "x", "0.25", "--out", str(out), "--name", "first",
                 "--no-html"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {out / 'first'}")
    assert yaml.safe_load((out / "first" / "params.yaml").read_text())["x"] == 0.25
    assert main(["run", str(tiny), "-p", "fail", "true", "--out", str(out), "--name", "second", "--no-html"]) == 1
    assert "boom from the notebook" in capsys.readouterr().err

    assert main(["runs", "--out", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "ok" in listing and "failed" in listing and "boom" in listing
    assert main(["runs", "--out", str(out), "--status", "failed", "--json"]) == 0
    failed = json.loads(capsys.readouterr().out)
    assert [r["params"]["fail"] for r in failed] == [True] and failed[0]["hardware"]["cpu_model"]
    assert main(["runs", "--out", str(out), "--where", "name=b"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # header, rule and the one run with name b
    assert main(["runs", "--out", str(out), "--where", "nonsense"]) == 2

    assert main(["compare", "--out", str(out), "--status", "ok", "--compare-out", str(tmp_path / "cmp"),
                 "--x", "y", "--y", "seed"]) == 0
    table = capsys.readouterr().out
    assert "| id | status | notebook |" in table and "tiny.ipynb" in table
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.csv", "compare.md", "compare.html"}
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<svg" in page and "Plotly.newPlot" not in page and len(page) < 500_000  # static: no plotly.js
    assert main(["compare", "nope", "--out", str(out)]) == 2
    assert "the id of a recorded run" in capsys.readouterr().err


@pytest.mark.slow
def test_the_console_script_runs_a_notebook(tiny, tmp_path):
    script = Path(sys.executable).with_name("slimkit")
    proc = subprocess.run([str(script), "run", str(tiny), "-p", "x", "0.3", "--out", str(tmp_path), "--name", "r"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["y"] == 0.6
    assert (tmp_path / "r" / "tiny.html").exists()  # `slimkit run` writes the HTML report by default


# --- the help: plain text, every option explained, nothing heavy imported -------------------------

def _subparsers():
    from slimkit.runs.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, sub.choices


def test_every_option_of_every_command_has_help():
    _, commands = _subparsers()
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, sp in commands.items()
               for a in sp._actions if not a.help and a.dest != "help"]
    assert not missing


def test_help_is_plain_text_with_descriptions_and_examples():
    parser, commands = _subparsers()
    pages = {"": parser.format_help(), **{n: sp.format_help() for n, sp in commands.items()}}
    for name, page in pages.items():
        assert "``" not in page and ":func:" not in page, name  # no reStructuredText markup
    for name in ("runs", "compare", "run", "sweep", "params"):
        assert "examples:" in pages[name] or "example:" in pages[name], name
        assert commands[name].description, name
    # --x/--y name the metrics they accept, and say where to see them all
    assert all(m in pages["compare"] for m in ("accuracy", "size_bytes", "latency_ms", "slimkit runs --json"))


def test_status_help_lists_every_status():
    from slimkit.runs.records import STATUSES

    _, commands = _subparsers()
    text = " ".join(commands["runs"].format_help().split())
    assert all(s in text for s in STATUSES)


def test_kernel_help_names_the_default_kernel():
    from slimkit.runs.kernel import KERNEL_NAME

    _, commands = _subparsers()
    assert f"default: {KERNEL_NAME}" in commands["run"].format_help()


HEAVY = ("torch", "papermill", "nbformat", "nbconvert", "plotly", "matplotlib", "yaml", "jupyter_client")


def _imported_by_help(pre: str) -> list[str]:
    code = (f"import sys\n{pre}\nbefore = set(sys.modules)\nfrom slimkit.runs.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy_beyond_the_package_itself():
    assert _imported_by_help("import slimkit") == []


def test_help_does_not_import_torch():
    """`slimkit --help` answers in well under a second: torch alone takes seconds to import."""
    assert _imported_by_help("") == []


@pytest.mark.slow
def test_run_prints_progress_and_runs_lists_the_name(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", str(tiny), "-p", "x", "0.25", "--out", str(out), "--name", "my-run", "--no-html"]) == 0
    err = capsys.readouterr().err
    # the notebook's two code cells plus papermill's injected parameters cell
    assert [line.split(",")[0] for line in err.splitlines()] == ["cell 1 of 3", "cell 2 of 3", "cell 3 of 3"]
    assert "s elapsed" in err
    assert main(["runs", "--out", str(out)]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    assert header.split()[:2] == ["id", "name"] and row.split()[1] == "my-run"
    assert main(["run", str(tiny), "--out", str(out), "--name", "quiet", "--no-html", "-q"]) == 0
    assert "cell" not in capsys.readouterr().err
