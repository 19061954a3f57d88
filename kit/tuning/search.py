"""The allocation: per-layer ladders of measured options, a knapsack under the drop budget, and
the one-rung moves that back off (budget missed) or push (budget met) layer by layer.

Each layer's probes (that layer alone changed, the whole model scored and measured) give every
option a ``gain`` (bytes or milliseconds saved) and a ``cost`` (its measured drop, plus a small
term for the loss increase so options that cost no accuracy point still rank). Costs are
assumed to add up across layers; the whole-model verification is what decides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .build import BASE, Option

LOSS_WEIGHT = 10.0  # points of cost per nat of mean cross-entropy increase (ranks zero-drop options)
STEPS = 200  # resolution of the knapsack's drop axis
PUSH_FLOOR = 0.05  # points: the least cost a push is charged


@dataclass(frozen=True)
class Rung:
    option: Option
    gain: float
    cost: float


def ladder(probes: list[tuple[Option, float, float]], base: Option = BASE) -> list[Rung]:
    """A layer's useful options, from the base (no change, or the start's setting) up: each rung
    gains more than the one below and costs more (one that gains less for no less cost is dropped)."""
    rungs = sorted((Rung(o, max(g, 0.0), max(c, 0.0)) for o, g, c in probes if o != base),
                   key=lambda r: (r.gain, r.cost))
    out = [Rung(base, 0.0, 0.0)]
    for r in rungs:
        if r.gain <= out[-1].gain:
            continue
        while len(out) > 1 and r.cost <= out[-1].cost:
            out.pop()  # the new rung gains more for no more cost
        out.append(r)
    return out


def cost_of(drop: float, loss_increase: float | None) -> float:
    return max(drop, 0.0) + LOSS_WEIGHT * max(loss_increase or 0.0, 0.0)


def knapsack(ladders: dict[str, list[Rung]], budget: float) -> dict[str, int]:
    """The rung per layer that maximises the total gain with the summed cost within ``budget``
    (multiple-choice knapsack, costs rounded up to ``budget / STEPS``)."""
    names = list(ladders)
    if budget <= 0:
        return {n: _free_top(ladders[n]) for n in names}
    unit = budget / STEPS
    best = [0.0] + [-math.inf] * STEPS  # best[c]: max gain at summed cost units exactly c
    choice: list[list[int]] = []
    for n in names:
        new, pick = [-math.inf] * (STEPS + 1), [0] * (STEPS + 1)
        for i, r in enumerate(ladders[n]):
            w = math.ceil(r.cost / unit - 1e-9)
            for c in range(w, STEPS + 1):
                if best[c - w] + r.gain > new[c]:
                    new[c], pick[c] = best[c - w] + r.gain, i
        best = new
        choice.append(pick)
    c = max(range(STEPS + 1), key=lambda k: best[k])
    out = {}
    for n, pick in zip(reversed(names), reversed(choice)):
        i = pick[c]
        out[n] = i
        c -= math.ceil(ladders[n][i].cost / unit - 1e-9)
    return out


def _free_top(rungs: list[Rung]) -> int:
    return max(i for i, r in enumerate(rungs) if r.cost == 0)


def back_off(ladders: dict[str, list[Rung]], at: dict[str, int]) -> str | None:
    """The layer to move one rung down: the most cost given back per gain lost."""
    def relief(n):
        hi, lo = ladders[n][at[n]], ladders[n][at[n] - 1]
        return (hi.cost - lo.cost + 1e-6) / (hi.gain - lo.gain + 1e-12)
    movable = [n for n in at if at[n] > 0]
    return max(movable, key=relief) if movable else None


def push(ladders: dict[str, list[Rung]], at: dict[str, int], frozen: set[str]) -> str | None:
    """The layer to move one rung up: the most gain per cost added (layers that failed: frozen).
    Costs below ``PUSH_FLOOR`` count as that floor, so among moves the probes call free the
    biggest gain goes first (a verified trial is expensive; a tiny layer's free rung can wait)."""
    def price(n):
        lo, hi = ladders[n][at[n]], ladders[n][at[n] + 1]
        return max(hi.cost - lo.cost, PUSH_FLOOR) / (hi.gain - lo.gain + 1e-12)
    movable = [n for n in at if n not in frozen and at[n] + 1 < len(ladders[n])]
    return min(movable, key=price) if movable else None


def settings_of(ladders: dict[str, list[Rung]], at: dict[str, int]) -> dict[str, Option]:
    return {n: ladders[n][i].option for n, i in at.items()}
