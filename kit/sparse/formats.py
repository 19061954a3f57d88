"""Sparse weight storage formats: encode a 2-D weight into CSR, bitmask or 2:4 buffers and back,
and count their bytes exactly.

A weight is stored as plain dense index/value buffers (safetensors has no sparse layout), so
``slimkit.save``/``slimkit.load`` round-trip it exactly. The weight is viewed as a matrix
(out, in): Linear as is, Conv as (out, in/groups * kernel), Embedding as (rows, dim).

Formats (``nbytes`` counts every stored byte, indices included):

- ``csr``: row pointers ``crow`` (rows+1) and column indices ``col`` (nnz) in the smallest
  integer dtype that holds them (uint8/int16/int32/int64), plus ``values`` (nnz). torch's own
  CSR uses int64 for both, which is larger than dense until ~2/3 of the weights are zero;
- ``bitmask``: one bit per weight (``mask``, packed little-endian into uint8) plus ``values``;
- ``2:4``: in every group of 4 consecutive inputs at most 2 are nonzero. ``values`` holds 2
  per group (out, in/2) and ``meta`` their two 2-bit positions, 4 bits a group (out, in/8).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from ..errors import check_choice

FORMATS = ("csr", "bitmask", "2:4")


# --- byte accounting (formulas; the encoders below produce exactly these sizes) -------------

def index_dtype(max_value: int) -> torch.dtype:
    """Smallest integer dtype that holds 0..max_value."""
    for dtype, hi in ((torch.uint8, 255), (torch.int16, 2**15 - 1), (torch.int32, 2**31 - 1)):
        if max_value <= hi:
            return dtype
    return torch.int64


def format_bytes(rows: int, cols: int, nnz: int, value_size: int) -> dict[str, int]:
    """Stored bytes of a rows x cols weight with nnz nonzeros in every format.

    ``csr_int64`` is torch's own CSR (int64 indices), shown for comparison. ``2:4`` assumes
    cols % 4 == 0 and is only valid when the 2:4 pattern holds.
    """
    csr_index = (rows + 1) * index_dtype(nnz).itemsize + nnz * index_dtype(max(cols - 1, 0)).itemsize
    return {
        "dense": rows * cols * value_size,
        "csr_int64": (rows + 1) * 8 + nnz * 8 + nnz * value_size,
        "csr": csr_index + nnz * value_size,
        "bitmask": math.ceil(rows * cols / 8) + nnz * value_size,
        "2:4": rows * (cols // 2) * value_size + rows * math.ceil(cols / 8),
    }


def holds_2_4(w2d: torch.Tensor) -> bool:
    """True if every group of 4 consecutive inputs has at most 2 nonzeros."""
    rows, cols = w2d.shape
    return cols % 4 == 0 and bool(((w2d != 0).view(rows, cols // 4, 4).sum(-1) <= 2).all())


# --- encoders / decoders (2-D weights) --------------------------------------------------------

def encode(w2d: torch.Tensor, fmt: str) -> dict[str, torch.Tensor]:
    """The buffers that store ``w2d`` in ``fmt``. For "2:4" the 2 largest-magnitude entries
    of each group are kept (exact when the pattern already holds)."""
    check_choice("format", fmt, FORMATS)
    rows, cols = w2d.shape
    if fmt == "csr":
        mask = w2d != 0
        counts = mask.sum(1)
        nnz = int(counts.sum())
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        col = mask.nonzero()[:, 1]
        return {"crow": crow.to(index_dtype(nnz)), "col": col.to(index_dtype(max(cols - 1, 0))),
                "values": w2d[mask]}
    if fmt == "bitmask":
        mask = (w2d != 0).reshape(-1)
        bits = F.pad(mask, (0, -mask.numel() % 8)).view(-1, 8).to(torch.uint8)
        weights = (2 ** torch.arange(8, device=w2d.device)).to(torch.uint8)
        return {"mask": (bits * weights).sum(1, dtype=torch.uint8), "values": w2d.reshape(-1)[mask]}
    # "2:4"
    groups = w2d.view(rows, cols // 4, 4)
    idx = groups.abs().topk(2, dim=-1).indices.sort(-1).values  # (rows, G, 2), ascending
    values = groups.gather(-1, idx).reshape(rows, cols // 2)
    code = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.uint8)  # 4 bits per group
    code = F.pad(code, (0, code.shape[1] % 2))
    return {"values": values, "meta": code[:, 0::2] | (code[:, 1::2] << 4)}


def decode(buffers: dict[str, torch.Tensor], fmt: str, rows: int, cols: int) -> torch.Tensor:
    """The dense (rows, cols) weight from its buffers."""
    check_choice("format", fmt, FORMATS)
    values = buffers["values"]
    if fmt == "csr":
        crow = buffers["crow"].long()
        rows_of = torch.repeat_interleave(torch.arange(rows, device=values.device), crow.diff())
        dense = values.new_zeros(rows * cols)
        dense[rows_of * cols + buffers["col"].long()] = values
        return dense.view(rows, cols)
    if fmt == "bitmask":
        shifts = torch.arange(8, device=values.device, dtype=torch.uint8)
        mask = ((buffers["mask"].unsqueeze(1) >> shifts) & 1).bool().reshape(-1)[: rows * cols]
        dense = values.new_zeros(rows * cols)
        dense[mask] = values
        return dense.view(rows, cols)
    # "2:4"
    meta = buffers["meta"]
    code = torch.stack([meta & 0xF, meta >> 4], -1).reshape(rows, -1)[:, : cols // 4].long()
    idx = torch.stack([code & 3, code >> 2], -1)
    dense = values.new_zeros(rows, cols // 4, 4)
    dense.scatter_(-1, idx, values.view(rows, cols // 4, 2))
    return dense.view(rows, cols)


def to_torch_csr(w2d: torch.Tensor) -> torch.Tensor:
    """torch CSR with int32 indices (faster than int64 in torch's CPU kernels)."""
    csr = encode(w2d, "csr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(csr["crow"].int(), csr["col"].int(), csr["values"], tuple(w2d.shape),
                                       check_invariants=False)
