"""The results table: one :class:`Run` per row, and the HTML the panel shows for them."""
from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

import slimkit

# the settings a results table label shows
LABEL_KEYS = {"quantize": ("bits", "granularity", "scheme"), "prune": ("sparsity", "score", "structured"),
              "distill": ("width", "temperature", "alpha"), "sparsify": ("sparsify_sparsity", "threshold", "format")}


@dataclass
class Run:
    """One row of the results table (``id`` 0 is the original model)."""

    id: int
    method: str
    settings: dict[str, Any]
    accuracy: float
    size_bytes: int
    latency_ms: float
    baseline_ms: float = math.nan  # the original's latency with the same device and backend
    status: str = "done"
    seconds: float = 0.0
    simulated: bool = False
    note: str = ""
    model: nn.Module | None = field(default=None, repr=False)
    reports: list[slimkit.Report] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        if self.method == "original":
            return "original"
        parts = []
        for step in self.method.split("+"):
            vals = ",".join(str(self.settings[k]) for k in LABEL_KEYS.get(step, ()) if k in self.settings)
            parts.append(f"{step}({vals})")
        return " > ".join(parts)

    def row(self, base: Run | None) -> dict[str, Any]:
        out = {"#": self.id, "run": self.label, "accuracy": round(self.accuracy, 4),
               "size KiB": round(self.size_bytes / 1024, 1), "latency ms": round(self.latency_ms, 3),
               "status": self.status + (" (simulated)" if self.simulated else "")}
        if base is not None:
            out["Δ acc (pts)"] = round(100 * (self.accuracy - base.accuracy), 2)
            out["x smaller"] = round(base.size_bytes / max(self.size_bytes, 1), 2)
            out["x faster"] = round(self.baseline_ms / self.latency_ms, 2) if self.latency_ms > 0 else math.nan
        out["seconds"] = round(self.seconds, 1)
        out["note"] = self.note
        return out

    def detail_html(self) -> str:
        """Its settings and per-layer reports (what a click on its Pareto point shows)."""
        reports = "".join(r._repr_html_() for r in self.reports)
        return (f"<b>#{self.id} {html.escape(self.label)}</b><pre class='slimkit-settings'>"
                f"{html.escape(json.dumps(self.settings, indent=1, default=str))}</pre>"
                f"accuracy {self.accuracy:.2%}, {self.size_bytes / 1024:.1f} KiB, "
                f"{self.latency_ms:.2f} ms{reports}")


def table_html(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<i>results appear here after the first run</i>"
    head = "".join(f"<th style='padding:2px 8px'>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(str(v))}</td>"
                                    for v in r.values()) + "</tr>" for r in rows)
    return f"<table class='slimkit-results'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
