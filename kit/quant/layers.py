"""Quantized layers: integer storage, and integer execution where a CPU kernel exists.

Every class here keeps its weights as integer buffers (int8, or sub-byte values packed two
or four to a byte) plus float scales, so ``slimkit.size`` and ``slimkit.save`` count the true
bytes. Each says how it executes in :attr:`execution`:

- :class:`QuantLinear` with 8-bit symmetric per-channel/per-tensor weights runs a real int8
  matmul: ``torch._int_mm`` (int8 x int8 -> int32) on GPUs and on CPUs with VNNI/AMX, fbgemm's
  u8 x s8 kernel on CPUs without them (:mod:`.kernels` says why). Activations are quantized at
  run time, per token (row) and asymmetric by default, or with a fixed range from calibration.
  Any other weight format dequantizes the weight to fp32 at each call ("int4 storage, fp32
  compute"): the memory saving is real, the arithmetic is not integer.
- :class:`QuantConv1d`/``2d``/``3d``, :class:`QuantConvTranspose2d` (1-3 d) and
  :class:`QuantEmbedding`: integer storage, float compute (a conv is dequantized per call; an
  embedding dequantizes only the rows it looks up).

Every quantized layer keeps the float layer's dtype (bf16/fp16 models stay bf16/fp16 outside
the integer buffers) and exposes a read-only ``weight`` (the dequantized weight) for code that
reads it directly. LSTM/GRU/RNN are in :mod:`.rnn`; the simulation wrapper
:class:`~.fakequant.FakeQuantInput` in :mod:`.fakequant`.

All are registered with :mod:`slimkit.artifact`, so ``slimkit.load(slimkit.save(m))`` rebuilds
them bit-exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..artifact import register_module
from .affine import (
    QTensor,
    activation_qparams,
    dequantize_tensor,
    pack,
    qrange,
    storage_bits,
    unpack,
)
from .kernels import activation_bits, cpu_kernel, fbgemm_linear, fbgemm_pack

_TINY = 1e-12


def int8_kernel_format(bits: int, scheme: str, granularity: str) -> bool:
    """Weight formats :class:`QuantLinear` runs on ``torch._int_mm``: 8-bit symmetric, one scale
    per output channel or one in all."""
    return bits == 8 and scheme == "symmetric" and granularity in ("per_channel", "per_tensor")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def float_dtype(name: str) -> torch.dtype:
    """A float dtype from its spec name ("float32", "bfloat16", "float16")."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype {name!r} is not a torch floating-point dtype")
    return dtype


class QWeight(nn.Module):
    """Shared storage of one quantized weight: ``qweight`` (int8 or packed uint8), ``scale``
    (fp32, or fp16 per-group scales) and, for asymmetric schemes, ``zero_point``. ``dtype`` is the float layer's dtype:
    the bias is kept in it, and :attr:`weight` returns the dequantized weight in it, so code that
    reads ``layer.weight`` (``F.multi_head_attention_forward``, T5's ``wo.weight.dtype``, ViT's
    patch embedding) keeps working on a quantized layer."""

    def _init_qweight(self, qt: QTensor | None, shape, bits, scheme, granularity, axis, group_size,
                      bias: torch.Tensor | None, has_bias: bool, dtype: str = "float32", bias_size: int | None = None):
        self.shape, self.bits, self.scheme = tuple(shape), bits, scheme
        self.granularity, self.axis, self.group_size = granularity, axis, group_size
        self.dtype = float_dtype(dtype)
        numel = math.prod(self.shape)
        if qt is None:  # from_spec: empty buffers of the right shape and dtype
            nbytes = math.ceil(numel * storage_bits(bits) / 8)
            q = torch.empty(self.shape, dtype=torch.int8) if storage_bits(bits) == 8 else \
                torch.empty(nbytes, dtype=torch.uint8)
            sshape = _scale_shape(self.shape, granularity, axis, group_size)
            scale = torch.empty(sshape)
            zp = torch.empty(sshape, dtype=torch.int8) if scheme == "asymmetric" else None
        else:
            q = qt.q if storage_bits(bits) == 8 else pack(qt.q, bits)
            scale, zp = qt.scale, (qt.zero_point.to(torch.int8) if scheme == "asymmetric" else None)
        self.register_buffer("qweight", q)
        # fp16 scales (scale_dtype="float16") stay fp16: dequantization promotes to fp32 exactly
        self.register_buffer("scale", (scale if scale.dtype == torch.float16 else scale.float()).contiguous())
        self.register_buffer("zero_point", zp)
        self._init_bias(bias, has_bias, bias_size)

    def _init_bias(self, bias: torch.Tensor | None, has_bias: bool, bias_size: int | None) -> None:
        """The bias, a buffer in the layer's dtype (an empty one of the right size from a spec)."""
        if has_bias:
            b = torch.empty(bias_size or self.shape[0]) if bias is None else bias.detach().clone()
            self.register_buffer("bias", b.to(self.dtype))
        else:
            self.bias = None

    def qtensor(self) -> QTensor:
        q = self.qweight if storage_bits(self.bits) == 8 else unpack(self.qweight, self.bits, self.shape)
        zp = self.zero_point if self.zero_point is not None else torch.zeros((), dtype=torch.int8)
        return QTensor(q, self.scale, zp, self.bits, self.scheme, self.granularity, self.axis, self.group_size)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_tensor(self.qtensor())

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight in the layer's float dtype (read-only: a new tensor per read)."""
        return self.dequantized_weight().to(self.dtype)

    def _bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(dtype)

    @classmethod
    def from_spec(cls, spec: dict) -> "QWeight":
        return cls(**spec)

    @property
    def storage(self) -> str:
        sb = storage_bits(self.bits)
        if sb == 8:
            return f"int{self.bits} in int8 bytes" if self.bits < 8 else "int8"
        return f"int{self.bits} packed {8 // sb} per byte"


def _scale_shape(shape, granularity, axis, group_size):
    if granularity == "per_tensor":
        return ()
    if granularity == "per_channel":
        return (shape[axis],)
    return (shape[axis], math.prod(shape) // shape[axis] // group_size)


@register_module("slimkit.QuantLinear")
class QuantLinear(QWeight):
    """A Linear layer with quantized weights.

    act: "dynamic" (int8 per-token asymmetric activations at run time), "static" (int8 with a
    calibrated per-tensor scale/zero point) or "none" (weights only; fp32 activations).
    Integer execution needs 8-bit symmetric weights with one scale per output channel (or one
    in all); other formats dequantize the weight per call.
    """

    def __init__(self, in_features: int, out_features: int, *, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel", group_size: int | None = None, act: str = "dynamic",
                 bias: bool = True, qweight: QTensor | None = None, bias_value: torch.Tensor | None = None,
                 act_range: tuple[float, float] | None = None, dtype: str = "float32"):
        super().__init__()
        self.in_features, self.out_features, self.act = in_features, out_features, act
        self._init_qweight(qweight, (out_features, in_features), bits, scheme, granularity, 0, group_size,
                           bias_value, bias, dtype)
        if act == "static":
            lo, hi = act_range if act_range is not None else (0.0, 0.0)
            s, zp = activation_qparams(lo, hi)
            self.register_buffer("act_scale", torch.tensor(s, dtype=torch.float32))
            self.register_buffer("act_zero_point", torch.tensor(zp, dtype=torch.float32))
        self._cache: dict | None = None

    @property
    def integer_kernel(self) -> bool:
        return self.act in ("dynamic", "static") and int8_kernel_format(self.bits, self.scheme, self.granularity)

    def _kernel(self) -> str:
        return cpu_kernel() if self.qweight.device.type == "cpu" else "int_mm"

    @property
    def execution(self) -> str:
        if self.integer_kernel:
            how = "per-token dynamic" if self.act == "dynamic" else "static calibrated"
            if self._kernel() == "fbgemm":
                bits = activation_bits(self.qweight)
                if self.act == "static":
                    how = "per-token within the calibrated range"
                return (f"u8 x s8 -> s32 matmul (fbgemm, no VNNI on this CPU); activations {bits}-bit "
                        f"{how}" + (" (7 bits: 8-bit weights would saturate AVX2's int16 sums)" if bits == 7 else ""))
            return f"int8 x int8 -> int32 matmul (torch._int_mm); activations int8 {how}"
        acts = "activations fp32" if self.act == "none" else \
            "activations not quantized (no integer kernel for this weight format)"
        return f"{self.storage} storage, fp32 compute (weight dequantized per call; {acts})"

    def spec(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, bits=self.bits,
                    scheme=self.scheme, granularity=self.granularity, group_size=self.group_size,
                    act=self.act, bias=self.bias is not None, dtype=dtype_name(self.dtype))

    def __getstate__(self):  # the prepared-kernel cache is derived data: never copied or pickled
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def _derive(self) -> dict:
        """Kernel-ready tensors: the transposed int8 weight (a view), per-column weight scales,
        and what the activation zero point costs per column (dynamic) or the folded static
        affine terms."""
        ws = self.scale.expand(self.out_features).contiguous()
        colsum = self.qweight.sum(1, dtype=torch.int32).float() * ws  # sum_k W[n, k] * ws[n]
        bias = self._bias(torch.float32)  # the arithmetic is fp32 whatever the model's dtype
        if not torch.compiler.is_compiling() and self._kernel() == "fbgemm":
            c = {**fbgemm_pack(self.qweight, ws), "wsum": colsum, "bias": bias}
            if self.act == "static":  # the calibrated range, as fp32 bounds
                qmin, qmax = qrange(8, "asymmetric")
                zp, s = self.act_zero_point, self.act_scale
                c["lo"], c["hi"] = (qmin - zp) * s, (qmax - zp) * s
            return c
        c = {"wt": self.qweight.t(), "ws": ws}
        if self.act == "dynamic":
            c["colsum"], c["bias"] = colsum, bias
        else:  # static: fold the activation zero point and the bias into one vector
            s, zp = self.act_scale, self.act_zero_point
            c["ws"] = ws * s
            corr = -(zp * s) * colsum
            c["bias"] = corr if bias is None else corr + bias
            c["inv"] = 1.0 / s
        return c

    def _prepared(self) -> dict:
        """:meth:`_derive`, cached per weight in eager mode (rebuilt when buffers are replaced or
        changed in place). Derived outside inference mode, so that tensors cached by a call under
        ``torch.inference_mode()`` stay usable by later calls that autograd records. Under torch.compile the derivation is traced into the graph instead
        (a Python-side cache would make dynamo guard on it and recompile per layer); with
        inductor's freezing it is constant-folded, so a compiled model pays it once."""
        if torch.compiler.is_compiling():
            return self._derive()
        key = (self._kernel(), self.qweight.data_ptr(), self.scale.data_ptr(), self.qweight._version, self.scale._version,
               getattr(self, "act_scale", self.scale).data_ptr(), getattr(self, "act_scale", self.scale)._version)
        c = self._cache
        if c is None or c["key"] != key:
            with torch.inference_mode(False):
                c = self._derive()
            c["key"] = key
            self._cache = c
        return c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.integer_kernel:
            return F.linear(x, self.dequantized_weight().to(x.dtype), self._bias(x.dtype))
        c = self._prepared()
        shape, dtype = x.shape, x.dtype
        x = x.reshape(-1, shape[-1])
        if x.dtype != torch.float32:
            x = x.float()
        if "packed" in c:
            if self.act == "static":
                # clipped to the calibrated range, then per token within it: one calibrated range for
                # all tokens at 7 bits lost MiniLM 0.06 of cosine (0.931 vs 0.993 at 8 bits)
                x = x.clamp(c["lo"], c["hi"])
            # two reductions, not torch.aminmax(dim=1): 4-10x faster on a 4096-row batch (2.8 vs 10.4 ms
            # at 4096x1536, 2 threads), and a tenth of MiniLM's 32x128 time was in aminmax
            lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
            y = fbgemm_linear(x, c["packed"], c["reduce_range"], c["wsum"], c["bias"], lo, hi)
        elif self.act == "dynamic":
            # Per-row (per-token) asymmetric int8; the range includes 0 so zero stays exact.
            # In-place steps: eager makes one pass per op, so fewer temporaries = less memory
            # traffic; torch.compile fuses the whole sequence into one or two loops anyway.
            hi = x.amax(1, keepdim=True).clamp_(min=0)
            lo = x.amin(1, keepdim=True).clamp_(max=0)
            s = (hi - lo).div_(255).clamp_(min=_TINY)
            zp = lo.div(s).round_().neg_().sub_(128)
            xq = torch.addcmul(zp, x, s.reciprocal()).round_().clamp_(-128, 127).to(torch.int8)
            acc = torch._int_mm(xq, c["wt"]).float().mul_(c["ws"])
            # y = s * (acc - zp * colsum) + bias: the zero point's share removed exactly
            y = torch.addcmul(c["bias"], acc, s) if c["bias"] is not None else acc.mul_(s)
            y.addr_((zp * s).flatten(), c["colsum"], alpha=-1)
        else:
            xq = torch.addcmul(self.act_zero_point, x, c["inv"]).round_().clamp_(-128, 127).to(torch.int8)
            y = torch.addcmul(c["bias"], torch._int_mm(xq, c["wt"]).float(), c["ws"])
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bits={self.bits}, {self.scheme}, {self.granularity}, act={self.act}"



def int8_kernel_layers(model: nn.Module, act: str | None = None) -> list[str]:
    """Qualified names of ``model``'s QuantLinear layers that run an integer kernel (``act``: only
    those with that activation mode, "dynamic" or "static")."""
    return [n for n, m in model.named_modules()
            if isinstance(m, QuantLinear) and m.integer_kernel and act in (None, m.act)]


def _ntuple(v, n: int) -> tuple:
    """A conv size argument (an int, or a list/tuple from a spec) as an n-tuple."""
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _QuantConv(QWeight):
    """Conv / ConvTranspose (1-3 d) with integer weight storage (one scale per channel of the
    weight's first axis by default: output channels, or input channels for ConvTranspose whose
    weight is (in, out/groups, *k)); computes in the input's dtype with the weight dequantized per call."""

    dims, transposed = 2, False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, *, output_padding=0, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel", group_size: int | None = None, bias: bool = True,
                 qweight: QTensor | None = None, bias_value: torch.Tensor | None = None, dtype: str = "float32"):
        super().__init__()
        n = self.dims
        ks = _ntuple(kernel_size, n)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, ks
        self.stride, self.dilation = _ntuple(stride, n), _ntuple(dilation, n)
        self.padding = padding if isinstance(padding, str) else _ntuple(padding, n)
        self.output_padding, self.groups = _ntuple(output_padding, n), groups
        shape = (in_channels, out_channels // groups, *ks) if self.transposed else \
            (out_channels, in_channels // groups, *ks)
        self._init_qweight(qweight, shape, bits, scheme, granularity, 0, group_size, bias_value, bias, dtype,
                           bias_size=out_channels)

    execution = property(lambda self: f"{self.storage} storage, float compute (weight dequantized per call)")

    def spec(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    stride=list(self.stride), padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                    dilation=list(self.dilation), groups=self.groups, output_padding=list(self.output_padding),
                    bits=self.bits, scheme=self.scheme, granularity=self.granularity, group_size=self.group_size,
                    bias=self.bias is not None, dtype=dtype_name(self.dtype))

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        w, b = self.dequantized_weight().to(x.dtype), self._bias(x.dtype)
        if not self.transposed:
            return _CONV[self.dims](x, w, b, self.stride, self.padding, self.dilation, self.groups)
        pad = self.output_padding
        if output_size is not None:  # nn.ConvTranspose's rule for the output padding a size needs
            pad = nn.ConvTranspose1d._output_padding(self, x, output_size, list(self.stride), list(self.padding),
                                                     list(self.kernel_size), self.dims, list(self.dilation))
        return _CONV_T[self.dims](x, w, b, self.stride, self.padding, pad, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bits={self.bits}, "
                f"{self.scheme}, {self.granularity}")


@register_module("slimkit.QuantConv1d")
class QuantConv1d(_QuantConv):
    dims = 1


@register_module("slimkit.QuantConv2d")
class QuantConv2d(_QuantConv):
    dims = 2


@register_module("slimkit.QuantConv3d")
class QuantConv3d(_QuantConv):
    dims = 3


@register_module("slimkit.QuantConvTranspose1d")
class QuantConvTranspose1d(_QuantConv):
    dims, transposed = 1, True


@register_module("slimkit.QuantConvTranspose2d")
class QuantConvTranspose2d(_QuantConv):
    dims, transposed = 2, True


@register_module("slimkit.QuantConvTranspose3d")
class QuantConvTranspose3d(_QuantConv):
    dims, transposed = 3, True


@register_module("slimkit.QuantEmbedding")
class QuantEmbedding(QWeight):
    """Embedding table stored per row (one scale per token) or per group; a lookup dequantizes
    only the rows it reads, so the table never exists in fp32."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 bits: int = 8, scheme: str = "symmetric", granularity: str = "per_channel",
                 group_size: int | None = None, qweight: QTensor | None = None, dtype: str = "float32"):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self._init_qweight(qweight, (num_embeddings, embedding_dim), bits, scheme, granularity, 0, group_size,
                           None, False, dtype)

    execution = property(lambda self: f"{self.storage} storage; looked-up rows dequantized")

    def spec(self) -> dict:
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    padding_idx=self.padding_idx, bits=self.bits, scheme=self.scheme,
                    granularity=self.granularity, group_size=self.group_size, dtype=dtype_name(self.dtype))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.granularity == "per_tensor" or storage_bits(self.bits) != 8:
            return F.embedding(idx, self.weight, self.padding_idx)
        q = F.embedding(idx, self.qweight).float()  # gathers int8 rows only
        if self.granularity == "per_group":
            q = q.unflatten(-1, (-1, self.group_size))
        if self.zero_point is not None:
            q = q - self.zero_point[idx].float().unsqueeze(-1)
        out = q * self.scale[idx].unsqueeze(-1)
        return (out.flatten(-2) if self.granularity == "per_group" else out).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, {self.scheme}, {self.granularity}"
