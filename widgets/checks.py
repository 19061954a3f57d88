"""The panel's settings: reading and setting its controls, and checking them before anything
runs (mixed into :class:`~.panel.Panel`). A check is constructing the verbs' configs
(:mod:`.controls`), plus what needs the model (a group size that divides its layers), the
device and backend; what fails is listed in red, its control outlined, and the buttons that
cannot start are disabled with the reason in their tooltip.
"""
from __future__ import annotations

import html
from typing import Any

from slimkit.devices import resolve_device
from slimkit.errors import InvalidParameterError, SlimkitError

from . import methods as M
from .controls import METHODS
from .results import RED

TABS = (*METHODS, "pipeline", "auto")
TOOLTIPS = {"run": "run the tab's method", "sweep": "run once per value in the sweep box",
            "sensitivity": "compress one layer at a time"}


def html_list(items: list[str]) -> str:
    return (f"<ul style='color:{RED};margin:2px'>" + "".join(f"<li>{html.escape(m)}</li>" for m in items)
            + "</ul>") if items else ""


class Settings:
    """Controls in, problems out; the panel provides ``controls``, ``tabs``, ``buttons``,
    ``messages``, ``status``, ``worker``, ``base``, ``train``, ``test``."""


    @property
    def method(self) -> str:
        return TABS[self.tabs.selected_index or 0]

    def settings(self) -> dict[str, Any]:
        """Every control's value as shown, by control name."""
        return self.controls.raw()

    def set(self, method: str | None = None, **values) -> Settings:
        """Set controls by name, as a user would: ``panel.set("prune", sparsity=0.8)``.

        All or nothing: a bad name or value raises and leaves every control as it was.
        """
        if method is not None and method not in TABS:
            raise InvalidParameterError("method", method, "one of " + ", ".join(TABS))
        self.controls.set(**values)
        if method is not None:
            self.tabs.selected_index = TABS.index(method)
        return self

    def _steps(self, method: str | None = None) -> tuple[str, ...]:
        method = method or self.method
        if method == "pipeline":
            return tuple(self.controls["pipeline"].value)  # the user's order, run as it is
        return (method,)

    def problems(self, method: str | None = None, action: str = "run") -> list[str]:
        """Everything that keeps ``action`` (run, sweep, sensitivity) from starting now."""
        method = method or self.method
        steps = self._steps(method)
        out = [] if steps else ["pipeline: choose at least one step"]
        # no refusals of chains here: the library says which it takes, when its step runs
        for step in steps:
            configs, bad = self.controls.step(step, self.train, self.test)
            out += bad
            if "auto" in configs:
                why, names = M.autotune_problem(configs["auto"])
                out += [f"auto: {why}"] if why else []
                self.controls.invalid |= names
            why = "quantize" in configs and M.group_size_problem(self.base, configs["quantize"])
            if why:
                out.append(f"quantize: {why}")
        device, backend = self.controls["device"].value, self.controls["backend"].value
        try:
            resolve_device(device)
            why = M.backend_problem(backend, device)
            if why:
                out.append(f"backend: {why}")
        except SlimkitError as e:
            out.append(f"device: {e}")
        if action == "sweep":
            if method in ("pipeline", "auto"):
                out.append("sweep: choose a single method tab (quantize, prune, distill or sparsify)")
            else:
                try:
                    out += self.controls.sweep(method, self.train, self.test)[1]
                except SlimkitError as e:
                    out.append(f"sweep: {e}")
        some = ("quantize", "prune", "sparsify", *(("distill",) if M.core_sensitivity() else ()))
        if action == "sensitivity" and method not in some:
            out.append(f"sensitivity: choose the {', '.join(some)} tab")
        return out

    def _changed(self, change=None) -> None:
        self.controls.update()
        self._validate()

    def _validate(self) -> list[str]:
        """Show what is wrong with the settings (red outlines on the controls refused, why a
        button is disabled), enable only the buttons that can start, and keep the status true:
        when idle it is how the last job ended, plus whether the settings need fixing."""
        self.controls.invalid = set()
        msgs = self.problems()
        why = {"run": msgs, **{a: [m for m in self.problems(action=a) if m not in msgs]
                               for a in ("sweep", "sensitivity")}}
        self.controls.mark(self.controls.invalid)
        sweep = [] if self.method in ("pipeline", "auto") else [f"Sweep is disabled: {m}" for m in why["sweep"]]
        self.messages.value = html_list(msgs + sweep)  # the others' reasons: in the buttons' tooltips
        busy = self.worker.busy
        for action, b in self.buttons.items():
            b.disabled = busy or bool(msgs or why[action])
            b.tooltip = "; ".join(msgs + why[action]) or TOOLTIPS[action]
        if not busy:
            fix = f" <span style='color:{RED}'>- fix the settings listed below</span>" if msgs else ""
            self.status.value = self._last_status + fix
        return msgs
