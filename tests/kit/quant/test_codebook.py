"""Codebook quantization (weight sharing): k-means, bit packing, the layers, trained centroids."""
import math

import pytest
import torch
import torch.nn as nn

import slimkit
from slimkit.errors import InvalidParameterError
from slimkit.metrics import evaluate
from slimkit.quant.codebook import codebook_tensor, kmeans_1d, pack_bits, packed_bytes, unpack_bits
from slimkit.quant.codebook_layers import CodebookWeight
from slimkit.training import cross_entropy


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_bits_round_trip_at_exact_width(bits):
    idx = torch.randint(0, 2 ** bits, (1001,), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack_bits(idx, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_bytes(1001, bits) == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), idx)


def test_kmeans_finds_separated_clusters_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    v = centres[torch.randint(0, 4, (4000,), generator=g)] + 0.01 * torch.randn(4000, generator=g)
    c = kmeans_1d(v, 4)
    torch.testing.assert_close(c, centres, atol=0.01, rtol=0)
    assert torch.equal(c, kmeans_1d(v, 4))


def test_codebook_reserves_index_zero_for_pruned_zeros():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 32, generator=g)
    w[w.abs() < 0.8] = 0
    cb = codebook_tensor(w, 3)
    assert cb.reserved_zero and cb.centroids[0] == 0 and cb.centroids.numel() == 8
    assert torch.equal(cb.idx == 0, w == 0)  # zeros, and only zeros, use index 0
    assert torch.equal(cb.dequantize()[w == 0], torch.zeros(int((w == 0).sum())))
    dense = codebook_tensor(torch.randn(64, 32, generator=g), 3)
    assert not dense.reserved_zero and dense.centroids.unique().numel() == 8  # all 8 values fitted


def test_more_bits_more_sqnr_and_beats_affine_per_tensor():
    w = torch.randn(128, 64, generator=torch.Generator().manual_seed(2))
    err = [((codebook_tensor(w, b).dequantize() - w) ** 2).mean() for b in (2, 3, 4, 6)]
    assert err == sorted(err, reverse=True)
    affine = slimkit.quant.affine.fake_quantize(w, 4, "asymmetric", "per_tensor")
    assert err[2] < ((affine - w) ** 2).mean()  # k-means fits a Gaussian better than a uniform grid


def _expected_bytes(layer, bits):
    n = layer.weight.numel()
    bias = getattr(layer, "bias", None)
    return packed_bytes(n, bits) + 4 * 2 ** bits + (0 if bias is None else bias.numel() * 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantize_codebook_stores_packed_indices_and_codebook(mlp, digits, bits):
    q, report = slimkit.quantize(mlp, bits=bits, method="codebook")
    linears = [(n, m) for n, m in mlp.named_modules() if isinstance(m, nn.Linear)]
    for name, layer in linears:
        new = q.get_submodule(name)
        assert isinstance(new, CodebookWeight) and new.indices.dtype == torch.uint8
        assert slimkit.nn.tensor_bytes(new) == _expected_bytes(layer, bits)
        row = next(r for r in report.layers if r.name == name)
        assert row.action == "quantized" and row.sqnr_db > 5 * bits - 5 and "SIMULATED compute" in row.reason
        assert row.bytes_after == _expected_bytes(layer, bits)
    assert report.params["method"] == "codebook"
    drop = evaluate(mlp, digits.test)["accuracy"] - evaluate(q, digits.test)["accuracy"]
    assert drop < (0.02 if bits >= 4 else 0.15)


def test_pruned_zeros_stay_exact_zeros(cnn):
    pruned = slimkit.prune(cnn, 0.8).model
    q = slimkit.quantize(pruned, bits=2, method="codebook").model
    for name, layer in pruned.named_modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            new = q.get_submodule(name)
            assert new.reserved_zero
            assert torch.equal(new.weight == 0, layer.weight == 0)


def test_centroid_gradient_is_the_sum_over_its_weights():
    lin = nn.Linear(16, 8)
    q = slimkit.quantize(nn.Sequential(lin), bits=2, method="codebook").model[0]
    q.codebook = nn.Parameter(q._buffers.pop("codebook"))
    x = torch.randn(5, 16)
    w = q.dequantized_weight().detach().requires_grad_(True)
    (torch.nn.functional.linear(x, w, q.bias) ** 2).sum().backward()
    (q(x) ** 2).sum().backward()
    expected = torch.zeros(4).index_add_(0, q.unpacked().long().reshape(-1), w.grad.reshape(-1))
    torch.testing.assert_close(q.codebook.grad, expected)


def test_finetune_trains_centroids_keeps_indices_and_zeros(cnn, digits):
    pruned = slimkit.prune(cnn, 0.8).model
    plain = slimkit.quantize(pruned, bits=2, method="codebook")
    tuned = slimkit.quantize(pruned, bits=2, method="codebook", finetune=dict(data=digits.train, epochs=2, lr=1e-3))
    loss = lambda m: float(cross_entropy(m, digits.train.X, digits.train.y))  # noqa: E731
    with torch.no_grad():
        assert loss(tuned.model) < loss(plain.model)
    for name, layer in pruned.named_modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            a, b = plain.model.get_submodule(name), tuned.model.get_submodule(name)
            assert torch.equal(a.indices, b.indices) and not torch.equal(a.codebook, b.codebook)
            assert b.codebook[0] == 0 and "codebook" in dict(b.named_buffers())  # a buffer again
            assert torch.equal(b.weight == 0, layer.weight == 0)
    rows = {r.name: r for r in tuned.report.changed}
    assert all("sqnr_db_before_finetune" in r.details for r in rows.values())
    assert tuned.report.summary["finetune_epochs"] == 2 and tuned.report.params["finetune"]["epochs"] == 2


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 24, padding_idx=0)
        self.conv = nn.Conv1d(24, 16, 3, padding=1)
        self.up = nn.ConvTranspose1d(16, 8, 2, stride=2)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, ids):
        h = self.up(self.conv(self.emb(ids).transpose(1, 2))).transpose(1, 2)
        return self.head(self.rnn(h)[0])


@pytest.mark.parametrize("bits", [3, 4])
def test_save_load_round_trip_and_rnn_refused_by_row(tmp_path, bits):
    torch.manual_seed(0)
    model = _Mixed().eval()
    q, report = slimkit.quantize(model, bits=bits, method="codebook")
    rows = {r.name: r for r in report.layers}
    assert rows["rnn"].action == "skipped" and "no codebook GRU" in rows["rnn"].reason
    assert all(isinstance(q.get_submodule(n), CodebookWeight) for n in ("emb", "conv", "up", "head"))
    ids = torch.randint(0, 50, (2, 7))
    back = slimkit.load(slimkit.save(q, tmp_path / "c.slim"), model=model)
    with torch.no_grad():
        assert torch.equal(back(ids), q(ids))
        assert torch.nn.functional.cosine_similarity(q(ids).flatten(), model(ids).flatten(), 0) > 0.9
    assert slimkit.size(q) == (tmp_path / "c.slim").stat().st_size


def test_tied_embedding_and_lm_head_share_one_codebook(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100,
                                                                n_positions=32)).eval()
    q = slimkit.quantize(gpt2, bits=4, method="codebook").model
    assert q.lm_head.indices is q.transformer.wte.indices and q.lm_head.codebook is q.transformer.wte.codebook
    ids = torch.randint(0, 100, (1, 6))
    back = slimkit.load(slimkit.save(q, tmp_path / "g.slim"), model=gpt2)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, q(ids).logits)


def test_refusals_before_work(mlp, digits):
    with pytest.raises(InvalidParameterError, match="method='codebook'"):
        slimkit.quantize(mlp, bits=4, finetune=dict(data=digits.train))
    with pytest.raises(InvalidParameterError, match="granularity"):
        slimkit.quantize(mlp, bits=4, method="codebook", granularity="per_group")
    with pytest.raises(InvalidParameterError, match="method"):
        slimkit.quantize(mlp, bits=4, method="kmeans")
    with pytest.raises(InvalidParameterError, match="finetune"):
        slimkit.quantize(mlp, bits=4, method="codebook", finetune=dict(data=(torch.randn(4, 3), torch.zeros(4).long())))
