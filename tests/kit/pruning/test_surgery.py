"""Structured surgery: dependency analysis, unit removal, structured pruning of real models."""
import pytest
import torch
import torch.nn as nn

import slimkit
from conftest import assert_unchanged, state_snapshot
from slimkit.pruning import surgery
from slimkit.errors import NothingToCompressError
from slimkit.nn import param_count


def test_analyse_digits_cnn_groups_and_flatten_mapping(cnn):
    a = surgery.analyse(cnn)
    groups = {g.producer: g for g in a.groups}
    assert set(groups) == {"features.0", "features.2", "classifier.1"}
    assert groups["features.0"].consumers == [("features.2", 1)]
    # 64 channels x (4x4 after pooling) feed classifier.1 through Flatten
    assert groups["features.2"].consumers == [("classifier.1", 16)]
    assert groups["classifier.1"].consumers == [("classifier.3", 1)]
    assert "model output" in a.skipped["classifier.3"]


def _silence(model, group, drop):
    """Make ``drop`` units of a group output exactly zero after their activation."""
    with torch.no_grad():
        if group.norms:
            bn = model.get_submodule(group.norms[0])
            bn.weight[drop] = 0
            bn.bias[drop] = 0
        else:
            p = model.get_submodule(group.producer)
            p.weight[drop] = 0
            p.bias[drop] = 0


def test_removing_units_equals_zeroing_them_cnn(cnn, digits):
    """The cut keeps exactly the right rows/columns, including the Flatten mapping:
    a model with some units silenced computes the same as the model with them removed."""
    x = digits.test.X[:64]
    g = torch.Generator().manual_seed(0)
    for group in surgery.analyse(cnn).groups:
        keep = torch.randperm(group.units, generator=g)[: group.units // 3].sort().values
        drop = torch.tensor([i for i in range(group.units) if i not in set(keep.tolist())])
        _silence(cnn, group, drop)
        silenced = cnn(x)
        surgery.remove_units(cnn, group, keep)
        torch.testing.assert_close(cnn(x), silenced, rtol=1e-5, atol=1e-5)
    assert param_count(cnn) < 40_000


def test_removing_units_slices_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.train()(torch.randn(16, 3, 8, 8))  # non-trivial running stats
    model.eval()
    (group,) = [g for g in surgery.analyse(model).groups if g.producer == "0"]
    assert group.norms == ["1"] and group.consumers == [("3", 1)]
    x = torch.randn(5, 3, 8, 8)
    keep = torch.tensor([0, 2, 3, 7])
    _silence(model, group, torch.tensor([1, 4, 5, 6]))
    silenced = model(x)
    surgery.remove_units(model, group, keep)
    assert model[1].num_features == 4 and model[1].running_mean.shape == (4,)
    torch.testing.assert_close(model(x), silenced)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))) + x)


class Viewer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 16, 2)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(h.view(h.size(0), -1))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.a(self.a(x)))


def test_unsafe_layers_are_skipped_with_reasons():
    a = surgery.analyse(Residual())
    assert [g.producer for g in a.groups] == ["a"]
    assert "residual" in a.skipped["b"]
    assert "model output" in a.skipped["head"]
    assert "view" in surgery.analyse(Viewer()).skipped["conv"]
    assert "more than once" in surgery.analyse(Shared()).skipped["a"]


class ShapeBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 10), nn.Linear(10, 2)

    def forward(self, x):
        if x.dim() == 3:  # Python control flow on shapes: plain fx cannot trace this
            x = x.flatten(1)
        return self.b(torch.relu(self.a(x)))


def test_shape_dependent_forward_needs_an_example():
    with pytest.raises(Exception):
        surgery.analyse(ShapeBranch())
    a = surgery.analyse(ShapeBranch(), example=torch.randn(2, 6))
    assert [g.producer for g in a.groups] == ["a"]


def test_structured_prune_cnn_really_shrinks(cnn, digits):
    snap = state_snapshot(cnn)
    small, report = slimkit.prune(cnn, 0.5, structured=True)
    assert_unchanged(cnn, snap)
    assert small.features[0].out_channels == 16 and small.features[2].out_channels == 32
    assert small.classifier[1].in_features == 32 * 16 and small.classifier[1].out_features == 128
    assert small.classifier[3].in_features == 128
    rows = {l.name: l for l in report.layers}
    assert rows["features.2"].details["units_removed"] == 32
    assert rows["classifier.3"].action == "resized" and "model output" in rows["classifier.3"].reason
    assert report.summary["params_after"] == param_count(small) < param_count(cnn) / 3
    # magnitude keeps the units with the largest L1 norm
    norms = cnn.features[0].weight.detach().abs().flatten(1).sum(1)
    kept = torch.topk(norms, 16).indices.sort().values
    torch.testing.assert_close(small.features[0].weight, cnn.features[0].weight[kept])
    assert slimkit.evaluate(small, digits.test)["accuracy"] > 0.3


def test_structured_model_round_trips_through_artifact(cnn, digits, tmp_path):
    small, _ = slimkit.prune(cnn, 0.5, structured=True)
    back = slimkit.load(slimkit.save(small, tmp_path / "s.slim"))
    x = digits.test.X[:32]
    torch.testing.assert_close(back(x), small(x))


def test_structured_global_removes_the_requested_share(mlp):
    small, report = slimkit.prune(mlp, 0.4, structured=True, scope="global")
    before = 256 + 128
    after = small.net[1].out_features + small.net[3].out_features
    assert after == before - round(0.4 * before)
    assert small.net[1].out_features != 256 * 0.6 or small.net[3].out_features != 128 * 0.6


def test_structured_iterative_with_finetune(mlp, digits):
    events = []
    small, report = slimkit.prune(mlp, 0.5, structured=True, steps=2, callbacks=events.append,
                                  finetune=dict(data=digits.train, epochs=1))
    assert small.net[1].out_features == 128 and small.net[3].out_features == 64
    params = [e.metrics["params"] for e in events if e.stage == "prune" and e.kind == "metrics"]
    assert len(params) == 2 and params[0] > params[1]
    assert sum(e.stage == "finetune" and e.kind == "metrics" for e in events) == 2
    assert slimkit.evaluate(small, digits.test)["accuracy"] > 0.9


def test_structured_nothing_prunable():
    with pytest.raises(NothingToCompressError, match="model output"):
        slimkit.prune(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 0.5, structured=True)
    with pytest.raises(NothingToCompressError, match="residual"):
        slimkit.prune(Residual(), 0.5, structured=True, include=["b"])
