"""The tutorials' Markdown renders as prose: a line indented by four spaces outside a code fence
is a code block in JupyterLab and in the HTML reports (7 of 8 intros were, once)."""
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def indented_prose(source: str) -> list[str]:
    out, fenced, prev_blank = [], False, True
    for line in source.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and prev_blank and not line.lstrip().startswith(("-", "*", "|")):
            out.append(line)
        prev_blank = not line.strip()
    return out


def test_the_checker_finds_an_indented_paragraph():
    assert indented_prose("# T\n\n    prose\nmore") == ["    prose"]
    assert indented_prose("# T\n\n```bash\n    code\n```") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cells_have_no_accidental_code_blocks(path):
    nb = nbformat.read(path, as_version=4)
    bad = {i: indented_prose(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"}
    assert not {i: b for i, b in bad.items() if b}
