"""The verbs compose: quantize then sparsify, and sparsify then quantize, store sparse integer weights."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import slimkit
from slimkit.errors import InvalidParameterError
from slimkit.sparse.quantized import SparseIntWeight, dense_codes, with_codes, zero_codes
from slimkit.sparse.requantize import densify, sparse_float_layers


class _Mixed(nn.Module):
    """Transformer-like: an embedding, a 1-d conv over the sequence, a Linear head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, 32)
        self.conv = nn.Conv1d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 16)

    def forward(self, ids):
        h = self.emb(ids).transpose(1, 2)
        return self.head(torch.relu(self.conv(h)).transpose(1, 2))


def _mixed():
    torch.manual_seed(0)
    return _Mixed().eval()


def _sparse_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseIntWeight)}


def _same_codes_reference(q, s):
    """``q`` with each layer's codes replaced by those ``s`` stores: the quantized model holding
    the same integer values."""
    ref = copy.deepcopy(q)
    for name, layer in _sparse_layers(s).items():
        with_codes(ref.get_submodule(name), layer.codes())
    return ref


def _check_only_zeros_added(q, s):
    for name, layer in _sparse_layers(s).items():
        before, after = dense_codes(q.get_submodule(name)), layer.codes()
        changed = before != after
        assert torch.equal(after[changed], zero_codes(layer).expand_as(after)[changed]), name


@pytest.mark.parametrize("fmt", ["bitmask", "csr"])
def test_quantize_then_sparsify_cnn_int8_is_exact_and_smaller(cnn, digits, fmt, tmp_path):
    q = slimkit.quantize(cnn, bits=8).model
    s, report = slimkit.sparsify(q, sparsity=0.7, format=fmt)
    layers = _sparse_layers(s)
    assert set(layers) == {"features.0", "features.2", "classifier.1", "classifier.3"}
    assert all(abs(m.sparsity - 0.7) < 0.01 and m.sparse_format == fmt for m in layers.values())
    _check_only_zeros_added(q, s)
    x = digits.test.X[:64]
    with torch.no_grad():
        out = s(x)
        assert torch.equal(out, _same_codes_reference(q, s)(x))
    assert "32 matmul" in s.classifier[1].runs  # the int8 kernel still runs (int32 or s32 sums)
    # int8 at 70% zeros: bitmask = 1 bit + 0.3 byte per weight; CSR = 0.3 x (1 value + 1 relative index byte)
    assert slimkit.size(s) < (0.5 if fmt == "bitmask" else 0.65) * slimkit.size(q)
    if fmt == "csr":
        assert s.classifier[1].col.dtype == torch.uint8  # 1024 columns: gaps fit a byte, absolute ones would not
    path = slimkit.save(s, tmp_path / "s.slim")
    assert path.stat().st_size == slimkit.size(s)
    back = slimkit.load(path, model=cnn)
    assert type(back.classifier[1]) is type(s.classifier[1])
    with torch.no_grad():
        assert torch.equal(back(x), out)
    coded = slimkit.save(s, tmp_path / "e.slim", entropy=True)
    assert coded.stat().st_size == slimkit.size(s, entropy=True)
    with torch.no_grad():
        assert torch.equal(slimkit.load(coded, model=cnn)(x), out)
    row = next(r for r in report.layers if r.name == "classifier.1")
    assert row.history == ["quantize affine 8-bit", f"sparsify {fmt} 70% of 8-bit int codes"]
    assert row.bytes_after < row.bytes_before


def test_threshold_zeroes_small_dequantized_values_only(mlp, digits):
    q = slimkit.quantize(mlp, bits=8).model
    s = slimkit.sparsify(q, threshold=0.02, format="bitmask").model
    _check_only_zeros_added(q, s)
    for name, layer in _sparse_layers(s).items():
        w = q.get_submodule(name).weight
        assert torch.equal(layer.weight == 0, w.abs() < 0.02), name
    with torch.no_grad():
        assert torch.equal(s(digits.test.X[:32]), _same_codes_reference(q, s)(digits.test.X[:32]))


@pytest.mark.parametrize("settings", [
    {"bits": 4, "granularity": "per_group", "group_size": 8},
    {"bits": 2, "scheme": "asymmetric", "granularity": "per_group", "group_size": 8},
    {"bits": 8, "scheme": "asymmetric", "granularity": "per_channel"},
])
def test_quantize_then_sparsify_transformerish_packed_formats(settings, tmp_path):
    model = _mixed()
    q = slimkit.quantize(model, **settings).model
    s = slimkit.sparsify(q, sparsity=0.7, format="bitmask").model
    assert set(_sparse_layers(s)) == {"emb", "conv", "head"}
    _check_only_zeros_added(q, s)
    ids = torch.randint(0, 64, (3, 9))
    with torch.no_grad():
        out = s(ids)
        assert torch.equal(out, _same_codes_reference(q, s)(ids))
        assert torch.equal(slimkit.load(slimkit.save(s, tmp_path / "m.slim"), model=model)(ids), out)
        assert torch.equal(slimkit.load(slimkit.save(s, tmp_path / "e.slim", entropy=True), model=model)(ids), out)
    if settings["bits"] <= 4:  # the stored values are packed too
        assert s.head.values.dtype == torch.uint8 and s.head.values.numel() < s.head.nnz


def test_codebook_then_sparsify_needs_a_zero_centroid(tmp_path):
    model = _mixed()
    plain = slimkit.quantize(model, bits=4, method="codebook").model
    with pytest.raises(InvalidParameterError, match=r"sparsify or prune the float model first, then quantize"):
        slimkit.sparsify(plain, sparsity=0.7)
    pruned = slimkit.prune(model, 0.3).model
    q = slimkit.quantize(pruned, bits=4, method="codebook").model
    s, report = slimkit.sparsify(q, sparsity=0.7, format="csr")
    assert type(s.head).__name__ == "SparseCodebookLinear" and abs(s.head.sparsity - 0.7) < 0.01
    _check_only_zeros_added(q, s)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        out = s(ids)
        assert torch.equal(out, _same_codes_reference(q, s)(ids))
        assert torch.equal(slimkit.load(slimkit.save(s, tmp_path / "c.slim", entropy=True), model=model)(ids), out)
    row = next(r for r in report.layers if r.name == "head")
    assert row.history == ["prune 30% magnitude", "quantize codebook 4-bit", "sparsify csr 70% of 4-bit codebook indices"]


@pytest.mark.parametrize("method", ["affine", "codebook"])
def test_sparsify_then_quantize_keeps_zeros_and_layout(mlp, digits, method, tmp_path):
    s = slimkit.sparsify(mlp, sparsity=0.8, format="csr", execution="dense").model
    q, report = slimkit.quantize(s, bits=4 if method == "codebook" else 8, method=method)
    layers = _sparse_layers(q)
    assert set(layers) == {"net.1", "net.3", "net.5"}
    for name, layer in layers.items():
        assert layer.sparse_format == "csr"
        assert torch.equal(layer.weight == 0, s.get_submodule(name).dense_weight() == 0), name  # zeros exact, kept
    x = digits.test.X[:64]
    ref = slimkit.quantize(densify(s, sparse_float_layers(s)), bits=4 if method == "codebook" else 8,
                           method=method).model
    with torch.no_grad():
        assert torch.equal(q(x), ref(x))  # the same as quantizing the float model holding the zeros
        assert torch.equal(slimkit.load(slimkit.save(q, tmp_path / "q.slim"), model=mlp)(x), q(x))
    assert slimkit.size(q) < slimkit.size(ref)
    row = next(r for r in report.layers if r.name == "net.3")
    assert row.kind == "SparseLinear" and row.history[0] == "sparsify csr"
    assert row.history[1].startswith(f"quantize {method}") and "sparse csr layout kept, 80% zeros" in row.history[1]


def test_sparsify_2_4_then_static_int8_stores_a_bitmask(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    x = torch.randn(64, 16)
    s = slimkit.sparsify(model, format="2:4").model
    q, report = slimkit.quantize(s, bits=8, activations=x)
    assert q[0].act == "static" and q[0].sparse_format == "bitmask" and "2:4 stored as bitmask" in report.layers[0].reason
    assert torch.equal(q[0].weight == 0, s[0].dense_weight() == 0)
    with torch.no_grad():
        assert torch.equal(slimkit.load(slimkit.save(q, tmp_path / "q.slim"), model=model)(x), q(x))
    assert report.layers[0].history == ["sparsify 2:4", "quantize affine 8-bit (sparse bitmask layout kept, 50% zeros)"]


def test_sparsify_then_quantize_keeps_unselected_sparse_layers(mlp):
    s = slimkit.sparsify(mlp, sparsity=0.8, format="bitmask").model
    q, report = slimkit.quantize(s, bits=8, keep=["net.5"])
    assert type(q.net[5]).__name__ == "SparseLinear" and type(q.net[3]).__name__ == "SparseQuantLinear"
    assert next(r for r in report.layers if r.name == "net.5").bytes_after == slimkit.sparse.layers.SparseLinear.nbytes(
        s.net[5]) + s.net[5].bias.numel() * 4
    with pytest.raises(InvalidParameterError, match="simulated"):
        slimkit.quantize(s, bits=8, mode="simulated")


def test_refused_orders_name_the_order_that_works(mlp):
    q = slimkit.quantize(mlp, bits=8).model
    s = slimkit.sparsify(q, sparsity=0.5).model
    with pytest.raises(InvalidParameterError, match=r"prune cannot follow .*sparse integer.*prune the float model first"):
        slimkit.prune(s, 0.5)
    with pytest.raises(InvalidParameterError, match=r"quantize cannot follow .*quantized.*quantize a layer once"):
        slimkit.quantize(q, bits=4)
    with pytest.raises(InvalidParameterError, match=r"quantize cannot follow .*sparse integer.*quantize a layer once"):
        slimkit.quantize(s, bits=4)
    with pytest.raises(InvalidParameterError, match=r"sparsify cannot follow .*sparse integer.*once"):
        slimkit.sparsify(s, sparsity=0.9)
    with pytest.raises(InvalidParameterError, match=r"format='2:4'.*quantized layers"):
        slimkit.sparsify(q, format="2:4")
    with pytest.raises(InvalidParameterError, match=r"structured.*sparse integer|sparse integer"):
        slimkit.prune(s, 0.5, structured=True)


def test_csr_gaps_over_a_byte_get_fillers_and_stay_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2000, 3))
    with torch.no_grad():
        model[0].weight[:, 300:1700] = 0  # a long run of zeros: a gap of 1400 columns
        model[0].weight[1] = 0  # an empty row
    q = slimkit.quantize(model, bits=8).model
    result = slimkit.sparsify(q, format="csr")  # the zeros as they are
    s, layer = result.model, result.model[0]
    true_nnz = int((layer.weight != 0).sum())
    assert layer.col.dtype == torch.uint8 and layer.fillers == 2 * 5  # 5 fillers in each of the 2 long gaps
    assert layer.nnz == true_nnz and layer.stored_entries == true_nnz + 10 == layer.values.numel()
    assert layer.sparsity == pytest.approx(1 - true_nnz / 6000)  # fillers are zeros, though stored
    row = result.report.layers[0]  # the report counts the true non-zeros, and the fillers apart
    assert row.params_after == row.details["nnz"] == true_nnz
    assert (row.details["stored_entries"], row.details["fillers"]) == (true_nnz + 10, 10)
    assert torch.equal(layer.weight, q[0].weight)
    x = torch.randn(4, 2000)
    with torch.no_grad():
        assert torch.equal(s(x), _same_codes_reference(q, s)(x))


def test_codebook_report_lists_no_affine_settings(mlp):
    report = slimkit.quantize(mlp, bits=4, method="codebook").report
    assert not {"scheme", "granularity", "group_size"} & set(report.params)
    assert {"scheme", "granularity"} <= set(slimkit.quantize(mlp, bits=8).report.params)


def test_a_sparse_integer_model_first_run_under_inference_mode_still_runs_outside_it(mlp, digits):
    """The dense integer buffer is rebuilt on first use: built under torch.inference_mode() (as
    slimkit.evaluate runs), it must not poison later ordinary calls (the panel measures, then trains)."""
    q = slimkit.quantize(mlp, bits=8).model
    s = slimkit.sparsify(q, sparsity=0.7, format="bitmask").model
    x = digits.test.X[:16]
    with torch.inference_mode():
        first = s(x)
    again = s(x)
    assert torch.equal(first, again) and not again.is_inference()


def test_quantize_on_csr_with_gaps_over_a_byte_reports_fillers_apart_and_saves_them(tmp_path):
    """sparsify (float CSR) then quantize: the CSR layout is kept with relative indices, whose gaps
    over 255 need fillers; nnz stays the float layer's non-zeros, and a saved artifact keeps both."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 4))
    with torch.no_grad():
        model[0].weight[:, 10:900] = 0  # a gap of 890 columns in every row: 3 fillers a row
        model[0].weight[:, 950:] *= torch.rand(4, 50) < 0.5
    sparse = slimkit.sparsify(model, threshold=1e-12, format="csr").model
    result = slimkit.quantize(sparse, bits=8)
    layer, row = result.model[0], result.report.layers[0]
    true_nnz = int((sparse[0].dense_weight() != 0).sum())
    assert isinstance(layer, SparseIntWeight) and layer.sparse_format == "csr" and layer.fillers == 4 * 3
    assert layer.nnz == row.params_after == row.details["nnz"] == true_nnz
    assert row.details["stored_entries"] == layer.stored_entries == true_nnz + 12 and row.details["fillers"] == 12
    slimkit.save(result.model, tmp_path / "m.safetensors")
    back = slimkit.load(tmp_path / "m.safetensors", model=model)[0]
    assert (back.nnz, back.stored_entries, back.fillers) == (layer.nnz, layer.stored_entries, layer.fillers)
    assert torch.equal(back.weight, layer.weight)


def test_a_layer_saved_before_fillers_were_counted_apart_still_loads():
    """Older artifacts count the fillers in "nnz" (no "fillers" in the spec): they load with every
    stored entry; a layer without fillers has the same spec as before."""
    model = nn.Sequential(nn.Linear(600, 2))
    with torch.no_grad():
        model[0].weight[:, 5:590] = 0  # 2 fillers a row
    layer = slimkit.sparsify(slimkit.quantize(model, bits=8).model, format="csr").model[0]
    spec = layer.spec()
    assert spec["fillers"] == 4 and spec["nnz"] == layer.nnz
    old = {k: v for k, v in spec.items() if k != "fillers"} | {"nnz": layer.stored_entries}
    rebuilt = type(layer).from_spec(old)
    rebuilt.load_state_dict(layer.state_dict())
    assert (rebuilt.stored_entries, rebuilt.fillers) == (layer.stored_entries, 0)
    assert torch.equal(rebuilt.weight, layer.weight)
    dense = slimkit.sparsify(slimkit.quantize(model, bits=8).model, format="bitmask").model[0]
    assert "fillers" not in dense.spec() and dense.spec()["nnz"] == dense.nnz == dense.stored_entries
