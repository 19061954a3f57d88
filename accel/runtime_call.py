"""What the ONNX Runtime and OpenVINO backends share: the ``threads`` check and the wrapper that
calls a runtime's compiled graph like the torch model (tensors in by forward's names, numpy to the
runtime, the model's output structure back)."""
from __future__ import annotations

import torch

from slimkit.errors import InvalidParameterError
from slimkit.exporter.onnx import feed as _feed

from .backends import BackendError, some_names


def check_saturation(model, device: torch.device, backend: str, runtime: str) -> None:
    """BackendError naming a model's static 8-bit int8 layers on an x86 CPU without VNNI: ONNX Runtime
    and OpenVINO fuse their QDQ pattern into a u8 x s8 kernel that multiplies with ``vpmaddubsw``,
    whose int16 pair sums saturate on full-range 8-bit weights (MiniLM's SmoothQuant static model
    left ONNX Runtime at cosine 0.99656 to slimkit's arithmetic; with 7-bit weights it is exact).
    Dynamic layers are exported with float activations and run exactly; GPU kernels accumulate in
    int32 without int16 pair sums."""
    from slimkit.hardware import x86_without_int8_dot
    from slimkit.quant.kernels import activation_bits
    from slimkit.quant.layers import int8_kernel_layers

    if device.type != "cpu" or not x86_without_int8_dot():
        return
    # the rule fbgemm's path already applies: codes beyond +-64 overflow the int16 pair sums
    bad = [n for n in int8_kernel_layers(model, "static") if activation_bits(model.get_submodule(n).qweight) == 7]
    if bad:
        raise BackendError(
            f"backend {backend!r} would compute wrong numbers for {len(bad)} static int8 layers ({some_names(bad)}): "
            f"this CPU has no VNNI, and {runtime}'s u8 x s8 kernel saturates on "
            "full-range 8-bit weights. Quantize with bits=7 (slimkit.quantize(model, bits=7, activations=data)), "
            "or leave activations dynamic")


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
