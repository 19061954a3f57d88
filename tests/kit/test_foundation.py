"""Errors, events, reports, data and the bundled digits models."""
import math
import threading

import pytest
import torch

from slimkit import errors
from slimkit.data import batches, load_digits, subset
from slimkit.events import Event, Progress
from slimkit.metrics import evaluate, sqnr
from slimkit.report import LayerReport, Report


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), True, "0.5", None])
def test_check_fraction_rejects(value):
    with pytest.raises((ValueError, TypeError)) as e:
        errors.check_fraction("sparsity", value)
    assert isinstance(e.value, errors.SlimkitError)
    assert "sparsity" in str(e.value) and "[0, 1)" in str(e.value)


def test_check_fraction_accepts_edges():
    assert errors.check_fraction("s", 0) == 0.0
    assert errors.check_fraction("s", 1, allow_one=True) == 1.0


def test_check_int_and_choice_messages():
    with pytest.raises(errors.InvalidParameterError, match=r"bits=9 .*\[2, 8\]"):
        errors.check_int("bits", 9, 2, 8)
    with pytest.raises(errors.InvalidTypeError):
        errors.check_int("bits", 8.0, 2, 8)
    with pytest.raises(errors.InvalidParameterError, match="'per_row'.*'per_tensor'"):
        errors.check_choice("granularity", "per_row", ("per_tensor", "per_channel"))


def test_progress_fans_out_and_stops():
    seen = []
    stop = threading.Event()
    p = Progress([seen.append, seen.append], stop)
    p.emit("metrics", "train", 1, 3, loss=0.5)
    assert len(seen) == 2 and isinstance(seen[0], Event) and seen[0].metrics == {"loss": 0.5}
    stop.set()
    with pytest.raises(errors.Interrupted):
        p.emit("progress", "train", 2, 3)


def test_report_table_flags_simulation():
    r = Report("quantize", {"bits": 4}, [LayerReport("fc", "Linear", "quantized", 10, 10, 40, 5, sqnr_db=20.0),
                                         LayerReport("emb", "Embedding", "skipped", reason="kept fp32")],
               simulated=True)
    text = r.table()
    assert "SIMULATED" in text and "kept fp32" in text and "20.0" in text
    assert [l.name for l in r.skipped] == ["emb"] and [l.name for l in r.changed] == ["fc"]
    assert r.to_dict()["layers"][0]["bytes_after"] == 5
    assert "simulated" in r._repr_html_()


def test_digits_split_is_deterministic_and_stratified():
    a, b = load_digits(seed=0), load_digits(seed=0)
    assert torch.equal(a.train.X, b.train.X) and a.train.X.shape[1:] == (1, 8, 8)
    assert len(a.train) + len(a.test) == 1797
    assert float(a.train.X.max()) <= 1.0
    s = subset(a.train, 0.2, seed=1)
    assert abs(len(s) - 0.2 * len(a.train)) < 12 and set(s.y.tolist()) == set(range(10))


def test_batches_rejects_bad_data():
    with pytest.raises(TypeError, match="data"):
        batches(42)
    xb, yb = next(iter(batches((torch.zeros(10, 2), torch.zeros(10)), batch_size=4)))
    assert xb.shape == (4, 2)


def test_pretrained_models_are_accurate_and_deterministic(cnn, mlp, digits):
    assert evaluate(cnn, digits.test)["accuracy"] > 0.97
    assert evaluate(mlp, digits.test)["accuracy"] > 0.95
    m = evaluate(mlp, digits.test, reference=cnn)
    assert 0.9 < m["agreement"] <= 1.0


def test_sqnr():
    x = torch.randn(1000)
    assert sqnr(x, x) == math.inf
    assert 19 < sqnr(x, x + 0.1 * x) < 21


def test_as_progress_keeps_a_stop_passed_beside_a_progress():
    from slimkit.events import as_progress

    seen, mine, theirs = [], threading.Event(), threading.Event()
    progress = as_progress(as_progress(seen.append, theirs), mine)
    progress.emit("start", "x")
    assert len(seen) == 1  # the caller's callbacks still listen
    mine.set()
    with pytest.raises(errors.Interrupted):
        progress.check()
    mine.clear()
    theirs.set()
    with pytest.raises(errors.Interrupted):  # and the Progress's own stop still counts
        progress.check()


def test_evaluate_restores_the_training_mode_when_a_batch_fails():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    model.train()
    bad = (torch.randn(8, 5), torch.zeros(8, dtype=torch.long))  # wrong feature count
    with pytest.raises(errors.InvalidParameterError, match="batch 0"):  # torch's error, named by slimkit
        evaluate(model, bad)
    assert model.training
