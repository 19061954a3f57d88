"""The layers that run from sparse weight storage (:mod:`slimkit.sparse.formats`).

Execution (``execution`` in the spec, the ``runs`` attribute says what last ran):

- ``dense``: the weight is decompressed once on first use and cached (not saved). Storage
  shrinks; compute and run-time memory are those of the dense layer;
- ``csr``: a real sparse kernel. Linear: torch's CSR matmul (int32 indices, built once);
  Embedding: rows are gathered straight from CSR, no dense table is ever built;
- ``2:4``: ``torch.sparse.to_sparse_semi_structured`` on CUDA where the dtype and shape are
  supported; on CPU (no such kernel) it runs dense and ``runs`` says so.

These layers are for inference: their weights are buffers, not trainable parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..artifact import register_module
from ..errors import check_choice
from .formats import FORMATS, decode, encode, to_torch_csr

EXECUTIONS = ("dense", "csr", "2:4")

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64)}


class SparseWeight(nn.Module):
    """Base of the sparse layers: holds one weight in ``fmt`` as buffers, plus an optional
    dense bias parameter; decompressed or converted forms are cached, never saved."""

    def __init__(self, fmt: str, shape: tuple[int, ...], buffers: dict[str, torch.Tensor],
                 bias: torch.Tensor | None, execution: str = "dense"):
        super().__init__()
        check_choice("format", fmt, FORMATS)
        check_choice("execution", execution, EXECUTIONS)
        self.fmt, self.shape, self.execution = fmt, tuple(int(s) for s in shape), execution
        self.runs = ""  # what the last forward actually ran (set on first use)
        self.runs_reason = ""  # why a kernel was not used, when it was asked for
        for name, t in buffers.items():
            self.register_buffer(name, t)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return math.prod(self.shape[1:])

    def stored(self) -> dict[str, torch.Tensor]:
        return {name: b for name, b in self.named_buffers(recurse=False)}

    @property
    def nnz(self) -> int:
        if self.fmt == "2:4":
            return int((self.values != 0).sum())
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        return 1 - self.nnz / (self.rows * self.cols)

    def nbytes(self) -> int:
        """Stored bytes of the weight (values + indices), bias excluded."""
        return sum(b.numel() * b.element_size() for b in self.stored().values())

    def dense_weight(self) -> torch.Tensor:
        """The weight in its original shape (cached after the first call)."""
        w = self._cache.get("dense")
        if w is None:
            w = decode(self.stored(), self.fmt, self.rows, self.cols).view(self.shape)
            self._cache["dense"] = w
        return w

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, read-only: code that reads ``layer.weight`` (T5's ``wo.weight.dtype``,
        ViT's patch embedding) keeps working on a sparse layer."""
        return self.dense_weight()

    def _torch_csr(self) -> torch.Tensor:
        c = self._cache.get("csr")
        if c is None:
            w = decode(self.stored(), self.fmt, self.rows, self.cols)
            if w.device.type == "cpu" and w.dtype in (torch.float16, torch.bfloat16):
                w = w.float()  # torch's CPU CSR matmul has no half kernel: multiply in fp32, cast back
            c = to_torch_csr(w)
            self._cache["csr"] = c
        return c

    # caches follow the buffers: moved (.to/.cuda/.half) or reloaded -> rebuilt on next use
    def _apply(self, fn, recurse=True):
        self._cache = {}
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = {}
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):  # deepcopy cannot copy a cached torch CSR tensor; a copy rebuilds it
        return {**super().__getstate__(), "_cache": {}}

    def spec(self) -> dict:
        return {"format": self.fmt, "shape": list(self.shape), "execution": self.execution,
                "buffers": {n: [list(b.shape), str(b.dtype).removeprefix("torch.")] for n, b in self.stored().items()},
                "bias": None if self.bias is None else [list(self.bias.shape), str(self.bias.dtype).removeprefix("torch.")]}

    @classmethod
    def _empty(cls, spec: dict) -> dict:
        buffers = {n: torch.empty(shape, dtype=_DTYPES[d]) for n, (shape, d) in spec["buffers"].items()}
        bias = None if spec["bias"] is None else torch.empty(spec["bias"][0], dtype=_DTYPES[spec["bias"][1]])
        return dict(fmt=spec["format"], shape=tuple(spec["shape"]), buffers=buffers, bias=bias,
                    execution=spec["execution"])

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, fmt: str, execution: str,
                   **extra) -> SparseWeight:
        w2d = weight.detach().reshape(weight.shape[0], -1)
        b = None if bias is None else bias.detach().clone()
        return cls(fmt=fmt, shape=tuple(weight.shape), buffers=encode(w2d, fmt), bias=b,
                   execution=execution, **extra)

    def to_float(self) -> nn.Module:
        """The plain float layer holding this one's weight (zeros included) and bias, in the same
        train/eval mode (quantize on a sparsified model quantizes it, then stores it sparse again)."""
        w = self.dense_weight()
        new = self._float_layer(w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new.train(self.training)

    def _float_layer(self, dtype: torch.dtype) -> nn.Module:
        """The empty float layer of this kind and shape (each sparse layer type says which)."""
        raise TypeError(f"no float layer for {type(self).__name__}")

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, format={self.fmt!r}, sparsity={self.sparsity:.1%}, "
                f"execution={self.execution!r}, bias={self.bias is not None}")


@register_module("sparse.Linear")
class SparseLinear(SparseWeight):
    in_features = property(lambda self: self.cols)
    out_features = property(lambda self: self.rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.execution == "csr":
            self.runs = "csr kernel"
            csr = self._torch_csr()
            x2 = x.reshape(-1, self.cols).to(csr.dtype)
            out = torch.mm(csr, x2.t()).t()  # (out, in) @ (in, N)
            if self.bias is not None:
                out = out + self.bias.to(csr.dtype)
            return out.to(x.dtype).reshape(*x.shape[:-1], self.rows)
        if self.execution == "2:4" and x.is_cuda:
            w = self._semi_structured()
            if w is not None:
                self.runs = "2:4 semi-structured kernel"
                return F.linear(x, w, self.bias)
        self.runs = "dense (decompressed)"
        return F.linear(x, self.dense_weight(), self.bias)

    def _semi_structured(self):
        if "2:4" not in self._cache:
            self._cache["2:4"] = None
            try:
                from torch.sparse import to_sparse_semi_structured

                self._cache["2:4"] = to_sparse_semi_structured(self.dense_weight())
            except Exception as e:  # dtype/shape the kernels do not take: run dense, say why
                self.runs_reason = f"to_sparse_semi_structured refused: {e}"
        return self._cache["2:4"]

    def _float_layer(self, dtype: torch.dtype) -> nn.Linear:
        return nn.Linear(self.cols, self.rows, bias=self.bias is not None, dtype=dtype)

    @classmethod
    def from_spec(cls, spec: dict) -> SparseLinear:
        return cls(**cls._empty(spec))


@register_module("sparse.Conv")
class SparseConv(SparseWeight):
    """Conv1d/2d/3d (zero padding) from a sparse weight, run with the decompressed weight."""

    def __init__(self, *, stride, padding, dilation, groups, **kw):
        super().__init__(**kw)
        self.stride, self.dilation, self.groups = tuple(stride), tuple(dilation), int(groups)
        self.padding = padding if isinstance(padding, str) else tuple(padding)

    # what code around a conv reads (HF MobileNet computes its padding from them)
    kernel_size = property(lambda self: self.shape[2:])
    out_channels = property(lambda self: self.shape[0])
    in_channels = property(lambda self: self.shape[1] * self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs = "dense (decompressed)"
        conv = (F.conv1d, F.conv2d, F.conv3d)[len(self.shape) - 3]
        return conv(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _float_layer(self, dtype: torch.dtype) -> nn.Module:
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(self.shape) - 3]
        return conv(self.in_channels, self.out_channels, tuple(self.kernel_size), stride=self.stride,
                    padding=self.padding, dilation=self.dilation, groups=self.groups, bias=self.bias is not None,
                    dtype=dtype)

    def spec(self) -> dict:
        return {**super().spec(), "stride": list(self.stride), "dilation": list(self.dilation), "groups": self.groups,
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding)}

    @classmethod
    def from_spec(cls, spec: dict) -> SparseConv:
        return cls(**cls._empty(spec), stride=spec["stride"], padding=spec["padding"],
                   dilation=spec["dilation"], groups=spec["groups"])


@register_module("sparse.Embedding")
class SparseEmbedding(SparseWeight):
    """Embedding lookup from a sparse table. With execution "csr" the requested rows are
    gathered straight from the CSR buffers: the dense table never exists in memory."""

    num_embeddings = property(lambda self: self.rows)
    embedding_dim = property(lambda self: self.cols)

    def __init__(self, *, padding_idx=None, **kw):
        super().__init__(**kw)
        self.padding_idx = padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.execution == "csr" and self.fmt == "csr":
            self.runs = "csr row gather"
            return self._gather(ids)
        self.runs = "dense (decompressed)"
        return F.embedding(ids, self.dense_weight(), self.padding_idx)

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        crow = self.crow.long()
        start, count = crow[flat], crow[flat + 1] - crow[flat]
        out = self.values.new_zeros(flat.numel(), self.cols)
        total = int(count.sum())
        if total:
            row = torch.repeat_interleave(torch.arange(flat.numel(), device=ids.device), count)
            first = torch.repeat_interleave(start - (count.cumsum(0) - count), count)
            src = first + torch.arange(total, device=ids.device)  # position in col/values
            out[row, self.col[src].long()] = self.values[src]
        return out.view(*ids.shape, self.cols)

    def _float_layer(self, dtype: torch.dtype) -> nn.Embedding:
        return nn.Embedding(self.rows, self.cols, padding_idx=self.padding_idx, dtype=dtype)

    def spec(self) -> dict:
        return {**super().spec(), "padding_idx": self.padding_idx}

    @classmethod
    def from_spec(cls, spec: dict) -> SparseEmbedding:
        return cls(**cls._empty(spec), padding_idx=spec["padding_idx"])
