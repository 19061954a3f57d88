"""``SparsifyConfig``: every setting of ``slimkit.sparsify``."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, choice, names, number
from ..errors import InvalidParameterError
from .formats import FORMATS

FORMAT_CHOICES = (*FORMATS, "auto")
EXECUTION_CHOICES = ("auto", "dense", "sparse")


@dataclass(frozen=True)
class SparsifyConfig(Config):
    """How to store weights sparse. At most one of ``threshold`` and ``sparsity``; neither keeps
    the zeros already there (e.g. from ``slimkit.prune``)."""

    verb = "sparsify"
    first = "threshold"

    threshold: float | None = number(None, 0, float("inf"), "weights with |w| < threshold become 0",
                                     optional=True, wording="a finite number >= 0 (|w| < threshold become 0)")
    sparsity: float | None = number(None, 0, 1, "per layer, this fraction of the smallest weights become 0",
                                    high_open=True, optional=True)
    format: str = choice("csr", FORMAT_CHOICES, "storage: csr, bitmask, 2:4, or the smallest per layer (auto)")
    execution: str = choice("auto", EXECUTION_CHOICES, "a sparse kernel where it pays (auto), always "
                            "decompress (dense), or a kernel wherever one exists (sparse)")
    include: tuple[str, ...] | None = names("layers to sparsify (name globs; None: all)")
    exclude: tuple[str, ...] | None = names("layers to leave dense (name globs)")

    def check(self) -> None:
        if self.threshold is not None and self.sparsity is not None:
            raise InvalidParameterError("threshold/sparsity", (self.threshold, self.sparsity),
                                        "at most one of threshold or sparsity (neither keeps existing zeros)")
        if self.format == "2:4" and self.sparsity is not None and self.sparsity != 0.5:
            raise InvalidParameterError("sparsity", self.sparsity, "None or 0.5 with format='2:4' (2 of every 4 are kept)")
