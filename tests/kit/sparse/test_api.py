"""slimkit.sparsify: zeroing rules, byte-exact storage, format choice, round trips, bad input."""
import json
import struct
import threading

import pytest
import torch
import torch.nn as nn

import slimkit
from conftest import TiedModel, assert_unchanged, state_snapshot
from slimkit.errors import InvalidParameterError, InvalidTypeError, Interrupted, NothingToCompressError
from slimkit.sparse.formats import format_bytes
from slimkit.sparse.layers import SparseConv, SparseLinear, SparseWeight


def _tensor_section(model) -> int:
    """Bytes of tensor data in the artifact: file size minus the 8-byte length and the header."""
    data = slimkit.artifact.to_bytes(model)
    (header_len,) = struct.unpack("<Q", data[:8])
    json.loads(data[8:8 + header_len])
    return len(data) - 8 - header_len


def test_threshold_is_the_articles_rule(mlp):
    snap = state_snapshot(mlp)
    out, report = slimkit.sparsify(mlp, threshold=0.05, format="bitmask")
    assert_unchanged(mlp, snap)
    for i in (1, 3, 5):
        w = mlp.net[i].weight.detach()
        assert torch.equal(out.net[i].dense_weight(), torch.where(w.abs() < 0.05, torch.zeros_like(w), w))
    assert report.summary["sparsity"] > 0.3


def test_sparsity_target_per_layer(mlp, digits):
    out, report = slimkit.sparsify(mlp, sparsity=0.9, format="csr")
    for i in (1, 3, 5):
        layer = out.net[i]
        assert isinstance(layer, SparseLinear) and layer.nnz == layer.rows * layer.cols - round(0.9 * layer.rows * layer.cols)
    x = digits.test.X[:16]
    dense = [mlp.net[i].weight.detach() for i in (1, 3, 5)]
    for w, layer in zip(dense, (out.net[1], out.net[3], out.net[5])):
        kept = layer.dense_weight() != 0
        assert float(w[~kept].abs().max()) <= float(w[kept].abs().min())
    assert out(x).shape == (16, 10)


def test_byte_exact_accounting_in_the_artifact(mlp):
    dense_tensors = _tensor_section(mlp)
    for fmt in ("csr", "bitmask"):
        out, report = slimkit.sparsify(mlp, sparsity=0.8, format=fmt)
        stored = sum(m.nbytes() for m in out.modules() if isinstance(m, SparseWeight))
        expected = sum(format_bytes(m.rows, m.cols, m.nnz, 4)[fmt] for m in out.modules()
                       if isinstance(m, SparseWeight))
        assert stored == expected == report.summary["weight_bytes_stored"]
        # the artifact holds exactly the dense bytes minus what the format saves (biases unchanged)
        saved = report.summary["weight_bytes_dense"] - stored
        assert _tensor_section(out) == dense_tensors - saved
        for l in report.layers:
            assert l.details["index_bytes"] + l.details["value_bytes"] == l.details["bytes_by_format"][fmt]


def test_two_four_imposes_the_pattern(mlp):
    out, report = slimkit.sparsify(mlp, format="2:4")
    w0 = mlp.net[3].weight.detach()
    w = out.net[3].dense_weight()
    groups, orig = w.view(128, -1, 4), w0.view(128, -1, 4)
    assert bool(((groups != 0).sum(-1) <= 2).all())
    kept_min = torch.where(groups != 0, orig.abs(), torch.full_like(orig, float("inf"))).amin(-1)
    dropped_max = torch.where(groups == 0, orig.abs(), torch.zeros_like(orig)).amax(-1)
    assert bool((dropped_max <= kept_min).all())  # the 2 largest of each 4 are kept
    assert out.net[3].nbytes() == format_bytes(128, 256, 0, 4)["2:4"]
    assert {l.details["execution"] for l in report.layers} == {"2:4"}
    out(torch.rand(2, 1, 8, 8))
    assert out.net[3].runs == "dense (decompressed)"  # CPU: no 2:4 kernel, and it says so


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.97])
def test_auto_picks_the_smallest_format_per_layer(mlp, sparsity):
    out, report = slimkit.sparsify(mlp, sparsity=sparsity, format="auto")
    for l in report.layers:
        options = {k: v for k, v in l.details["bytes_by_format"].items() if v is not None and k != "csr_int64"}
        assert options[l.details["format"]] == min(options.values())
    formats = {l.details["format"] for l in report.layers}
    if sparsity == 0.0:
        assert formats == {"dense"} and all(isinstance(out.net[i], nn.Linear) for i in (1, 3, 5))
    if sparsity == 0.97:
        assert "csr" in formats


def test_execution_auto_uses_csr_only_when_it_pays(mlp):
    _, low = slimkit.sparsify(mlp, sparsity=0.5, format="csr")
    _, high = slimkit.sparsify(mlp, sparsity=0.95, format="csr")
    assert {l.details["execution"] for l in low.layers} == {"dense"}
    assert {l.details["execution"] for l in high.layers} == {"csr"}
    forced, _ = slimkit.sparsify(mlp, sparsity=0.5, format="csr", execution="sparse")
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(forced(x), slimkit.sparsify(mlp, sparsity=0.5, format="csr")[0](x))
    assert forced.net[1].runs == "csr kernel"


def test_neither_rule_keeps_the_zeros_of_a_pruned_model(cnn, digits):
    pruned, _ = slimkit.prune(cnn, 0.9, scope="global")
    out, report = slimkit.sparsify(pruned, format="auto")
    x = digits.test.X[:64]
    torch.testing.assert_close(out(x), pruned(x))
    assert report.summary["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert slimkit.size(cnn) / slimkit.size(out) > 5
    assert isinstance(out.features[2], SparseConv)


@pytest.mark.parametrize("fmt", ["csr", "bitmask", "2:4", "auto"])
def test_sparse_models_round_trip_exactly(cnn, digits, tmp_path, fmt):
    out, _ = slimkit.sparsify(cnn, sparsity=None if fmt == "2:4" else 0.9, format=fmt,
                              exclude=["features.0"] if fmt == "2:4" else None)
    back = slimkit.load(slimkit.save(out, tmp_path / "s.slim"))
    for (k, a), (k2, b) in zip(out.state_dict().items(), back.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    x = digits.test.X[:32]
    assert torch.equal(back(x), out(x))


def test_tied_weights_are_left_dense():
    torch.manual_seed(0)
    with pytest.raises(NothingToCompressError, match="tied"):
        slimkit.sparsify(TiedModel(), sparsity=0.5)


def test_embedding_is_sparsified():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 4))
    out, report = slimkit.sparsify(model, sparsity=0.9, format="csr", execution="sparse")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(out(ids), out[1](nn.functional.embedding(ids, out[0].dense_weight())))
    assert out[0].runs == "csr row gather"


# ---- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match,err", [
    (dict(sparsity=1.0), r"sparsity=1.0", InvalidParameterError),
    (dict(sparsity=float("nan")), r"sparsity=nan", InvalidParameterError),
    (dict(sparsity=False), r"sparsity must be", InvalidTypeError),
    (dict(threshold=-1.0), r"threshold=-1.0", InvalidParameterError),
    (dict(threshold=float("nan")), r"threshold=nan", InvalidParameterError),
    (dict(threshold=True), r"threshold must be", InvalidTypeError),
    (dict(threshold=0.1, sparsity=0.5), r"at most one of threshold or sparsity", InvalidParameterError),
    (dict(format="coo"), r"format='coo'.*'csr'", InvalidParameterError),
    (dict(format="2:4", sparsity=0.7), r"sparsity=0.7.*2:4", InvalidParameterError),
    (dict(execution="gpu"), r"execution='gpu'", InvalidParameterError),
    (dict(include=3), r"include must be", InvalidTypeError),
])
def test_bad_arguments_raise_and_change_nothing(mlp, kw, match, err):
    snap = state_snapshot(mlp)
    with pytest.raises(err, match=match) as e:
        slimkit.sparsify(mlp, **kw)
    assert isinstance(e.value, slimkit.SlimkitError)
    assert_unchanged(mlp, snap)


def test_excluded_layers_are_reported_as_skipped(cnn):
    out, report = slimkit.sparsify(cnn, sparsity=0.5, exclude=["features.*"])
    assert [l.action for l in report.layers] == ["skipped", "skipped", "sparsified", "sparsified"]
    assert "exclude=['features.*']" in report.layers[0].reason
    assert isinstance(out.features[0], nn.Conv2d)


def test_two_four_needs_inputs_in_fours(cnn):
    snap = state_snapshot(cnn)
    with pytest.raises(InvalidParameterError, match="features.0"):  # 1x3x3 = 9 inputs per filter
        slimkit.sparsify(cnn, format="2:4")
    assert_unchanged(cnn, snap)


def test_nothing_to_sparsify_and_stop(mlp):
    with pytest.raises(NothingToCompressError, match="no layer sparsify"):
        slimkit.sparsify(nn.Sequential(nn.ReLU()), sparsity=0.5)
    stop = threading.Event()
    stop.set()
    snap = state_snapshot(mlp)
    with pytest.raises(Interrupted):
        slimkit.sparsify(mlp, sparsity=0.5, stop=stop)
    assert_unchanged(mlp, snap)


def test_a_config_and_a_first_positional_threshold_sparsify_alike(mlp):
    by_kw = slimkit.sparsify(mlp, threshold=0.05, format="bitmask")
    by_first = slimkit.sparsify(mlp, 0.05, format="bitmask")
    by_config = slimkit.sparsify(mlp, slimkit.SparsifyConfig(threshold=0.05, format="bitmask"))
    for other in (by_first, by_config):
        assert other.report.params == by_kw.report.params == {
            "threshold": 0.05, "sparsity": None, "format": "bitmask", "execution": "auto"}
        assert other.report.summary == by_kw.report.summary
    assert slimkit.SparsifyConfig(threshold=0.05).code() == "slimkit.sparsify(model, threshold=0.05)"
