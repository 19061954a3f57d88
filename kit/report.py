"""What a method did, layer by layer: the second half of every method's result."""
from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch.nn as nn

from .config import Word
from .nn import own_param_count, param_count, param_modules, tensor_bytes
from .table import markdown, text


class Action(Word):
    """What a method did to a layer. A str, so rows compare and serialise as the word itself."""

    QUANTIZED = "quantized"
    PRUNED = "pruned"
    ZEROED = "zeroed"
    RESIZED = "resized"
    SPARSIFIED = "sparsified"
    DISTILLED = "distilled"
    SIMULATED = "simulated"  # quantized in float numbers only (fake quantization)
    KEPT_DENSE = "kept dense"  # sparsify: nothing to zero, the dense layer is kept
    SKIPPED = "skipped"


class Compute(Word):
    """How a changed layer computes: an integer (or sparse) kernel, dequantize-then-float-math on
    really compressed storage, or float numbers that only imitate the compressed ones."""

    INTEGER = "integer kernel"
    SPARSE = "sparse kernel"
    FLOAT = "float compute"
    SIMULATED = "simulated"


@dataclass
class LayerReport:
    """One layer's fate. ``action`` is a short verb ("quantized", "pruned", "skipped", ...);
    ``reason`` says why when a layer was skipped or treated specially."""

    name: str
    kind: str
    action: str
    params_before: int = 0
    params_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    sparsity: float | None = None
    sqnr_db: float | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # every step this layer went through, oldest first

    @classmethod
    def same_size(cls, name: str, module: nn.Module, action: str, **kwargs: Any) -> "LayerReport":
        """A row for a layer whose parameters and bytes did not change (skipped, zeroed in place,
        retrained)."""
        p, b = param_count(module), tensor_bytes(module)
        return cls(name, type(module).__name__, action, p, p, b, b, **kwargs)


@dataclass
class Report:
    """A method's per-layer report. ``simulated`` is True when any layer's numbers are
    emulated in float (fake quantization), so no real speed or memory gain exists there."""

    method: str
    params: dict[str, Any]
    layers: list[LayerReport] = field(default_factory=list)
    simulated: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> list[LayerReport]:
        return [l for l in self.layers if l.action != "skipped"]

    @property
    def skipped(self) -> list[LayerReport]:
        return [l for l in self.layers if l.action == "skipped"]

    def cover(self, model: nn.Module, result: nn.Module | None = None, reason: str | None = None) -> "Report":
        """Complete the report: one "skipped" row for every module of ``model`` that holds
        parameters of its own and has no row yet (a LayerNorm, a bias-only module, an RNN a method
        does not act on), so no parameter goes unmentioned; and whole-model totals in ``summary``
        (``model_params_*``, ``model_bytes_*``), counted over all parameters and buffers of
        ``model`` and ``result`` rather than only over the layers a method touched."""
        named = {l.name for l in self.layers}
        covered = tuple(n + "." for n in named if n)
        for name, m in param_modules(model):
            if name in named or (name and name.startswith(covered)) or ("" in named):
                continue
            n = own_param_count(m)
            why = reason or f"{type(m).__name__} is not a layer type {self.method} acts on"
            b = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
            self.layers.append(LayerReport(name, type(m).__name__, "skipped", n, n, b, b, reason=why))
        self.summary["model_params_before"] = param_count(model)
        self.summary["model_bytes_before"] = tensor_bytes(model)
        if result is not None:
            self.summary["model_params_after"] = param_count(result)
            self.summary["model_bytes_after"] = tensor_bytes(result)
        return self

    def chain(self, model: nn.Module, result: nn.Module, step) -> "Report":
        """Carry the per-layer history of compression steps from ``model`` to ``result``: each
        changed layer gets ``step`` (a string, or ``step(row) -> str``) after what ``model``'s
        history says of it; every row shows the whole history. ``result`` keeps it (the
        :data:`HISTORY` attribute: layer name -> steps) so the next verb, and the panel, can read it."""
        before = history(model)
        after = {name: list(steps) for name, steps in before.items()}
        for row in self.layers:
            row.history = list(before.get(row.name, []))
            if row.action not in (Action.SKIPPED, Action.KEPT_DENSE):
                row.history.append(step(row) if callable(step) else step)
                after[row.name] = row.history
        setattr(result, HISTORY, after)
        self.summary["steps"] = sorted({s for h in after.values() for s in h}, key=_order(after))
        return self

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_jsonable))

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(l) for l in self.layers]

    @property
    def has_history(self) -> bool:
        """Some layer went through more than this report's own step (a chain of verbs)."""
        return any(len(l.history) > 1 for l in self.layers)

    def _history(self, head: list[str], rows: list[list], layers: list[LayerReport]) -> None:
        """Add the "history" column (every step of each layer, oldest first) when there is one."""
        if self.has_history:
            head.append("history")
            for row, l in zip(rows, layers):
                row.append(HISTORY_SEP.join(l.history))

    def table(self) -> str:
        """A plain-text table (the CLI and ``print(report)``); a "history" column when the
        layers went through a chain of steps (prune, then quantize...)."""
        head = ["layer", "kind", "action", "params", "bytes", "sparsity", "SQNR dB", "note"]
        rows = [[l.name, l.kind, l.action,
                 f"{l.params_before}->{l.params_after}" if l.params_before != l.params_after else str(l.params_after),
                 f"{l.bytes_before}->{l.bytes_after}",
                 "" if l.sparsity is None else f"{l.sparsity:.1%}",
                 "" if l.sqnr_db is None else f"{l.sqnr_db:.1f}",
                 l.reason] for l in self.layers]
        self._history(head, rows, self.layers)
        title = f"{self.method} {self.params}" + ("  [SIMULATED: fake-quant in fp32]" if self.simulated else "")
        extra = "".join(f"\n{k}: {v}" for k, v in self.summary.items())
        return title + "\n" + text(head, rows) + extra

    def to_markdown(self) -> str:
        """A Markdown table with a row for every layer (the notebooks show it with
        ``display(Markdown(report.to_markdown()))``). Cells are escaped: a layer name or note
        renders as the characters it holds, never as HTML or Markdown syntax."""
        head = ["layer", "kind", "action", "params", "bytes", "sparsity", "SQNR", "note"]
        rows = [[l.name, l.kind, l.action, f"{l.params_before:,} → {l.params_after:,}",
                 f"{l.bytes_before:,} → {l.bytes_after:,}",
                 "" if l.sparsity is None else f"{l.sparsity:.1%}",
                 "" if l.sqnr_db is None else f"{l.sqnr_db:.1f} dB", l.reason] for l in self.layers]
        self._history(head, rows, self.layers)
        return markdown(head, rows) + "\n"

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        head = ["layer", "kind", "action", "params before", "params after", "bytes before", "bytes after",
                "sparsity", "SQNR dB", "note"]
        rows = [[l.name, l.kind, l.action, l.params_before, l.params_after, l.bytes_before, l.bytes_after,
                 "" if l.sparsity is None else f"{l.sparsity:.1%}",
                 "" if l.sqnr_db is None else f"{l.sqnr_db:.1f}", l.reason] for l in self.layers]
        self._history(head, rows, self.layers)
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
        heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        flag = " <b>(simulated)</b>" if self.simulated else ""
        return f"<p>{html.escape(self.method)}{flag}</p><table><tr>{heads}</tr>{cells}</table>"


HISTORY = "_slimkit_history"
HISTORY_SEP = " → "  # how the history column joins a layer's steps


def history(model: nn.Module) -> dict[str, list[str]]:
    """The compression steps each layer of ``model`` went through (layer name -> steps, oldest
    first), as slimkit's verbs record them; {} for a model no verb produced."""
    h = getattr(model, HISTORY, None)
    return h if isinstance(h, dict) else {}


def _order(after: dict[str, list[str]]):
    """Sort key: a step's first position in any layer's history (the order the steps ran)."""
    first: dict[str, int] = {}
    for steps in after.values():
        for i, s in enumerate(steps):
            first[s] = min(first.get(s, i), i)
    return lambda s: first[s]


class Result(NamedTuple):
    """``model, report = slimkit.quantize(...)``: the new model and what was done."""

    model: nn.Module
    report: Report


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
