"""Dependencies flow one way. The core (``kit/`` outside ``kit/runs/``) imports no notebook
library, not even inside a function, and never ``slimkit.runs``, ``slimkit.widgets`` or
``slimkit.accel``; ``accel`` never imports ``widgets``. Only ``slimkit.runs`` (papermill runs,
records, sweeps, HTML reports) may import notebook libraries."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_LIBS = ("ipywidgets", "anywidget", "plotly", "IPython", "papermill", "nbformat", "nbconvert",
                 "nbclient", "jupyter", "jupyter_client", "distributed", "dask")


def _package(path: Path) -> list[str]:
    """The dotted package a source file belongs to, as installed (kit/ is slimkit)."""
    top, *rest = path.relative_to(ROOT).parent.parts
    return ["slimkit"] + ([] if top == "kit" else [top]) + list(rest)


def imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (lazy imports included), relative ones resolved."""
    pkg = _package(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return found


def _offenders(folder: Path, banned: tuple[str, ...], skip: str | None = None) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        if skip and skip in path.relative_to(ROOT).parts:
            continue
        out += [f"{path.relative_to(ROOT)}: {name}" for name in imports(path)
                if any(name == b or name.startswith(b + ".") for b in banned)]
    return out


def test_the_core_never_imports_notebook_libraries_the_run_layer_widgets_or_accel():
    banned = NOTEBOOK_LIBS + ("slimkit.runs", "slimkit.widgets", "slimkit.accel")
    assert _offenders(ROOT / "kit", banned, skip="runs") == []


def test_the_run_layer_never_imports_widgets_or_accel():
    assert _offenders(ROOT / "kit" / "runs", ("slimkit.widgets", "slimkit.accel")) == []


def test_accel_never_imports_widgets():
    assert _offenders(ROOT / "accel", ("slimkit.widgets",)) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The test above would pass vacuously if imports() missed imports inside functions."""
    names = imports(ROOT / "kit" / "measure.py") + imports(ROOT / "kit" / "quant" / "affine.py")
    assert "slimkit.errors" in names and "slimkit.devices" in names  # relative imports, two depths
    lazy = ROOT / "kit" / "runs" / "runner.py"
    assert any(n.startswith("papermill") for n in imports(lazy))  # imported inside a function there


def test_importing_slimkit_loads_no_notebook_library():
    code = ("import sys, slimkit, slimkit.zoo; "
            f"bad = [m for m in sys.modules if m.split('.')[0] in {list(NOTEBOOK_LIBS)!r} "
            "or m.startswith(('slimkit.widgets', 'slimkit.accel', 'slimkit.runs'))]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing slimkit pulled in: {out}"
