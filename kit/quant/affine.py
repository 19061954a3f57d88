"""The affine min-max mapping done right: parameters, QTensor, (de)quantization, bit packing.

The mapping (the article's idea, with its bugs fixed)::

    scale      = (max - min) / (qmax - qmin)          # min <= 0 <= max, so 0 is exact
    zero_point = clip(round(qmin - min / scale), qmin, qmax)
    X_q        = clip(round(X / scale) + zero_point, qmin, qmax)
    X         ~= (X_q - zero_point) * scale

``symmetric`` uses zero_point = 0 and the restricted range [-(2^(b-1) - 1), 2^(b-1) - 1]
(scale = max|X| / qmax), which integer kernels need; ``asymmetric`` uses the full signed range
[-2^(b-1), 2^(b-1) - 1]. One (scale, zero_point) per tensor, per channel (along ``axis``), or
per group of ``group_size`` consecutive values within a channel.

Storage: values of 5-8 bits are kept one per int8 byte (say so: int5-int7 save nothing over
int8 on disk); 3-4 bits pack two per byte and 2 bits four per byte (:func:`pack`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidParameterError, InvalidTypeError, check_choice, check_int

GRANULARITIES = ("per_channel", "per_tensor", "per_group")
SCHEMES = ("symmetric", "asymmetric")
MODES = ("auto", "real", "simulated")
DEFAULT_GROUP_SIZE = 32
# every one has an integer-storage implementation (qlayers); transformers' Conv1D is added per model
def qrange(bits: int, scheme: str = "symmetric") -> tuple[int, int]:
    """(qmin, qmax) of signed ``bits``-bit integers; symmetric drops -2^(b-1) so that the
    range is balanced around a zero point of 0."""
    hi = 2 ** (bits - 1) - 1
    return (-hi if scheme == "symmetric" else -hi - 1), hi


def storage_bits(bits: int) -> int:
    """Bits each value occupies when stored: 2 (four per byte), 4 (two per byte) or 8."""
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


@dataclass
class QTensor:
    """An integer tensor with its quantization parameters. ``q`` has the original shape (int8
    values in [qmin, qmax]); ``scale``/``zero_point`` are scalars (per_tensor), one per channel
    along ``axis`` (per_channel), or (channels, groups) (per_group)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    scheme: str
    granularity: str
    axis: int = 0
    group_size: int | None = None

    def dequantize(self) -> torch.Tensor:
        return dequantize_tensor(self)


def _rows(x: torch.Tensor, granularity: str, axis: int, group_size: int | None) -> torch.Tensor:
    """x viewed as (rows, values): one row per (scale, zero_point)."""
    if granularity == "per_tensor":
        return x.reshape(1, -1)
    x = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    return x if granularity == "per_channel" else x.reshape(-1, group_size)


def _unrows(rows: torch.Tensor, shape, granularity: str, axis: int) -> torch.Tensor:
    if granularity == "per_tensor":
        return rows.reshape(shape)
    moved = (shape[axis], *[s for i, s in enumerate(shape) if i != axis])
    return rows.reshape(moved).movedim(0, axis)


def _check_layout(x: torch.Tensor, granularity: str, axis: int, group_size: int | None, what: str = "tensor"):
    check_choice("granularity", granularity, GRANULARITIES)
    if granularity == "per_tensor":
        return
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim() or x.dim() == 0:
        raise InvalidParameterError("axis", axis, f"an axis of the {x.dim()}-d {what}")
    if granularity == "per_group":
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise InvalidParameterError("group_size", group_size, "a positive int for granularity='per_group'")
        n = x.numel() // max(x.shape[axis], 1)
        if n % group_size:
            raise InvalidParameterError(
                "group_size", group_size, f"a divisor of {n}, the number of values per channel of {what} "
                f"with shape {tuple(x.shape)}")


def qparams(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric", granularity: str = "per_tensor",
            axis: int = 0, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) of the min-max affine mapping of ``x`` (see the module docstring)."""
    check_int("bits", bits, 2, 8)
    check_choice("scheme", scheme, SCHEMES)
    _check_layout(x, granularity, axis, group_size)
    rows = _rows(x.detach().float(), granularity, axis, group_size)
    qmin, qmax = qrange(bits, scheme)
    lo = rows.amin(1).clamp(max=0)  # the range always includes 0: zero (padding, ReLU) stays exact
    hi = rows.amax(1).clamp(min=0)
    if scheme == "symmetric":
        scale = torch.maximum(-lo, hi) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi - lo) / (qmax - qmin)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.round(qmin - lo / scale).clamp(qmin, qmax).to(torch.int32)
    shape = () if granularity == "per_tensor" else (x.shape[axis],) if granularity == "per_channel" else (
        x.shape[axis], rows.shape[0] // x.shape[axis])
    return scale.reshape(shape), zp.reshape(shape)


def stored_scale(scale: torch.Tensor, scale_dtype: str = "float32") -> torch.Tensor:
    """``scale`` as it is stored: fp32, or rounded to fp16 (the weights are then rounded with the
    fp16 value, so what is stored is exactly what was used). A scale below fp16's range becomes its
    smallest positive value (the values of that row are then ~0 and stay ~0); one above it is an error."""
    if scale_dtype == "float32":
        return scale.float()
    if scale.abs().max() > torch.finfo(torch.float16).max:
        raise InvalidParameterError("scale_dtype", scale_dtype, "float32: a scale of "
                                    f"{scale.abs().max().item():.3g} exceeds float16's range")
    half = scale.half()
    return torch.where(half > 0, half, torch.full_like(half, 2.0 ** -24))


def quantize_tensor(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric", granularity: str = "per_tensor",
                    axis: int = 0, group_size: int | None = None, scale_dtype: str = "float32") -> QTensor:
    """X_q = clip(round(X / scale) + zero_point, qmin, qmax), with min-max parameters; the scale
    is stored (and used) in ``scale_dtype`` ("float32" or "float16")."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise InvalidTypeError("x", x, "a floating-point torch.Tensor")
    if not torch.isfinite(x).all():
        raise InvalidParameterError("x", "tensor with NaN/inf", "finite values (cannot quantize NaN or inf)")
    _check_layout(x, granularity, axis, group_size)  # before normalising axis: axis=2 of a 2-d x is an error
    axis = axis % x.dim() if x.dim() else 0
    scale, zp = qparams(x, bits, scheme, granularity, axis, group_size)
    scale = stored_scale(scale, scale_dtype)
    qmin, qmax = qrange(bits, scheme)
    rows = _rows(x.detach().float(), granularity, axis, group_size)
    q = torch.round(rows / scale.float().reshape(-1, 1)) + zp.reshape(-1, 1)
    q = _unrows(q.clamp_(qmin, qmax).to(torch.int8), x.shape, granularity, axis)
    return QTensor(q.contiguous(), scale, zp, bits, scheme, granularity, axis, group_size)


def dequantize_tensor(qt: QTensor) -> torch.Tensor:
    """X ~= (X_q - zero_point) * scale, in fp32."""
    rows = _rows(qt.q, qt.granularity, qt.axis, qt.group_size).float()
    zp = qt.zero_point.reshape(-1, 1).float() if qt.zero_point.numel() > 1 else qt.zero_point.float()
    scale = qt.scale.reshape(-1, 1) if qt.scale.numel() > 1 else qt.scale
    return _unrows((rows - zp) * scale, qt.q.shape, qt.granularity, qt.axis)


def fake_quantize(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric", granularity: str = "per_tensor",
                  axis: int = 0, group_size: int | None = None) -> torch.Tensor:
    """Quantize then dequantize (the simulation): fp32 values restricted to the quantized grid."""
    return dequantize_tensor(quantize_tensor(x, bits, scheme, granularity, axis, group_size)).to(x.dtype)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Sub-byte integers -> uint8 bytes: 2 bits four per byte, 3-4 bits two per byte
    (each stored as q + 2^(w-1), w the storage width). 5-8 bit values are not packed."""
    check_int("bits", bits, 2, 8)
    w = storage_bits(bits)
    if w == 8:
        raise InvalidParameterError("bits", bits, "2..4 for packing (5-8 bit values are stored one per int8 byte)")
    per = 8 // w
    u = (q.reshape(-1).to(torch.int16) + (1 << (w - 1))).to(torch.uint8)
    pad = (-u.numel()) % per
    if pad:
        u = torch.cat([u, u.new_zeros(pad)])
    u = u.reshape(-1, per)
    out = u[:, 0].clone()
    for i in range(1, per):
        out |= u[:, i] << (w * i)
    return out


def unpack(packed: torch.Tensor, bits: int, shape) -> torch.Tensor:
    """Inverse of :func:`pack`: int8 values with the given shape."""
    w = storage_bits(bits)
    per, mask = 8 // w, (1 << w) - 1
    cols = [(packed >> (w * i)) & mask for i in range(per)]
    u = torch.stack(cols, 1).reshape(-1)[: math.prod(shape)]
    return (u.to(torch.int16) - (1 << (w - 1))).to(torch.int8).reshape(tuple(shape))


def activation_qparams(lo: float, hi: float, bits: int = 8) -> tuple[float, float]:
    """Static asymmetric parameters (scale, zero point) for an activation range (0 always representable)."""
    qmin, qmax = qrange(bits, "asymmetric")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    s = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zp = float(min(qmax, max(qmin, round(qmin - lo / s))))
    return s, zp

