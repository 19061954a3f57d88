"""Dependencies flow one way: the core imports neither widgets, accel nor notebook libraries."""
import ast
import subprocess
import sys
from pathlib import Path

KIT = Path(__file__).resolve().parents[2] / "kit"
FORBIDDEN = ("slimkit.widgets", "slimkit.accel", "ipywidgets", "anywidget", "plotly", "IPython",
             "papermill", "nbformat", "nbconvert", "jupyter", "distributed", "dask")


def test_importing_slimkit_loads_no_notebook_library():
    code = ("import sys, slimkit; bad = [m for m in sys.modules if m.split('.')[0] in "
            f"{[f.split('.')[0] for f in FORBIDDEN if '.' not in f]!r} or m in ('slimkit.widgets', 'slimkit.accel')]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing slimkit pulled in: {out}"


def test_core_modules_never_import_widgets_or_accel_at_top_level():
    offenders = []
    for path in sorted(KIT.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # top level only: lazy imports inside functions are allowed
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                names = [("slimkit." + mod) if node.level else mod] + [
                    f"slimkit.{a.name}" for a in node.names if node.level and not mod]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(FORBIDDEN)
                          or n.startswith((".widgets", ".accel"))]
    assert not offenders, offenders
