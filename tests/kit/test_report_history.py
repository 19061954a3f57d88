"""Composition of the verbs: what each accepts from the others, the zeros it keeps, the refusals,
and the per-layer history the last report shows."""
import pytest
import torch
import torch.nn as nn

import slimkit
from slimkit.errors import InvalidParameterError
from slimkit.report import history

WEIGHTED = (nn.Linear, nn.Conv2d)


def _zeros(model):
    return {n: m.weight == 0 for n, m in model.named_modules() if isinstance(m, WEIGHTED)}


@pytest.mark.parametrize("method,bits", [("affine", 4), ("affine", 8), ("codebook", 3)])
def test_prune_then_quantize_keeps_exact_zeros_and_history(mlp, method, bits):
    pruned = slimkit.prune(mlp, 0.7).model
    q, report = slimkit.quantize(pruned, bits=bits, method=method)
    for name, zero in _zeros(pruned).items():
        w = q.get_submodule(name).weight
        assert torch.equal(w[zero], torch.zeros(int(zero.sum()))), name
    rows = {r.name: r for r in report.changed}
    assert rows and all(r.history == ["prune 70% magnitude", f"quantize {method} {bits}-bit"] for r in rows.values())
    assert history(q) == {n: r.history for n, r in rows.items()}
    assert report.summary["steps"] == ["prune 70% magnitude", f"quantize {method} {bits}-bit"]
    assert history(pruned) == {n: ["prune 70% magnitude"] for n in rows}  # the input keeps its own


def test_structured_prune_then_int8_runs_smaller(cnn, digits):
    small = slimkit.prune(cnn, 0.5, structured=True).model
    q, report = slimkit.quantize(small, bits=8)
    assert slimkit.size(q) < slimkit.size(small) / 3
    assert all(r.history[0].startswith("prune") and "structured" in r.history[0] for r in report.changed)
    acc = slimkit.metrics.evaluate(q, digits.test)["accuracy"]
    assert acc > slimkit.metrics.evaluate(small, digits.test)["accuracy"] - 0.02


def test_prune_distill_quantize_keeps_zeros_through_training(mlp, digits):
    pruned = slimkit.prune(mlp, 0.6).model
    student = slimkit.distill(mlp, pruned, digits.train, epochs=1).model
    for name, zero in _zeros(pruned).items():
        assert torch.equal(student.get_submodule(name).weight[zero], torch.zeros(int(zero.sum())))
    q, report = slimkit.quantize(student, bits=4, method="codebook")
    assert {tuple(r.history) for r in report.changed} == {("prune 60% magnitude", "distill", "quantize codebook 4-bit")}


def test_prune_then_sparsify_history(mlp):
    _, report = slimkit.sparsify(slimkit.prune(mlp, 0.9).model, format="bitmask")
    assert {tuple(r.history) for r in report.changed} == {("prune 90% magnitude", "sparsify bitmask")}


def _compressed(mlp):
    return {"quantize": slimkit.quantize(mlp, bits=4, method="codebook").model,
            "quantize-affine": slimkit.quantize(mlp, bits=8).model,
            "sparsify": slimkit.sparsify(mlp, sparsity=0.5).model}


def test_verbs_refuse_a_compressed_model_naming_the_layer(mlp, digits):
    verbs = {"prune": lambda m: slimkit.prune(m, 0.5), "quantize": lambda m: slimkit.quantize(m, bits=8),
             "sparsify": lambda m: slimkit.sparsify(m, sparsity=0.5),
             "distill": lambda m: slimkit.distill(mlp, m, digits.train, epochs=1)}
    composes = {("quantize-affine", "sparsify"), ("sparsify", "quantize")}  # sparse integer weights (issue 12 §1)
    for first, model in _compressed(mlp).items():
        for verb, call in verbs.items():
            if (first, verb) in composes:
                continue
            if (first, verb) == ("quantize", "sparsify"):  # a codebook built without zeros has no 0 centroid
                with pytest.raises(InvalidParameterError, match=r"'net\.1'.*0 centroid.*sparsify or prune the float"):
                    call(model)
                continue
            with pytest.raises(InvalidParameterError, match=rf"{verb} cannot follow .*'net\.1'") as e:
                call(model)
            assert ("sparse" if first == "sparsify" else "quantized") in str(e.value)


def test_per_layer_mixed_precision_is_one_call_per_group(mlp, digits):
    """Compressed layers outside a verb's selection stay as they are; inside it they are refused."""
    q4 = slimkit.quantize(mlp, bits=4, method="codebook", include=["net.1"]).model
    mixed, report = slimkit.quantize(q4, bits=8, include=["net.3", "net.5"])
    assert type(mixed.net[1]).__name__ == "CodebookLinear" and type(mixed.net[3]).__name__ == "QuantLinear"
    assert history(mixed)["net.1"] == ["quantize codebook 4-bit"]
    assert history(mixed)["net.3"] == ["quantize affine 8-bit"]
    assert slimkit.size(mixed) < slimkit.size(slimkit.quantize(mlp, bits=8).model)
    assert slimkit.evaluate(mixed, digits.test)["accuracy"] > 0.9
    sparse = slimkit.sparsify(slimkit.prune(q4, 0.5, include=["net.3"]).model, sparsity=0.5, include=["net.3"]).model
    assert type(sparse.net[1]).__name__ == "CodebookLinear" and type(sparse.net[3]).__name__ == "SparseLinear"
    with pytest.raises(InvalidParameterError, match=r"quantize cannot follow .*'net\.1'.*include/exclude"):
        slimkit.quantize(q4, bits=8, include=["net.*"])


def test_a_compressed_teacher_is_fine(mlp, digits):
    teacher = slimkit.quantize(mlp, bits=8).model
    student, report = slimkit.distill(teacher, slimkit.zoo.models.DigitsMLP(hidden=(32,)), digits.train, epochs=1)
    assert all(r.history == ["distill"] for r in report.changed)


class _Block(nn.Module):
    """A transformer-ish model: embedding, self-attention, MLP, head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 32)
        self.attn = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.head = nn.Linear(32, 40)

    def forward(self, ids):
        return self.head(self.attn(self.emb(ids)))


def test_transformerish_prune_then_codebook_round_trips(tmp_path):
    torch.manual_seed(0)
    model = _Block().eval()
    pruned = slimkit.prune(model, 0.5).model
    q, report = slimkit.quantize(pruned, bits=4, method="codebook")
    rows = {r.name: r for r in report.layers}
    assert rows["attn.linear1"].history == ["prune 50% magnitude", "quantize codebook 4-bit"]
    assert rows["attn.self_attn"].action == "skipped"  # MultiheadAttention's own weight stays float (reason given)
    ids = torch.randint(0, 40, (2, 5))
    back = slimkit.load(slimkit.save(q, tmp_path / "b.slim"), model=model)
    with torch.no_grad():
        assert torch.equal(back(ids), q(ids))
    for name, zero in _zeros(pruned).items():
        if name in rows and rows[name].action == "quantized":
            assert torch.equal(q.get_submodule(name).weight[zero], torch.zeros(int(zero.sum())))
    assert history(back) == history(q)  # the artifact keeps the steps, so a later verb's report shows them



def test_report_tables_show_the_history_column_for_a_chain_only(mlp):
    pruned, one = slimkit.prune(mlp, 0.7)
    assert not one.has_history and "history" not in one.table() and "history" not in one._repr_html_()
    _, report = slimkit.quantize(pruned, bits=4, method="codebook")
    assert report.has_history
    chain = "prune 70% magnitude → quantize codebook 4-bit"
    lines = report.table().splitlines()
    assert "history" in lines[1] and any(chain in line for line in lines)
    assert chain in report.to_markdown() and "| history |" in report.to_markdown()
    assert f"<td>{chain}</td>" in report._repr_html_()
    skipped = [r for r in report.layers if r.action == "skipped"]
    assert all(not r.history for r in skipped)  # their cell is empty, never another layer's steps


def test_history_cells_are_escaped_in_html_and_markdown():
    from slimkit.report import LayerReport, Report

    hostile = "<img src=x onerror=alert(1)>|x"
    report = Report("quantize", {}, [LayerReport("fc", "Linear", "quantized", history=["prune 50%", hostile])])
    html_out = report._repr_html_()
    assert "<img" not in html_out and "&lt;img src=x onerror=alert(1)&gt;" in html_out
    md = report.to_markdown()
    assert "<img" not in md and "&lt;img" in md and "\\|x" in md  # a cell's | does not split the row
