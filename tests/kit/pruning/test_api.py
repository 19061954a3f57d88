"""Pruning: unstructured (layer/global), structured surgery, schedules, fine-tuning, bad input."""
import threading

import pytest
import torch
import torch.nn as nn
from conftest import assert_unchanged, state_snapshot

import slimkit
from slimkit.errors import Interrupted, InvalidParameterError, InvalidTypeError, NothingToCompressError
from slimkit.nn import param_count
from slimkit.pruning.api import keep_sparsity, schedule
from slimkit.training import fit


def _zeros(m):
    return int((m.weight == 0).sum())


def test_layer_scope_magnitude_removes_the_smallest_in_each_layer(mlp):
    snap = state_snapshot(mlp)
    pruned, report = slimkit.prune(mlp, 0.7)
    assert_unchanged(mlp, snap)
    for i in (1, 3, 5):
        w0, w = mlp.net[i].weight.detach(), pruned.net[i].weight.detach()
        assert _zeros(pruned.net[i]) == round(0.7 * w.numel())
        assert float(w0[w == 0].abs().max()) <= float(w0[w != 0].abs().min())
        assert torch.equal(w[w != 0], w0[w != 0])  # survivors untouched
        assert torch.equal(pruned.net[i].bias, mlp.net[i].bias)
    assert report.summary["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert [l.action for l in report.layers] == ["pruned"] * 3


def test_global_scope_uses_one_threshold(mlp):
    pruned, report = slimkit.prune(mlp, 0.8, scope="global")
    layers = [(mlp.net[i].weight.detach(), pruned.net[i].weight.detach()) for i in (1, 3, 5)]
    total = sum(w.numel() for w, _ in layers)
    assert sum(int((p == 0).sum()) for _, p in layers) == round(0.8 * total)
    cut = max(float(w[p == 0].abs().max()) for w, p in layers)
    assert cut <= min(float(w[p != 0].abs().min()) for w, p in layers)
    per_layer = [l.sparsity for l in report.layers]
    assert max(per_layer) - min(per_layer) > 0.05  # layers end up at different sparsities


@pytest.mark.parametrize("score", ["fisher", "obd"])
def test_data_scores_prune_low_importance_weights(mlp, digits, score):
    data = (digits.train.X[:200], digits.train.y[:200])
    pruned, _ = slimkit.prune(mlp, 0.5, score=score, data=data)
    assert _zeros(pruned.net[3]) == round(0.5 * pruned.net[3].weight.numel())
    # weights whose gradient is always zero (inputs that are always 0: the digit images' border) go first
    dead = data[0].reshape(200, 64).abs().sum(0) == 0
    assert bool(dead.any()) and bool((pruned.net[1].weight[:, dead] == 0).all())


def test_excluded_layers_are_reported_as_skipped(mlp):
    pruned, report = slimkit.prune(mlp, 0.5, exclude=["net.5"])
    assert torch.equal(pruned.net[5].weight, mlp.net[5].weight)
    rows = {l.name: l for l in report.layers}
    assert rows["net.5"].action == "skipped" and "exclude=['net.5']" in rows["net.5"].reason
    assert rows["net.1"].action == "pruned" and report.summary["sparsity"] == pytest.approx(0.5, abs=1e-4)


def test_random_is_a_seeded_baseline(mlp):
    a, _ = slimkit.prune(mlp, 0.5, score="random", seed=1)
    b, _ = slimkit.prune(mlp, 0.5, score="random", seed=1)
    c, _ = slimkit.prune(mlp, 0.5, score="random", seed=2)
    assert torch.equal(a.net[1].weight, b.net[1].weight)
    assert not torch.equal(a.net[1].weight, c.net[1].weight)


def test_schedule_is_cubic_and_ends_at_the_target():
    vals = [schedule(0.9, s, 4) for s in range(5)]
    assert vals[0] == 0 and vals[-1] == pytest.approx(0.9)
    steps = [b - a for a, b in zip(vals, vals[1:])]
    assert all(x > y for x, y in zip(steps, steps[1:]))  # prunes most early


def test_iterative_prune_with_finetune_keeps_zeros(mlp, digits):
    events = []
    train = (digits.train.X[:500], digits.train.y[:500])
    pruned, report = slimkit.prune(mlp, 0.9, steps=3, scope="global", callbacks=events.append,
                                   finetune=dict(data=train, epochs=1, lr=1e-3))
    sparsities = [e.metrics["sparsity"] for e in events if e.stage == "prune" and e.kind == "metrics"]
    assert len(sparsities) == 3 and sparsities == sorted(sparsities)
    assert sparsities[-1] == pytest.approx(0.9, abs=1e-4)
    # the fine-tune ran after each step and the final weights still hold the sparsity
    assert sum(e.stage == "finetune" and e.kind == "metrics" for e in events) == 3
    total = sum(pruned.net[i].weight.numel() for i in (1, 3, 5))
    assert sum(_zeros(pruned.net[i]) for i in (1, 3, 5)) == round(0.9 * total)
    assert report.summary["finetune_epochs"] == 3
    assert slimkit.evaluate(pruned, digits.test)["accuracy"] > 0.9


def test_keep_sparsity_holds_zeros_during_further_training(mlp, digits):
    pruned, _ = slimkit.prune(mlp, 0.6)
    mask = pruned.net[3].weight != 0
    fit(pruned, (digits.train.X[:256], digits.train.y[:256]), epochs=1, after_step=keep_sparsity(pruned))
    assert torch.equal(pruned.net[3].weight != 0, mask)


class _BNNet(nn.Module):
    """conv -> BatchNorm -> relu -> conv -> pool -> flatten -> linear -> linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 4, 12), nn.Linear(12, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def test_structured_prune_fixes_batchnorm_and_flatten(digits):
    torch.manual_seed(0)
    model = _BNNet()
    model.train()(digits.train.X[:64])
    model.eval()
    snap = state_snapshot(model)
    small, report = slimkit.prune(model, 0.5, structured=True)
    assert_unchanged(model, snap)
    assert small.c1.out_channels == 4 and small.bn.num_features == 4 and small.bn.running_var.shape == (4,)
    assert small.c2.in_channels == 4 and small.c2.out_channels == 3
    assert small.fc1.in_features == 3 * 16 and small.fc1.out_features == 6 and small.fc2.in_features == 6
    assert small(digits.test.X[:5]).shape == (5, 10)
    rows = {l.name: l for l in report.layers}
    assert rows["bn"].action == "resized" and rows["fc2"].action == "resized"
    assert rows["c1"].details["units_removed"] == 4
    assert param_count(small) < param_count(model) / 2


def test_structured_with_fisher_scores(cnn, digits):
    data = (digits.train.X[:128], digits.train.y[:128])
    small, report = slimkit.prune(cnn, 0.25, structured=True, score="fisher", data=data)
    assert small.features[0].out_channels == 24
    assert slimkit.evaluate(small, digits.test)["accuracy"] > 0.5


def test_pruned_models_round_trip(mlp, tmp_path):
    for kw in (dict(sparsity=0.8), dict(sparsity=0.5, structured=True)):
        pruned, _ = slimkit.prune(mlp, **kw)
        back = slimkit.load(slimkit.save(pruned, tmp_path / "p.slim"))
        for (k, a), (_, b) in zip(pruned.state_dict().items(), back.state_dict().items()):
            assert torch.equal(a, b), k


# ---- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match,err", [
    (dict(sparsity=1.0), r"sparsity=1.0 .*\[0, 1\)", InvalidParameterError),
    (dict(sparsity=-0.1), r"sparsity=-0.1", InvalidParameterError),
    (dict(sparsity=float("nan")), r"sparsity=nan", InvalidParameterError),
    (dict(sparsity=True), r"sparsity must be", InvalidTypeError),
    (dict(sparsity="0.5"), r"sparsity must be", InvalidTypeError),
    (dict(sparsity=0.5, score="taylor"), r"score='taylor'.*'magnitude'", InvalidParameterError),
    (dict(sparsity=0.5, score="fisher"), r"data=None.*fisher", InvalidParameterError),
    (dict(sparsity=0.5, score="obd"), r"data=None.*obd", InvalidParameterError),
    (dict(sparsity=0.5, scope="model"), r"scope='model'", InvalidParameterError),
    (dict(sparsity=0.5, structured="yes"), r"structured must be", InvalidTypeError),
    (dict(sparsity=0.5, steps=0), r"steps=0", InvalidParameterError),
    (dict(sparsity=0.5, data=42), r"data must be", InvalidTypeError),
    (dict(sparsity=0.5, finetune=dict(epochs=2)), r"finetune=.*'data'", InvalidParameterError),
    (dict(sparsity=0.5, finetune=dict(data=None, lr=1)), r"finetune=", InvalidParameterError),
    (dict(sparsity=0.5, finetune=dict(data=(torch.zeros(2, 64), torch.zeros(2)), epochs=0)),
     r"finetune\['epochs'\]=0", InvalidParameterError),
    (dict(sparsity=0.5, finetune=dict(data=(torch.zeros(2, 64), torch.zeros(2)), lrate=1)),
     r"unknown: lrate", InvalidParameterError),
])
def test_bad_arguments_raise_and_change_nothing(mlp, kw, match, err):
    snap = state_snapshot(mlp)
    with pytest.raises(err, match=match) as e:
        slimkit.prune(mlp, **kw)
    assert isinstance(e.value, slimkit.SlimkitError)
    assert_unchanged(mlp, snap)


def test_nothing_to_prune():
    with pytest.raises(NothingToCompressError, match="no layer prune"):
        slimkit.prune(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), 0.5)
    with pytest.raises(InvalidTypeError, match="model must be"):
        slimkit.prune("model.pt", 0.5)


def test_stop_during_fisher_interrupts_and_changes_nothing(mlp, digits):
    stop = threading.Event()

    def listener(e):
        if e.stage == "fisher" and e.kind == "progress":
            stop.set()

    snap = state_snapshot(mlp)
    with pytest.raises(Interrupted):
        slimkit.prune(mlp, 0.5, score="fisher", data=digits.train, callbacks=listener, stop=stop)
    assert_unchanged(mlp, snap)


def test_stop_during_finetune_interrupts(mlp, digits):
    stop = threading.Event()
    stop.set()
    snap = state_snapshot(mlp)
    with pytest.raises(Interrupted):
        slimkit.prune(mlp, 0.5, finetune=dict(data=digits.train), stop=stop)
    assert_unchanged(mlp, snap)


def test_stop_mid_finetune_keeps_the_finished_epochs(mlp, digits):
    stop = threading.Event()

    def listener(e):
        if e.stage == "finetune" and e.kind == "metrics":
            stop.set()  # after the first epoch of step 1: step 2 never prunes or fine-tunes

    snap = state_snapshot(mlp)
    with pytest.raises(Interrupted) as info:
        slimkit.prune(mlp, 0.6, steps=2, finetune=dict(data=digits.train, epochs=3), callbacks=listener, stop=stop)
    assert_unchanged(mlp, snap)
    kept = info.value.result
    summary = kept.report.summary
    assert summary["stopped_after_epochs"] == 1 and summary["stopped_at_step"] == 1 and len(info.value.history) == 1
    assert summary["finetune_epochs"] == 1 and summary["finetune_final"]["loss"] == round(info.value.history[0]["loss"], 6)
    assert abs(summary["sparsity"] - schedule(0.6, 1, 2)) < 0.01  # step 1's sparsity, its zeros held
    untuned = slimkit.prune(mlp, 0.6, steps=2).model
    assert any(not torch.equal(a, b) for a, b in zip(kept.model.state_dict().values(), untuned.state_dict().values()))
    assert all(r.history == [f"prune {r.sparsity:.0%} magnitude"] for r in kept.report.changed)


# ---- configs -----------------------------------------------------------------------------

def test_a_config_a_first_positional_and_keywords_prune_alike(mlp, digits):
    tune = dict(data=digits.train, epochs=1)
    by_kw = slimkit.prune(mlp, sparsity=0.5, scope="global", finetune=tune)
    by_first = slimkit.prune(mlp, 0.5, scope="global", finetune=slimkit.Finetune(digits.train, epochs=1))
    by_config = slimkit.prune(mlp, slimkit.PruneConfig(sparsity=0.5, scope="global"), finetune=tune)
    for other in (by_first, by_config):
        assert other.report.params == by_kw.report.params
        for a, b in zip(by_kw.model.state_dict().values(), other.model.state_dict().values()):
            assert torch.equal(a, b)
    assert by_kw.report.params["finetune"] == {"epochs": 1, "lr": 1e-3}
    with pytest.raises(InvalidParameterError, match="sparsity=0.3.*given once"):
        slimkit.prune(mlp, 0.5, sparsity=0.3)


def test_a_registered_score_is_a_valid_choice(mlp):
    from slimkit.pruning import importance

    importance.register_score("abs_copy", lambda ctx: {n: t.weight.abs() for n, t in ctx.targets})
    try:
        assert "abs_copy" in slimkit.PruneConfig.settings()["score"][0].options()
        out, report = slimkit.prune(mlp, 0.5, score="abs_copy")
        assert report.params["score"] == "abs_copy"
    finally:
        del importance.SCORES["abs_copy"]
    with pytest.raises(InvalidParameterError, match="score='abs_copy'"):
        slimkit.PruneConfig(score="abs_copy")


def test_prune_signature_lists_every_setting():
    import inspect

    params = inspect.signature(slimkit.prune).parameters
    assert list(params)[:2] == ["model", "config"]
    assert all(name in params for name in slimkit.PruneConfig.settings())
    assert params["sparsity"].default == 0.5 and "finetune" in params
