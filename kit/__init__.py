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

from importlib.metadata import PackageNotFoundError, version

from . import zoo  # noqa: F401  registers the bundled builders (transformers stays lazy)
from .artifact import load, save, size
from .distillation import DistillConfig, distill, shrink
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
from .events import Event, Progress
from .exporter import ExportError, export
from .inputs import Inputs
from .measure import compare, latency
from .metrics import evaluate, sqnr
from .pruning.api import prune
from .pruning.config import Finetune, PruneConfig
from .quant.api import quantize
from .quant.config import QuantConfig
from .report import LayerReport, Report, Result
from .sparse.api import sparsify
from .sparse.config import SparsifyConfig

try:
    __version__ = version("slimkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "quantize", "prune", "distill", "sparsify", "shrink", "evaluate", "sqnr", "size", "save", "load",
    "compare", "latency", "QuantConfig", "PruneConfig", "Finetune", "SparsifyConfig", "DistillConfig",
    "Result", "Report", "LayerReport", "Event", "Progress", "Inputs",
    "SlimkitError", "InvalidParameterError", "InvalidTypeError", "NothingToCompressError",
    "IncompatibleModelsError", "ArtifactError", "DeviceUnavailableError", "Interrupted",
    "export", "ExportError",
]

