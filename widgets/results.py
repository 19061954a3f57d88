"""The results table: one :class:`Run` per row, and the HTML the panel shows for them.

Tables are plain HTML in ``ipywidgets.HTML``; a click on a column header sorts the rows in the
browser (no kernel round trip, numbers as numbers: each cell carries its sort key), so the
same markup sorts in the live panel and in static outputs.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

import slimkit
from slimkit.report import HISTORY_SEP

# a header's onclick: sort its table's body by that column (numeric keys from data-v), toggling
# the direction; inline so it survives ipywidgets.HTML (which runs no <script>)
SORT_JS = ("const th=this,t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),"
           "b=t.tBodies[0],d=th.dataset.dir==='asc'?'desc':'asc',k=r=>{const c=r.children[i],"
           "v=c.dataset.v;return v!==undefined&&v!==''?parseFloat(v):c.textContent};"
           "[...th.parentNode.children].forEach(h=>{h.dataset.dir='';h.classList.remove('slimkit-sorted')});"
           "th.dataset.dir=d;th.classList.add('slimkit-sorted');"
           "[...b.rows].sort((x,y)=>{const a=k(x),c=k(y),s=typeof a==='number'&&typeof c==='number'?a-c:"
           "String(a).localeCompare(String(c));return d==='asc'?s:-s}).forEach(r=>b.appendChild(r))")
RED = "#b00020"


@dataclass
class Run:
    """One row of the results table (``id`` 0 is the original model).

    ``steps``: the :class:`~.controls.Step` s that made it (their configs reproduce it, see
    :meth:`code`); ``note``: why a step failed (e.g. the latency backend), "" when none did.
    """

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
    steps: tuple = field(default=(), repr=False)
    entropy_bytes: int | None = None  # the artifact entropy-coded: slimkit.size(model, entropy=True)

    @property
    def label(self) -> str:
        """The run as a person writes it: ``prune 80% magnitude > quantize int4 per_channel``."""
        if self.method == "original":
            return "original"
        return " > ".join(s.label for s in self.steps) if self.steps else self.method

    @property
    def failed(self) -> bool:
        """A step of the run failed (the model may stand, but a number is missing)."""
        return self.status.startswith("failed")

    def row(self, base: Run | None) -> dict[str, Any]:
        latency = "error" if math.isnan(self.latency_ms) and self.note else round(self.latency_ms, 3)
        out = {"#": self.id, "run": self.label, "accuracy": round(self.accuracy, 4),
               "size KiB": round(self.size_bytes / 1024, 1), "latency ms": latency,
               "status": self.status + (" (simulated)" if self.simulated else "")}
        if base is not None:
            out["Δ acc (pts)"] = round(100 * (self.accuracy - base.accuracy), 2)
            out["x smaller"] = round(base.size_bytes / max(self.size_bytes, 1), 2)
            fast = self.baseline_ms / self.latency_ms if self.latency_ms > 0 else math.nan
            out["x faster"] = "error" if math.isnan(fast) and self.note else round(fast, 2)
        out["entropy-coded KiB"] = None if self.entropy_bytes is None else round(self.entropy_bytes / 1024, 1)
        out["seconds"] = round(self.seconds, 1)
        return out

    def layer_rows(self) -> list[dict[str, Any]]:
        """Every layer of every step's report, one row each (the per-layer table)."""
        out = []
        for r in self.reports:
            for lr in r.layers:
                out.append({"step": r.method, "layer": lr.name, "kind": lr.kind, "action": lr.action,
                            "params before": lr.params_before, "params after": lr.params_after,
                            "bytes before": lr.bytes_before, "bytes after": lr.bytes_after,
                            "sparsity %": None if lr.sparsity is None else round(100 * lr.sparsity, 1),
                            "SQNR dB": None if lr.sqnr_db is None else round(lr.sqnr_db, 1), "note": lr.reason,
                            "history": HISTORY_SEP.join(lr.history)})
        return out

    def trial_rows(self) -> list[dict[str, Any]]:
        """An autotune run's trials (settings, score, drop, bytes, latency; the Pareto set and the
        pick marked), one row each; [] for the other runs."""
        out = []
        for r in self.reports:
            pick = r.summary.get("pick_trial")
            for t in getattr(r, "trials", ()):
                out.append({"trial": t["trial"], "settings": "; ".join(f"{n}: {v}" for n, v in t["settings"].items())
                            or "original", "score": round(t["score"], 3), "drop (pts)": round(t["drop"], 3),
                            "KiB": round(t["bytes"] / 1024, 1), "x smaller": round(t["size_ratio"], 2),
                            "latency ms": round(t["latency_ms"], 3), "x faster": round(t["speedup"], 2),
                            "within budget": "yes" if t["ok"] else "no",
                            "pareto": "yes" if t["trial"] in getattr(r, "pareto", ()) else "",
                            "pick": "pick" if t["trial"] == pick else ""})
        return out

    def code(self) -> str:
        """The Python that reproduces this run from the model and data given to the panel."""
        if not self.steps:
            return "# the original model: nothing to reproduce"
        lines = ["import slimkit", "from slimkit.widgets.methods import splits", "",
                 "train, test = splits(data)  # model, data: as given to Panel(model, data)", "m = model"]
        for s in self.steps:
            lines += s.code("m")
        lines.append(f"m.eval()  # run #{self.id}: {self.label}")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    """A table cell; numbers carry their sort key (so 10 sorts after 9), text is escaped."""
    if value is None:
        return "<td data-v=''></td>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        key = "" if isinstance(value, float) and math.isnan(value) else f"{value}"
        return f"<td data-v='{key}' style='text-align:right'>{html.escape(str(value))}</td>"
    style = f" style='color:{RED}'" if value in ("error",) or str(value).startswith("failed") else ""
    return f"<td{style}>{html.escape(str(value))}</td>"


def table_html(rows: Sequence[dict[str, Any]], cls: str = "slimkit-results",
               empty: str = "results appear here after the first run") -> str:
    """A table whose headers sort it (click: ascending, again: descending)."""
    if not rows:
        return f"<i>{html.escape(empty)}</i>"
    head = "".join(f"<th title='click to sort' style='cursor:pointer' onclick=\"{SORT_JS}\">"
                   f"{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(_cell(v) for v in r.values()) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
