"""Codebook quantization (weight sharing, Deep Compression's second stage): each layer's weights
are replaced by indices into a small table of shared values found by 1-D k-means.

- k-means runs over the layer's NON-ZERO weights, initialised linearly over [min, max] (Han et
  al. found linear init best: it keeps the rare large weights, which matter most). When the layer
  holds zeros (pruned), index 0 is reserved for the value 0, so zeros stay exact zeros and
  2^bits - 1 centroids are fitted to the rest.
- Storage: indices bit-packed densely at ``bits`` bits each (3, 5, 6 and 7 bits too: no byte
  per value), little-endian within a byte stream, plus the codebook in fp32 (2^bits values).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidParameterError, check_int

KMEANS_ITERATIONS = 40


@dataclass
class Codebook:
    """A weight as codebook indices (``idx``: uint8 with the weight's shape) and shared values
    (``centroids``: fp32, 2^bits). ``reserved_zero``: centroid 0 is the exact 0 of pruned weights."""

    idx: torch.Tensor
    centroids: torch.Tensor
    bits: int
    reserved_zero: bool

    def dequantize(self) -> torch.Tensor:
        return self.centroids[self.idx.long()]


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """k sorted centroids of 1-D ``values`` (Lloyd's algorithm, linear init over [min, max]).
    In 1-D the nearest centroid is found by bisecting the midpoints, so each pass is O(n log k).
    An empty cluster keeps its centroid. Deterministic: no random init."""
    v = values.detach().float().reshape(-1)
    if v.numel() == 0:
        return torch.zeros(k)
    c = torch.linspace(float(v.min()), float(v.max()), k)
    for _ in range(iterations):
        assign = assign_nearest(v, c)
        total = torch.zeros(k).index_add_(0, assign, v)
        count = torch.zeros(k).index_add_(0, assign, torch.ones_like(v))
        new = torch.where(count > 0, total / count.clamp(min=1), c)
        new, _ = new.sort()
        if torch.equal(new, c):
            break
        c = new
    return c


def assign_nearest(v: torch.Tensor, sorted_centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of ``sorted_centroids`` for each value."""
    mids = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    return torch.bucketize(v, mids)


def codebook_tensor(w: torch.Tensor, bits: int) -> Codebook:
    """``w`` quantized to 2^bits shared values; zeros (if any) keep index 0 and the value 0."""
    check_int("bits", bits, 2, 8)
    if not torch.isfinite(w).all():
        raise InvalidParameterError("x", "tensor with NaN/inf", "finite values (cannot quantize NaN or inf)")
    flat = w.detach().float().reshape(-1)
    nonzero = flat != 0
    reserved = bool((~nonzero).any())
    k = 2 ** bits - int(reserved)
    c = kmeans_1d(flat[nonzero], k)
    idx = torch.zeros(flat.numel(), dtype=torch.uint8)
    idx[nonzero] = (assign_nearest(flat[nonzero], c) + int(reserved)).to(torch.uint8)
    centroids = torch.cat([torch.zeros(1), c]) if reserved else c
    return Codebook(idx.reshape(w.shape), centroids.contiguous(), bits, reserved)


def packed_bytes(numel: int, bits: int) -> int:
    return math.ceil(numel * bits / 8)


def pack_bits(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ``bits``-bit values (uint8) -> a dense little-endian bit stream in uint8 bytes."""
    u = idx.reshape(-1).to(torch.uint8)
    if bits == 8:
        return u.clone()
    shifts = torch.arange(bits, dtype=torch.uint8)
    stream = ((u.unsqueeze(1) >> shifts) & 1).reshape(-1)  # bit j of value i at i * bits + j
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).reshape(-1, 8)
    return (stream << torch.arange(8, dtype=torch.uint8)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``numel`` uint8 values."""
    if bits == 8:
        return packed[:numel]
    stream = ((packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1)
    stream = stream.reshape(-1)[: numel * bits].reshape(numel, bits)
    weights = (1 << torch.arange(bits, device=packed.device)).to(torch.uint8)
    return (stream * weights).sum(1, dtype=torch.uint8)
