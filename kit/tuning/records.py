"""Trial records: every probe and trial as one JSON line, so the same call resumes.

A row is keyed by what determines its outcome (the model's fingerprint, the search's settings
and the trial's per-layer options); a row with that key already in the file is reused instead
of re-run. Only JSON is read back (``slimkit.jsonsafe``), never pickle; a half-written last line
(a run killed mid-write) is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidTypeError
from ..jsonsafe import strict_loads


def fingerprint(model: nn.Module) -> str:
    """The identity of a model's weights (names, dtypes, shapes and bytes), so records made for
    another model (a permuted or re-masked one too) are never reused."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class Records:
    """The JSON-lines file of a search (None: nothing written, nothing resumed)."""

    def __init__(self, path):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError("records", path, "None or a path to a JSON-lines file")
        self.path = Path(path) if path is not None else None
        self.rows: dict[str, dict] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._read()

    def _read(self) -> None:
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = strict_loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut short when a run was killed: that trial simply runs again
            if isinstance(row, dict) and isinstance(row.get("key"), str):
                self.rows[row["key"]] = row

    def get(self, k: str) -> dict | None:
        return self.rows.get(k)

    def add(self, row: dict) -> None:
        self.rows[row["key"]] = row
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, allow_nan=False, default=str) + "\n")
