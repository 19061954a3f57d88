"""The pipeline tab's steps in the order they run: a list the user builds and reorders.

The library decides which chains it takes (prune then quantize keeps the zeros; sparsify then
quantize stores sparse integer weights; quantize then prune is refused, saying which order works),
so the panel offers every order and leaves the verdict to the verbs when the pipeline runs.

Every part is a plain focusable control, so the list is built from the keyboard alone: Tab to
the "add" dropdown, Enter on "Add"; arrow keys pick a step in the list, then "Up", "Down" or
"Remove". ``value`` is the chain as a tuple of method names (what ``panel.set(pipeline=...)`` takes),
each method at most once: a step's settings are its tab's, so a second one would repeat them.
"""
from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as W
import traitlets

ARROW = " > "  # how a chain reads in labels, status lines and run records


def parse_chain(value) -> tuple[str, ...]:
    """A chain from a tuple/list of names, or from text as it reads: ``"sparsify > quantize"``."""
    if isinstance(value, str):
        value = value.replace(">", ",").split(",")
    return tuple(str(v).strip() for v in value if str(v).strip())


class StepOrder(W.VBox):
    """An ordered list of steps: add one from ``methods``, move the picked one up or down, remove it."""

    value = traitlets.Tuple()

    def __init__(self, methods: Sequence[str], value: Sequence[str] = (), *, description: str = "steps (in order)",
                 label_width: str = "120px"):
        self.methods = tuple(methods)
        kw = {"style": {"description_width": label_width}, "layout": W.Layout(width="340px")}
        self.chain = W.Select(options=[], rows=len(self.methods), description=description, **kw)
        self.chain.observe(lambda _: self._enable(), names="value")
        kw["layout"] = W.Layout(width="340px")  # each control its own Layout (a border on one is not on all)
        self.choice = W.Dropdown(options=self.methods, description="add step", **kw)
        self.buttons = {name: W.Button(description=name.capitalize(), icon=icon, tooltip=tip,
                                       layout=W.Layout(width="auto"))
                        for name, icon, tip in (("add", "plus", "append the chosen method as the last step"),
                                                ("up", "arrow-up", "run the picked step earlier"),
                                                ("down", "arrow-down", "run the picked step later"),
                                                ("remove", "times", "take the picked step out"))}
        for name, b in self.buttons.items():
            b.on_click(lambda _, n=name: self._click(n))
        wrap = {"flex_flow": "row wrap"}  # a narrow output area wraps the row instead of clipping it
        super().__init__([self.chain, W.HBox([self.choice, self.buttons["add"]], layout=W.Layout(**wrap)),
                          W.HBox([self.buttons[n] for n in ("up", "down", "remove")], layout=W.Layout(**wrap))])
        self.value = parse_chain(value)
        self._show()

    @traitlets.validate("value")
    def _check(self, proposal) -> tuple[str, ...]:
        chain = parse_chain(proposal["value"])
        unknown = [m for m in chain if m not in self.methods]
        if unknown:
            raise traitlets.TraitError(f"unknown step {unknown[0]!r}: steps are {', '.join(self.methods)}")
        twice = sorted({m for m in chain if chain.count(m) > 1})
        if twice:
            raise traitlets.TraitError(f"{', '.join(twice)} twice: each step once (its settings are its tab's)")
        return chain

    @traitlets.observe("value")
    def _changed(self, change) -> None:
        self._show()

    def _show(self, picked: int | None = None) -> None:
        """The list as numbered steps, the dropdown offering only the methods not in it yet."""
        if not hasattr(self, "chain"):  # value set while the parts are built
            return
        keep = self.chain.value if picked is None else picked
        self.chain.options = [(f"{i + 1}. {m}", i) for i, m in enumerate(self.value)]
        self.chain.value = keep if keep is not None and keep < len(self.value) else None
        rest = [m for m in self.methods if m not in self.value]
        self.choice.options = rest
        self.choice.value = rest[0] if rest else None
        self._enable()

    def _enable(self) -> None:
        i, n = self.chain.value, len(self.value)
        self.buttons["add"].disabled = self.choice.value is None
        self.buttons["up"].disabled = i is None or i == 0
        self.buttons["down"].disabled = i is None or i >= n - 1
        self.buttons["remove"].disabled = i is None

    def _click(self, action: str) -> None:
        chain, i = list(self.value), self.chain.value
        if action == "add":
            if self.choice.value is None:
                return
            chain.append(self.choice.value)
            i = len(chain) - 1
        elif i is None:
            return
        elif action == "remove":
            del chain[i]
            i = min(i, len(chain) - 1) if chain else None
        else:
            j = i - 1 if action == "up" else i + 1
            if not 0 <= j < len(chain):
                return
            chain[i], chain[j] = chain[j], chain[i]
            i = j
        self.value = tuple(chain)  # observers (the panel's checks) see the new chain
        self._show(i)  # the moved step stays picked: Up, Up moves it twice
