"""Each tutorial is a pair: notebooks/NAME.py (jupytext percent format, the source one edits) and
notebooks/NAME.ipynb (what Jupyter, nbval and papermill open, with stored outputs). They must hold
the same cells: an edit to one side that was not synced (and re-executed) fails here."""
from pathlib import Path

import jupytext
import nbformat
import pytest

DIR = Path(__file__).resolve().parents[2] / "notebooks"
STEMS = sorted({p.stem for p in DIR.glob("*.py")} | {p.stem for p in DIR.glob("*.ipynb")})


def cells(nb) -> list[tuple[str, str, list[str]]]:
    """What a pair must agree on: each cell's type, source and tags (outputs and ids aside)."""
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_every_notebook_is_a_pair():
    assert STEMS, "no notebooks found"
    for stem in STEMS:
        assert (DIR / f"{stem}.py").exists() and (DIR / f"{stem}.ipynb").exists(), f"{stem} is not paired"


@pytest.mark.parametrize("stem", STEMS)
def test_the_pair_holds_the_same_cells(stem):
    text = jupytext.read(DIR / f"{stem}.py")
    stored = nbformat.read(DIR / f"{stem}.ipynb", as_version=4)
    assert cells(text) == cells(stored), (
        f"notebooks/{stem}.py and .ipynb differ: run `bash scripts/notebooks.sh {stem}` (see notebooks/README.md)")
    for nb in (text, stored):
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
        assert nb.metadata["kernelspec"]["name"] == "slimkit"


def test_a_differing_pair_is_caught(tmp_path):
    stored = nbformat.read(DIR / "prune.ipynb", as_version=4)
    edited = jupytext.reads(jupytext.writes(stored, fmt="py:percent").replace(
        'score: str = "magnitude"', 'score: str = "fisher"'), fmt="py:percent")
    assert cells(jupytext.reads(jupytext.writes(stored, fmt="py:percent"), fmt="py:percent")) == cells(stored)
    assert cells(edited) != cells(stored)
