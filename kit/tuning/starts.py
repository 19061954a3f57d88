"""The starts of an autotune search: known-good global recipes tried as whole-model trials before
any per-layer probe, so the per-layer search refines a verified model instead of rebuilding the
obvious from probes that were not fine-tuned.

- size: global magnitude pruning (all weights ranked together, fine-tuned in steps) then codebook
  bits with trained centroids -- Deep Compression's recipe; the sparsest share in the grid that
  meets the budget. The refinement options are per layer on top of it: fewer weights kept,
  fewer bits.
- latency: the largest uniform structured share that meets the budget (the best single method).
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from ..quant.plan import TARGET_TYPES
from .build import CAN, Option, prune_global
from .records import key


class Starts:
    """Mixed into the autotune job (which provides the model, grid, records and ``_trial``)."""

    def _size_start(self) -> bool:
        """Deep Compression's recipe as whole-model trials: global magnitude pruning (fine-tuned)
        then codebook bits with trained centroids, the sparsest share in the grid that meets the
        budget. False (and no start) when the methods or this slimkit cannot, or none meets it."""
        if not ({"prune", "quantize"} <= self.methods and CAN["codebook"] and self.grid["sparsity"]):
            return False
        bits = self._start_bits()
        for share in sorted(self.grid["sparsity"], reverse=True):
            self._check_budget()
            self.start = {"sparsity": share, "bits": bits}
            if self._trial({n: Option(0.0, 0.0, bits) for n in self._quantizable()})["ok"]:
                return True
        self.start = None
        return False

    def _start_bits(self) -> int:
        bits = self.grid["bits"]
        return 4 if 4 in bits else min((b for b in bits if b >= 4), default=max(bits))

    def _quantizable(self) -> list[str]:
        return [n for n in self.layers if isinstance(self.model.get_submodule(n), TARGET_TYPES)]

    def _refine_layers(self) -> dict[str, list[Option]]:
        """Per layer on top of the start: half or a quarter of its remaining weights kept, and
        fewer bits (the grid's, below the start's)."""
        bits0 = self.start["bits"]
        lower = [b for b in sorted(self.grid["bits"], reverse=True) if b < bits0]
        out = {}
        for n in self._quantizable():
            kept = 1.0 - self._realized()[n]
            shares = (0.0, *(round(1.0 - kept / f, 4) for f in (2, 4)))
            opts = [Option(0.0, s, b) for s, b in itertools.product(shares, (bits0, *lower))]
            out[n] = opts  # opts[0] = Option(0, 0, bits0): the start itself
        return out

    def _realized(self) -> dict[str, float]:
        """The start's per-layer sparsity after global pruning (recorded, so a resume need not prune)."""
        k = key(self.run_key, "start", self.start["sparsity"])
        row = self.records.get(k)
        if row is None:
            p = self._pruned_model()
            row = {"key": k, "kind": "start", "sparsity": {
                n: float((p.get_submodule(n).weight == 0).float().mean()) for n in self._quantizable()}}
            self.records.add(row)
        return row["sparsity"]

    def _pruned_model(self) -> nn.Module:
        share = self.start["sparsity"]
        if self._pruned is None or self._pruned[0] != share:
            self._pruned = None  # one start model alive at a time
            torch.manual_seed(0)
            self._pruned = (share, prune_global(self.model, share, train=self.train, epochs=self.epochs,
                                                progress=self.progress))
        return self._pruned[1]

    def _uniform_structured(self) -> None:
        """Latency start: every shrinkable layer at one structured share (fine-tuned), the largest
        first, until one meets the budget (the best single method's recipe, verified)."""
        names = [n for n in self.producers if n in self.layers]
        if "structured" not in self.methods or not names:
            return
        for share in sorted(self.grid["structured"], reverse=True):
            self._check_budget()
            if self._trial({n: Option(share, 0.0, None) for n in names})["ok"]:
                return
