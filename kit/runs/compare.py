"""Comparison across run records (``slimkit compare``): a CSV and a Markdown table of the runs,
and a scatter of one metric against another (static SVG) with the table as offline HTML."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..table import markdown_table, plain, plot_text
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
    rows = comparison_rows(records, metrics)
    cols = list(dict.fromkeys(k for row in rows for k in row))
    numeric = [c for c in cols if c not in ("duration_s",) and any(
        isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool) for row in rows)]
    metric_cols = [c for c in numeric if any(c in r.metrics for r in records)]
    for axis, value in (("--x", x), ("--y", y)):  # checked before anything is written
        if value is not None and value not in numeric:
            from ..errors import InvalidParameterError

            raise InvalidParameterError(axis, value, "a numeric metric of these runs: " + ", ".join(metric_cols)
                                        if metric_cols else "a numeric metric, but these runs recorded none")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "compare.csv", "md": out_dir / "compare.md"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    paths["md"].write_text(markdown_table(rows, cols))
    x = x or (metric_cols[0] if metric_cols else None)
    y = y or next((c for c in metric_cols if c != x), None)
    if x and y:
        paths["html"] = _page(rows, cols, x, y, out_dir / "compare.html", title)
    return paths


def _page(rows: list[dict[str, Any]], cols: list[str], x: str, y: str, path: Path, title: str) -> Path:
    """compare.html: the scatter as a static SVG above the table, every value escaped; tens of kB,
    nothing loaded from the network (plotly.js inlined would be ~4.8 MB)."""
    import html

    import plotly.graph_objects as go

    from .static import svg

    ok = [r for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    fig = go.Figure(go.Scatter(x=[r[x] for r in ok], y=[r[y] for r in ok], mode="markers+text",
                               text=[plot_text(r["id"][-6:]) for r in ok]))
    fig.update_layout(title=plot_text(title), xaxis_title=plot_text(x), yaxis_title=plot_text(y))
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{e(plain(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                    "<style>body{font:14px sans-serif;margin:16px}table{border-collapse:collapse}"
                    "td,th{border:1px solid #ccc;padding:2px 6px}</style></head>"
                    f"<body><h1>{e(title)}</h1>{svg(fig)}<table><tr>{head}</tr>{body}</table></body></html>\n",
                    encoding="utf-8")
    return path
