"""Notebooks for tests: the repository's tutorial notebooks, and tiny ones for testing the runner
(a parameters cell plus code cells, written with nbformat)."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def repo_notebooks() -> list:
    """One pytest param per notebooks/*.ipynb, named after it."""
    return [pytest.param(p, id=p.stem) for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))]

PARAMS = '''x: float = 0.5  # in [0, 1)
name: str = "a"  # one of a, b
seed: int = 0  # random seed
device: str = "cpu"  # torch device
fail: bool = False  # raise in a cell
sleep: float = 0.0  # seconds a cell sleeps'''

BODY = '''import json, os, sys, time
time.sleep(sleep)
if fail:
    raise RuntimeError("boom from the notebook")
json.dump({"y": x * 2, "name": name, "seed": seed, "python": sys.executable, "ppid": os.getppid()},
          open("metrics.json", "w"))
print("done", x)'''


def make_notebook(path: str | Path, params: str = PARAMS, *cells: str, kernel: str = "python3") -> Path:
    import nbformat as nbf

    nb = nbf.v4.new_notebook()
    cell = nbf.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbf.v4.new_code_cell(src) for src in (cells or (BODY,))]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(nb, path)
    return path
