"""SIMULATION of quantized activations: a wrapper that fake-quantizes a layer's input in fp32.
Used where calibrated int8 inputs have no integer kernel; reports label such layers simulated."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..artifact import register_module
from .affine import activation_qparams, qrange


@register_module("slimkit.FakeQuantInput")
class FakeQuantInput(nn.Module):
    """SIMULATION: fake-quantizes the input of ``inner`` (quantize-dequantize in fp32) with a
    calibrated per-tensor range, then runs ``inner``. No memory or speed is saved."""

    execution = "simulated: input fake-quantized in fp32"

    def __init__(self, bits: int = 8, inner: nn.Module | None = None, act_range: tuple[float, float] = (0.0, 0.0)):
        super().__init__()
        self.bits = bits
        self.inner = inner if inner is not None else nn.Identity()  # replaced on load
        s, zp = activation_qparams(*act_range, bits)
        self.register_buffer("act_scale", torch.tensor(s, dtype=torch.float32))
        self.register_buffer("act_zero_point", torch.tensor(zp, dtype=torch.float32))

    # code that reads the wrapped layer's tensors directly (ViT's patch embedding) still finds them
    weight = property(lambda self: self.inner.weight)
    bias = property(lambda self: self.inner.bias)

    def __getattr__(self, name: str):
        # ... and its other attributes (HF MobileNet reads conv.stride / kernel_size for its padding)
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner":
                raise
            return getattr(super().__getattr__("inner"), name)

    def spec(self) -> dict:
        return {"bits": self.bits}

    @classmethod
    def from_spec(cls, spec: dict) -> "FakeQuantInput":
        return cls(**spec)

    def forward(self, x, *args, **kwargs):
        qmin, qmax = qrange(self.bits, "asymmetric")
        if torch.is_floating_point(x):
            s, zp = self.act_scale, self.act_zero_point
            x = ((x.float() / s).round() + zp).clamp(qmin, qmax).sub(zp).mul(s).to(x.dtype)
        return self.inner(x, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"bits={self.bits} (simulated)"
