"""The one training loop: deterministic by seed, hooks, events, the caller's RNG untouched."""
import threading

import pytest
import torch
import torch.nn as nn

from slimkit.errors import Interrupted, InvalidParameterError, InvalidTypeError
from slimkit.metrics import evaluate
from slimkit.training import fit


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    x = torch.randn(50, 4)
    return model, (x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def test_fit_is_deterministic_and_leaves_the_global_rng_alone():
    a, data = _setup()
    b, _ = _setup()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    hist = fit(a, data, epochs=3, lr=1e-2, batch_size=16, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    fit(b, data, epochs=3, lr=1e-2, batch_size=16, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[-1]["loss"] < hist[0]["loss"]
    assert not a.training


def test_after_step_and_events():
    model, data = _setup()
    calls, events = [], []
    hist = fit(model, data, epochs=2, batch_size=25, after_step=lambda m: calls.append(m),
               val_data=data, callbacks=events.append, stage="tune")
    assert len(calls) == 4 and calls[0] is model
    kinds = [(e.kind, e.stage) for e in events]
    assert kinds[0] == ("start", "tune") and kinds[-1] == ("end", "tune")
    assert [e.metrics["val_accuracy"] for e in events if e.kind == "metrics"] == [h["val_accuracy"] for h in hist]


def test_bad_arguments():
    model, data = _setup()
    with pytest.raises(InvalidParameterError, match="batch_size=0"):
        fit(model, data, batch_size=0)
    with pytest.raises(InvalidTypeError, match="epochs must be"):
        fit(model, data, epochs=1.5)
    with pytest.raises(InvalidParameterError, match="at least one"):
        evaluate(model, (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))


def test_a_stop_mid_epoch_leaves_the_weights_of_the_last_finished_epoch():
    torch.manual_seed(0)
    model, X, y = torch.nn.Linear(4, 3), torch.randn(64, 4), torch.randint(0, 3, (64,))
    stop, seen = threading.Event(), []

    def after(m):  # 4 steps an epoch (batch 16); stop 2 steps into the second epoch
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        if len(seen) == 6:
            stop.set()

    with pytest.raises(Interrupted) as info:
        fit(model, (X, y), epochs=3, batch_size=16, after_step=after, stop=stop)
    assert len(info.value.history) == 1 and len(seen) == 6
    assert all(torch.equal(v, seen[3][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, seen[5][k]) for k, v in model.state_dict().items())
