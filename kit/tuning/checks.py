"""Checks of :func:`slimkit.autotune`'s arguments, all before any probe or trial runs."""
from __future__ import annotations

from ..errors import InvalidParameterError, InvalidTypeError

METHODS = ("quantize", "prune", "sparsify", "structured", "distill")
OBJECTIVES = ("size", "latency")
# options per layer and objective: what each method may do to one layer
GRID = {
    "size": {"bits": (8, 4, 3, 2), "sparsity": (0.5, 0.75, 0.9, 0.95), "structured": (0.5,)},
    "latency": {"bits": (8,), "sparsity": (0.95,), "structured": (0.25, 0.5, 0.75)},
}


def check_methods(methods, objective: str, train) -> frozenset[str]:
    """The methods autotune will use, or a slimkit error saying why ``methods`` cannot be searched
    (unknown names, an empty set, distill without a pruning method or without ``train``)."""
    if isinstance(methods, str):
        methods = (methods,)
    if not hasattr(methods, "__iter__") or isinstance(methods, (bytes, dict)):
        raise InvalidTypeError("methods", methods, f"a collection of {', '.join(METHODS)}")
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InvalidParameterError("methods", methods, f"a non-empty collection of {', '.join(map(repr, METHODS))}")
    found = frozenset(methods)
    if "distill" in found and not {"structured", "prune"} & found:
        raise InvalidParameterError("methods", methods, "'distill' with 'structured' or 'prune' (autotune distills "
                                    "the original into its pruned models; alone it has no student to train)")
    if "distill" in found and train is None and methods == METHODS:
        found -= {"distill"}  # the default set: nothing to distill with, said in the report's params
    elif "distill" in found and train is None:
        raise InvalidParameterError("train", None, "training batches when methods include 'distill'")
    if objective == "latency" and not {"quantize", "structured", "sparsify"} & found:
        raise InvalidParameterError("methods", methods, "for objective='latency', at least one of 'quantize', "
                                    "'structured', 'sparsify' (zeros alone in dense layers change no latency)")
    return found


def _check_options(options, objective: str) -> dict[str, tuple]:
    grid = dict(GRID[objective])
    if options is None:
        return grid
    if not isinstance(options, dict) or not set(options) <= set(grid):
        raise InvalidParameterError("options", options, "None or a dict with keys among "
                                    "'bits', 'sparsity', 'structured'")
    for name, values in options.items():
        values = (values,) if isinstance(values, (int, float)) else values
        if not hasattr(values, "__iter__") or isinstance(values, (str, bytes, dict)):
            raise InvalidTypeError(f"options[{name!r}]", values, "a list of values")
        values = tuple(values)
        for v in values:
            fine = (isinstance(v, int) and 2 <= v <= 8) if name == "bits" else \
                (isinstance(v, (int, float)) and 0 < v < 1)
            if isinstance(v, bool) or not fine:
                raise InvalidParameterError(f"options[{name!r}]", v, "bits in 2..8" if name == "bits"
                                            else "shares in (0, 1)")
        grid[name] = values
    return grid
