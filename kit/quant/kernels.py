"""Which int8 matmul kernel :class:`~.layers.QuantLinear` runs on the CPU, and the fbgemm one.

``torch._int_mm`` (oneDNN s8 x s8 -> s32) is fast where the CPU has int8 dot-product instructions
(AVX-512 VNNI, AVX-VNNI, AMX). Without them (AVX2 only, e.g. AMD Zen 2/3) it falls back to a
slow path: measured on a Zen 3 at 2 threads, a 4096x384 @ 384x1536 product takes 1,889 ms against
51 ms in fp32, and MiniLM at 32x128 runs 20x slower than fp32. fbgemm's AVX2 kernel
(``quantized::linear_dynamic``) takes 25 ms on the same product, so it is used there.

fbgemm's AVX2 kernel multiplies u8 activations by s8 weights with ``vpmaddubsw``, which adds
pairs of products into int16 and saturates: exact only while 2 * 255 * max|w| <= 32767, i.e.
weight codes within +-64 (7-bit weights). Layers whose codes exceed that quantize activations
to 7 bits (fbgemm's ``reduce_range``) instead, so the arithmetic never saturates: which one a
layer uses is in its ``execution``.

fbgemm quantizes activations per tensor; slimkit's are per token. Each row is therefore shifted
and scaled to [-1, 1] before the call and the result mapped back:
``y = r * (W @ x') + c * sum_k W[:, k] + b`` with ``x = r * x' + c`` per row, which is exactly
per-token asymmetric quantization computed by a per-tensor kernel.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from ..errors import InvalidParameterError

KERNELS = ("int_mm", "fbgemm")
ENV = "SLIMKIT_INT8_KERNEL"  # force one kernel (side-by-side benchmarks; a CPU misdetected)
EXACT_MAX_CODE = 64  # 2 * 255 * 64 = 32640 <= 32767: no int16 saturation in vpmaddubsw
_TINY = 1e-12
_FORCED: ContextVar[str | None] = ContextVar("slimkit_int8_kernel", default=None)


@contextmanager
def reference_arithmetic():
    """Run int8 Linear layers on ``torch._int_mm`` inside the block, whatever the CPU: 8-bit
    per-token activations, the arithmetic slimkit's exports write (QDQ graphs, OpenVINO IR). Their
    output is checked against it; fbgemm's 7-bit activations would be a different reference."""
    token = _FORCED.set("int_mm")
    try:
        yield
    finally:
        _FORCED.reset(token)


def cpu_kernel() -> str:
    """The int8 kernel for CPU tensors on this machine: ``int_mm`` with VNNI/AMX, else ``fbgemm``
    (when this torch build has it). ``SLIMKIT_INT8_KERNEL`` overrides the choice."""
    if _FORCED.get() is not None:
        return _FORCED.get()
    forced = os.environ.get(ENV)
    if forced is not None:
        if forced not in KERNELS:
            raise InvalidParameterError(ENV, forced, f"one of {', '.join(KERNELS)}")
        return forced
    from ..hardware import x86_without_int8_dot

    if not x86_without_int8_dot():
        return "int_mm"
    return "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else "int_mm"


def activation_bits(qweight: torch.Tensor) -> int:
    """Bits fbgemm's AVX2 kernel quantizes activations to for these weight codes: 8 while every
    code is within +-64, else 7 (see the module docstring)."""
    return 7 if qweight.numel() and int(qweight.abs().max()) > EXACT_MAX_CODE else 8


def fbgemm_pack(qweight: torch.Tensor, ws: torch.Tensor) -> dict:
    """fbgemm's packed form of int8 weight codes with one scale per output row, and whether
    activations need 7 bits to stay exact (see the module docstring)."""
    zp = torch.zeros(qweight.shape[0], dtype=torch.long)
    qt = torch._make_per_channel_quantized_tensor(qweight.contiguous(), ws.double(), zp, 0)
    return {"packed": torch.ops.quantized.linear_prepack(qt, None), "reduce_range": activation_bits(qweight) == 7}


def fbgemm_linear(x: torch.Tensor, packed, reduce_range: bool, wsum: torch.Tensor,
                  bias: torch.Tensor | None, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``x @ W.T + bias`` for fp32 rows ``x`` quantized over their own [lo, hi] (per token),
    through fbgemm's per-tensor kernel: rows mapped to [-1, 1] and back."""
    c = (hi + lo).mul_(0.5)
    # a half-range under |c| / 1024 is widened to it: x * inv - c * inv then cancels to within 1e-4
    # of the [-1, 1] range (a narrower row still lands within |c| / 2^15 of its values)
    r = torch.maximum((hi - lo).mul_(0.5), c.abs().mul_(2.0**-10)).clamp_(min=_TINY)
    inv = r.reciprocal()
    # one pass in, one out (profiled: the passes around the kernel were a third of its time)
    y = torch.ops.quantized.linear_dynamic(torch.addcmul(-c * inv, x, inv), packed, reduce_range)
    shift = c * wsum if bias is None else torch.addcmul(bias, c, wsum)
    return shift.addcmul_(y, r)
