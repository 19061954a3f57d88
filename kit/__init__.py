"""slimkit: make deep-learning models cheaper to run, in a notebook or headless.

One verb per job; each takes any ``torch.nn.Module``, never changes it in place, and
returns ``Result(model, report)``::

    model, report = slimkit.quantize(model, bits=8)
    model, report = slimkit.prune(model, 0.5, score="fisher", data=train)
    model, report = slimkit.distill(teacher, student, train)
    model, report = slimkit.sparsify(model, sparsity=0.9, format="auto")
    slimkit.evaluate(model, test); slimkit.size(model); slimkit.save(model, "m.slim")
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .errors import (
    ArtifactError,
    DeviceUnavailableError,
    IncompatibleModelsError,
    Interrupted,
    InvalidParameterError,
    InvalidTypeError,
    NothingToCompressError,
    SlimkitError,
)

# The verbs import torch (seconds): they load on first use, so `import slimkit` and the `slimkit`
# command's --help stay fast. NAME: module that defines it.
_LAZY = {
    "load": ".artifact", "save": ".artifact", "size": ".artifact",
    "DistillConfig": ".distillation", "distill": ".distillation", "shrink": ".distillation",
    "Event": ".events", "Progress": ".events", "Inputs": ".inputs",
    "compare": ".measure", "latency": ".measure", "evaluate": ".metrics", "sqnr": ".metrics",
    "prune": ".pruning.api", "Finetune": ".pruning.config", "PruneConfig": ".pruning.config",
    "quantize": ".quant.api", "QuantConfig": ".quant.config",
    "LayerReport": ".report", "Report": ".report", "Result": ".report",
    "sparsify": ".sparse.api", "SparsifyConfig": ".sparse.config",
    "sensitivity": ".layer_sensitivity", "autotune": ".tuning", "export": ".exporter", "ExportError": ".exporter",
}


def __getattr__(name: str):
    if name in _LAZY:
        import_module(".zoo", __name__)  # registers the bundled builders (transformers stays lazy)
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    try:  # a subpackage not imported yet (slimkit.zoo, slimkit.quant...), as an eager import made them
        return import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'slimkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .artifact import load, save, size  # noqa: F401
    from .distillation import DistillConfig, distill, shrink  # noqa: F401
    from .events import Event, Progress  # noqa: F401
    from .exporter import ExportError, export  # noqa: F401
    from .inputs import Inputs  # noqa: F401
    from .layer_sensitivity import sensitivity  # noqa: F401
    from .measure import compare, latency  # noqa: F401
    from .metrics import evaluate, sqnr  # noqa: F401
    from .pruning.api import prune  # noqa: F401
    from .pruning.config import Finetune, PruneConfig  # noqa: F401
    from .quant.api import quantize  # noqa: F401
    from .quant.config import QuantConfig  # noqa: F401
    from .report import LayerReport, Report, Result  # noqa: F401
    from .sparse.api import sparsify  # noqa: F401
    from .sparse.config import SparsifyConfig  # noqa: F401
    from .tuning import autotune  # noqa: F401

try:
    __version__ = version("slimkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "quantize", "prune", "distill", "sparsify", "shrink", "evaluate", "sqnr", "size", "save", "load",
    "compare", "latency", "sensitivity", "autotune", "export", "ExportError",
    "QuantConfig", "PruneConfig", "Finetune", "SparsifyConfig", "DistillConfig",
    "Result", "Report", "LayerReport", "Event", "Progress", "Inputs",
    "SlimkitError", "InvalidParameterError", "InvalidTypeError", "NothingToCompressError",
    "IncompatibleModelsError", "ArtifactError", "DeviceUnavailableError", "Interrupted",
]

