"""Sparse storage formats and the layers that run from them."""
import pytest
import torch
import torch.nn.functional as F

from slimkit.sparse.formats import decode, encode, format_bytes, holds_2_4, index_dtype
from slimkit.sparse.layers import SparseConv, SparseEmbedding, SparseLinear


def _sparse(rows, cols, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    return w * (torch.rand(rows, cols, generator=g) < density)


def _nbytes(buffers):
    return sum(b.numel() * b.element_size() for b in buffers.values())


def _two_four(rows, cols, seed=0):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    groups = w.view(rows, -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.abs().topk(2, -1).indices, True)
    return (groups * keep).view(rows, cols)


def test_hand_counted_bytes():
    w = torch.zeros(4, 8)
    w[0, 1], w[0, 7], w[2, 3], w[3, 0], w[3, 5] = 1, 2, 3, 4, 5
    sizes = format_bytes(4, 8, 5, 4)
    # csr: 5 row pointers + 5 column indices, one byte each (uint8 holds them), + 5 fp32 values
    assert sizes == {"dense": 128, "csr_int64": 5 * 8 + 5 * 8 + 20, "csr": 5 + 5 + 20,
                     "bitmask": 4 + 20, "2:4": 4 * 4 * 4 + 4 * 1}
    for fmt in ("csr", "bitmask"):
        assert _nbytes(encode(w, fmt)) == sizes[fmt]
        assert torch.equal(decode(encode(w, fmt), fmt, 4, 8), w)


def test_index_dtypes_grow_with_the_matrix():
    assert index_dtype(255) == torch.uint8 and index_dtype(256) == torch.int16
    assert index_dtype(2**15) == torch.int32 and index_dtype(2**31) == torch.int64
    csr = encode(_sparse(40, 300, 0.3), "csr")
    assert csr["col"].dtype == torch.int16 and csr["crow"].dtype == torch.int16


def test_torch_csr_int64_is_larger_than_dense_until_high_sparsity():
    rows, cols = 256, 256
    for sparsity, larger in ((0.5, True), (0.6, True), (0.7, False), (0.9, False)):
        nnz = round((1 - sparsity) * rows * cols)
        s = format_bytes(rows, cols, nnz, 4)
        assert (s["csr_int64"] > s["dense"]) is larger
        assert s["csr"] < s["csr_int64"]


@pytest.mark.parametrize("fmt", ["csr", "bitmask"])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (33, 300)])
def test_encode_decode_round_trip_and_byte_formula(fmt, density, shape):
    w = _sparse(*shape, density)
    w[0] = 0  # an empty row
    bufs = encode(w, fmt)
    assert torch.equal(decode(bufs, fmt, *shape), w)
    assert _nbytes(bufs) == format_bytes(*shape, int((w != 0).sum()), 4)[fmt]


def test_two_four_round_trip_and_bytes():
    w = _two_four(6, 24)
    assert holds_2_4(w) and not holds_2_4(_sparse(6, 24, 0.9, seed=1) + torch.ones(6, 24))
    bufs = encode(w, "2:4")
    assert bufs["values"].shape == (6, 12) and bufs["meta"].dtype == torch.uint8
    assert torch.equal(decode(bufs, "2:4", 6, 24), w)
    assert _nbytes(bufs) == format_bytes(6, 24, 72, 4)["2:4"]


@pytest.mark.parametrize("execution", ["dense", "csr", "2:4"])
def test_sparse_linear_matches_dense(execution):
    fmt = "2:4" if execution == "2:4" else "csr"
    w = _two_four(12, 16) if fmt == "2:4" else _sparse(12, 16, 0.2)
    b = torch.randn(12)
    layer = SparseLinear.from_dense(w, b, fmt, execution)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(x), F.linear(x, w, b))
    expected = {"dense": "dense (decompressed)", "csr": "csr kernel", "2:4": "dense (decompressed)"}[execution]
    assert layer.runs == expected  # no 2:4 kernel on CPU: it says it ran dense
    assert layer.nbytes() == format_bytes(12, 16, int((w != 0).sum()), 4)[fmt]


@pytest.mark.parametrize("conv,shape,x", [
    (F.conv2d, (6, 3, 3, 3), (2, 3, 9, 9)), (F.conv1d, (4, 2, 5), (3, 2, 20))])
def test_sparse_conv_matches_dense(conv, shape, x):
    w = _sparse(shape[0], int(torch.tensor(shape[1:]).prod()), 0.3).view(shape)
    layer = SparseConv.from_dense(w, None, "bitmask", "dense", stride=(1,) * (len(shape) - 2),
                                  padding=(1,) * (len(shape) - 2), dilation=(1,) * (len(shape) - 2), groups=1)
    inp = torch.randn(x)
    torch.testing.assert_close(layer(inp), conv(inp, w, None, 1, 1))


@pytest.mark.parametrize("execution", ["csr", "dense"])
def test_sparse_embedding_gathers_rows(execution):
    table = _sparse(30, 8, 0.3)
    table[4] = 0
    layer = SparseEmbedding.from_dense(table, None, "csr", execution, padding_idx=None)
    ids = torch.tensor([[4, 0, 29], [29, 3, 4]])
    assert torch.equal(layer(ids), F.embedding(ids, table))
    assert layer.runs == ("csr row gather" if execution == "csr" else "dense (decompressed)")


def test_spec_rebuild_and_cache_reset():
    w, b = _sparse(10, 20, 0.3), torch.randn(10)
    layer = SparseLinear.from_dense(w, b, "csr", "dense")
    empty = SparseLinear.from_spec(layer.spec())
    assert all(a.shape == c.shape and a.dtype == c.dtype
               for a, c in zip(layer.state_dict().values(), empty.state_dict().values()))
    other = SparseLinear.from_dense(2 * w, b, "csr", "dense")  # same structure, other values
    x = torch.randn(3, 20)
    other(x)  # caches its decompressed weight...
    other.load_state_dict(layer.state_dict())  # ...which loading must drop
    torch.testing.assert_close(other(x), F.linear(x, w, b))
    assert not any(p.requires_grad for p in layer.parameters())


def test_deepcopy_after_a_csr_forward():
    import copy

    w = _sparse(8, 12, 0.05)
    layer = SparseLinear.from_dense(w, None, "csr", "csr")
    x = torch.randn(2, 12)
    layer(x)  # builds the cached torch CSR tensor, which deepcopy cannot copy
    clone = copy.deepcopy(layer)
    assert clone._cache == {}
    torch.testing.assert_close(clone(x), F.linear(x, w))


@pytest.mark.parametrize("make, x", [
    (lambda: torch.nn.Linear(12, 5), torch.randn(3, 12)),
    (lambda: torch.nn.Linear(12, 5, bias=False), torch.randn(3, 12)),
    (lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1), torch.randn(2, 4, 9)),
    (lambda: torch.nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), torch.randn(2, 4, 7, 7)),
    (lambda: torch.nn.Conv3d(2, 3, 2, bias=False), torch.randn(1, 2, 4, 4, 4)),
    (lambda: torch.nn.Embedding(10, 6, padding_idx=1), torch.tensor([[0, 1, 9], [3, 3, 2]])),
])
def test_to_float_is_the_plain_layer_holding_the_same_weight(make, x):
    torch.manual_seed(0)
    dense = make().eval()
    with torch.no_grad():
        dense.weight.mul_(torch.rand_like(dense.weight) < 0.4)  # zeros to store sparse
    cls = {torch.nn.Linear: SparseLinear, torch.nn.Embedding: SparseEmbedding}.get(type(dense), SparseConv)
    extra = {"padding_idx": 1} if cls is SparseEmbedding else {} if cls is SparseLinear else {
        "stride": dense.stride, "padding": dense.padding, "dilation": dense.dilation, "groups": dense.groups}
    sparse = cls.from_dense(dense.weight, getattr(dense, "bias", None), "csr", "dense", **extra).eval()
    back = sparse.to_float()
    assert type(back) is type(dense) and not back.training
    assert torch.equal(back.weight, dense.weight)
    assert (getattr(back, "bias", None) is None) == (getattr(dense, "bias", None) is None)
    with torch.no_grad():
        assert torch.equal(back(x), dense(x))
