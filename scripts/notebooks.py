"""Make each notebooks/NAME.ipynb from its source, notebooks/NAME.py (jupytext percent format),
and store the outputs nbval compares against:

    .venv/bin/python scripts/notebooks.py             # every notebook
    .venv/bin/python scripts/notebooks.py prune       # just prune.ipynb

Each notebook is executed once with its defaults in the project kernel (``slimkit``), in a scratch
folder, and saved with its outputs. Cells tagged ``nbval-ignore-output`` (plots, timings: they differ
run to run) keep only their displays (tables, figures as SVG + plotly JSON, no HTML), so an opened
notebook shows its latency table and plots: nbval does not compare them. Compared outputs must
be deterministic text: this refuses to store stderr or an error in them.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "slimkit"
IGNORE = "nbval-ignore-output"
# displays of an ignored cell worth storing: tables and figures (not widgets: their state is not stored)
STATIC = {"text/markdown", "image/svg+xml", "image/png", "application/vnd.plotly.v1+json"}


def execute(nb, name: str):
    """Run ``nb`` in the project kernel, then keep the outputs nbval compares and drop the rest."""
    from nbclient import NotebookClient

    from slimkit.runs.runner import ensure_kernel

    ensure_kernel(KERNEL)
    with tempfile.TemporaryDirectory() as tmp:  # what the notebook writes (metrics.json) stays out
        NotebookClient(nb, kernel_name=KERNEL, timeout=900, store_widget_state=False,  # the panel: ~100 kB
                       resources={"metadata": {"path": tmp}}).execute()
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name}-{i:02d}"  # stable ids: regenerating does not churn the diff
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if IGNORE in cell.metadata.get("tags", []):
            cell.outputs = [shown(out) for out in cell.outputs if STATIC & set(out.get("data", {}))]
            continue
        cell.outputs = coalesce(cell.outputs)
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                raise RuntimeError(f"{name}.py cell {i} writes to stderr, which nbval would compare: "
                                   f"{out.text[:300]!r}; silence it or tag the cell {IGNORE}")
            if out.output_type == "error":
                raise RuntimeError(f"{name}.py cell {i} failed: {out.ename}: {out.evalue}")
    return nb


def shown(out):
    """A display as stored: no HTML twin (a plotly figure's would inline ~4.8 MB of plotly.js)."""
    out.data.pop("text/html", None)
    return out


def coalesce(outputs: list) -> list:
    """Consecutive prints as one stream output: how the kernel split them depends on timing."""
    merged = []
    for out in outputs:
        last = merged[-1] if merged else None
        if last is not None and out.output_type == last.output_type == "stream" and out.name == last.name:
            last.text += out.text
        else:
            merged.append(out)
    return merged


def main(names: list[str]) -> None:
    import jupytext
    import nbformat

    os.environ.setdefault("SLIMKIT_CACHE", str(ROOT / ".pytest_cache" / "slimkit-models"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    known = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
    for name in names or known:
        if name not in known:
            sys.exit(f"unknown notebook {name!r}: one of {', '.join(known)}")
        nb = execute(jupytext.read(NOTEBOOKS / f"{name}.py"), name)
        nbformat.validate(nb)
        jupytext.write(nb, NOTEBOOKS / f"{name}.ipynb", fmt="ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
