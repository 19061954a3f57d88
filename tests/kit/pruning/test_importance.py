"""Importance scores: the Fisher diagonal against brute force, OBD, the registry."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from slimkit.pruning import importance
from slimkit.errors import InvalidParameterError, InvalidTypeError
from slimkit.events import Progress


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.BatchNorm1d(6), nn.Linear(6, 3))
    model.train()(torch.randn(32, 5))  # non-trivial running statistics
    x, y = torch.randn(23, 5), torch.randint(0, 3, (23,))
    return model, x, y


def _brute_force(model, x, y):
    """E_i[(dL_i/dw)^2] with one backward pass per sample, in eval mode."""
    model.eval()
    weights = [model[0].weight, model[3].weight]
    sums = [torch.zeros_like(w) for w in weights]
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        for s, g in zip(sums, torch.autograd.grad(loss, weights)):
            s += g ** 2
    return [s / len(y) for s in sums]


def _ctx(model, x, y, **kw):
    targets = [("0", model[0]), ("3", model[3])]
    return importance.ScoreContext(model, targets, (x, y), **kw)


def test_fisher_equals_brute_force_per_sample_gradients():
    model, x, y = _tiny()
    expected = _brute_force(model, x, y)
    model.train()  # fisher_diagonal scores the deployed (eval) model and restores the mode
    scores = importance.fisher_diagonal(model, [("0", model[0]), ("3", model[3])], (x, y),
                                        importance.cross_entropy, Progress(), chunk=5)
    assert model.training
    torch.testing.assert_close(scores["0"], expected[0], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(scores["3"], expected[1], rtol=1e-4, atol=1e-9)
    # not the square of the mean gradient, which understates it
    model.eval()
    g = torch.autograd.grad(F.cross_entropy(model(x), y), model[3].weight)[0]
    assert float((g ** 2).sum()) < 0.5 * float(scores["3"].sum())


class _Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot run it, the per-sample loop must."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        if float(h.detach().sum()) > 0:
            h = torch.relu(h)
        return self.b(h)


def test_fisher_falls_back_to_a_loop_when_vmap_fails():
    torch.manual_seed(0)
    model = _Branchy()
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    scores = importance.fisher_diagonal(model, [("a", model.a)], (x, y), importance.cross_entropy, Progress())
    expected = torch.zeros_like(model.a.weight)
    for i in range(11):
        g = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), model.a.weight)[0]
        expected += g ** 2
    torch.testing.assert_close(scores["a"], expected / 11, rtol=1e-4, atol=1e-9)


def test_obd_magnitude_random():
    model, x, y = _tiny()
    ctx = _ctx(model, x, y)
    fisher = importance.compute("fisher", ctx)
    obd = importance.compute("obd", ctx)
    torch.testing.assert_close(obd["3"], fisher["3"] * model[3].weight.detach() ** 2)
    mag = importance.compute("magnitude", ctx)
    assert torch.equal(mag["0"], model[0].weight.detach().abs())
    r1 = importance.compute("random", _ctx(model, x, y, seed=1))
    r1b = importance.compute("random", _ctx(model, x, y, seed=1))
    r2 = importance.compute("random", _ctx(model, x, y, seed=2))
    assert torch.equal(r1["0"], r1b["0"]) and not torch.equal(r1["0"], r2["0"])


def test_fisher_is_computed_once_per_context():
    model, x, y = _tiny()
    ctx = _ctx(model, x, y)
    first = ctx.grad_squares()
    assert ctx.grad_squares() is first


def test_register_score_and_shape_check():
    model, x, y = _tiny()
    importance.register_score("ones_test", lambda ctx: {n: torch.ones_like(m.weight) for n, m in ctx.targets})
    try:
        assert float(importance.compute("ones_test", _ctx(model, x, y))["0"].sum()) == 30
        importance.register_score("bad_test", lambda ctx: {n: torch.ones(2) for n, m in ctx.targets})
        with pytest.raises(InvalidParameterError, match="shaped"):
            importance.compute("bad_test", _ctx(model, x, y))
    finally:
        importance.SCORES.pop("ones_test", None)
        importance.SCORES.pop("bad_test", None)
    with pytest.raises(InvalidTypeError, match="fn must be"):
        importance.register_score("x", 3)
    with pytest.raises(InvalidParameterError, match="score='nope'"):
        importance.compute("nope", _ctx(model, x, y))


def test_fisher_without_samples_is_an_error():
    model, _, _ = _tiny()
    with pytest.raises(InvalidParameterError, match="data"):
        importance.fisher_diagonal(model, [("0", model[0])], [], importance.cross_entropy, Progress())
