"""nbval keeps the tutorial notebooks honest: each is re-executed cell by cell in the project
kernel and its outputs are compared with the ones stored in the file (measured decimals blanked
by nbval_sanitize.cfg; plots and timings sit in cells tagged ``nbval-ignore-output``).

Each notebook runs from a copy in a scratch folder: what it writes (metrics.json) stays out of
the source tree. nbval runs in a child pytest, so its options live here, in one place."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from notebook_factory import repo_notebooks

SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")


def nbval(notebook: Path, kernel: str, scratch: Path) -> subprocess.CompletedProcess:
    """``pytest --nbval`` on a copy of ``notebook`` in ``scratch``, with this project's options."""
    copy = scratch / notebook.name
    if copy != notebook:
        shutil.copy(notebook, copy)
    env = {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", str(copy), "--nbval-kernel-name", kernel,
         "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", "600",
         "-p", "no:cacheprovider", "--rootdir", str(scratch), "-q", "--no-header", "-W", "ignore"],
        cwd=scratch, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", repo_notebooks())
def test_nbval(notebook, kernel, tmp_path):
    proc = nbval(notebook, kernel, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


CASES = [  # (printed now, stored in the notebook, nbval passes)
    ("accuracy 97.3%, drop 1.1 pt, SQNR 40.2 dB", "accuracy 98.4%, drop 0.0 pt, SQNR 41.8 dB", True),
    ("mean cosine 0.9978, worst 0.9901", "mean cosine 0.9989, worst 0.9981", True),
    ("1,136,872 bytes, 4 layers quantized", "1,136,872 bytes, 4 layers quantized", True),
    ("1,136,873 bytes, 4 layers quantized", "1,136,872 bytes, 4 layers quantized", False),  # sizes are exact
    ("pick: int8", "pick: int4", False),
]


def test_the_sanitizers_blank_measured_decimals_only(tmp_path, kernel):
    import nbformat as nbf

    nb = nbf.v4.new_notebook()
    for i, (printed, stored, _) in enumerate(CASES):
        cell = nbf.v4.new_code_cell(f"print({printed!r})", execution_count=i + 1)
        cell.outputs = [nbf.v4.new_output("stream", name="stdout", text=stored + "\n")]
        nb.cells.append(cell)
    path = tmp_path / "stored.ipynb"
    nbf.write(nb, path)
    proc = nbval(path, kernel, tmp_path)
    failed = {int(n) for n in re.findall(r"FAILED stored.ipynb::Cell (\d+)", proc.stdout)}
    assert failed == {i for i, (_, _, passes) in enumerate(CASES) if not passes}, proc.stdout[-3000:]
    # Failed on the comparison, not on running. Only the failure reports count: whether the short
    # summary repeats the message depends on the environment (pytest prints it in full when $CI is set).
    reports = proc.stdout.split("short test summary info")[0]
    assert reports.count("Cell outputs differ") == len(failed), proc.stdout[-3000:]
