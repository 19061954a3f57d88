"""The error contract, checked across the public API against issue 2's list of bad inputs:
each raises a slimkit error that is a ValueError/TypeError, names the parameter and the value,
and leaves the input model as it was. (Each method's own file tests its cases in more depth.)"""
import pytest
import torch
import torch.nn as nn

import slimkit
from conftest import assert_unchanged, state_snapshot
from slimkit import errors


def test_hierarchy():
    for cls in (errors.InvalidParameterError, errors.NothingToCompressError, errors.IncompatibleModelsError,
                errors.ArtifactError):
        assert issubclass(cls, errors.SlimkitError) and issubclass(cls, ValueError)
    assert issubclass(errors.InvalidTypeError, TypeError) and issubclass(errors.InvalidTypeError, errors.SlimkitError)
    e = errors.InvalidParameterError("bits", 9, "an int in [2, 8]")
    assert (e.name, e.value, e.allowed) == ("bits", 9, "an int in [2, 8]")
    assert str(e) == "bits=9 is not allowed: expected an int in [2, 8]"


def test_check_positive():
    assert errors.check_positive("lr", 0.1) == 0.1
    with pytest.raises(errors.InvalidParameterError, match="lr=0"):
        errors.check_positive("lr", 0)
    with pytest.raises(errors.InvalidTypeError, match="epochs must be a positive int"):
        errors.check_positive("epochs", 1.5, integer=True)


CASES = {
    # issue 2: "Sparsity outside [0, 1) or NaN or bool"
    "sparsity 1.0": (lambda m, d: slimkit.prune(m, 1.0), "sparsity=1.0"),
    "sparsity -0.5": (lambda m, d: slimkit.sparsify(m, sparsity=-0.5), "sparsity=-0.5"),
    "sparsity nan": (lambda m, d: slimkit.prune(m, float("nan")), "sparsity=nan"),
    "sparsity bool": (lambda m, d: slimkit.prune(m, True), "sparsity must be"),
    # "bits outside 2..8"
    "bits 1": (lambda m, d: slimkit.quantize(m, bits=1), "bits=1"),
    "bits 16": (lambda m, d: slimkit.quantize(m, bits=16), "bits=16"),
    # "unknown granularity/score/format"
    "granularity": (lambda m, d: slimkit.quantize(m, granularity="per_block"), "granularity='per_block'"),
    "score": (lambda m, d: slimkit.prune(m, 0.5, score="taylor"), "score='taylor'"),
    "format": (lambda m, d: slimkit.sparsify(m, sparsity=0.5, format="coo"), "format='coo'"),
    # "a per-group size that does not divide"
    "group size": (lambda m, d: slimkit.quantize(m, 4, granularity="per_group", group_size=48),
                   "group_size=48"),
    # "fisher without data"
    "fisher without data": (lambda m, d: slimkit.prune(m, 0.5, score="fisher"), "data=None"),
    # "a teacher/student output-shape mismatch"
    "teacher/student": (lambda m, d: slimkit.distill(m, nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), d),
                        "teacher gave (8, 10) and the student (8, 3)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_input_names_parameter_and_value_and_changes_nothing(mlp, digits, case):
    call, text = CASES[case]
    data = (digits.train.X[:8], digits.train.y[:8])
    snap = state_snapshot(mlp)
    with pytest.raises(errors.SlimkitError) as e:
        call(mlp, data)
    assert isinstance(e.value, (ValueError, TypeError))
    assert text in str(e.value)
    assert_unchanged(mlp, snap)


@pytest.mark.parametrize("method", ["quantize", "prune", "sparsify", "structured", "shrink"])
def test_a_model_with_nothing_to_touch_is_an_error_not_a_no_op(method):
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.LayerNorm(4))
    call = {"quantize": lambda: slimkit.quantize(model, 8),
            "prune": lambda: slimkit.prune(model, 0.5),
            "sparsify": lambda: slimkit.sparsify(model, sparsity=0.5),
            "structured": lambda: slimkit.prune(model, 0.5, structured=True),
            "shrink": lambda: slimkit.shrink(model, 0.5)}[method]
    with pytest.raises(errors.NothingToCompressError) as e:
        call()
    assert "Sequential" in str(e.value) or "no layer" in str(e.value)


def test_corrupt_and_truncated_artifacts(mlp, tmp_path):
    path = slimkit.save(mlp, tmp_path / "m.slim")
    good = path.read_bytes()
    for name, data in (("truncated", good[:-10]), ("corrupt", good[:-4] + bytes(4 * [0x55]))):
        bad = tmp_path / f"{name}.slim"
        bad.write_bytes(data)
        with pytest.raises(errors.ArtifactError, match=name if name == "corrupt" else "truncated|corrupt"):
            slimkit.load(bad)
    with pytest.raises(FileNotFoundError):
        slimkit.load(tmp_path / "missing.slim")


def test_non_modules_are_type_errors():
    for call in (lambda: slimkit.quantize(torch.zeros(3)), lambda: slimkit.prune([1], 0.5),
                 lambda: slimkit.sparsify("m", sparsity=0.5), lambda: slimkit.shrink(None)):
        with pytest.raises(errors.InvalidTypeError, match="model must be a torch.nn.Module"):
            call()
