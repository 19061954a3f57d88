"""``PruneConfig`` and ``Finetune``: every setting of ``slimkit.prune``."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Config, anything, choice, flag, integer, names, number
from ..errors import InvalidParameterError, InvalidTypeError
from . import importance

SCOPES = ("layer", "global")


def _scores() -> tuple[str, ...]:
    return tuple(importance.SCORES)  # read at check time: scores added with register_score count


@dataclass(frozen=True)
class PruneConfig(Config):
    """How to prune. ``prune(model, 0.5)`` is ``prune(model, PruneConfig(sparsity=0.5))``."""

    verb = "prune"
    first = "sparsity"

    sparsity: float = number(0.5, 0, 1, "fraction of weights zeroed (or of units removed, structured)",
                             high_open=True)
    score: str = choice("magnitude", _scores, "importance score (fisher/obd average gradients over data)")
    structured: bool = flag(False, "remove whole neurons/channels and resize the layers that read them")
    scope: str = choice("layer", SCOPES, "prune each layer to sparsity, or rank all layers together")
    steps: int = integer(1, 1, 10_000, "prune in this many steps on a cubic schedule")
    seed: int = integer(0, 0, 2**63 - 1, "random seed (random scores, fine-tuning order)")
    include: tuple[str, ...] | None = names("layers to prune (name globs; None: all)")
    exclude: tuple[str, ...] | None = names("layers to leave alone (name globs)")


@dataclass(frozen=True)
class Finetune(Config):
    """Fine-tuning after each pruning step: ``Finetune(data, epochs=2)`` or the same as a dict."""

    verb = ""
    first = "data"

    data: object = anything(None, "training batches (a DataLoader or (X, y))")
    epochs: int = integer(1, 1, 100_000, "epochs per pruning step")
    lr: float = number(1e-3, 0, float("inf"), "learning rate", low_open=True, wording="a positive number")
    batch_size: int = integer(64, 1, 2**31 - 1, "batch size when data is (X, y)")
    weight_decay: float = number(0.0, 0, float("inf"), "AdamW weight decay")
    val_data: object = anything(None, "validation (X, y) for a val_accuracy per epoch")

    def check(self) -> None:
        if self.data is None:
            raise InvalidParameterError("finetune", None, "a dict with a 'data' entry (training batches)")

    @classmethod
    def of(cls, value) -> Finetune | None:
        """``prune``'s ``finetune`` argument as a Finetune: None, a Finetune, or today's dict,
        whose errors name the entry (``finetune['epochs']=0``) as they always have."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InvalidTypeError("finetune", value, "None, a Finetune or a dict like dict(data=train, epochs=2, lr=1e-3)")
        known = cls.settings()
        unknown = sorted(map(str, set(value) - set(known)))
        if unknown:
            raise InvalidParameterError("finetune", value, f"keys among {', '.join(known)} (unknown: {', '.join(unknown)})")
        if value.get("data") is None:
            raise InvalidParameterError("finetune", value, "a dict with a 'data' entry (training batches)")
        return cls(**{k: known[k][0].check(f"finetune[{k!r}]", v) for k, v in value.items()})
