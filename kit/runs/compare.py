"""Comparison across run records (``slimkit compare``): a CSV and a Markdown table of the runs,
and a scatter of one metric against another as offline HTML."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..table import markdown_table
from ..table import plot_text
from .records import Record, varying_keys


def comparison_rows(records: list[Record], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One flat row per run: id, status, notebook, parameters that vary, numeric metrics."""
    varying = varying_keys(r.params for r in records)
    if metrics is None:
        metrics = sorted({k for r in records for k, v in r.metrics.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
    rows = []
    for r in records:
        row: dict[str, Any] = {"id": r.id, "status": r.status, "notebook": Path(r.notebook).name}
        row.update({n: r.params.get(n) for n in varying})
        row.update({m: r.metrics.get(m) for m in metrics})
        row["duration_s"] = r.duration_s
        row["hardware"] = _hw(r.hardware)
        rows.append(row)
    return rows


def _hw(info: dict[str, Any]) -> str:
    if not info:
        return ""
    gpus = ", ".join(g.get("name", "?") for g in info.get("gpus", []))
    return f"{info.get('cpu_model', '?')} x{info.get('cpu_usable_cores', '?')}" + (f" + {gpus}" if gpus else "")


def compare_runs(records: list[Record], out_dir: str | Path, *, x: str | None = None, y: str | None = None,
            metrics: list[str] | None = None, title: str = "slimkit runs") -> dict[str, Path]:
    """Write ``compare.csv``, ``compare.md`` and (with plotly) ``compare.html``: a table of the
    runs and a scatter of metric ``y`` against ``x`` (default: the first two numeric metrics)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(records, metrics)
    cols = list(dict.fromkeys(k for row in rows for k in row))
    paths = {"csv": out_dir / "compare.csv", "md": out_dir / "compare.md"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    paths["md"].write_text(markdown_table(rows, cols))
    numeric = [c for c in cols if c not in ("duration_s",) and any(
        isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool) for row in rows)]
    metric_cols = [c for c in numeric if any(c in r.metrics for r in records)]
    x = x or (metric_cols[0] if metric_cols else None)
    y = y or next((c for c in metric_cols if c != x), None)
    if x and y:
        paths["html"] = _scatter(rows, x, y, out_dir / "compare.html", title)
    return paths


def _scatter(rows: list[dict[str, Any]], x: str, y: str, path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    ok = [r for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    fig = go.Figure(go.Scatter(
        x=[r[x] for r in ok], y=[r[y] for r in ok], mode="markers+text",
        text=[plot_text(r["id"][-6:]) for r in ok], textposition="top center",
        hovertext=["<br>".join(plot_text(f"{k}={v}") for k, v in r.items() if k != "hardware") for r in ok]))
    fig.update_layout(title=plot_text(title), xaxis_title=plot_text(x), yaxis_title=plot_text(y),
                      template="plotly_white")
    fig.write_html(path, include_plotlyjs=True, full_html=True)  # offline: plotly.js inlined
    return path
