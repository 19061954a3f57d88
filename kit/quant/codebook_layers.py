"""Layers whose weight is stored as codebook indices (:mod:`.codebook`): bit-packed indices plus
a 2^bits fp32 codebook, so ``slimkit.size``/``save`` count the real bytes.

Execution is SIMULATED: no CPU kernel computes from a codebook, so the weight is gathered from the
codebook into float for each call (the unpacked indices, one uint8 per weight, are cached and never
saved) and the layer runs the float operation. Storage is real; compute and speed are the float
layer's.

Each class is the affine quantized layer of the same kind (:mod:`.layers`) with the weight storage
swapped: forward, spec and the read-only ``weight`` come from there. Training the centroids
(:mod:`.centroids`) makes ``codebook`` a Parameter for a while: the gather's gradient sums the
gradients of every weight sharing a centroid, which is Deep Compression's rule.
"""
from __future__ import annotations

import math

import torch

from ..artifact import register_module
from . import layers as affine_layers
from .codebook import Codebook, pack_bits, packed_bytes, unpack_bits
from .layers import QuantLinear, QWeight, float_dtype

SCHEME = "codebook"


class CodebookWeight(QWeight):
    """The codebook storage the Codebook* layers share: ``indices`` (packed uint8) and ``codebook``."""

    def __init__(self, *args, reserved_zero: bool = False, **kwargs):
        kwargs.update(scheme=SCHEME, granularity="per_tensor", group_size=None)
        if issubclass(type(self), QuantLinear):
            kwargs["act"] = "none"  # no integer kernel reads a codebook
        super().__init__(*args, **kwargs)
        self.reserved_zero = bool(reserved_zero)

    def _init_qweight(self, qt: Codebook | None, shape, bits, scheme, granularity, axis, group_size,
                      bias, has_bias, dtype: str = "float32", bias_size: int | None = None):
        self.shape, self.bits, self.scheme = tuple(shape), bits, SCHEME
        self.granularity, self.axis, self.group_size = "per_tensor", 0, None
        self.dtype = float_dtype(dtype)
        if qt is None:  # from_spec: empty buffers of the right size
            idx, cb = torch.empty(packed_bytes(math.prod(self.shape), bits), dtype=torch.uint8), torch.empty(2 ** bits)
        else:
            idx, cb = pack_bits(qt.idx, bits), qt.centroids.float().clone()
        self.register_buffer("indices", idx)
        self.register_buffer("codebook", cb)
        self.zero_point = None
        self._unpacked: tuple | None = None
        self._init_bias(bias, has_bias, bias_size)

    def unpacked(self) -> torch.Tensor:
        """The indices, one uint8 per weight (cached per packed buffer: unpacking is the slow part)."""
        key = (self.indices.data_ptr(), self.indices._version, self.indices.device)
        if self._unpacked is None or self._unpacked[0] != key:
            self._unpacked = (key, unpack_bits(self.indices, self.bits, math.prod(self.shape)).reshape(self.shape))
        return self._unpacked[1]

    def qtensor(self) -> Codebook:
        return Codebook(self.unpacked(), self.codebook.detach(), self.bits, self.reserved_zero)

    def dequantized_weight(self) -> torch.Tensor:
        return self.codebook[self.unpacked().long()]  # differentiable in the codebook (centroid training)

    @property
    def storage(self) -> str:
        return f"{self.bits}-bit codebook indices (bit-packed) + {2 ** self.bits} fp32 centroids"

    @property
    def execution(self) -> str:
        return f"{self.storage}; SIMULATED compute: the weight is gathered from the codebook into float per call"

    @property
    def integer_kernel(self) -> bool:
        return False

    def spec(self) -> dict:
        spec = super().spec()
        for key in ("scheme", "granularity", "group_size", "act"):
            spec.pop(key, None)
        return {**spec, "reserved_zero": self.reserved_zero}

    def __getstate__(self):  # the unpacked indices are derived data: never copied or pickled
        return {**super().__getstate__(), "_unpacked": None}


def _codebook_class(base: type) -> type:
    name = base.__name__.replace("Quant", "Codebook")
    cls = type(name, (CodebookWeight, base), {
        "__module__": __name__, "__qualname__": name,
        "__doc__": f"{base.__name__[5:]} with a codebook-quantized weight (storage real, compute SIMULATED)."})
    globals()[name] = cls  # importable by name, like any class
    return register_module(f"slimkit.{name}")(cls)


# affine layer class -> its codebook twin (same forward, codebook storage)
CODEBOOK_CLASSES = {base: _codebook_class(base) for base in (getattr(affine_layers, f"Quant{kind}") for kind in (
    "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Embedding"))}
