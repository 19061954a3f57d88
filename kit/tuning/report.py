"""The autotune report: the pick layer by layer, every trial, and the Pareto set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..measure import pareto_front
from ..nn import param_count, tensor_bytes
from ..report import Action, LayerReport, Report
from ..table import markdown, text

TRIAL_HEAD = ["#", "settings", "score", "drop", "bytes", "size ratio", "latency ms", "speed-up", "within budget",
              "pareto"]


@dataclass
class AutotuneReport(Report):
    """A :class:`~slimkit.Report` whose rows are the pick's layers, plus ``trials`` (every
    whole-model trial: settings, score, drop, bytes, latency) and ``pareto`` (indices of the
    trials no other beats in both drop and the objective)."""

    trials: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[int] = field(default_factory=list)

    def _trial_rows(self) -> list[list[str]]:
        return [[str(t["trial"]), "; ".join(f"{n}: {v}" for n, v in t["settings"].items()) or "original",
                 f"{t['score']:.3f}", f"{t['drop']:+.3f}", f"{t['bytes']:,}", f"{t['size_ratio']:.2f}x",
                 f"{t['latency_ms']:.3f}", f"{t['speedup']:.2f}x", "yes" if t["ok"] else "no",
                 "*" if t["trial"] in self.pareto else ""] for t in self.trials]

    def table(self) -> str:
        return super().table() + "\n\ntrials\n" + text(TRIAL_HEAD, self._trial_rows())

    def to_markdown(self) -> str:
        return super().to_markdown() + "\n" + markdown(TRIAL_HEAD, self._trial_rows()) + "\n"


def autotune_report(original: nn.Module, pick: nn.Module, params: dict, trials: list[dict], chosen: dict | None,
                    met: bool, stopped: str, objective: str, base_score: float, base_bytes: int,
                    wall_s: float) -> AutotuneReport:
    options = (chosen or {}).get("settings", {})
    layers = []
    for name, m in original.named_modules():
        if name not in options:
            continue
        new = pick.get_submodule(name)
        label = options[name]
        action = Action.QUANTIZED if label.endswith("b") else Action.PRUNED
        layers.append(LayerReport(name, type(m).__name__, action, param_count(m), param_count(new),
                                  tensor_bytes(m), tensor_bytes(new), reason=f"autotune: {label}",
                                  details={"option": chosen["options"][name]}))
    points = [(t["drop"], t["bytes"] if objective == "size" else 1 / t["speedup"]) for t in trials]
    pareto = sorted(trials[i]["trial"] for i in pareto_front(points))
    summary = {"budget_met": met, "stopped": stopped or None, "trials": len(trials), "wall_s": round(wall_s, 2),
               "baseline_score": base_score, "original_bytes": base_bytes}
    if chosen:
        summary.update(pick_trial=chosen["trial"], drop=chosen["drop"], bytes=chosen["bytes"],
                       size_ratio=chosen["size_ratio"], speedup=chosen["speedup"])
    if not met:
        summary["note"] = (f"budget not met: no compressed model tried kept the drop within "
                           f"max_drop={params['max_drop']}; the model is the closest one tried"
                           if trials else "no trial finished: the model is an unchanged copy")
    report = AutotuneReport("autotune", params, layers, summary=summary, trials=trials, pareto=pareto)
    report.cover(original, pick, reason="autotune left it as it is (float, dense)")
    return report
