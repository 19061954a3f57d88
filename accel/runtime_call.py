"""What the ONNX Runtime and OpenVINO backends share: the ``threads`` check and the wrapper that
calls a runtime's compiled graph like the torch model (tensors in by forward's names, numpy to the
runtime, the model's output structure back)."""
from __future__ import annotations

import torch

from slimkit.errors import InvalidParameterError
from slimkit.exporter.onnx import feed as _feed

from .backends import BackendError


def check_threads(threads) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidParameterError("threads", threads, "None (torch's thread count) or a positive int")


class RuntimeCall:
    """Subclasses set ``input_names`` and implement ``_run(feed: {name: ndarray}) -> [ndarray]``."""

    runtime = "runtime"
    input_names: list[str]

    def __init__(self, positional: list[str], out_spec, device: torch.device | None = None):
        self.positional, self.out_spec = positional, out_spec
        self.device = device if device is not None else torch.device("cpu")

    def _run(self, feed: dict) -> list:
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        given = _feed(self.input_names, self.positional, args, kwargs)
        missing = [n for n in self.input_names if not isinstance(given.get(n), torch.Tensor)]
        if missing:
            raise BackendError(f"the {self.runtime} model needs inputs {missing}; got {sorted(given)}")
        outs = [torch.from_numpy(o) for o in
                self._run({n: given[n].detach().cpu().contiguous().numpy() for n in self.input_names})]
        if self.device.type != "cpu":
            outs = [o.to(self.device) for o in outs]
        if self.out_spec is not None:
            return torch.utils._pytree.tree_unflatten(outs, self.out_spec)
        return outs[0] if len(outs) == 1 else tuple(outs)
