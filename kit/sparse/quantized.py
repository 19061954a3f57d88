"""Sparse integer storage: a quantized layer whose integer weight is itself stored sparse.

``slimkit.sparsify`` on a quantized model, and ``slimkit.quantize`` on a sparsified one, end
here. Each class is the quantized layer of the same kind (affine: :mod:`slimkit.quant.layers`;
codebook: :mod:`slimkit.quant.codebook_layers`) with its dense integer buffer (``qweight`` or
``indices``) replaced by

- the layout of the non-zero codes: a bitmask (``mask``) as :mod:`slimkit.sparse.formats` stores
  a float weight, or CSR whose ``col`` holds RELATIVE indices (the gap from the previous non-zero
  of the row, the first one's column itself) in one byte each, as Deep Compression does: a gap
  over 255 gets filler entries (stored zero codes) every 255 columns. A 1024-wide int8 layer at
  70% zeros stores 2 bytes per non-zero instead of 3 with absolute int16 columns. ``nnz`` counts
  the true non-zeros; ``stored_entries`` every stored entry, ``fillers`` included;
- ``values``: only the non-zero integer codes, row-major: int8 bytes for 5-8 bit affine values,
  packed 2 or 4 to a byte for int4/int2, bit-packed for codebook indices;
- the layer's scales / zero points / codebook, unchanged.

A "zero" is the code that dequantizes to exactly 0: the zero point (affine), the index of the
codebook's 0 centroid (codebook). Forward rebuilds the dense integer buffer once on first use
(cached, never saved) and runs the quantized layer's own forward, so outputs are exactly those of
the quantized layer holding the same codes (the int8 kernel where it had one). Storage is real;
no sparse integer kernel exists on CPU, so compute is the quantized layer's.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..artifact import register_module
from ..errors import InvalidParameterError
from ..quant import layers as affine_layers
from ..quant.affine import _rows, _unrows, pack, storage_bits, unpack
from ..quant.codebook import pack_bits, unpack_bits
from ..quant.codebook_layers import CODEBOOK_CLASSES, SCHEME, CodebookWeight
from ..quant.layers import QWeight, _scale_shape, float_dtype
from .formats import decode, encode, format_bytes, index_dtype

LAYOUTS = ("bitmask", "csr")


def code_bits(layer: QWeight) -> int:
    """Bits one stored code takes: the packed width of affine values, the codebook's bits."""
    return layer.bits if isinstance(layer, CodebookWeight) else storage_bits(layer.bits)


def dense_codes(layer: QWeight) -> torch.Tensor:
    """The integer codes of a quantized layer, one per weight, in the weight's shape."""
    return layer.unpacked() if isinstance(layer, CodebookWeight) else layer.qtensor().q


def zero_codes(layer: QWeight) -> torch.Tensor | None:
    """The code that dequantizes to 0 at every position (broadcastable to the weight's shape), or
    None for a codebook without a 0 centroid."""
    if isinstance(layer, CodebookWeight):
        hit = (layer.codebook.detach() == 0).nonzero()
        return None if not len(hit) else torch.tensor(int(hit[0, 0]), dtype=torch.uint8)
    zp = layer.zero_point
    if zp is None or zp.numel() == 1:
        return torch.zeros((), dtype=torch.int8) if zp is None else zp.reshape(())
    rows = _rows(torch.empty(layer.shape, dtype=torch.int8), layer.granularity, layer.axis, layer.group_size)
    return _unrows(zp.reshape(-1, 1).expand_as(rows), layer.shape, layer.granularity, layer.axis)


def byte_options(layer: QWeight, nonzero: torch.Tensor) -> dict[str, int]:
    """Stored bytes of this layer's codes dense and in each sparse layout (scales etc. excluded),
    for the non-zero positions ``nonzero`` (bool, the weight's shape)."""
    rows, cols = layer.shape[0], math.prod(layer.shape[1:])
    nnz = int(nonzero.sum())
    csr = encode(fill_gaps(nonzero.reshape(rows, cols)).to(torch.uint8), "csr")
    stored = csr["col"].numel()  # fillers included
    gaps = relative_columns(csr["crow"], csr["col"])
    values = math.ceil(nnz * code_bits(layer) / 8)
    return {"dense": math.ceil(rows * cols * code_bits(layer) / 8),
            "csr": (rows + 1) * csr["crow"].element_size() + stored * gaps.element_size()
                   + math.ceil(stored * code_bits(layer) / 8),
            "bitmask": format_bytes(rows, cols, nnz, 0)["bitmask"] + values}


def with_codes(layer: QWeight, codes: torch.Tensor) -> None:
    """Store ``codes`` in ``layer``'s own dense buffer, in place (format 'auto' keeping it dense)."""
    if isinstance(layer, CodebookWeight):
        layer.indices = pack_bits(codes, layer.bits)
    else:
        layer.qweight = codes.contiguous() if storage_bits(layer.bits) == 8 else pack(codes, layer.bits)


_GAP_DTYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def relative_columns(crow: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """CSR column indices as gaps: each one minus the previous column of its row (the first of
    a row stays its column), in the smallest integer dtype that holds the largest gap."""
    col = col.long()
    gaps = col.clone()
    gaps[1:] -= col[:-1]
    starts = crow[:-1].long()[crow.diff() > 0]
    gaps[starts] = col[starts]
    return gaps.to(index_dtype(int(gaps.max()) if gaps.numel() else 0))


GAP_LIMIT = 255  # the largest gap one uint8 holds


def fill_gaps(nonzero: torch.Tensor, limit: int = GAP_LIMIT) -> torch.Tensor:
    """``nonzero`` (rows, cols) with filler positions added so that no gap between stored
    entries of a row (nor a row's first column) exceeds ``limit``."""
    idx = nonzero.nonzero()
    if not len(idx):
        return nonzero
    row, col = idx[:, 0], idx[:, 1]
    prev = torch.cat([col.new_zeros(1), col[:-1]])
    prev[torch.cat([torch.ones(1, dtype=torch.bool), row[1:] != row[:-1]])] = 0  # a row's first: from column 0
    count = (col - prev - 1).clamp(min=0) // limit  # fillers needed before each entry
    if not int(count.sum()):
        return nonzero
    starts = torch.repeat_interleave(prev, count)
    step = torch.arange(int(count.sum())) - torch.repeat_interleave(count.cumsum(0) - count, count) + 1
    out = nonzero.clone()
    out[torch.repeat_interleave(row, count), starts + step * limit] = True
    return out


def absolute_columns(crow: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`relative_columns`: a running sum of the gaps restarted at each row."""
    total = gaps.long().cumsum(0)
    counts = crow.diff().long()
    row_start = torch.repeat_interleave(crow[:-1].long(), counts)
    before = torch.where(row_start > 0, total[(row_start - 1).clamp(min=0)], torch.zeros_like(total))
    return total - before


class SparseIntWeight:
    """Mixin placed before a quantized layer class: the layout + non-zero codes replace its dense
    integer buffer; everything else (spec, forward, ``weight``) is the quantized layer's."""

    def __init__(self, *args, sparse_format: str = "bitmask", nnz: int = 0, fillers: int = 0, gap_bytes: int = 1,
                 **kwargs):
        # nnz: the true non-zeros; fillers: CSR gap fillers, stored too (an artifact saved before they
        # were counted apart has none: its nnz is every stored entry, as its buffers hold)
        if sparse_format not in LAYOUTS:
            raise ValueError(f"sparse_format {sparse_format!r} is not one of {LAYOUTS}")
        if gap_bytes not in _GAP_DTYPES:
            raise ValueError(f"gap_bytes {gap_bytes!r} is not one of {sorted(_GAP_DTYPES)}")
        # read by _init_qweight, which runs before Module init
        object.__setattr__(self, "_layout", (sparse_format, int(nnz) + int(fillers), int(fillers), gap_bytes))
        super().__init__(*args, **kwargs)
        self.sparse_format, self.stored_entries, self.fillers, self.gap_bytes = self._layout
        self.runs = ""

    def _init_qweight(self, qt, shape, bits, scheme, granularity, axis, group_size, bias, has_bias,
                      dtype: str = "float32", bias_size: int | None = None):
        fmt, stored, fillers, gap_bytes = self._layout  # every stored entry, fillers too
        self.shape, self.bits, self.dtype = tuple(shape), bits, float_dtype(dtype)
        rows, cols = self.shape[0], math.prod(self.shape[1:])
        if not 0 <= stored <= rows * cols:
            raise ValueError(f"nnz + fillers = {stored} is not in [0, {rows * cols}]")
        if not 0 <= fillers <= (stored if fmt == "csr" else 0):
            raise ValueError(f"fillers={fillers} is not in [0, {stored if fmt == 'csr' else 0}] ({fmt})")
        if isinstance(self, CodebookWeight):
            self.scheme, self.granularity, self.axis, self.group_size = SCHEME, "per_tensor", 0, None
            self.register_buffer("codebook", torch.empty(2 ** bits))
            self.zero_point = None
            values = torch.empty(math.ceil(stored * bits / 8), dtype=torch.uint8)
        else:
            self.scheme, self.granularity, self.axis, self.group_size = scheme, granularity, axis, group_size
            sshape = _scale_shape(self.shape, granularity, axis, group_size)
            self.register_buffer("scale", torch.empty(sshape))
            self.register_buffer("zero_point", torch.empty(sshape, dtype=torch.int8) if scheme == "asymmetric"
                                 else None)
            sb = storage_bits(bits)
            values = torch.empty(stored, dtype=torch.int8) if sb == 8 else \
                torch.empty(math.ceil(stored * sb / 8), dtype=torch.uint8)
        # the layout buffers encode() makes for a matrix with that many entries (empty here, filled by load)
        if fmt == "csr":
            self.register_buffer("crow", torch.empty(rows + 1, dtype=index_dtype(stored)))
            self.register_buffer("col", torch.empty(stored, dtype=_GAP_DTYPES[gap_bytes]))
        else:
            self.register_buffer("mask", torch.empty(math.ceil(rows * cols / 8), dtype=torch.uint8))
        self.register_buffer("values", values)
        self._dense = None
        self._init_bias(bias, has_bias, bias_size)

    # --- the dense integer buffer, rebuilt once -------------------------------------------------
    def _nonzero(self) -> torch.Tensor:
        """Where the stored codes go (bool, row-major over the weight)."""
        rows, cols = self.shape[0], math.prod(self.shape[1:])
        if self.sparse_format == "bitmask":
            buffers = {"mask": self.mask}
        else:
            buffers = {"crow": self.crow, "col": absolute_columns(self.crow, self.col)}
        ones = torch.ones(self.stored_entries, dtype=torch.bool, device=self.values.device)
        return decode({**buffers, "values": ones}, self.sparse_format, rows, cols).reshape(-1)

    def codes(self) -> torch.Tensor:
        """The dense codes in the weight's shape (cached: rebuilt after a move or a load)."""
        if self._dense is None:
            with torch.inference_mode(False):  # a cache built under inference mode would break later autograd calls
                self._dense = self._rebuild()
        return self._dense

    def _rebuild(self) -> torch.Tensor:
        zero = zero_codes(self)
        codes = torch.zeros(self.shape, dtype=torch.uint8 if isinstance(self, CodebookWeight) else torch.int8,
                            device=self.values.device)
        codes[...] = zero.to(codes.device)
        if isinstance(self, CodebookWeight):
            stored = unpack_bits(self.values, self.bits, self.stored_entries)
        elif storage_bits(self.bits) == 8:
            stored = self.values
        else:
            stored = unpack(self.values, self.bits, (self.stored_entries,))
        codes.view(-1)[self._nonzero()] = stored
        return codes

    @property
    def qweight(self) -> torch.Tensor:
        """The quantized layer's dense buffer (int8, or packed bytes for int4/int2), rebuilt once."""
        if self._packed is None or self._packed[0] is not self.codes():
            codes = self.codes()
            with torch.inference_mode(False):
                self._packed = (codes, codes if storage_bits(self.bits) == 8 else pack(codes, self.bits))
        return self._packed[1]

    _packed = None

    def unpacked(self) -> torch.Tensor:  # the codebook layers' dense indices
        return self.codes()

    def forward(self, *args, **kwargs):
        self.runs = f"dense integer weight rebuilt once from sparse {self.sparse_format}, then: {super().execution}"
        return super().forward(*args, **kwargs)

    @property
    def execution(self) -> str:
        return (f"sparse {self.sparse_format} storage of the non-zero codes; dense integer weight rebuilt once on "
                f"first use (cached, not saved), then {super().execution}")

    @property
    def nnz(self) -> int:
        """The true non-zeros: the stored entries less the CSR gap fillers (stored zero codes)."""
        return self.stored_entries - self.fillers

    @property
    def sparsity(self) -> float:
        """The share of weights that are zeros (gap fillers are zeros, though stored)."""
        return 1 - self.nnz / math.prod(self.shape)

    def spec(self) -> dict:
        fillers = {"fillers": self.fillers} if self.fillers else {}  # none: the spec (and file) as before fillers
        return {**super().spec(), "sparse_format": self.sparse_format, "nnz": self.nnz, **fillers,
                "gap_bytes": self.gap_bytes}

    # the rebuilt buffer follows the stored ones: moved or reloaded -> rebuilt on next use
    def _apply(self, fn, recurse=True):
        self._dense, self._packed = None, None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._dense, self._packed = None, None
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):  # derived data: never copied or pickled
        return {**super().__getstate__(), "_dense": None, "_packed": None}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparse={self.sparse_format}, sparsity={self.sparsity:.1%}"


def _sparse_class(base: type) -> type:
    name = "Sparse" + base.__name__
    cls = type(name, (SparseIntWeight, base), {
        "__module__": __name__, "__qualname__": name,
        "__doc__": f"{base.__name__} whose integer weight is stored sparse (bitmask or CSR + non-zero codes)."})
    globals()[name] = cls  # importable by name, like any class
    return register_module(f"sparse.int.{base.__name__}")(cls)


_AFFINE = [getattr(affine_layers, f"Quant{kind}") for kind in (
    "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Embedding")]
# quantized layer class -> its sparse twin
SPARSE_CLASSES = {base: _sparse_class(base) for base in (*_AFFINE, *CODEBOOK_CLASSES.values())}


def can_sparsify(m: nn.Module) -> bool:
    """A quantized layer (affine or codebook, not already sparse) whose codes can be stored sparse."""
    return type(m) in SPARSE_CLASSES


def to_sparse_int(layer: QWeight, codes: torch.Tensor, fmt: str, keep: torch.Tensor | None = None) -> nn.Module:
    """The sparse twin of ``layer`` holding ``codes`` (the layer's codes, possibly with more zeros).
    ``keep``: the positions to store (a layout to keep, e.g. a pruned float weight's); by default
    every code that is not the zero code."""
    zero = zero_codes(layer)
    if zero is None:
        raise InvalidParameterError(
            "model", f"<{type(layer).__name__} without a 0 centroid>",
            "a codebook with a 0 centroid: quantize(method='codebook') reserves one only for a weight that already "
            "holds zeros; sparsify (or prune) the float model first, then quantize(method='codebook')")
    nz = (codes != zero) if keep is None else keep.reshape(codes.shape).bool()
    rows, nnz = layer.shape[0], int(nz.sum())
    if fmt == "csr":
        nz = fill_gaps(nz.reshape(rows, -1)).reshape(codes.shape)
    layout = encode(nz.reshape(rows, -1).to(torch.uint8), fmt)
    if fmt == "csr":
        layout["col"] = relative_columns(layout["crow"], layout["col"])
    entries = int(nz.sum())
    new = SPARSE_CLASSES[type(layer)](**layer.spec(), sparse_format=fmt, nnz=nnz, fillers=entries - nnz,
                                      gap_bytes=layout["col"].element_size() if fmt == "csr" else 1)
    stored = codes[nz]
    if isinstance(layer, CodebookWeight):
        layout["values"] = pack_bits(stored, layer.bits)
    elif storage_bits(layer.bits) != 8:
        layout["values"] = pack(stored, layer.bits)
    else:
        layout["values"] = stored.to(torch.int8).contiguous()
    own = {n: b for n, b in layer.named_buffers(recurse=False) if n not in ("qweight", "indices")}
    for name, t in {**own, **layout}.items():  # buffers of the right shapes already: replace them
        setattr(new, name, t.detach().clone())
    new.train(layer.training)
    return new
